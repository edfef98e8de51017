// Target regions: code compiled for one instruction set inside a file that is otherwise built
// for the baseline (x86-64, or armv8-a on aarch64). No file is compiled with -m flags: a
// translation unit built whole with -mavx512f also compiles every inline function and template
// it instantiates (std::vector's among them) for AVX-512, and the linker keeps one copy of each
// for the whole binary, which then runs on every CPU.
//
//   #include ...every header the region uses...      (so their code stays baseline)
//   PNTK_TARGET_BEGIN("avx2,fma,f16c")
//   #include "core/q4_kernel_impl.h"                 (region bodies: headers without #include)
//   namespace { ...kernels, internal linkage... }
//   PNTK_TARGET_END
//
// GCC: push_options / target / pop_options. Clang: an attribute pushed on every function
// declared in the region, lambdas included. scripts/check_isa_baseline.py (a ctest) checks the
// built binaries: no function with external or weak linkage may hold code past x86-64-v2.
#pragma once

#define PNTK_PRAGMA(tokens) _Pragma(#tokens)
#if defined(__clang__)
#define PNTK_TARGET_BEGIN(isa) PNTK_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define PNTK_TARGET_END PNTK_PRAGMA(clang attribute pop)
#else
#define PNTK_TARGET_BEGIN(isa) PNTK_PRAGMA(GCC push_options) PNTK_PRAGMA(GCC target(isa))
#define PNTK_TARGET_END PNTK_PRAGMA(GCC pop_options)
#endif

#if defined(__x86_64__) || defined(_M_X64)
#define PNTK_X86_64 1
#elif defined(__aarch64__)
#define PNTK_AARCH64 1
#endif
