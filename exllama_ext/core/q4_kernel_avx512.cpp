// AVX-512 (F/BW/VL/DQ) q4 kernels; the algorithm is in q4_kernel_impl.h, the traits in
// q4_kernel_avx512.h. x86-64 only, in a target region (simd_target.h).
#include "core/q4_kernel_simd.h"

#if PNTK_X86_64
PNTK_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#include "core/q4_kernel_f16c.h"
#include "core/q4_kernel_impl.h"
#include "core/q4_kernel_avx512.h"

namespace pntk::q4 {
namespace {
using Kernels = Q4Kernels<Avx512>;
}  // namespace
}  // namespace pntk::q4
PNTK_TARGET_END

namespace pntk::q4 {
extern const Q4CpuKernel kQ4KernelAvx512{"avx512", Kernels::prepare, Kernels::gemv_tile, Kernels::gemm_tile};
}  // namespace pntk::q4
#endif  // PNTK_X86_64
