// AVX-512 (F/BW/VL/DQ) traits of the q4 kernels (q4_kernel_impl.h): 16 columns per vector, 4
// vectors (a whole 64-column tile) per pass. Included only by files built with AVX-512 flags.
#pragma once
#include "core/q4_kernel_impl.h"

namespace pntk::q4 {

namespace {  // internal linkage (q4_kernel_common.h)

struct Avx512 {
  static constexpr int kLanes = 16, kVectors = 4, kGemvRows = 4, kGemmMr = 6;  // 4 x 4 GEMV and 6 x 4 GEMM accumulators (32 registers)
  using F = __m512;
  using I = __m512i;
  using Mask = __mmask16;

  static Mask mask(int valid) { return static_cast<Mask>((1u << valid) - 1u); }
  static I load_words(const uint32_t* p, Mask m) { return _mm512_maskz_loadu_epi32(m, p); }
  // q * 2^4j as fp32 (exact) for j < 7; q for j = 7.
  template <int J>
  static F nibble_scaled(I w) {
    if constexpr (J == 7) return _mm512_cvtepi32_ps(_mm512_srli_epi32(w, 28));
    else return _mm512_cvtepi32_ps(_mm512_and_si512(w, _mm512_set1_epi32(0xF << (4 * J))));
  }
  template <int J>
  static F nibble(I w) {
    return _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(w, 4 * J), _mm512_set1_epi32(0xF)));
  }
  static F broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F fnma(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F zero() { return _mm512_setzero_ps(); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F load_scales(const uint16_t* p, Mask m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }
  // Zero nibbles of `valid` columns (16, or <= 8: then only the first word is read) -> fp32.
  static F load_zeros(const uint32_t* words, int valid) {
    const __m128i bits = valid > 8 ? _mm_loadl_epi64(reinterpret_cast<const __m128i*>(words))
                                   : _mm_cvtsi32_si128(static_cast<int>(words[0]));
    // lane i: word i / 8, shifted right by 4 (i % 8)
    const I word = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                                            _mm512_castsi128_si512(bits));
    const I shift = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    return _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(word, shift), _mm512_set1_epi32(0xF)));
  }
};

}  // namespace

}  // namespace pntk::q4
