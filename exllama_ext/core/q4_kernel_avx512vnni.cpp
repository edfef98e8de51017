// AVX-512 VNNI q4 kernels: the GEMV on 16-bit integers (q4_kernel_int16.h) with vpdpwssd, which
// multiplies the int16 pairs and adds them to the accumulator in one instruction, for fp16 and
// bf16 x at M <= 16; fp32 x and every GEMM are the avx512 family's. x86-64 only, in a target
// region (simd_target.h).
#include "core/q4_kernel_simd.h"

#if PNTK_X86_64
PNTK_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")
#include "core/q4_kernel_f16c.h"
#include "core/q4_kernel_impl.h"
#include "core/q4_kernel_int16.h"
#include "core/q4_kernel_avx512.h"

namespace pntk::q4 {
namespace {

// The int16 GEMV's traits (q4_kernel_int16.h) over the avx512 family's.
struct Avx512Vnni : Avx512 {
  static constexpr int kInt16Rows = 4, kInt16Vectors = 2;
  static constexpr bool kInt16RowInRegisters = true;  // a tile's y: 4 of the 32 registers
  // vpdpwssd: latency 5, about 1 per cycle here. 8 chains (2 per vector at M = 1) ran 5-13%
  // faster than 16 and the same as 4 (Xeon SPR, 2048x1024 in L2, fp16 x, M = 1 and 8).
  static constexpr int kInt16Chains = 8;

  static I zero_int() { return _mm512_setzero_si512(); }
  static I add_int(I a, I b) { return _mm512_add_epi32(a, b); }
  static I broadcast_pair(uint32_t pair) { return _mm512_set1_epi32(static_cast<int>(pair)); }
  template <int J>
  static I nibble_pairs(I w) {
    return _mm512_and_si512(J == 0 ? w : _mm512_srli_epi32(w, 4 * J), _mm512_set1_epi32(0x000F000F));
  }
  static I dot_pairs(I acc, I a, I b) { return _mm512_dpwssd_epi32(acc, a, b); }
  static F to_float(I v) { return _mm512_cvtepi32_ps(v); }
};

using Kernels = Q4Kernels<Avx512>;
using Gemv = Int16Gemv<Avx512Vnni, Kernels>;

}  // namespace
}  // namespace pntk::q4
PNTK_TARGET_END

namespace pntk::q4 {
extern const Q4CpuKernel kQ4KernelAvx512Vnni{"avx512vnni", Gemv::prepare, Gemv::gemv_tile, Kernels::gemm_tile};
}  // namespace pntk::q4
#endif  // PNTK_X86_64
