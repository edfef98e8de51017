// Launchers of the RoPE CUDA kernels (raw pointers, no CUDA types). Errors: see q4_cuda.cuh.
#pragma once
#include <cstdint>

#include "core/rope_table.h"
#include "core/tensor_view.h"

namespace pntk::cuda {

constexpr int ROPE_MAX_HALF_DIM = 512;  // inv_freq travels in the kernel's parameters (2 KB)

// The core's rope_table on the device: args.inv_freq is a HOST pointer (args.half_dim floats),
// cos_out / sin_out device buffers of [args.positions, 2 * args.half_dim] in args.dtype.
void rope_table_cuda(const RopeTableArgs& args, void* cos_out, void* sin_out, int device, uintptr_t stream);

// In-place NeoX rotation of x [batch, seq, heads, head_dim] (strides in elements, unit stride
// in the last dimension) by tables cos, sin [table_rows, rotary_dim] (contiguous, x's dtype):
//   i < r/2:  x[i] <- x[i] cos[p, i] - x[i + r/2] sin[p, i]
//             x[i + r/2] <- x[i + r/2] cos[p, i + r/2] + x[i] sin[p, i + r/2]
// computed in fp32 and rounded once; dimensions >= rotary_dim are left alone. The position p
// of (b, s) is positions[b * positions_batch_stride + s * positions_seq_stride] when
// `positions` (int32 or int64, device) is given, else position_offset + s. Every position is
// checked against table_rows before x is touched (a tensor of positions costs one sync).
struct RopeApplyArgs {
  void* x;
  DType dtype;  // of x, cos and sin
  int64_t batch, seq, heads, head_dim;
  int64_t batch_stride, seq_stride, head_stride;
  const void* cos;
  const void* sin;
  int64_t table_rows, rotary_dim;
  const void* positions;  // null: position_offset + s
  DType positions_dtype;
  int64_t positions_batch_stride, positions_seq_stride;
  int64_t position_offset;
};
void rope_apply_cuda(const RopeApplyArgs& args, int device, uintptr_t stream);

}  // namespace pntk::cuda
