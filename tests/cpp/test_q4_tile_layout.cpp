// The host side of the CUDA q4 kernels, testable without a GPU: the tile plan (act-order
// sort, group padding), the nibble map of the tiles against the PTX fragment layout of
// mma.m16n8k16, the packing functions the pack kernels run (decoded here the way the GEMV
// kernel reads them, against W from the GPTQ definition), and the GEMV launch shape.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/float_round.h"
#include "cuda/q4_tile_layout.h"

using namespace pntk::cuda;

namespace {

// Checks the invariants every plan must keep: each original row appears once, rows of a
// tile share a group, rows of a group keep their order.
void expect_valid_plan(const Q4TilePlan& plan, const std::vector<int32_t>& group_of_row) {
  ASSERT_EQ(plan.k_padded % TILE_K, 0);
  ASSERT_EQ(plan.row_src.size(), static_cast<size_t>(plan.k_padded));
  ASSERT_EQ(plan.tile_group.size(), static_cast<size_t>(plan.k_tiles()));
  std::vector<int> seen(static_cast<size_t>(plan.k), 0);
  std::vector<int32_t> last_row_of_group(static_cast<size_t>(plan.groups), -1);
  for (int64_t padded = 0; padded < plan.k_padded; ++padded) {
    const int32_t src = plan.row_src[static_cast<size_t>(padded)];
    if (src < 0) continue;
    ASSERT_LT(src, plan.k);
    ++seen[static_cast<size_t>(src)];
    const int32_t group = group_of_row[static_cast<size_t>(src)];
    EXPECT_EQ(plan.tile_group[static_cast<size_t>(padded / TILE_K)], group) << "padded row " << padded;
    EXPECT_GT(src, last_row_of_group[static_cast<size_t>(group)]) << "rows of group " << group << " out of order";
    last_row_of_group[static_cast<size_t>(group)] = src;
  }
  for (int64_t row = 0; row < plan.k; ++row) EXPECT_EQ(seen[static_cast<size_t>(row)], 1) << "row " << row;
  EXPECT_EQ(plan.n_padded % STRIP_N, 0);
  EXPECT_GE(plan.n_padded, plan.n);
  EXPECT_LT(plan.n_padded - plan.n, STRIP_N);
}

}  // namespace

TEST(Q4TilePlan, EqualGroupsInOrderAreTheIdentity) {
  const Q4TilePlan plan = make_q4_tile_plan(5120, 5120, 40, nullptr);  // llama 13B q_proj, group 128
  EXPECT_TRUE(plan.identity);
  EXPECT_EQ(plan.k_padded, 5120);
  EXPECT_EQ(plan.k_tiles(), 320);
  EXPECT_EQ(plan.strips(), 80);
  for (int64_t tile = 0; tile < plan.k_tiles(); ++tile) EXPECT_EQ(plan.tile_group[static_cast<size_t>(tile)], tile / 8);
}

TEST(Q4TilePlan, ActOrderSortsRowsByGroup) {
  std::mt19937 random(1234);
  const int64_t k = 4096, groups = 128;  // group 32, rows in a random order (desc_act)
  std::vector<int32_t> g_idx(k);
  for (int64_t row = 0; row < k; ++row) g_idx[static_cast<size_t>(row)] = static_cast<int32_t>(row / 32);
  std::shuffle(g_idx.begin(), g_idx.end(), random);
  const Q4TilePlan plan = make_q4_tile_plan(k, 13824, groups, g_idx.data());
  EXPECT_FALSE(plan.identity);
  EXPECT_EQ(plan.k_padded, k);  // groups of 32 need no padding
  expect_valid_plan(plan, g_idx);
}

TEST(Q4TilePlan, UnevenGroupsArePadded) {
  std::mt19937 random(99);
  const int64_t k = 200, groups = 7;
  std::vector<int32_t> g_idx(k);
  std::uniform_int_distribution<int32_t> pick(0, groups - 2);  // group 6 stays empty
  for (auto& g : g_idx) g = pick(random);
  const Q4TilePlan plan = make_q4_tile_plan(k, 200, groups, g_idx.data());
  std::vector<int64_t> rows(groups, 0);
  for (int32_t g : g_idx) ++rows[static_cast<size_t>(g)];
  int64_t expected = 0;
  for (int64_t r : rows) expected += round_up(r, TILE_K);
  EXPECT_EQ(plan.k_padded, expected);
  EXPECT_EQ(plan.n_padded, 256);
  EXPECT_FALSE(plan.identity);
  expect_valid_plan(plan, g_idx);
}

TEST(Q4TilePlan, InFeaturesNotAMultipleOf16ArePadded) {
  const Q4TilePlan plan = make_q4_tile_plan(200, 64, 1, nullptr);
  EXPECT_EQ(plan.k_padded, 208);
  EXPECT_FALSE(plan.identity);
  std::vector<int32_t> groups(200, 0);
  expect_valid_plan(plan, groups);
}

TEST(Q4TilePlan, RejectsBadInputNamingTheArgument) {
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message([] { make_q4_tile_plan(104, 64, 3, nullptr); }),
            "g_idx: is required when in_features (104) is not a multiple of the number of groups (3)");
  std::vector<int32_t> g_idx(64, 0);
  g_idx[5] = 4;
  EXPECT_EQ(message([&] { make_q4_tile_plan(64, 64, 4, g_idx.data()); }), "g_idx: entry 5 is 4, outside [0, 4)");
  g_idx[5] = -1;
  EXPECT_EQ(message([&] { make_q4_tile_plan(64, 64, 4, g_idx.data()); }), "g_idx: entry 5 is -1, outside [0, 4)");
  EXPECT_NE(message([] { make_q4_tile_plan(64, 60, 1, nullptr); }).find("out_features must be a positive multiple of 8"),
            std::string::npos);
  EXPECT_NE(message([] { make_q4_tile_plan(64, 64, 0, nullptr); }).find("scales: must have between 1"),
            std::string::npos);
}

// PTX ISA, "Matrix fragments for mma.m16n8k16" (.f16): A is 16 x 16 (m x k), lane = 4 g + t
// holds in register r the pair (k = 2t + 8 (r / 2), +1) of row g + 8 (r % 2). The GEMV takes A
// = W^T of the column block m = 2 (j / 2) + odd, register r = 2 (j % 2) + shifted, from word j
// as (word >> 8 shifted) masked to the nibbles odd, odd + 4 (q4_tile_layout.h).
TEST(Q4TileLayout, NibblesMatchTheMmaFragments) {
  std::set<std::pair<int, int>> cells;
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int j = 0; j < 4; ++j) {
      for (int shifted = 0; shifted < 2; ++shifted) {
        for (int odd = 0; odd < 2; ++odd) {
          const int block = 2 * (j / 2) + odd, reg = 2 * (j % 2) + shifted;
          for (int half = 0; half < 2; ++half) {
            const TileCell cell = tile_cell(lane, j, 2 * shifted + odd + 4 * half);
            EXPECT_EQ(cell.col, 16 * block + g + 8 * (reg % 2));
            EXPECT_EQ(cell.row, 2 * t + 8 * (reg / 2) + half);
          }
        }
      }
      for (int p = 0; p < 8; ++p) {
        const TileCell cell = tile_cell(lane, j, p);
        cells.insert({cell.row, cell.col});
      }
    }
  }
  EXPECT_EQ(cells.size(), static_cast<size_t>(TILE_K * STRIP_N));  // every weight of the tile exactly once
}

TEST(Q4GemvShape, SplitsKWhenStripsAreFew) {
  // llama 13B on an H100 (132 SMs): q_proj has 80 strips, so K is split 6 ways (480 blocks,
  // 3.6 per SM); qkv has 240 strips (2 ways); gate+up has 432 strips: 1 way would leave the
  // last round 82% full (3.3 blocks per SM), 2 ways 94%. With 16 rows of x a split holds at
  // most 60 k-tiles (its x is staged in shared memory): K = 5120 (320 tiles) takes 6 splits.
  const Q4GemvShape q_proj = q4_gemv_shape(320, 80, 1, 132);
  EXPECT_EQ(q_proj.splits, 6);
  EXPECT_EQ(q_proj.tiles_per_split, 54);
  EXPECT_EQ(q4_gemv_shape(320, 240, 2, 132).splits, 2);
  EXPECT_EQ(q4_gemv_shape(320, 432, 2, 132).splits, 2);
  EXPECT_EQ(q4_gemv_shape(320, 432, 16, 132).splits, 6);
  EXPECT_EQ(gemv_max_tiles_per_split(16), 60);
  EXPECT_EQ(q4_gemv_shape(864, 80, 1, 132).splits, 6);  // down_proj, K = 13824
  EXPECT_EQ(q4_gemv_shape(864, 80, 16, 132).splits, 15);
  for (int64_t rows : {1, 3, 8, 9, 16}) {
    for (int64_t k_tiles : {1, 7, 320, 864, 20000, 200000}) {
      for (int64_t strips : {1, 80, 432}) {
        const Q4GemvShape s = q4_gemv_shape(k_tiles, strips, rows, 132);
        EXPECT_GE(s.splits, 1);
        const int64_t most_tiles = gemv_max_tiles_per_split(rows);
        EXPECT_LE(s.splits, std::max<int64_t>(GEMV_MAX_SPLITS, (k_tiles + most_tiles - 1) / most_tiles));
        EXPECT_LE(s.tiles_per_split, most_tiles);
        EXPECT_LE(s.shared_bytes, GEMV_DYNAMIC_SHARED_BYTES);  // + 16 KB static: no opt-in needed
        EXPECT_EQ(s.shared_bytes, gemv_shared_bytes(s.tiles_per_split, rows));
        EXPECT_EQ(gemv_x_row_words(s.tiles_per_split) % 32, 4);
        EXPECT_GE(s.splits * s.tiles_per_split, k_tiles);     // every tile is in a split
        EXPECT_LT((s.splits - 1) * s.tiles_per_split, k_tiles);  // and no split is empty
        const size_t partials = s.splits > 1 ? sizeof(float) * static_cast<size_t>(s.splits * rows * strips * STRIP_N) : 0;
        EXPECT_GE(s.permuted_x_offset, partials);
        EXPECT_EQ(s.permuted_x_offset % BUFFER_ALIGN, 0u);
        EXPECT_EQ(s.scratch_bytes, s.permuted_x_offset + 2 * static_cast<size_t>(rows * k_tiles * TILE_K));
        EXPECT_EQ(s.counter_bytes, sizeof(int32_t) * static_cast<size_t>(strips));
      }
    }
  }
}

TEST(Q4TileBuffers, PartsDoNotOverlap) {
  const Q4TilePlan plan = make_q4_tile_plan(13824, 5120, 108, nullptr);
  const Q4TileBuffers b = plan.buffers();
  EXPECT_GE(b.tile_group, b.row_src + 4 * static_cast<size_t>(plan.k_padded));
  EXPECT_GE(b.qtile, b.tile_group + 4 * static_cast<size_t>(plan.k_tiles()));
  EXPECT_GE(b.scales, b.qtile + static_cast<size_t>(plan.k_padded * plan.n_padded / 2));
  EXPECT_GE(b.zeros, b.scales + 2 * static_cast<size_t>(plan.groups * plan.n_padded));
  EXPECT_GE(b.total, b.zeros + static_cast<size_t>(plan.groups * plan.n_padded / 2));
  for (size_t offset : {b.row_src, b.tile_group, b.qtile, b.scales, b.zeros}) EXPECT_EQ(offset % BUFFER_ALIGN, 0u);
}

namespace {

struct PackCase {
  int64_t k, n, groups;
  bool act_order, zeros_v2;
};

// Packs random GPTQ tensors with pack_tile_word / pack_tile_scales, decodes every tile the way
// q4_gemv_kernel reads it (word j >> (8 shifted + 4 odd), halves at bits 0 and 16: A register
// 2 (j % 2) + shifted of the column block 2 (j / 2) + odd; lane 4g + t holds k = 2t + 8 (j % 2)
// + half of column 16 block + 8 shifted + g, n-tile 2 block + shifted), and compares with
// W[k, n] = scale * (q - zero) from the GPTQ definition.
void expect_tiles_decode_to_gptq(const PackCase& c, uint32_t seed) {
  std::mt19937 random(seed);
  std::vector<int32_t> qweight(static_cast<size_t>(c.k / 8 * c.n)), qzeros(static_cast<size_t>(c.groups * c.n / 8));
  for (auto& w : qweight) w = static_cast<int32_t>(random());
  for (auto& w : qzeros) w = static_cast<int32_t>(random());
  std::vector<uint16_t> scales(static_cast<size_t>(c.groups * c.n));
  std::uniform_real_distribution<double> magnitude(1e-3, 2e-2);
  for (auto& s : scales) s = pntk::double_to_half_bits(random() % 8 ? magnitude(random) : -magnitude(random));
  std::vector<int32_t> g_idx(static_cast<size_t>(c.k));
  for (auto& g : g_idx) g = static_cast<int32_t>(random() % static_cast<uint32_t>(c.groups));
  if (!c.act_order) std::sort(g_idx.begin(), g_idx.end());

  const Q4TilePlan plan = make_q4_tile_plan(c.k, c.n, c.groups, g_idx.data());
  const GptqSource source{qweight.data(), qzeros.data(), scales.data(), c.n, c.zeros_v2};
  std::vector<uint32_t> qtile(static_cast<size_t>(plan.strips() * plan.k_tiles() * 128));
  for (size_t word = 0; word < qtile.size(); ++word) {
    qtile[word] = pack_tile_word(source, plan.row_src.data(), plan.k_tiles(), static_cast<int64_t>(word));
  }
  std::vector<uint16_t> scales_t(static_cast<size_t>(plan.strips() * c.groups * 64));
  std::vector<uint32_t> zeros_t(static_cast<size_t>(plan.strips() * c.groups * 8));
  for (size_t index = 0; index < zeros_t.size(); ++index) {
    zeros_t[index] = pack_tile_scales(source, c.groups, static_cast<int64_t>(index), scales_t.data());
  }

  std::vector<int> seen(static_cast<size_t>(c.k * c.n), 0);
  int64_t mismatches = 0;
  for (int64_t strip = 0; strip < plan.strips(); ++strip) {
    for (int64_t kt = 0; kt < plan.k_tiles(); ++kt) {
      const int64_t group = plan.tile_group[static_cast<size_t>(kt)];
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, t = lane % 4;
        for (int j = 0; j < 4; ++j) {
          const uint32_t word = qtile[static_cast<size_t>(((strip * plan.k_tiles() + kt) * 32 + lane) * 4 + j)];
          for (int i = 0; i < 4; ++i) {
            const int shifted = i / 2, odd = i % 2;
            const uint32_t pair = (word >> (8 * shifted + 4 * odd)) & 0x000F000Fu;
            const int n_tile = 2 * (2 * (j / 2) + odd) + shifted;
            const int64_t col = strip * STRIP_N + 8 * n_tile + g;
            const size_t scale_row = static_cast<size_t>((strip * c.groups + group) * 8 + g);
            const double scale = pntk::half_bits_to_float(scales_t[scale_row * 8 + static_cast<size_t>(n_tile)]);
            const int zero = static_cast<int>((zeros_t[scale_row] >> (4 * n_tile)) & 15u);
            for (int half = 0; half < 2; ++half) {
              const int q = static_cast<int>((pair >> (16 * half)) & 15u);
              const int32_t row = plan.row_src[static_cast<size_t>(kt * TILE_K + 2 * t + 8 * (j % 2) + half)];
              if (row < 0 || col >= c.n) {
                mismatches += q != 0 || (col >= c.n && scale != 0.0);  // padding must contribute nothing
                continue;
              }
              ++seen[static_cast<size_t>(row * c.n + col)];
              const int stored_q = (static_cast<uint32_t>(qweight[static_cast<size_t>((row / 8) * c.n + col)]) >>
                                    (4 * (row % 8))) & 15u;
              const int g_of_row = g_idx[static_cast<size_t>(row)];
              const int z = (static_cast<uint32_t>(qzeros[static_cast<size_t>(g_of_row * (c.n / 8) + col / 8)]) >>
                             (4 * (col % 8))) & 15u;
              const int true_zero = c.zeros_v2 ? z : (z + 1) & 15;
              const double expected =
                  pntk::half_bits_to_float(scales[static_cast<size_t>(g_of_row * c.n + col)]) * (stored_q - true_zero);
              mismatches += scale * (q - zero) != expected;
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(mismatches, 0) << "k " << c.k << " n " << c.n << " groups " << c.groups << " seed " << seed;
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), static_cast<std::ptrdiff_t>(seen.size()))
      << "every weight decoded exactly once";
}

}  // namespace

TEST(Q4TilePacking, DecodesToTheGptqWeights) {
  const uint32_t seed = std::random_device{}();
  for (const PackCase& c : {PackCase{256, 128, 2, false, false}, PackCase{256, 128, 8, true, true},
                            PackCase{200, 200, 5, true, false}, PackCase{1024, 72, 32, true, true},
                            PackCase{64, 8, 1, false, true}}) {
    expect_tiles_decode_to_gptq(c, seed);
  }
}
