// Pieces shared by the CPU q4 kernel families, compiled for the baseline: they are included
// before a SIMD file's target region opens (simd_target.h), or defined out of line in
// q4_kernel_common.cpp.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/q4_matrix.h"

namespace pntk::q4 {

// x row m (any strides, fp32/fp16/bf16) -> dst[0..K) fp32.
using ConvertRowFn = void (*)(const TensorView& x, int64_t m, float* dst);
void convert_row_scalar(const TensorView& x, int64_t m, float* dst);
// Contiguous elements src[0..count) of `dtype` -> dst fp32.
void convert_elements_scalar(const void* src, DType dtype, int64_t count, float* dst);

// dst[i] = src[i] rounded once (to nearest even) to `dtype` (fp32 / fp16 / bf16), i < count.
void store_row_scalar(const float* src, int64_t count, DType dtype, void* dst);

// Prepared activations (Q4Activations): x in packed row order, 0 in padding rows; with
// `nibble_scaled`, x[p] * 2^-4j for j = p % 8 < 7 (see q4_kernel_impl.h); xsum[m][g] is
// the sum of the unscaled x over group g.
void prepare_activations(const Q4Layout& w, const TensorView& x, bool nibble_scaled, ConvertRowFn convert_row,
                         Q4Activations& out);

// The factor a row of x is stored times (Q4Activations): 2^64 when its largest |x| is under
// 2^-64 (and not 0), 2^-64 when it is 2^64 or more, else 1. Its inverse, exact, is the row's
// row_unscale. Kept within 2^-64..2^64, a row's products and sums stay clear of fp32's ends
// (sums of up to K products of 16 x (1 + q/16) or x q 2^4j, then times scales) and of bf16
// denormals (which vdpbf16ps reads as 0); what it can push below them is under 2^-126 of the
// row's largest |x|.
float row_scale(float largest);

// Reads one word of each 64-byte cache line of data[0, bytes): plain loads, which keep many
// misses in flight (unlike a loop that uses each value, and unlike software prefetches, which
// are dropped on a TLB miss). For data about to be read that is likely cold.
void touch_lines(const void* data, size_t bytes);

// Per-thread scratch of at least `floats` floats (slot 0 or 1), kept between calls.
float* thread_scratch(int slot, int64_t floats);

float fp16_to_float(uint16_t bits);

namespace {

// Packed-layout element access: q of packed row p, tile column c; zero of group g.
inline int packed_q(const uint32_t* tile_q, int64_t width, int64_t p, int64_t c) {
  return static_cast<int>((tile_q[(p / 8) * width + c] >> (4 * (p % 8))) & 15u);
}
inline int packed_zero(const uint32_t* tile_zeros, int64_t width, int64_t g, int64_t c) {
  return static_cast<int>((tile_zeros[g * (width / 8) + c / 8] >> (4 * (c % 8))) & 15u);
}

}  // namespace

}  // namespace pntk::q4
