// Resolution of a config (+ runner overrides) into a RopePlan: which method, which factor,
// which lengths. Validation of the method-specific fields lives here, apart from the math
// in rope_methods.cpp.
#include "core/rope_plan.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "core/errors.h"
#include "core/float_round.h"

namespace pntk {
namespace {

constexpr const char* kOverridesSource = "<runner overrides>";

struct MethodName {
  const char* config_type;  // as written in rope_scaling.type / rope_type
  RopeMethod method;
};
constexpr MethodName kConfigTypes[] = {
    {"linear", RopeMethod::linear}, {"ntk", RopeMethod::ntk},       {"dynamic", RopeMethod::dynamic},
    {"pntk", RopeMethod::pntk},     {"yarn", RopeMethod::yarn},     {"ntk-by-parts", RopeMethod::yarn},
    {"llama3", RopeMethod::llama3}, {"longrope", RopeMethod::longrope},
};

// Transformers 5's rope_parameters names the method rope_type; rope_scaling calls it type.
std::string type_field(const RopeScalingFields& scaling) {
  const std::string suffix = "rope_parameters";
  const std::string& key = scaling.key;
  const bool transformers5 =
      key.size() >= suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0;
  return transformers5 ? "rope_type" : "type";
}

std::string known_types() {
  std::string out = "default, none";
  for (const auto& entry : kConfigTypes) out += std::string(", ") + entry.config_type;
  return out;
}

// YaRN's default attention factor 0.1*ln(s)+1 (1 for s <= 1), with the mscale variant.
double yarn_mscale(double scale, double mscale) {
  if (scale <= 1) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

void validate_overrides(const RunnerOverrides& o) {
  if (o.theta && !(*o.theta > 0 && std::isfinite(*o.theta)))
    throw ConfigError(kOverridesSource, "theta", "must be positive, got " + format_number(*o.theta));
  if (!(o.alpha_value > 0 && std::isfinite(o.alpha_value)))
    throw ConfigError(kOverridesSource, "alpha_value", "must be positive, got " + format_number(o.alpha_value));
  if (!(o.compress_pos_emb > 0 && std::isfinite(o.compress_pos_emb)))
    throw ConfigError(kOverridesSource, "compress_pos_emb",
                      "must be positive, got " + format_number(o.compress_pos_emb));
  if (o.max_seq_len && *o.max_seq_len <= 0)
    throw ConfigError(kOverridesSource, "max_seq_len", "must be positive, got " + std::to_string(*o.max_seq_len));
}

}  // namespace

std::string format_number(double x) {
  char buffer[64];
  if (x == std::floor(x) && std::fabs(x) < 1e15) {
    std::snprintf(buffer, sizeof buffer, "%.0f", x);
  } else {
    std::snprintf(buffer, sizeof buffer, "%.10g", x);
  }
  return buffer;
}

namespace {

// The plan of the config as written; build_rope_plan adds the pntk_export record on top.
RopePlan resolve_plan(const ModelRopeConfig& config, const RunnerOverrides& overrides) {
  validate_overrides(overrides);
  RopePlan plan;
  plan.source = config.source;
  plan.overrides = overrides;
  plan.rotary_dim = config.rotary_dim;
  plan.config_theta = config.rope_theta;
  const int dim = config.rotary_dim;
  const double theta = overrides.theta.value_or(config.rope_theta);
  // ExLlama's calculate_rotary_embedding_base: alpha moves the base before any method.
  plan.base = theta * std::pow(overrides.alpha_value, static_cast<double>(dim) / (dim - 2));

  const int64_t max_positions = config.max_position_embeddings;
  const std::optional<RopeScalingFields>& scaling = config.scaling;
  auto fail = [&](const std::string& field, const std::string& message) -> void {
    throw ConfigError(config.source, (scaling ? scaling->key + "." : std::string()) + field, message);
  };
  // The pre-extension length: the top-level key (Phi-3 / airophin) wins, as in Transformers 5.
  std::optional<int64_t> original = config.original_max_position_embeddings;
  if (!original && scaling) original = scaling->original_max_position_embeddings;

  if (config.original_max_position_embeddings && *config.original_max_position_embeddings > max_positions)
    throw ConfigError(config.source, "original_max_position_embeddings",
                      "must not exceed max_position_embeddings (" + std::to_string(max_positions) + "), got " +
                          std::to_string(*config.original_max_position_embeddings));
  if (!scaling) {
    plan.method_field = "rope_scaling";
    if (original && *original < max_positions) {
      // The airophin convention: only original_max_position_embeddings marks the extension.
      plan.method = RopeMethod::pntk;
      plan.method_note = "inferred from original_max_position_embeddings < max_position_embeddings";
      plan.method_field = "original_max_position_embeddings";
    } else {
      plan.method = overrides.alpha_value != 1.0 ? RopeMethod::ntk : RopeMethod::none;
      plan.factor = overrides.alpha_value;
      plan.original_max_position_embeddings = plan.extended_max_position_embeddings = max_positions;
    }
  } else {
    plan.method_field = scaling->key + "." + type_field(*scaling);
    bool found = false;
    for (const auto& entry : kConfigTypes) {
      if (scaling->type == entry.config_type) {
        plan.method = entry.method;
        found = true;
      }
    }
    if (!found) fail(type_field(*scaling),
                     "unknown RoPE scaling type \"" + scaling->type + "\" (known: " + known_types() + ")");
    const bool needs_factor = plan.method != RopeMethod::pntk && plan.method != RopeMethod::longrope;
    if (needs_factor && !scaling->factor) fail("factor", "is required for rope type \"" + scaling->type + "\"");
    plan.factor = scaling->factor.value_or(1.0);
  }

  switch (plan.method) {
    case RopeMethod::none:
      plan.original_max_position_embeddings = plan.extended_max_position_embeddings = max_positions;
      break;
    case RopeMethod::ntk:
      if (scaling) plan.ntk_alpha = plan.factor;  // config type "ntk": factor is the NTK alpha
      plan.original_max_position_embeddings = plan.extended_max_position_embeddings = max_positions;
      break;
    case RopeMethod::linear:
      // Transformers' convention: max_position_embeddings is already the extended length.
      plan.original_max_position_embeddings =
          original.value_or(static_cast<int64_t>(std::llround(max_positions / plan.factor)));
      plan.extended_max_position_embeddings = max_positions;
      break;
    case RopeMethod::dynamic:
      plan.original_max_position_embeddings = max_positions;  // the L of the dynamic formula
      plan.extended_max_position_embeddings = static_cast<int64_t>(std::llround(max_positions * plan.factor));
      break;
    case RopeMethod::pntk: {
      if (!original)
        fail("original_max_position_embeddings", "is required for pntk (the pre-extension context length)");
      const std::string original_field = config.original_max_position_embeddings
                                             ? "original_max_position_embeddings"
                                             : scaling->key + ".original_max_position_embeddings";
      if (*original >= max_positions)
        throw ConfigError(config.source, original_field,
                          "must be smaller than max_position_embeddings (" + std::to_string(max_positions) +
                              ") for pntk, got " + std::to_string(*original));
      plan.factor = static_cast<double>(max_positions / *original);  // integer division, as the fork
      if (scaling && scaling->factor && *scaling->factor != plan.factor)
        fail("factor", "disagrees with max_position_embeddings // original_max_position_embeddings = " +
                           format_number(plan.factor));
      plan.original_max_position_embeddings = *original;
      plan.extended_max_position_embeddings = max_positions;
      plan.correction_ranges = {
          correction_range("beta", 1.25, 0.75, dim, plan.base, static_cast<double>(*original), true),
          correction_range("gamma", 16, 2, dim, plan.base, static_cast<double>(*original), true)};
      break;
    }
    case RopeMethod::yarn: {
      plan.original_max_position_embeddings = original.value_or(max_positions);
      plan.extended_max_position_embeddings =
          max_positions > plan.original_max_position_embeddings
              ? max_positions
              : static_cast<int64_t>(std::llround(plan.original_max_position_embeddings * plan.factor));
      // `or` defaults, as the reference: 0 means "use the default" too.
      plan.beta_fast = scaling->beta_fast.value_or(32.0);
      plan.beta_slow = scaling->beta_slow.value_or(1.0);
      plan.truncate = scaling->truncate.value_or(true);
      if (scaling->type == "ntk-by-parts") {
        plan.attention_factor = 1.0;
        plan.method_note = "ntk-by-parts: the YaRN paper's ablation, YaRN without attention scaling";
      } else if (scaling->attention_factor) {
        plan.attention_factor = *scaling->attention_factor;
      } else if (scaling->mscale.value_or(0) != 0 && scaling->mscale_all_dim.value_or(0) != 0) {
        plan.attention_factor =
            yarn_mscale(plan.factor, *scaling->mscale) / yarn_mscale(plan.factor, *scaling->mscale_all_dim);
      } else {
        plan.attention_factor = yarn_mscale(plan.factor, 1.0);
      }
      plan.correction_ranges = {correction_range("yarn", plan.beta_fast, plan.beta_slow, dim, plan.base,
                                                 static_cast<double>(plan.original_max_position_embeddings),
                                                 plan.truncate)};
      break;
    }
    case RopeMethod::llama3: {
      if (!original) fail("original_max_position_embeddings", "is required for llama3");
      if (!scaling->low_freq_factor) fail("low_freq_factor", "is required for llama3");
      if (!scaling->high_freq_factor) fail("high_freq_factor", "is required for llama3");
      plan.low_freq_factor = *scaling->low_freq_factor;
      plan.high_freq_factor = *scaling->high_freq_factor;
      if (!(plan.high_freq_factor > plan.low_freq_factor))
        fail("high_freq_factor", "must be greater than low_freq_factor");
      plan.original_max_position_embeddings = *original;
      plan.extended_max_position_embeddings =
          max_positions > *original ? max_positions : static_cast<int64_t>(std::llround(*original * plan.factor));
      break;
    }
    case RopeMethod::longrope: {
      if (!original) fail("original_max_position_embeddings", "is required for longrope");
      const size_t pairs = static_cast<size_t>(dim / 2);
      if (scaling->long_factor.size() != pairs)
        fail("long_factor", "must list rotary_dim/2 = " + std::to_string(pairs) + " numbers, got " +
                                std::to_string(scaling->long_factor.size()));
      if (scaling->short_factor.size() != pairs)
        fail("short_factor", "must list rotary_dim/2 = " + std::to_string(pairs) + " numbers, got " +
                                 std::to_string(scaling->short_factor.size()));
      for (size_t i = 0; i < pairs; ++i) {
        if (!(scaling->long_factor[i] > 0)) fail("long_factor[" + std::to_string(i) + "]", "must be positive");
        if (!(scaling->short_factor[i] > 0)) fail("short_factor[" + std::to_string(i) + "]", "must be positive");
      }
      plan.long_factor = scaling->long_factor;
      plan.short_factor = scaling->short_factor;
      plan.original_max_position_embeddings = *original;
      plan.extended_max_position_embeddings = max_positions;
      if (!scaling->factor) plan.factor = static_cast<double>(max_positions) / static_cast<double>(*original);
      if (scaling->attention_factor) {
        plan.attention_factor = *scaling->attention_factor;
      } else if (plan.factor > 1.0) {
        plan.attention_factor =
            std::sqrt(1 + std::log(plan.factor) / std::log(static_cast<double>(*original)));
      }
      break;
    }
  }
  plan.max_seq_len = overrides.max_seq_len.value_or(plan.extended_max_position_embeddings);
  return plan;
}

// A config written by `pntk export`: its longrope scaling must be the recorded plan in longrope
// form (inv_freq within 1 ulp, same attention factor); the plan is then the recorded one.
RopePlan resolve_exported_plan(const ModelRopeConfig& config, const RunnerOverrides& overrides) {
  const ExportRecord& record = *config.export_record;
  ModelRopeConfig exported = config;
  exported.export_record.reset();
  ModelRopeConfig original = exported;
  original.scaling = record.scaling;
  if (!exported.scaling || exported.scaling->type != "longrope")
    throw ConfigError(config.source, "pntk_export",
                      "belongs to a longrope rope_scaling (as pntk export writes it); the RoPE scaling was "
                      "changed after export: restore the backup of config.json or remove pntk_export");
  const RopePlan recorded = resolve_plan(original, {});
  const RopePlan longrope = resolve_plan(exported, {});
  if (record.method != method_name(recorded.method))
    throw ConfigError(config.source, "pntk_export.method",
                      "says \"" + record.method + "\" but the recorded scaling gives " + method_name(recorded.method));
  if (record.factor != recorded.factor)
    throw ConfigError(config.source, "pntk_export.factor",
                      "says " + format_number(record.factor) + " but the recorded scaling gives " +
                          format_number(recorded.factor));
  const std::vector<float> expected = recorded.inv_freq();
  const struct {
    const char* field;
    std::vector<float> inv_freq;
  } sets[] = {{"long_factor", longrope.inv_freq(longrope.original_max_position_embeddings + 1)},
              {"short_factor", longrope.inv_freq(longrope.original_max_position_embeddings)}};
  for (const auto& set : sets) {
    for (size_t i = 0; i < expected.size(); ++i) {
      if (ulp_distance(set.inv_freq[i], expected[i]) > 1)
        throw ConfigError(config.source, exported.scaling->key + "." + set.field + "[" + std::to_string(i) + "]",
                          "does not reproduce the recorded " + record.method + " plan (pntk_export): the file "
                          "was edited after export; re-export it or remove pntk_export");
    }
  }
  if (longrope.attention_factor != recorded.attention_factor)
    throw ConfigError(config.source, exported.scaling->key + ".attention_factor",
                      "is " + format_number(longrope.attention_factor) + " but the recorded " + record.method +
                          " plan (pntk_export) needs " + format_number(recorded.attention_factor));
  RopePlan plan = resolve_plan(original, overrides);
  plan.exported_as = record.exported_as;
  return plan;
}

}  // namespace

RopePlan build_rope_plan(const ModelRopeConfig& config, const RunnerOverrides& overrides) {
  if (config.export_record) return resolve_exported_plan(config, overrides);
  return resolve_plan(config, overrides);
}

std::string RopePlan::describe() const {
  std::ostringstream out;
  out << "pntk: RoPE " << method_name(method) << ", scaling factor " << format_number(factor) << " ("
      << original_max_position_embeddings << " -> " << extended_max_position_embeddings << " positions), base "
      << format_number(overrides.theta.value_or(config_theta)) << ", rotary dim " << rotary_dim;
  if (attention_factor != 1.0) out << ", attention factor " << format_number(attention_factor);
  if (!method_note.empty()) out << ", " << method_note;
  if (!exported_as.empty()) out << ", exported as " << exported_as;
  if (method == RopeMethod::dynamic && overrides.static_tables)
    out << ", dynamic base evaluated once at " << max_seq_len << " positions (static tables)";
  std::string listed;
  auto add = [&](const std::string& item) { listed += (listed.empty() ? "" : " ") + item; };
  if (overrides.theta && *overrides.theta != config_theta) add("theta=" + format_number(*overrides.theta));
  if (overrides.alpha_value != 1.0) add("alpha_value=" + format_number(overrides.alpha_value));
  if (overrides.compress_pos_emb != 1.0) add("compress_pos_emb=" + format_number(overrides.compress_pos_emb));
  if (overrides.max_seq_len && *overrides.max_seq_len != extended_max_position_embeddings)
    add("max_seq_len=" + std::to_string(*overrides.max_seq_len));
  if (!listed.empty()) out << ", overrides " << listed;
  return out.str();
}

}  // namespace pntk
