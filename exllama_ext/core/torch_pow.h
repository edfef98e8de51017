// x ** y for fp32 exactly as torch computes `base ** tensor` on the CPU, so inv_freq matches the
// reference bit for bit instead of within 1 ulp (the references build p_i = base ** e_i there).
//
// ATen's vectorised pow runs SLEEF's powf_u10 (max error 1 ulp, so not always correctly rounded)
// on whole blocks of 2 vectors and std::pow (glibc powf) on the tail: elements [0, block*floor(n/block))
// take SLEEF's value. x86-64: block = 32 floats with AVX-512, 16 with AVX2, 0 (all glibc) without
// either. aarch64 (Linux): 16 with ATen's SVE256 capability (SVE at a 256-bit vector length, and
// BF16: Sleef_powfx_u10sve), else 8 (DEFAULT and SVE128 run NEON's Sleef_powf4_u10). As ATen's CPU
// dispatch picks them; ATEN_CPU_CAPABILITY overrides it there and here (default|avx2|avx512 on
// x86, default|sve128|sve256|sve on aarch64; other values are ignored, as ATen ignores them).
#pragma once
#include <vector>

namespace pntk {

// SLEEF's powf_u10 algorithm (double-float log, product, double-float exp) for finite x > 0.
float sleef_powf_u10(float x, float y);

// Elements per vectorised block of torch's CPU pow kernel on this machine (32, 16, 8 or 0).
int torch_pow_block();

// out_i = base ** exponents_i as torch's CPU kernel computes it for a tensor of this length.
std::vector<float> torch_pow_scalar_base(float base, const std::vector<float>& exponents);

}  // namespace pntk
