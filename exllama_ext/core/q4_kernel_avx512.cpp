// AVX-512 (F/BW/VL/DQ) q4 kernels; the algorithm is in q4_kernel_impl.h, the traits in
// q4_kernel_avx512.h.
#include "core/q4_kernel_avx512.h"

namespace pntk::q4 {

namespace {

using Kernels = Q4Kernels<Avx512>;

}  // namespace

extern const Q4CpuKernel kQ4KernelAvx512{"avx512", Kernels::prepare, Kernels::gemv_tile, Kernels::gemm_tile};

}  // namespace pntk::q4
