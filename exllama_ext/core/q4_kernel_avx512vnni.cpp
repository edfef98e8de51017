// AVX-512 VNNI q4 kernels: the VNNI GEMV (q4_kernel_avx512vnni.h) for fp16 and bf16 x, the
// avx512 family's GEMV for fp32 x and its GEMM.
#include "core/q4_kernel_avx512vnni.h"

namespace pntk::q4 {

extern const Q4CpuKernel kQ4KernelAvx512Vnni{"avx512vnni", VnniGemv::prepare, VnniGemv::gemv_tile,
                                             Avx512Kernels::gemm_tile};

}  // namespace pntk::q4
