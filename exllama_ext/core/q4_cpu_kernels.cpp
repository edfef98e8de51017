// The CPU q4 kernel table: every family built into this binary, filtered at run time by
// what the CPU supports (cpu_features.h). The best one runs unless a test picks another.
#include <atomic>
#include <cstdlib>

#include "core/cpu_features.h"
#include "core/errors.h"
#include "core/q4_matrix.h"
#include "core/simd_target.h"

namespace pntk {

namespace q4 {
extern const Q4CpuKernel kQ4KernelScalar;
#if PNTK_X86_64
extern const Q4CpuKernel kQ4KernelAvx2, kQ4KernelAvx512, kQ4KernelAvx512Bf16, kQ4KernelAvx512Vnni;
#elif PNTK_AARCH64
extern const Q4CpuKernel kQ4KernelNeon;
#endif
}  // namespace q4

namespace {

// CPU features (as /proc/cpuinfo names them) that one flag of CpuFeatures stands for.
struct Requirement {
  std::vector<std::string> features;
  bool present;
};
struct Family {
  const Q4CpuKernel* kernel;
  std::vector<Requirement> requires;
};

// Every family built into this binary, best first.
std::vector<Family> families() {
  const CpuFeatures& cpu = cpu_features();
#if PNTK_X86_64
  const Requirement avx2{{"avx2", "fma", "f16c"}, cpu.avx2_fma_f16c};
  const Requirement avx512{{"avx512f", "avx512bw", "avx512vl", "avx512dq"}, cpu.avx512};
  return {{&q4::kQ4KernelAvx512Vnni, {avx2, avx512, {{"avx512_vnni"}, cpu.avx512_vnni}}},
          {&q4::kQ4KernelAvx512Bf16, {avx2, avx512, {{"avx512_bf16"}, cpu.avx512_bf16}}},
          {&q4::kQ4KernelAvx512, {avx2, avx512}},
          {&q4::kQ4KernelAvx2, {avx2}},
          {&q4::kQ4KernelScalar, {}}};
#elif PNTK_AARCH64
  return {{&q4::kQ4KernelNeon, {{{"asimd"}, cpu.neon}}}, {&q4::kQ4KernelScalar, {}}};
#else
  (void)cpu;
  return {{&q4::kQ4KernelScalar, {}}};
#endif
}

// The runnable family called `name`, else an error naming `field` and the runnable ones.
const Q4CpuKernel& find_kernel(const std::string& name, const char* field) {
  std::string available;
  for (const Q4CpuKernel* kernel : q4_cpu_kernels()) {
    if (name == kernel->name) return *kernel;
    available += (available.empty() ? "" : ", ") + std::string(kernel->name);
  }
  fail_argument(field, "'" + name + "' is not available on this CPU (available: " + available + ")");
}

// The best family, or the one PNTK_CPU_KERNEL names.
std::atomic<const Q4CpuKernel*>& selected() {
  static std::atomic<const Q4CpuKernel*> kernel{[] {
    const char* name = std::getenv("PNTK_CPU_KERNEL");
    return name && *name ? &find_kernel(name, "PNTK_CPU_KERNEL") : q4_cpu_kernels().front();
  }()};
  return kernel;
}

}  // namespace

std::vector<CpuKernelFamily> q4_cpu_kernel_families() {
  std::vector<CpuKernelFamily> out;
  for (const Family& family : families()) {
    CpuKernelFamily& f = out.emplace_back(CpuKernelFamily{family.kernel->name, {}, {}});
    for (const Requirement& r : family.requires) {
      f.requires.insert(f.requires.end(), r.features.begin(), r.features.end());
      if (!r.present) f.missing.insert(f.missing.end(), r.features.begin(), r.features.end());
    }
  }
  return out;
}

std::vector<const Q4CpuKernel*> q4_cpu_kernels() {
  std::vector<const Q4CpuKernel*> kernels;
  for (const Family& family : families()) {
    bool runs = true;
    for (const Requirement& r : family.requires) runs = runs && r.present;
    if (runs) kernels.push_back(family.kernel);
  }
  return kernels;
}

const Q4CpuKernel& q4_cpu_kernel() { return *selected().load(); }

void q4_set_cpu_kernel(const std::string& name) { selected().store(&find_kernel(name, "kernel")); }

}  // namespace pntk
