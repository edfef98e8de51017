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

// fp16: 10 fraction bits, emin -14, max 65504.
inline uint16_t double_to_half_bits(double x) {
  const double r = round_to_format(x, 10, -14);
  const float f = static_cast<float>(r);  // exact: r has <= 11 significant bits
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  if (std::isnan(r)) return static_cast<uint16_t>(sign | 0x7e00u);
  const double magnitude = std::fabs(r);
  if (magnitude > 65504.0) return static_cast<uint16_t>(sign | 0x7c00u);
  if (magnitude < 6.103515625e-05) {  // subnormal: value = m * 2^-24
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(magnitude * 16777216.0));
  }
  const uint32_t exponent = ((u >> 23) & 0xffu) - 127u + 15u;
  const uint32_t mantissa = (u >> 13) & 0x3ffu;
  return static_cast<uint16_t>(sign | (exponent << 10) | mantissa);
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
