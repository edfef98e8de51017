// Frequency factors of a plan: for each pair i, a float f_i whose longrope evaluation
//   fp32(1 / fp32(f_i * p_i))   (Transformers, vLLM: `1.0 / (ext_factors * base ** (...))`)
// equals the plan's inv_freq_i. The ideal ratio 1 / (inv_freq_i * p_i) rounded to fp32 misses
// by one ulp for some pairs, so its neighbours are searched too. torch evaluates `base ** e`
// with a vectorized pow that is sometimes 1 ulp off powf (e.g. base 10000, d = 96, pair 20), so
// among the candidates that hit inv_freq_i at powf's p_i, the one that stays closest to it at
// p_i's neighbouring floats wins.
#include "core/rope_export.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/errors.h"
#include "core/float_round.h"

namespace pntk {
namespace {

constexpr int kNeighbours = 4;  // floats tried on each side of the rounded ideal ratio

// The reference's fp32 evaluation (this file builds with -ffp-contract=off).
float longrope_inv_freq(float factor, float p) { return 1.0f / (factor * p); }

// Ranks a candidate: its miss at p, then its worst miss at p's two neighbours, then its distance
// from the ideal ratio (lexicographic, smaller is better).
struct Score {
  int64_t miss, neighbour_miss;
  double distance;
  bool operator<(const Score& o) const {
    if (miss != o.miss) return miss < o.miss;
    if (neighbour_miss != o.neighbour_miss) return neighbour_miss < o.neighbour_miss;
    return distance < o.distance;
  }
};

float best_factor(float target, float p) {
  const double ideal = 1.0 / (static_cast<double>(target) * static_cast<double>(p));
  const float p_below = std::nextafter(p, 0.0f), p_above = std::nextafter(p, INFINITY);
  auto score = [&](float f) {
    return Score{ulp_distance(longrope_inv_freq(f, p), target),
                 std::max(ulp_distance(longrope_inv_freq(f, p_below), target),
                          ulp_distance(longrope_inv_freq(f, p_above), target)),
                 std::fabs(f - ideal)};
  };
  float candidate = static_cast<float>(ideal);
  for (int k = 0; k < kNeighbours; ++k) candidate = std::nextafter(candidate, 0.0f);
  float best = candidate;
  Score best_score = score(best);
  for (int k = 0; k <= 2 * kNeighbours; ++k, candidate = std::nextafter(candidate, INFINITY)) {
    const Score s = score(candidate);
    if (s < best_score) {
      best = candidate;
      best_score = s;
    }
  }
  return best;
}

void check_exportable(const RopePlan& plan) {
  const RunnerOverrides& o = plan.overrides;
  const char* overrides = "<runner overrides>";
  if (o.theta && *o.theta != plan.config_theta)
    throw ConfigError(overrides, "theta", "cannot be exported: export writes the model's own RoPE scaling");
  if (o.alpha_value != 1.0)
    throw ConfigError(overrides, "alpha_value", "cannot be exported: export writes the model's own RoPE scaling");
  if (o.compress_pos_emb != 1.0)
    throw ConfigError(overrides, "compress_pos_emb",
                      "cannot be exported: export writes the model's own RoPE scaling");
  const std::string method = method_name(plan.method);
  switch (plan.method) {
    case RopeMethod::none:
      throw ConfigError(plan.source, plan.method_field, "the model has no RoPE scaling: there is nothing to export");
    case RopeMethod::dynamic:
      throw ConfigError(plan.source, plan.method_field,
                        "dynamic NTK cannot be exported: its frequencies change with the sequence length, "
                        "and per-dimension frequency factors (longrope, rope_freqs) are fixed");
    case RopeMethod::longrope:
      throw ConfigError(plan.source, plan.method_field,
                        "the model is already longrope: Transformers and vLLM read it as it is");
    default:
      break;
  }
}

}  // namespace

std::vector<float> frequency_factors(const RopePlan& plan) {
  check_exportable(plan);
  const std::vector<float> inv_freq = plan.inv_freq();
  const std::vector<float> p = position_frequencies(plan.base, plan.rotary_dim);
  std::vector<float> factors(inv_freq.size());
  for (size_t i = 0; i < factors.size(); ++i) factors[i] = best_factor(inv_freq[i], p[i]);
  return factors;
}

}  // namespace pntk
