// One function per scaling method, each returning the fp32 inverse frequencies [d/2].
// They reproduce the reference code bit for bit where it is deterministic: every operation
// below is one fp32 operation in the reference's order (this file builds with
// -ffp-contract=off), derived bases are computed in double and rounded to fp32 before powf,
// and `scalar / tensor` is torch's reciprocal(tensor) * scalar.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "core/rope_plan.h"
#include "core/torch_pow.h"

namespace pntk {
namespace {

using FloatVector = std::vector<float>;

FloatVector reciprocal(const FloatVector& x) {
  FloatVector out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = 1.0f / x[i];
  return out;
}

// 1 / (s * p_i): the interpolated (position-compressed) frequencies of pntk and yarn.
FloatVector interpolated(const FloatVector& p, double factor) {
  const float s = static_cast<float>(factor);
  FloatVector out(p.size());
  for (size_t i = 0; i < p.size(); ++i) out[i] = 1.0f / (s * p[i]);
  return out;
}

// base * ratio^(d/(d-2)) in double: the NTK-aware base change (ExLlama alpha, dynamic, pntk).
double ntk_base(double base, double ratio, int dim) {
  return base * std::pow(ratio, static_cast<double>(dim) / static_cast<double>(dim - 2));
}

// clamp((fp32(i) - lo) / (hi - lo), 0, 1) in fp32; hi += 0.001 if lo == hi (in double).
FloatVector linear_ramp(double low, double high, int count) {
  if (low == high) high += 0.001;
  const float low_f = static_cast<float>(low);
  const float width = static_cast<float>(high - low);
  FloatVector ramp(count);
  for (int i = 0; i < count; ++i) {
    const float x = (static_cast<float>(i) - low_f) / width;
    ramp[i] = std::min(std::max(x, 0.0f), 1.0f);
  }
  return ramp;
}

// a * (1 - m) + c * m with m = 1 - ramp: keeps `a` where the ramp is 1 and `c` where it is 0.
FloatVector blend(const FloatVector& a, const FloatVector& c, const FloatVector& ramp) {
  FloatVector out(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const float m = 1.0f - ramp[i];
    out[i] = a[i] * (1.0f - m) + c[i] * m;
  }
  return out;
}

FloatVector inv_freq_none(const RopePlan& plan, int64_t) {
  return reciprocal(position_frequencies(plan.base, plan.rotary_dim));
}

// Transformers "linear": default inv_freq, then `inv_freq /= factor`.
FloatVector inv_freq_linear(const RopePlan& plan, int64_t) {
  FloatVector inv = inv_freq_none(plan, 0);
  const float s = static_cast<float>(plan.factor);
  for (float& x : inv) x /= s;
  return inv;
}

// NTK-aware: base * alpha^(d/(d-2)). A runner's alpha_value is already in plan.base; a config
// of type "ntk" brings its own alpha (ntk_alpha).
FloatVector inv_freq_ntk(const RopePlan& plan, int64_t) {
  const double base = plan.ntk_alpha == 1.0 ? plan.base : ntk_base(plan.base, plan.ntk_alpha, plan.rotary_dim);
  return reciprocal(position_frequencies(base, plan.rotary_dim));
}

// Transformers "dynamic": L = max_position_embeddings, n = max(seq_len, L),
// base' = base * ((s*n/L) - (s-1))^(d/(d-2)).
FloatVector inv_freq_dynamic(const RopePlan& plan, int64_t seq_len) {
  const double length = static_cast<double>(plan.original_max_position_embeddings);
  const double n = std::max(static_cast<double>(seq_len), length);
  const double s = plan.factor;
  const double ratio = (s * n / length) - (s - 1.0);
  return reciprocal(position_frequencies(ntk_base(plan.base, ratio, plan.rotary_dim), plan.rotary_dim));
}

// airophin partial NTK (bhenrym14): three sets, blended twice with ramps over the pair index,
//   f = linear*(1-m1) + ntk*m1,   m1 = 1 - ramp(beta range (1.25, 0.75))
//   f = f*(1-m2) + base*m2,       m2 = 1 - ramp(gamma range (16, 2))
// with s integer, ntk base b*s^(d/(d-2)), ranges measured at the original length.
FloatVector inv_freq_pntk(const RopePlan& plan, int64_t) {
  const int dim = plan.rotary_dim;
  const FloatVector p = position_frequencies(plan.base, dim);
  const FloatVector base_set = reciprocal(p);
  const FloatVector linear_set = interpolated(p, plan.factor);
  const FloatVector ntk_set = reciprocal(position_frequencies(ntk_base(plan.base, plan.factor, dim), dim));
  const CorrectionRange& beta = plan.correction_ranges.at(0);
  const CorrectionRange& gamma = plan.correction_ranges.at(1);
  const FloatVector mixed = blend(linear_set, ntk_set, linear_ramp(beta.low, beta.high, dim / 2));
  return blend(mixed, base_set, linear_ramp(gamma.low, gamma.high, dim / 2));
}

// YaRN: inv = interp*(1-w) + extrap*w, w = 1 - ramp(range(beta_fast, beta_slow)).
FloatVector inv_freq_yarn(const RopePlan& plan, int64_t) {
  const int dim = plan.rotary_dim;
  const FloatVector p = position_frequencies(plan.base, dim);
  const CorrectionRange& range = plan.correction_ranges.at(0);
  return blend(interpolated(p, plan.factor), reciprocal(p), linear_ramp(range.low, range.high, dim / 2));
}

// Llama 3.1: wavelength bands around L/low_freq_factor and L/high_freq_factor.
FloatVector inv_freq_llama3(const RopePlan& plan, int64_t) {
  const FloatVector inv = inv_freq_none(plan, 0);
  const double length = static_cast<double>(plan.original_max_position_embeddings);
  const float low_wavelen = static_cast<float>(length / plan.low_freq_factor);
  const float high_wavelen = static_cast<float>(length / plan.high_freq_factor);
  const float two_pi = static_cast<float>(2.0 * M_PI);
  const float length_f = static_cast<float>(length);
  const float s = static_cast<float>(plan.factor);
  const float low_f = static_cast<float>(plan.low_freq_factor);
  const float band = static_cast<float>(plan.high_freq_factor - plan.low_freq_factor);
  FloatVector out(inv.size());
  for (size_t i = 0; i < inv.size(); ++i) {
    const float wavelen = (1.0f / inv[i]) * two_pi;
    const float scaled = wavelen > low_wavelen ? inv[i] / s : inv[i];
    const float smooth = ((1.0f / wavelen) * length_f - low_f) / band;
    const float smoothed = (1.0f - smooth) * scaled / s + smooth * scaled;
    const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
    out[i] = medium ? smoothed : scaled;
  }
  return out;
}

// longrope: 1 / (fp32(factor_i) * p_i), the long factors beyond the original length.
FloatVector inv_freq_longrope(const RopePlan& plan, int64_t seq_len) {
  const FloatVector p = position_frequencies(plan.base, plan.rotary_dim);
  const bool long_context = seq_len > plan.original_max_position_embeddings;
  const std::vector<double>& factors = long_context ? plan.long_factor : plan.short_factor;
  FloatVector out(p.size());
  for (size_t i = 0; i < p.size(); ++i) out[i] = 1.0f / (static_cast<float>(factors[i]) * p[i]);
  return out;
}

using InvFreqFunction = FloatVector (*)(const RopePlan&, int64_t);
struct MethodTraits {
  const char* name;
  InvFreqFunction inv_freq;
};
// Indexed by RopeMethod: the one registry of methods.
constexpr MethodTraits kMethods[] = {
    {"none", inv_freq_none},         {"linear", inv_freq_linear}, {"ntk", inv_freq_ntk},
    {"dynamic", inv_freq_dynamic},   {"pntk", inv_freq_pntk},     {"yarn", inv_freq_yarn},
    {"llama3", inv_freq_llama3},     {"longrope", inv_freq_longrope},
};
static_assert(sizeof(kMethods) / sizeof(kMethods[0]) == static_cast<int>(RopeMethod::longrope) + 1,
              "kMethods must list every RopeMethod in enum order");

const MethodTraits& traits(RopeMethod method) {
  const int index = static_cast<int>(method);
  if (index < 0 || index > static_cast<int>(RopeMethod::longrope)) std::abort();
  return kMethods[index];
}

}  // namespace

const char* method_name(RopeMethod method) { return traits(method).name; }

std::vector<float> position_frequencies(double base, int dim) {
  const float dim_f = static_cast<float>(dim);
  std::vector<float> exponents(dim / 2);
  for (int i = 0; i < dim / 2; ++i) exponents[i] = static_cast<float>(2 * i) / dim_f;
  return torch_pow_scalar_base(static_cast<float>(base), exponents);
}

std::vector<float> RopePlan::inv_freq(int64_t seq_len) const {
  if (seq_len <= 0) seq_len = overrides.static_tables ? max_seq_len : original_max_position_embeddings;
  return traits(method).inv_freq(*this, seq_len);
}

double correction_dim(double rotations, int dim, double base, double length) {
  return (dim * std::log(length / (rotations * 2 * M_PI))) / (2 * std::log(base));
}

CorrectionRange correction_range(const char* name, double rotations_low, double rotations_high, int dim,
                                 double base, double length, bool truncate) {
  double low = correction_dim(rotations_low, dim, base, length);
  double high = correction_dim(rotations_high, dim, base, length);
  if (truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  return {name, std::max(low, 0.0), std::min(high, static_cast<double>(dim - 1))};
}

}  // namespace pntk
