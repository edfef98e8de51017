// What the SIMD q4 kernel files include before they open their target region (simd_target.h):
// the standard headers, the shared helpers and the intrinsics headers that the region bodies
// (q4_kernel_impl.h, q4_kernel_f16c.h, q4_kernel_avx512.h) use. Those bodies include nothing.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "core/q4_kernel_common.h"
#include "core/simd_target.h"

#if PNTK_X86_64
// GCC 12's _mm512_undefined_* initialize a variable with itself, which -Wall reports at each
// inlined use (GCC bug 105593, fixed in GCC 13): silenced for the intrinsics headers only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#elif PNTK_AARCH64
#include <arm_neon.h>
#endif
