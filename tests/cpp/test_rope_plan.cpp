// RoPE plan: DESIGN.md check values, method resolution and config errors.
#include <gtest/gtest.h>

#include <cmath>

#include "core/errors.h"
#include "core/float_round.h"
#include "core/model_config.h"
#include "core/rope_plan.h"
#include "core/rope_table.h"

namespace pntk {
namespace {

RopePlan plan_of(const std::string& json, const RunnerOverrides& overrides = {}) {
  return build_rope_plan(parse_model_config(json, "test.json"), overrides);
}

std::string airophin(int64_t original, int64_t extended) {
  return R"({"hidden_size": 5120, "num_attention_heads": 40, "max_position_embeddings": )" +
         std::to_string(extended) + R"(, "original_max_position_embeddings": )" + std::to_string(original) + "}";
}

TEST(RopePlan, PntkCheckValuesAt4096) {
  const RopePlan plan = plan_of(airophin(4096, 16384));
  EXPECT_EQ(plan.method, RopeMethod::pntk);
  EXPECT_EQ(plan.factor, 4.0);
  ASSERT_EQ(plan.correction_ranges.size(), 2u);
  EXPECT_EQ(plan.correction_ranges[0].low, 43);
  EXPECT_EQ(plan.correction_ranges[0].high, 48);
  EXPECT_EQ(plan.correction_ranges[1].low, 25);
  EXPECT_EQ(plan.correction_ranges[1].high, 41);
  EXPECT_NE(plan.describe().find("scaling factor 4 (4096 -> 16384 positions)"), std::string::npos);
}

TEST(RopePlan, PntkCheckValuesAt2048) {
  const RopePlan plan = plan_of(airophin(2048, 8192));
  EXPECT_EQ(plan.correction_ranges[0].low, 38);
  EXPECT_EQ(plan.correction_ranges[0].high, 43);
  EXPECT_EQ(plan.correction_ranges[1].low, 20);
  EXPECT_EQ(plan.correction_ranges[1].high, 36);
}

TEST(RopePlan, PntkFactorIsIntegerDivision) {
  EXPECT_EQ(plan_of(airophin(4096, 10000)).factor, 2.0);  // 10000 // 4096
}

TEST(RopePlan, YarnCheckValues) {
  const std::string yarn = R"({"hidden_size": 4096, "num_attention_heads": 32, "max_position_embeddings": 4096,
    "rope_scaling": {"type": "yarn", "factor": 4, "original_max_position_embeddings": )";
  const RopePlan at4096 = plan_of(yarn + "4096}}");
  EXPECT_EQ(at4096.correction_ranges[0].low, 20);
  EXPECT_EQ(at4096.correction_ranges[0].high, 46);
  EXPECT_NEAR(at4096.attention_factor, 1.1386294, 5e-8);
  const RopePlan at2048 = plan_of(yarn + "2048}}");
  EXPECT_EQ(at2048.correction_ranges[0].low, 16);
  EXPECT_EQ(at2048.correction_ranges[0].high, 41);
}

TEST(RopePlan, AlphaMovesTheBase) {
  const std::string config = R"({"hidden_size": 4096, "num_attention_heads": 32, "max_position_embeddings": 4096})";
  RunnerOverrides alpha2;
  alpha2.alpha_value = 2;
  EXPECT_NEAR(plan_of(config, alpha2).base, 20221.26, 0.005);
  alpha2.alpha_value = 4;
  EXPECT_NEAR(plan_of(config, alpha2).base, 40889.94, 0.005);
  EXPECT_EQ(plan_of(config, alpha2).method, RopeMethod::ntk);
}

TEST(RopePlan, ErrorsNameFileAndField) {
  try {
    plan_of(R"({"hidden_size": 4096, "num_attention_heads": 32, "max_position_embeddings": 4096,
               "rope_scaling": {"type": "linear", "factor": 0.5}})");
    FAIL() << "factor < 1 was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.file(), "test.json");
    EXPECT_EQ(e.field(), "rope_scaling.factor");
  }
  EXPECT_THROW(plan_of(R"({"hidden_size": 4096, "num_attention_heads": 32)"), ConfigError);
  EXPECT_THROW(plan_of(airophin(32768, 16384)), ConfigError);
  EXPECT_EQ(plan_of(airophin(16384, 16384)).method, RopeMethod::none);
  EXPECT_THROW(plan_of(R"({"hidden_size": 5120, "num_attention_heads": 40, "max_position_embeddings": 4096,
               "rope_scaling": {"type": "pntk", "original_max_position_embeddings": 4096}})"),
               ConfigError);
}

TEST(RopeTable, RoundsOnceFromDouble) {
  const std::vector<float> inv{1.0f, 0.01f};
  std::vector<uint16_t> cos_table(4 * 100), sin_table(4 * 100);
  rope_table({inv.data(), 2, 0, 100, 1.0, 1.0, TableDtype::float16}, cos_table.data(), sin_table.data());
  for (int pos = 0; pos < 100; ++pos) {
    for (int i = 0; i < 2; ++i) {
      const double angle = pos * static_cast<double>(inv[i]);
      EXPECT_EQ(cos_table[pos * 4 + i], double_to_half_bits(std::cos(angle)));
      EXPECT_EQ(cos_table[pos * 4 + i + 2], cos_table[pos * 4 + i]);
      EXPECT_EQ(sin_table[pos * 4 + i], double_to_half_bits(std::sin(angle)));
    }
  }
}

TEST(FloatRound, HalfAndBfloat16RoundToNearestEven) {
  EXPECT_EQ(double_to_half_bits(1.0), 0x3c00);
  EXPECT_EQ(double_to_half_bits(65504.0), 0x7bff);
  EXPECT_EQ(double_to_half_bits(1e6), 0x7c00);
  EXPECT_EQ(double_to_half_bits(-2.0), 0xc000);
  EXPECT_EQ(double_to_half_bits(std::ldexp(1.0, -24)), 0x0001);
  // 1 + 2^-11 is a tie between 1 and 1 + 2^-10: even (1) wins; a hair above rounds up.
  EXPECT_EQ(double_to_half_bits(1.0 + std::ldexp(1.0, -11)), 0x3c00);
  EXPECT_EQ(double_to_half_bits(1.0 + std::ldexp(1.0, -11) + 1e-12), 0x3c01);
  EXPECT_EQ(double_to_bfloat16_bits(1.0), 0x3f80);
  EXPECT_EQ(double_to_bfloat16_bits(1.0 + std::ldexp(1.0, -8) + 1e-12), 0x3f81);
  EXPECT_EQ(half_bits_to_float(0x3555), static_cast<float>(0.333251953125));
}

}  // namespace
}  // namespace pntk

namespace pntk {
namespace {

// The bit-level fp16 rounding agrees with the generic round-once path on random doubles.
TEST(FloatRound, HalfBitsAgreeWithGenericRounding) {
  uint64_t state = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < 200000; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const double x = std::ldexp(static_cast<double>(state >> 11) / 9007199254740992.0 - 0.5, (i % 44) - 28);
    const double r = round_to_format(x, 10, -14);
    const uint16_t bits = double_to_half_bits(x);
    if (std::fabs(r) > 65504.0) {
      EXPECT_EQ(bits & 0x7fff, 0x7c00) << x;
    } else {
      EXPECT_EQ(static_cast<double>(half_bits_to_float(bits)), r) << x;
    }
  }
}

}  // namespace
}  // namespace pntk
