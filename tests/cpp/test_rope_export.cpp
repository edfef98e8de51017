// Frequency factors (export to longrope / rope_freqs) and the pntk_export record.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "core/errors.h"
#include "core/float_round.h"
#include "core/model_config.h"
#include "core/rope_export.h"
#include "core/rope_plan.h"

namespace pntk {
namespace {

constexpr int64_t kMaxUlp = 1;  // factors reproduce inv_freq exactly where a float can, else within 1 ulp

RopePlan plan_of(const std::string& json) { return build_rope_plan(parse_model_config(json, "test.json")); }

std::string llama(int heads_dim, const std::string& extra) {
  return R"({"hidden_size": )" + std::to_string(heads_dim * 4) + R"(, "num_attention_heads": 4, )" + extra + "}";
}

// airophin-13b's RoPE fields: d = 128, trained at 4096, extended to 16384 (pntk, factor 4).
std::string airophin_like() {
  return llama(128, R"("max_position_embeddings": 16384, "original_max_position_embeddings": 4096)");
}

std::string json_list(const std::vector<float>& values) {
  std::string out = "[";
  char buffer[40];
  for (size_t i = 0; i < values.size(); ++i) {
    std::snprintf(buffer, sizeof buffer, "%.17g", static_cast<double>(values[i]));  // exact
    out += (i ? ", " : "") + std::string(buffer);
  }
  return out + "]";
}

// What `pntk export --to hf` writes for a pntk model: longrope factors plus the record.
std::string exported_pntk(const std::vector<float>& factors, const std::string& method = "pntk") {
  const std::string list = json_list(factors);
  return llama(128, R"("max_position_embeddings": 16384, "original_max_position_embeddings": 4096,
    "rope_scaling": {"rope_type": "longrope", "factor": 4, "original_max_position_embeddings": 4096,
                     "attention_factor": 1.0, "long_factor": )" + list + R"(, "short_factor": )" + list + R"(},
    "pntk_export": {"method": ")" + method + R"(", "factor": 4, "exported_as": "longrope", "rope_scaling": null})");
}

void expect_reproduces(const RopePlan& plan) {
  const std::vector<float> factors = frequency_factors(plan);
  const std::vector<float> p = position_frequencies(plan.base, plan.rotary_dim);
  const std::vector<float> inv = plan.inv_freq();
  ASSERT_EQ(factors.size(), inv.size());
  int exact = 0;
  for (size_t i = 0; i < inv.size(); ++i) {
    const float longrope = 1.0f / (factors[i] * p[i]);
    EXPECT_LE(ulp_distance(longrope, inv[i]), kMaxUlp) << plan.describe() << " pair " << i;
    exact += longrope == inv[i];
  }
  EXPECT_GE(exact, static_cast<int>(inv.size()) * 3 / 4) << plan.describe();
}

TEST(FrequencyFactors, ReproducePntkAtEveryHeadDim) {
  for (int dim : {64, 80, 96, 100, 128, 256}) {
    for (const char* lengths : {R"("max_position_embeddings": 16384, "original_max_position_embeddings": 4096)",
                                R"("max_position_embeddings": 8192, "original_max_position_embeddings": 2048)"}) {
      SCOPED_TRACE("head_dim " + std::to_string(dim) + ", " + lengths);
      expect_reproduces(plan_of(llama(dim, lengths)));
    }
  }
}

TEST(FrequencyFactors, PntkKeepsBaseAndLinearEnds) {
  const RopePlan plan = plan_of(airophin_like());
  const std::vector<float> factors = frequency_factors(plan);
  EXPECT_EQ(factors.front(), 1.0f);  // pair 0 is below the gamma range: base frequencies
  EXPECT_EQ(factors.back(), 4.0f);   // the last pair is above the beta range: linear, 1/(s*p)
}

TEST(FrequencyFactors, ReproduceStaticMethods) {
  const char* scalings[] = {
      R"("rope_scaling": {"type": "linear", "factor": 3})",
      R"("rope_scaling": {"type": "ntk", "factor": 2.5})",
      R"("rope_scaling": {"type": "yarn", "factor": 4, "original_max_position_embeddings": 2048})",
      R"("rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4,
                          "original_max_position_embeddings": 1024})",
  };
  for (const char* scaling : scalings) {
    SCOPED_TRACE(scaling);
    const std::string fields = std::string(R"("max_position_embeddings": 8192, "rope_theta": 500000, )") + scaling;
    expect_reproduces(plan_of(llama(128, fields)));
  }
}

TEST(FrequencyFactors, RefuseWhatFactorsCannotExpress) {
  const struct {
    std::string config;
    std::string field;
  } cases[] = {
      {llama(128, R"("max_position_embeddings": 4096, "rope_scaling": {"type": "dynamic", "factor": 2})"),
       "rope_scaling.type"},
      {llama(128, R"("max_position_embeddings": 4096, "rope_parameters": {"rope_type": "dynamic", "factor": 2})"),
       "rope_parameters.rope_type"},
      {llama(128, R"("max_position_embeddings": 4096)"), "rope_scaling"},
  };
  for (const auto& c : cases) {
    try {
      frequency_factors(plan_of(c.config));
      ADD_FAILURE() << "accepted " << c.config;
    } catch (const ConfigError& e) {
      EXPECT_EQ(e.field(), c.field);
    }
  }
  RunnerOverrides alpha;
  alpha.alpha_value = 2;
  const auto airophin = parse_model_config(airophin_like(), "test.json");
  EXPECT_THROW(frequency_factors(build_rope_plan(airophin, alpha)), ConfigError);
}

TEST(ExportRecord, PlanIsTheRecordedOne) {
  const RopePlan before = plan_of(airophin_like());
  const RopePlan after = plan_of(exported_pntk(frequency_factors(before)));
  EXPECT_EQ(after.method, RopeMethod::pntk);
  EXPECT_EQ(after.factor, before.factor);
  EXPECT_EQ(after.attention_factor, 1.0);
  EXPECT_EQ(after.exported_as, "longrope");
  EXPECT_EQ(after.inv_freq(), before.inv_freq());
  EXPECT_EQ(after.describe(), before.describe() + ", exported as longrope");
}

TEST(ExportRecord, EditsAfterExportAreRefused) {
  const RopePlan before = plan_of(airophin_like());
  std::vector<float> factors = frequency_factors(before);
  factors[40] = std::nextafter(std::nextafter(std::nextafter(factors[40], 9.0f), 9.0f), 9.0f);
  try {
    plan_of(exported_pntk(factors));
    FAIL() << "a factor 3 ulp off was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.field(), "rope_scaling.long_factor[40]");
  }
  try {
    plan_of(exported_pntk(frequency_factors(before), "yarn"));
    FAIL() << "a wrong method was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.field(), "pntk_export.method");
  }
  try {
    plan_of(llama(128, R"("max_position_embeddings": 16384, "original_max_position_embeddings": 4096,
      "pntk_export": {"method": "pntk", "factor": 4, "exported_as": "longrope"})"));
    FAIL() << "a record without its longrope scaling was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.field(), "pntk_export");
  }
}

}  // namespace
}  // namespace pntk
