// Round a double once, to nearest-even, into fp32 / fp16 / bf16 bit patterns.
// Going double -> float -> half would round twice; these helpers round exactly once.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace pntk {

// Round x to a binary format with `fraction_bits` stored fraction bits and minimum normal
// exponent `min_exponent`, in double arithmetic: q = 2^(max(e, emin) - fraction_bits) is the
// spacing of the target format around x, so nearbyint(x / q) * q is x rounded to nearest-even
// (x / q and the product are exact power-of-two scalings).
inline double round_to_format(double x, int fraction_bits, int min_exponent) {
  if (x == 0.0 || !std::isfinite(x)) return x;
  int exponent = std::ilogb(x);
  if (exponent < min_exponent) exponent = min_exponent;
  const double quantum = std::ldexp(1.0, exponent - fraction_bits);
  return std::nearbyint(x / quantum) * quantum;
}

// Round-to-nearest-even on the raw double bits: keep the top `kept` of the 52 fraction bits and
// round on the rest; a carry out of the fraction correctly bumps the exponent (and overflows to inf).
inline uint64_t round_fraction_bits(uint64_t magnitude_bits, int dropped) {
  const uint64_t kept = magnitude_bits >> dropped;
  const uint64_t rest = magnitude_bits & ((uint64_t{1} << dropped) - 1);
  const uint64_t half = uint64_t{1} << (dropped - 1);
  return kept + (rest > half || (rest == half && (kept & 1)));
}

// fp16: 10 fraction bits, emin -14, max 65504.
inline uint16_t double_to_half_bits(double x) {
  uint64_t u;
  std::memcpy(&u, &x, sizeof u);
  const uint16_t sign = static_cast<uint16_t>((u >> 48) & 0x8000u);
  const uint64_t magnitude = u & 0x7fffffffffffffffull;
  const int exponent = static_cast<int>(magnitude >> 52) - 1023;
  if (exponent > 1023) return static_cast<uint16_t>(sign | (magnitude & 0xfffffffffffffull ? 0x7e00u : 0x7c00u));
  if (exponent >= 16) return static_cast<uint16_t>(sign | 0x7c00u);
  if (exponent >= -14) {
    // Rebias the exponent from 1023 to 15 in place, then drop 42 fraction bits.
    const uint64_t rebased = magnitude - (static_cast<uint64_t>(1023 - 15) << 52);
    const uint64_t rounded = round_fraction_bits(rebased, 42);
    return static_cast<uint16_t>(sign | (rounded > 0x7c00u ? 0x7c00u : rounded));
  }
  // Subnormal (or zero): a multiple of 2^-24, rounded in double (x * 2^24 is exact).
  return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(std::fabs(x) * 16777216.0)));
}

// bf16: the top 16 bits of an fp32 (7 fraction bits, emin -126).
inline uint16_t double_to_bfloat16_bits(double x) {
  const double r = round_to_format(x, 7, -126);
  const float f = static_cast<float>(r);  // exact unless it overflows to inf, which is right
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  return static_cast<uint16_t>(u >> 16);
}

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    magnitude = mantissa ? NAN : INFINITY;
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400u), static_cast<int>(exponent) - 25);
  }
  uint32_t u;
  std::memcpy(&u, &magnitude, sizeof u);
  u |= sign;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float bfloat16_bits_to_float(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Distance in units in the last place between two finite floats (0: the same value).
inline int64_t ulp_distance(float a, float b) {
  auto ordered = [](float x) {  // maps floats onto integers in the same order
    int32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    return bits < 0 ? static_cast<int64_t>(INT32_MIN) - bits : static_cast<int64_t>(bits);
  };
  const int64_t d = ordered(a) - ordered(b);
  return d < 0 ? -d : d;
}

}  // namespace pntk
