// Double-float ("df") arithmetic: a value is hi + lo, two fp32 numbers. The sequence of fp32
// operations below is SLEEF's (src/libm/sleefsimdsp.c logkf / expkf / xpowf and df.h, the FMA
// variants used by its AVX2 and AVX-512 builds); every std::fma is one fused operation there,
// every other operator one rounded fp32 operation (this file builds with -ffp-contract=off).
#include "core/torch_pow.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/simd_target.h"

#if PNTK_AARCH64 && defined(__linux__)
#include <sys/auxv.h>
#include <sys/prctl.h>
#endif

namespace pntk {
namespace {

struct DoubleFloat {
  float hi, lo;
};

DoubleFloat df_add2(float x, float y) {  // exact sum of two floats
  const float s = x + y;
  const float v = s - x;
  return {s, (x - (s - v)) + (y - v)};
}
DoubleFloat df_add2(DoubleFloat x, float y) {
  const float s = x.hi + y;
  const float v = s - x.hi;
  const float t = (x.hi - (s - v)) + (y - v);
  return {s, t + x.lo};
}
DoubleFloat df_add2(DoubleFloat x, DoubleFloat y) {
  const float s = x.hi + y.hi;
  const float v = s - x.hi;
  const float t = (x.hi - (s - v)) + (y.hi - v);
  return {s, t + (x.lo + y.lo)};
}
DoubleFloat df_add(DoubleFloat x, DoubleFloat y) {  // |x| >= |y|
  const float s = x.hi + y.hi;
  return {s, (((x.hi - s) + y.hi) + x.lo) + y.lo};
}
DoubleFloat df_add(float x, DoubleFloat y) {  // |x| >= |y|
  const float s = x + y.hi;
  return {s, ((x - s) + y.hi) + y.lo};
}
DoubleFloat df_normalize(DoubleFloat t) {
  const float s = t.hi + t.lo;
  return {s, (t.hi - s) + t.lo};
}
DoubleFloat df_scale(DoubleFloat d, float s) { return {d.hi * s, d.lo * s}; }
DoubleFloat df_mul(DoubleFloat x, float y) {
  const float s = x.hi * y;
  return {s, std::fma(x.lo, y, std::fma(x.hi, y, -s))};
}
DoubleFloat df_mul(DoubleFloat x, DoubleFloat y) {
  const float s = x.hi * y.hi;
  return {s, std::fma(x.hi, y.lo, std::fma(x.lo, y.hi, std::fma(x.hi, y.hi, -s)))};
}
DoubleFloat df_square(DoubleFloat x) {
  const float s = x.hi * x.hi;
  return {s, std::fma(x.hi + x.hi, x.lo, std::fma(x.hi, x.hi, -s))};
}
DoubleFloat df_div(DoubleFloat n, DoubleFloat d) {
  const float t = 1.0f / d.hi;
  const float s = n.hi * t;
  const float u = std::fma(t, n.hi, -s);
  const float v = std::fma(-d.lo, t, std::fma(-d.hi, t, 1.0f));
  return {s, std::fma(s, v, std::fma(n.lo, t, u))};
}

// ln(d) as a double-float, d > 0 normal: d = m * 2^e with m in [0.75, 1.5),
// ln d = e ln2 + 2 atanh(x), x = (m-1)/(m+1), the atanh series evaluated in df.
DoubleFloat log_df(float d) {
  const float e = static_cast<float>(std::ilogb(d * (1.0f / 0.75f)));
  int exponent;
  float m = std::frexp(d, &exponent) * 2.0f;  // [1, 2)
  if (m >= 1.5f) m *= 0.5f;                   // [0.75, 1.5), as _mm512_getmant_ps(p75_1p5)
  const DoubleFloat x = df_div(df_add2(-1.0f, m), df_add2(1.0f, m));
  const DoubleFloat x2 = df_square(x);
  float t = 0.240320354700088500976562f;
  t = std::fma(t, x2.hi, 0.285112679004669189453125f);
  t = std::fma(t, x2.hi, 0.400007992982864379882812f);
  const DoubleFloat c{0.66666662693023681640625f, 3.69183861259614332084311e-09f};
  DoubleFloat s = df_mul(DoubleFloat{0.69314718246459960938f, -1.904654323148236017e-09f}, e);
  s = df_add(s, df_scale(x, 2.0f));
  return df_add(s, df_mul(df_mul(x2, x), df_add2(df_mul(x2, t), c)));
}

// exp of a double-float: q = rint(d / ln2), s = d - q ln2 (Cody-Waite, ln2 = L2U + L2L), polynomial.
float exp_df(DoubleFloat d) {
  constexpr float kLog2E = 1.442695040888963407359924681001892137426645954152985934135449406931f;
  constexpr float kLn2Upper = 0.693145751953125f;
  constexpr float kLn2Lower = 1.428606765330187045e-06f;
  const float u0 = (d.hi + d.lo) * kLog2E;
  const int q = static_cast<int>(std::nearbyint(u0));
  const float qf = static_cast<float>(q);
  DoubleFloat s = df_add2(d, qf * -kLn2Upper);
  s = df_add2(s, qf * -kLn2Lower);
  s = df_normalize(s);
  float u = 0.00136324646882712841033936f;
  u = std::fma(u, s.hi, 0.00836596917361021041870117f);
  u = std::fma(u, s.hi, 0.0416710823774337768554688f);
  u = std::fma(u, s.hi, 0.166665524244308471679688f);
  u = std::fma(u, s.hi, 0.499999850988388061523438f);
  DoubleFloat t = df_add(s, df_mul(df_square(s), u));
  t = df_add(1.0f, t);
  if (d.hi < -104.0f) return 0.0f;
  return std::ldexp(t.hi + t.lo, q);
}

#if PNTK_AARCH64
// ATen's SVE256 capability: Linux, SVE with a 256-bit vector length, and BF16.
bool aten_sve256() {
#if defined(__linux__)
  constexpr unsigned long kHwcapSve = 1ul << 22, kHwcap2Bf16 = 1ul << 14;  // asm/hwcap.h
  constexpr int kPrSveGetVl = 51, kPrSveVlLenMask = 0xffff;               // linux/prctl.h
  if (!(getauxval(AT_HWCAP) & kHwcapSve) || !(getauxval(AT_HWCAP2) & kHwcap2Bf16)) return false;
  const int vl = prctl(kPrSveGetVl);
  return vl > 0 && (vl & kPrSveVlLenMask) == 32;
#else
  return false;
#endif
}
#endif

// -1: a value ATen ignores (it warns and detects the CPU, as here).
int block_for_capability(const char* name) {
#if PNTK_AARCH64
  if (std::strcmp(name, "default") == 0) return 8;
  if (std::strcmp(name, "sve128") == 0) return 8;  // SVE128 or, without it, DEFAULT: both NEON-sized
  if (std::strcmp(name, "sve256") == 0 || std::strcmp(name, "sve") == 0) return aten_sve256() ? 16 : 8;
#else
  if (std::strcmp(name, "default") == 0) return 0;
  if (std::strcmp(name, "avx512") == 0) return 32;
  if (std::strcmp(name, "avx2") == 0) return 16;
#endif
  return -1;
}

}  // namespace

float sleef_powf_u10(float x, float y) {
  if (y == 0.0f || x == 1.0f) return 1.0f;
  return exp_df(df_mul(log_df(std::fabs(x)), y));
}

int torch_pow_block() {
  static const int block = [] {
    if (const char* forced = std::getenv("ATEN_CPU_CAPABILITY")) {
      if (const int b = block_for_capability(forced); b >= 0) return b;
    }
#if PNTK_X86_64
    __builtin_cpu_init();
    // ATen picks AVX-512 when F, BW, VL and DQ are all there, else AVX2 (with FMA).
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
      return 32;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 16;
#elif PNTK_AARCH64
    return aten_sve256() ? 16 : 8;  // SVE256: 8-float SVE vectors; else (DEFAULT, SVE128) NEON's 4
#endif
    return 0;
  }();
  return block;
}

std::vector<float> torch_pow_scalar_base(float base, const std::vector<float>& exponents) {
  const size_t n = exponents.size();
  const size_t block = static_cast<size_t>(torch_pow_block());
  const size_t vectorised = block ? (n / block) * block : 0;
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i)
    out[i] = i < vectorised ? sleef_powf_u10(base, exponents[i]) : std::pow(base, exponents[i]);
  return out;
}

}  // namespace pntk
