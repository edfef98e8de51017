// NEON (ASIMD) q4 kernels: 4 columns per vector, 4 vectors per pass (32 registers: 4 x 4 GEMV
// and 6 x 4 GEMM accumulators); the algorithm is in q4_kernel_impl.h. aarch64 only, where NEON
// is baseline: no target region is needed.
#include "core/q4_kernel_simd.h"

#if PNTK_AARCH64
#include "core/q4_kernel_impl.h"

namespace pntk::q4 {

namespace {

// fp16 / bf16 / fp32 row of x -> fp32.
void convert_row_neon(const TensorView& x, int64_t m, float* dst) {
  const int64_t k_total = x.shape[1];
  if (x.strides[1] != 1) return convert_row_scalar(x, m, dst);
  const char* row = static_cast<const char*>(x.data) + m * x.strides[0] * dtype_size(x.dtype);
  if (x.dtype == DType::float32) return (void)std::memcpy(dst, row, static_cast<size_t>(k_total) * sizeof(float));
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(row);
  int64_t k = 0;
  if (x.dtype == DType::float16)
    for (; k + 4 <= k_total; k += 4) vst1q_f32(dst + k, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(bits + k))));
  else if (x.dtype == DType::bfloat16)  // bf16 bits << 16 are the fp32 bits
    for (; k + 4 <= k_total; k += 4) vst1q_f32(dst + k, vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(bits + k), 16)));
  convert_elements_scalar(bits + k, x.dtype, k_total - k, dst + k);
}

struct Neon {
  static constexpr int kLanes = 4, kVectors = 4, kGemvRows = 4, kGemmMr = 6;
  using F = float32x4_t;
  using I = uint32x4_t;
  using Mask = int;  // tile widths are multiples of 8: every vector is full

  static void prepare_activations(const Q4Layout& w, const TensorView& x, bool nibble_scaled, Q4Activations& out) {
    q4::prepare_activations(w, x, nibble_scaled, convert_row_neon, out);
  }
  // fp32 -> fp16 rounds to nearest even (FPCR's default mode), as store_row_scalar.
  static void store_row(const float* src, int64_t count, DType dtype, void* dst) {
    if (dtype != DType::float16) return store_row_scalar(src, count, dtype, dst);
    uint16_t* out = static_cast<uint16_t*>(dst);
    int64_t i = 0;
    for (; i + 4 <= count; i += 4) vst1_u16(out + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
    store_row_scalar(src + i, count - i, dtype, out + i);
  }
  static Mask mask(int valid) { return valid; }
  static I load_words(const uint32_t* p, Mask) { return vld1q_u32(p); }
  // q * 2^4j as fp32 (exact) for j < 7; q for j = 7.
  template <int J>
  static F nibble_scaled(I w) {
    if constexpr (J == 7) return vcvtq_f32_u32(vshrq_n_u32(w, 28));
    else return vcvtq_f32_u32(vandq_u32(w, vdupq_n_u32(0xFu << (4 * J))));
  }
  template <int J>
  static F nibble(I w) {
    if constexpr (J == 0) return vcvtq_f32_u32(vandq_u32(w, vdupq_n_u32(0xF)));
    else return vcvtq_f32_u32(vandq_u32(vshrq_n_u32(w, 4 * J), vdupq_n_u32(0xF)));
  }
  static F broadcast(const float* p) { return vld1q_dup_f32(p); }
  static F fma(F a, F b, F c) { return vfmaq_f32(c, a, b); }
  static F fnma(F a, F b, F c) { return vfmsq_f32(c, a, b); }
  static F add(F a, F b) { return vaddq_f32(a, b); }
  static F sub(F a, F b) { return vsubq_f32(a, b); }
  static F mul(F a, F b) { return vmulq_f32(a, b); }
  static F zero() { return vdupq_n_f32(0.0f); }
  static F load(const float* p) { return vld1q_f32(p); }
  static void store(float* p, F v) { vst1q_f32(p, v); }
  static F load_scales(const uint16_t* p, Mask) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
  // Zero nibbles first..first+3 of one word (4 columns).
  static F load_zeros(const uint32_t* words, int first, int) {
    const int32x4_t shifts = {-4 * first, -4 * first - 4, -4 * first - 8, -4 * first - 12};
    return vcvtq_f32_u32(vandq_u32(vshlq_u32(vdupq_n_u32(words[0]), shifts), vdupq_n_u32(0xF)));
  }
};

using Kernels = Q4Kernels<Neon>;

}  // namespace

extern const Q4CpuKernel kQ4KernelNeon{"neon", Kernels::prepare, Kernels::gemv_tile, Kernels::gemm_tile};

}  // namespace pntk::q4
#endif  // PNTK_AARCH64
