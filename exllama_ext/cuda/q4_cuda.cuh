// Launchers of the GPTQ 4-bit CUDA kernels (raw device pointers; no CUDA types, so plain C++
// bindings can include this). Layout of the tiled matrix: q4_tile_layout.h. Each launcher
// runs on `device`, enqueues on `stream` (a cudaStream_t as an integer), checks its launches
// and throws std::runtime_error with CUDA's text on failure; argument errors throw
// std::invalid_argument naming the argument before anything is launched.
#pragma once
#include <cstdint>

#include "core/tensor_view.h"
#include "cuda/q4_tile_layout.h"

namespace pntk::cuda {

// Device pointers of one tiled matrix, carved from one buffer of plan.buffers().total bytes.
struct Q4TileMatrix {
  const int32_t* row_src;     // [Kp]
  const int32_t* tile_group;  // [Kp/16]
  const uint32_t* qtile;      // [strips][Kp/16][32][4]
  const uint16_t* scales;     // fp16 [strips][G][8][8]
  const uint32_t* zeros;      // [strips][G][8]
  int64_t k, n, groups, k_padded, n_padded;
  bool identity;
  int device;
};


// Copies the plan's row tables to `buffer` and repacks the GPTQ tensors into tiles there.
// `gptq`: device pointers (contiguous tensors); gptq.n must be plan.n.
Q4TileMatrix q4_pack_cuda(const Q4TilePlan& plan, const GptqSource& gptq, void* buffer, int device, uintptr_t stream);

// Multiprocessors of `device` (cached), for q4_gemv_shape.
int64_t device_sm_count(int device);

// y [rows, N] (contiguous) = x [rows, K] @ W (+ bias fp32 [N]), rows <= 16, x and y both
// float16 or both bfloat16 (bfloat16 needs compute capability 8.0), fp32 sums, y rounded once.
// x may have any strides. The workspace buffers hold q4_gemv_shape(...) bytes: `counters`
// zero (it is left so), `scratch` anything (partial sums, x in padded row order).
struct Q4GemvCall {
  const void* x;
  int64_t rows, x_row_stride, x_col_stride;  // strides in elements
  void* y;
  const float* bias;  // or null
  DType dtype;
  int32_t* counters;
  size_t counter_bytes;
  void* scratch;
  size_t scratch_bytes;
};
void q4_gemv_cuda(const Q4TileMatrix& matrix, const Q4GemvCall& call, uintptr_t stream);

// Whether `device` runs the bfloat16 GEMV (compute capability 8.0 or newer).
bool gemv_takes_bfloat16(int device);

// out [K, N] (contiguous, original row order) = scale * (q - zero), computed exactly in fp32
// and rounded once to `dtype` (float32, float16 or bfloat16).
void q4_dequant_cuda(const Q4TileMatrix& matrix, void* out, DType dtype, uintptr_t stream);

}  // namespace pntk::cuda
