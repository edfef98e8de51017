// The CPU q4 kernel table: every family built into this binary, filtered at run time by
// what the CPU supports (cpu_features.h). The best one runs unless a test picks another.
#include <atomic>

#include "core/cpu_features.h"
#include "core/errors.h"
#include "core/q4_matrix.h"
#include "core/simd_target.h"

namespace pntk {

namespace q4 {
extern const Q4CpuKernel kQ4KernelScalar;
#if PNTK_X86_64
extern const Q4CpuKernel kQ4KernelAvx2, kQ4KernelAvx512, kQ4KernelAvx512Bf16;
#elif PNTK_AARCH64
extern const Q4CpuKernel kQ4KernelNeon;
#endif
}  // namespace q4

namespace {

std::atomic<const Q4CpuKernel*>& selected() {
  static std::atomic<const Q4CpuKernel*> kernel{q4_cpu_kernels().front()};
  return kernel;
}

}  // namespace

std::vector<const Q4CpuKernel*> q4_cpu_kernels() {
  std::vector<const Q4CpuKernel*> kernels;
#if PNTK_X86_64
  if (cpu_features().avx512_bf16) kernels.push_back(&q4::kQ4KernelAvx512Bf16);
  if (cpu_features().avx512) kernels.push_back(&q4::kQ4KernelAvx512);
  if (cpu_features().avx2_fma_f16c) kernels.push_back(&q4::kQ4KernelAvx2);
#elif PNTK_AARCH64
  if (cpu_features().neon) kernels.push_back(&q4::kQ4KernelNeon);
#endif
  kernels.push_back(&q4::kQ4KernelScalar);
  return kernels;
}

const Q4CpuKernel& q4_cpu_kernel() { return *selected().load(); }

void q4_set_cpu_kernel(const std::string& name) {
  std::string available;
  for (const Q4CpuKernel* kernel : q4_cpu_kernels()) {
    if (name == kernel->name) {
      selected().store(kernel);
      return;
    }
    available += (available.empty() ? "" : ", ") + std::string(kernel->name);
  }
  fail_argument("kernel", "'" + name + "' is not available on this CPU (available: " + available + ")");
}

}  // namespace pntk
