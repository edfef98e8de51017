// AVX2 + FMA + F16C q4 kernels: 8 columns per vector. fp32 x and every GEMM take the generic
// fp32-FMA kernels (q4_kernel_impl.h, 2 vectors per pass); fp16 and bf16 x at M <= 16 the GEMV
// on 16-bit integers (q4_kernel_int16.h, vpmaddwd + vpaddd). x86-64 only; the code is in a
// target region (simd_target.h), the rest of the file is baseline.
#include "core/q4_kernel_simd.h"

#if PNTK_X86_64
PNTK_TARGET_BEGIN("avx2,fma,f16c")
#include "core/q4_kernel_f16c.h"
#include "core/q4_kernel_impl.h"
#include "core/q4_kernel_int16.h"

namespace pntk::q4 {

namespace {

struct Avx2 {
  static constexpr int kLanes = 8, kVectors = 2, kGemvRows = 4, kGemmMr = 6;  // 4 x 2 GEMV and 6 x 2 GEMM accumulators (16 registers)
  static constexpr int kInt16Rows = 4, kInt16Vectors = 2, kInt16Chains = 1;   // vpaddd: latency 1
  static constexpr bool kInt16RowInRegisters = false;  // a tile's y would take 8 of the 16 registers
  using F = __m256;
  using I = __m256i;
  using Mask = int;  // tile widths are multiples of 8: every vector is full

  static void prepare_activations(const Q4Layout& w, const TensorView& x, bool nibble_scaled, Q4Activations& out) {
    q4::prepare_activations(w, x, nibble_scaled, convert_row_f16c, out);
  }
  static void store_row(const float* src, int64_t count, DType dtype, void* dst) {
    store_row_f16c(src, count, dtype, dst);
  }
  static Mask mask(int valid) { return valid; }
  static I load_words(const uint32_t* p, Mask) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  // q * 2^4j as fp32 (exact) for j < 7; q for j = 7.
  template <int J>
  static F nibble_scaled(I w) {
    if constexpr (J == 7) return _mm256_cvtepi32_ps(_mm256_srli_epi32(w, 28));
    else return _mm256_cvtepi32_ps(_mm256_and_si256(w, _mm256_set1_epi32(0xF << (4 * J))));
  }
  template <int J>
  static F nibble(I w) {
    return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(w, 4 * J), _mm256_set1_epi32(0xF)));
  }
  static F broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F fnma(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F zero() { return _mm256_setzero_ps(); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F load_scales(const uint16_t* p, Mask) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  // Zero nibbles of 8 columns (one word) as fp32: the word in every lane, lane i shifted by 4i.
  static F load_zeros(const uint32_t* words, int) {
    const I nibbles = _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(words[0])),
                                        _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
    return _mm256_cvtepi32_ps(_mm256_and_si256(nibbles, _mm256_set1_epi32(0xF)));
  }

  static I zero_int() { return _mm256_setzero_si256(); }
  static I add_int(I a, I b) { return _mm256_add_epi32(a, b); }
  static I broadcast_pair(uint32_t pair) { return _mm256_set1_epi32(static_cast<int>(pair)); }
  template <int J>
  static I nibble_pairs(I w) {
    return _mm256_and_si256(J == 0 ? w : _mm256_srli_epi32(w, 4 * J), _mm256_set1_epi32(0x000F000F));
  }
  static I dot_pairs(I acc, I a, I b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
  static F to_float(I v) { return _mm256_cvtepi32_ps(v); }
};

using Kernels = Q4Kernels<Avx2>;
using Gemv = Int16Gemv<Avx2, Kernels>;

}  // namespace

}  // namespace pntk::q4
PNTK_TARGET_END

namespace pntk::q4 {
extern const Q4CpuKernel kQ4KernelAvx2{"avx2", Gemv::prepare, Gemv::gemv_tile, Kernels::gemm_tile};
}  // namespace pntk::q4
#endif  // PNTK_X86_64
