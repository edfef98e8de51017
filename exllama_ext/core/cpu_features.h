// CPU feature detection for run-time kernel dispatch: one build runs on any x86-64 (or aarch64)
// and picks the widest kernel the CPU (and the OS, which must save the wider registers) allows.
#pragma once
#include <string>
#include <vector>

namespace pntk {

struct CpuFeatures {
  bool avx2_fma_f16c = false;  // AVX2 + FMA + F16C, OS saves YMM state
  bool avx512 = false;         // AVX-512 F/BW/VL/DQ, OS saves ZMM state
  bool avx512_bf16 = false;    // avx512 + AVX512_BF16 (vdpbf16ps)
  bool avx512_vnni = false;    // avx512 + AVX512_VNNI (vpdpwssd)
  bool neon = false;           // aarch64 Advanced SIMD (HWCAP_ASIMD; baseline there)
};

// Detected once, then cached.
const CpuFeatures& cpu_features();

// A CPU q4 kernel family built into this binary (q4_cpu_kernels.cpp, best first): the CPU
// features it needs (named as in /proc/cpuinfo; none for scalar) and those this CPU, or its OS,
// lacks (empty where it runs; q4_cpu_kernels() lists those).
struct CpuKernelFamily {
  std::string name;
  std::vector<std::string> requires;
  std::vector<std::string> missing;
};
std::vector<CpuKernelFamily> q4_cpu_kernel_families();

}  // namespace pntk
