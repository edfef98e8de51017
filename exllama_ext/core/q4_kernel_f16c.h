// Row conversions of the x86 SIMD q4 kernels, with F16C (both x86 families have it). A region
// body (simd_target.h): included inside a target region that enables avx and f16c.
#pragma once

namespace pntk::q4 {

namespace {  // internal linkage: compiled for the including file's ISA

// fp16 / bf16 / fp32 row of x -> fp32.
inline void convert_row_f16c(const TensorView& x, int64_t m, float* dst) {
  const int64_t k_total = x.shape[1];
  if (x.strides[1] != 1) return convert_row_scalar(x, m, dst);
  const char* row = static_cast<const char*>(x.data) + m * x.strides[0] * dtype_size(x.dtype);
  int64_t k = 0;
  if (x.dtype == DType::float32) {
    std::memcpy(dst, row, static_cast<size_t>(k_total) * sizeof(float));
    return;
  }
  if (x.dtype == DType::float16) {
    for (; k + 8 <= k_total; k += 8)
      _mm256_storeu_ps(dst + k, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row) + k / 8)));
  } else if (x.dtype == DType::bfloat16) {
    for (; k + 8 <= k_total; k += 8) {  // bf16 bits << 16 are the fp32 bits
      const __m256i bits = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row) + k / 8));
      _mm256_storeu_ps(dst + k, _mm256_castsi256_ps(_mm256_slli_epi32(bits, 16)));
    }
  }
  convert_elements_scalar(row + k * dtype_size(x.dtype), x.dtype, k_total - k, dst + k);
}

// fp32 row -> out's dtype, rounding to nearest even once.
inline void store_row_f16c(const float* src, int64_t count, DType dtype, void* dst) {
  if (dtype != DType::float16) return store_row_scalar(src, count, dtype, dst);
  int64_t i = 0;
  for (; i + 8 <= count; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(dst) + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  store_row_scalar(src + i, count - i, dtype, static_cast<uint16_t*>(dst) + i);
}

}  // namespace

}  // namespace pntk::q4
