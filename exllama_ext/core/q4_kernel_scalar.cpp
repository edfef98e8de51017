// The plain scalar reference kernel: out[m, n] = bias[n] + sum_p x[m, p] * s * (q - z) over the
// packed rows p of the layout (q4_matrix.h), accumulated in fp32 in packed row order. Used
// where no SIMD kernel runs, and as the reference the SIMD kernels are tested against.
#include <vector>

#include "core/float_round.h"
#include "core/q4_kernel_common.h"

namespace pntk::q4 {

namespace {

void prepare_scalar(const Q4Layout& w, const TensorView& x, bool /*for_gemv*/, Q4Activations& out) {
  prepare_activations(w, x, false, convert_row_scalar, out);
}

void tile_scalar(const Q4Layout& w, const Q4Activations& a, int64_t tile, const TensorView& out) {
  const int64_t width = w.tile_width(tile), col0 = tile * kQ4TileColumns;
  const uint32_t* q = w.tile_qweight(tile);
  const uint16_t* scales = w.tile_scales(tile);
  const uint32_t* zeros = w.tile_zeros(tile);
  std::vector<float> y(static_cast<size_t>(width));
  for (int64_t m = 0; m < a.m; ++m) {
    const float* x = a.x.data() + m * w.packed_rows;
    for (int64_t c = 0; c < width; ++c) {
      float acc = 0.0f;
      for (int64_t g = 0; g < w.groups; ++g) {
        const float s = half_bits_to_float(scales[g * width + c]);
        const int z = packed_zero(zeros, width, g, c);
        for (int64_t p = w.group_begin[g]; p < w.group_begin[g + 1]; ++p)
          acc += x[p] * (s * static_cast<float>(packed_q(q, width, p, c) - z));
      }
      acc *= a.row_unscale[m];
      y[c] = w.bias.empty() ? acc : acc + w.bias[col0 + c];
    }
    char* dst = static_cast<char*>(out.data) + (m * out.strides[0] + col0) * dtype_size(out.dtype);
    store_row_scalar(y.data(), width, out.dtype, dst);
  }
}

}  // namespace

extern const Q4CpuKernel kQ4KernelScalar{"scalar", prepare_scalar, tile_scalar, tile_scalar};

}  // namespace pntk::q4
