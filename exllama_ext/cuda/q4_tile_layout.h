// The tile layout of a GPTQ 4-bit matrix on the GPU: the host-side plan, and the packing
// functions (plain C++, also compiled for the device; no CUDA headers).
//
// GPTQ input (DESIGN.md): qweight int32 [K/8, N], row k at bits 4*(k%8) of word k/8;
// qzeros int32 [G, N/8], column n at bits 4*(n%8); scales fp16 [G, N]; g_idx int32 [K].
// W[k, n] = scale[g, n] * (q[k, n] - zero[g, n]), g = g_idx[k],
// zero = (z + 1) & 15 for checkpoint_format "gptq" (v1), z for "gptq_v2".
//
// Rows are sorted by group (stable) and each group is padded to a multiple of TILE_K rows, so
// every 16-row tile belongs to one group ("act-order" is undone at load time, and uneven or
// tiny groups cost padding instead of a per-row scale lookup). Columns are padded to a
// multiple of STRIP_N. Padded rows have q = 0 and read x = 0; padded columns have scale 0.
//   row_src    int32 [Kp]       original row of padded row k' (-1 = padding)
//   tile_group int32 [Kp/16]    group of each 16-row tile
//   qtile      u32 [strips][Kp/16][32 lanes][4 words]    one 16 x 64 tile per 512 bytes
//   scales_t   fp16 [strips][G][8][8]                    [.., g, nt] = scale of column 8nt+g
//   zeros_t    u32  [strips][G][8]                       [.., g] nibble nt = zero of column 8nt+g
// The GEMV multiplies with mma.m16n8k16 in the roles y^T = W^T x^T: A (16 x 16) holds 16
// columns of W (A's rows) at a tile's 16 k (A's columns). A lane l = 4*g + t of a warp holds,
// per mma, a0 = (column g, k 2t, 2t+1), a1 = (column g+8, k 2t, 2t+1), a2 = (column g, k 2t+8,
// 2t+9), a3 = (column g+8, k 2t+8, 2t+9), each register two 16-bit halves (low half: the lower k).
// The tile's 4 mma are the column blocks m = 0..3 (columns 16m..16m+15); words 2P and 2P+1 of
// a lane hold blocks m = 2P (in the even nibbles) and m = 2P+1 (in the odd nibbles):
//   word 2P + s, nibbles 0, 4: block 2P,   column 16(2P) + g,       k = 2t + 8s, +1
//                nibbles 2, 6: block 2P,   column 16(2P) + 8 + g,   k = 2t + 8s, +1
//                nibbles 1, 5: block 2P+1, column 16(2P+1) + g,     k = 2t + 8s, +1
//                nibbles 3, 7: block 2P+1, column 16(2P+1) + 8 + g, k = 2t + 8s, +1
// so one mask takes a whole register from a word with no shift or one shift by 8:
//   block 2P:   word & 0x000F000F -> a0 (s = 0) or a2 (s = 1); (word >> 8) & 0x000F000F -> a1 / a3
//   block 2P+1: word & 0x00F000F0 -> a0 / a2, (word >> 8) & 0x00F000F0 -> a1 / a3 (each half 16 q)
// (in fp16 those halves are the subnormals q * 2^-24 and q * 2^-20, which the GEMV multiplies
// exactly and rescales in fp32; bf16, whose 7-bit mantissa cannot hold 16 q, shifts the odd
// nibbles down by 4 instead). The lane's C entries of block m are columns 16m + g and
// 16m + 8 + g, whose zeros and scales it reads at [g][nt], nt = 2m, 2m + 1.
// tile_cell() is this map; pack_tile_word() / pack_tile_scales() fill the layout (run by the
// pack kernels, and on the host by tests/cpp/test_q4_tile_layout.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/errors.h"

namespace pntk::cuda {

constexpr int64_t TILE_K = 16;   // rows per tile: the k of one mma.m16n8k16
constexpr int64_t STRIP_N = 64;  // columns per strip: 8 n-tiles of 8, one uint4 per lane
constexpr int64_t MAX_GEMV_ROWS = 16;  // the m of one mma: rows of x the GEMV kernel takes
constexpr size_t BUFFER_ALIGN = 256;

// Byte offsets of the parts of one device buffer holding a tiled matrix.
struct Q4TileBuffers {
  size_t row_src = 0, tile_group = 0, qtile = 0, scales = 0, zeros = 0, total = 0;
};

struct Q4TilePlan {
  int64_t k = 0, n = 0, groups = 0;
  int64_t k_padded = 0;  // Kp: sum over groups of round_up(rows in group, 16)
  int64_t n_padded = 0;  // round_up(N, 64)
  bool identity = true;  // row_src[k] == k for every k and Kp == K: x needs no gather
  std::vector<int32_t> row_src;
  std::vector<int32_t> tile_group;

  int64_t k_tiles() const { return k_padded / TILE_K; }
  int64_t strips() const { return n_padded / STRIP_N; }
  Q4TileBuffers buffers() const;
};

#ifdef __CUDACC__
#define PNTK_HOST_DEVICE __host__ __device__
#else
#define PNTK_HOST_DEVICE
#endif

// Where nibble p (0..7) of word j (0..3) of lane `lane` sits in its 16 x 64 tile.
struct TileCell {
  int row;  // 0..15, within the tile's 16 padded rows
  int col;  // 0..63, within the strip
};
PNTK_HOST_DEVICE inline TileCell tile_cell(int lane, int j, int p) {
  const int g = lane / 4, t = lane % 4;
  const int block = 2 * (j / 2) + (p & 1);
  return TileCell{2 * t + 8 * (j % 2) + (p >> 2), 16 * block + g + ((p & 2) ? 8 : 0)};
}

// The GPTQ tensors being tiled, readable where the packing functions run.
struct GptqSource {
  const int32_t* qweight;  // [K/8, N]
  const int32_t* qzeros;   // [G, N/8]
  const uint16_t* scales;  // fp16 bits [G, N]
  int64_t n;
  bool zeros_v2;           // true: zero = z ("gptq_v2"); false: zero = (z + 1) & 15 ("gptq")
};

// Word `word` of qtile ([strips][k_tiles][32][4]): nibble p holds q at tile_cell(lane, j, p),
// 0 for padded rows (row_src -1) and padded columns.
PNTK_HOST_DEVICE inline uint32_t pack_tile_word(const GptqSource& source, const int32_t* row_src, int64_t k_tiles,
                                                int64_t word) {
  const int j = static_cast<int>(word % 4);
  const int lane = static_cast<int>((word / 4) % 32);
  const int64_t kt = (word / 128) % k_tiles;
  const int64_t strip = word / (128 * k_tiles);
  uint32_t packed = 0;
  for (int p = 0; p < 8; ++p) {
    const TileCell cell = tile_cell(lane, j, p);
    const int64_t col = strip * STRIP_N + cell.col;
    const int32_t src = row_src[kt * TILE_K + cell.row];
    if (src < 0 || col >= source.n) continue;
    const uint32_t q = (static_cast<uint32_t>(source.qweight[(src / 8) * source.n + col]) >> (4 * (src % 8))) & 15u;
    packed |= q << (4 * p);
  }
  return packed;
}

// Entry `index` of zeros_t ([strips][G][8]); the scales of its 8 columns 8 nt + gi (nt = 0..7)
// go to scales_t[index * 8 + nt]: scale 0 and zero 0 for padded columns.
PNTK_HOST_DEVICE inline uint32_t pack_tile_scales(const GptqSource& source, int64_t groups, int64_t index,
                                                  uint16_t* scales_t) {
  const int gi = static_cast<int>(index % 8);
  const int64_t group = (index / 8) % groups;
  const int64_t strip = index / (8 * groups);
  uint32_t zeros = 0;
  for (int nt = 0; nt < 8; ++nt) {
    const int64_t col = strip * STRIP_N + 8 * nt + gi;
    uint16_t scale = 0;
    uint32_t zero = 0;
    if (col < source.n) {
      scale = source.scales[group * source.n + col];
      const uint32_t z =
          (static_cast<uint32_t>(source.qzeros[group * (source.n / 8) + col / 8]) >> (4 * (col % 8))) & 15u;
      zero = source.zeros_v2 ? z : (z + 1) & 15u;
    }
    scales_t[index * 8 + nt] = scale;
    zeros |= zero << (4 * nt);
  }
  return zeros;
}

inline int64_t round_up(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

inline Q4TileBuffers Q4TilePlan::buffers() const {
  Q4TileBuffers b;
  size_t at = 0;
  auto take = [&at](size_t bytes) {
    const size_t offset = at;
    at = static_cast<size_t>(round_up(static_cast<int64_t>(at + bytes), BUFFER_ALIGN));
    return offset;
  };
  b.row_src = take(sizeof(int32_t) * static_cast<size_t>(k_padded));
  b.tile_group = take(sizeof(int32_t) * static_cast<size_t>(k_tiles()));
  b.qtile = take(sizeof(uint32_t) * static_cast<size_t>(k_padded * n_padded / 8));
  b.scales = take(sizeof(uint16_t) * static_cast<size_t>(groups * n_padded));
  b.zeros = take(sizeof(uint32_t) * static_cast<size_t>(groups * n_padded / 8));
  b.total = at;
  return b;
}

// Plans the tiling of a [K, N] matrix with `groups` groups. g_idx (K entries, may be null:
// then group = k / (K / groups), which needs K % groups == 0) gives each row's group.
inline Q4TilePlan make_q4_tile_plan(int64_t k, int64_t n, int64_t groups, const int32_t* g_idx) {
  PNTK_CHECK(k > 0 && k % 8 == 0, "qweight", "in_features must be a positive multiple of 8, got " + std::to_string(k));
  PNTK_CHECK(n > 0 && n % 8 == 0, "qweight", "out_features must be a positive multiple of 8, got " + std::to_string(n));
  PNTK_CHECK(groups > 0 && groups <= k, "scales",
             "must have between 1 and in_features (" + std::to_string(k) + ") rows, got " + std::to_string(groups));
  PNTK_CHECK(k <= INT32_MAX / 2 && n <= INT32_MAX / 2, "qweight", "is too large for 32-bit indices");
  PNTK_CHECK(g_idx != nullptr || k % groups == 0, "g_idx",
             "is required when in_features (" + std::to_string(k) + ") is not a multiple of the number of groups (" +
                 std::to_string(groups) + ")");
  Q4TilePlan plan;
  plan.k = k;
  plan.n = n;
  plan.groups = groups;
  plan.n_padded = round_up(n, STRIP_N);
  std::vector<int32_t> group_of(static_cast<size_t>(k));
  std::vector<int64_t> rows_in_group(static_cast<size_t>(groups), 0);
  for (int64_t row = 0; row < k; ++row) {
    const int64_t group = g_idx ? g_idx[row] : row / (k / groups);
    PNTK_CHECK(group >= 0 && group < groups, "g_idx",
               "entry " + std::to_string(row) + " is " + std::to_string(group) + ", outside [0, " +
                   std::to_string(groups) + ")");
    group_of[static_cast<size_t>(row)] = static_cast<int32_t>(group);
    ++rows_in_group[static_cast<size_t>(group)];
  }
  std::vector<int64_t> next_row(static_cast<size_t>(groups));  // next free padded row of each group
  int64_t padded = 0;
  for (int64_t group = 0; group < groups; ++group) {
    next_row[static_cast<size_t>(group)] = padded;
    const int64_t tiles = round_up(rows_in_group[static_cast<size_t>(group)], TILE_K) / TILE_K;
    for (int64_t tile = 0; tile < tiles; ++tile) plan.tile_group.push_back(static_cast<int32_t>(group));
    padded += tiles * TILE_K;
  }
  plan.k_padded = padded;
  plan.row_src.assign(static_cast<size_t>(padded), -1);
  for (int64_t row = 0; row < k; ++row) {
    const int64_t at = next_row[static_cast<size_t>(group_of[static_cast<size_t>(row)])]++;
    plan.row_src[static_cast<size_t>(at)] = static_cast<int32_t>(row);
    if (at != row) plan.identity = false;
  }
  if (plan.k_padded != k) plan.identity = false;
  return plan;
}

// Launch shape of the GEMV kernel: grid (strips, splits), each block 4 warps on one strip and
// a contiguous range of k-tiles. K is split so that there are at least 3 blocks per SM (4 are
// resident at once) and the last round of blocks keeps at least 90% of the SMs busy
// (blocks / SMs over its ceiling); the splits' fp32 partial sums are added in split order
// (deterministic). Two workspace buffers, kept apart so that no launch's partial sums can
// land on another matrix's counters:
//   counters int32 [strips]       zero between launches (the last block resets them)
//   scratch                       partial sums and permuted x (no initial value needed)
constexpr int GEMV_WARPS = 4;
constexpr int GEMV_BLOCKS_PER_SM = 4;               // also the kernel's __launch_bounds__ occupancy
constexpr int64_t GEMV_MIN_BLOCKS_PER_SM = 3;
constexpr int64_t GEMV_MAX_SPLITS = 64;
constexpr int64_t GEMV_MIN_TILES_PER_SPLIT = 16;    // 4 k-tiles per warp at least
// A block stages its split's x (rows x 16 k per tile, 2 bytes each) in shared memory. With the
// weight rings (16 KB of static shared memory) a block stays within the 48 KB that needs no
// opt-in: GEMV_DYNAMIC_SHARED_BYTES for the staged x and the split's tile groups.
constexpr size_t GEMV_DYNAMIC_SHARED_BYTES = 31 * 1024;
// Rows of x up to which act-order x is gathered by each block; more rows are first permuted
// once into padded row order by a separate kernel (into the scratch buffer).
constexpr int64_t GEMV_MAX_GATHER_ROWS = 1;

// Words (uint32 = 2 halves) per staged x row: the split's k values, padded to 4 mod 32 words so
// that the 32 lanes' fragment reads (row g, word 8 kt + t) fall in distinct banks.
inline int64_t gemv_x_row_words(int64_t tiles_per_split) { return round_up(tiles_per_split * TILE_K / 2, 32) + 4; }

// Dynamic shared memory of one block: the staged x, then the split's tile groups (int32).
inline size_t gemv_shared_bytes(int64_t tiles_per_split, int64_t rows) {
  return sizeof(int32_t) * static_cast<size_t>(tiles_per_split + rows * gemv_x_row_words(tiles_per_split));
}

// The most k-tiles a split may hold with `rows` rows of x staged.
inline int64_t gemv_max_tiles_per_split(int64_t rows) {
  int64_t tiles = static_cast<int64_t>(GEMV_DYNAMIC_SHARED_BYTES / 4) / (1 + 8 * rows);
  while (tiles > 1 && gemv_shared_bytes(tiles, rows) > GEMV_DYNAMIC_SHARED_BYTES) --tiles;
  return tiles;
}

struct Q4GemvShape {
  int64_t splits = 1, tiles_per_split = 0;
  size_t counter_bytes = 0, shared_bytes = 0;
  size_t scratch_bytes = 0;      // partial sums fp32 [splits][rows][Np] (splits > 1), then,
  size_t permuted_x_offset = 0;  // at this offset, x in padded row order fp16/bf16 [rows][Kp]
};

inline Q4GemvShape q4_gemv_shape(int64_t k_tiles, int64_t strips, int64_t rows, int64_t sm_count) {
  Q4GemvShape shape;
  int64_t most = k_tiles / GEMV_MIN_TILES_PER_SPLIT;
  if (most > GEMV_MAX_SPLITS) most = GEMV_MAX_SPLITS;
  if (most < 1) most = 1;
  const int64_t enough = (GEMV_MIN_BLOCKS_PER_SM * sm_count + strips - 1) / strips;  // splits for 3 blocks per SM
  shape.splits = enough < most ? enough : most;
  for (int64_t splits = shape.splits; splits <= most; ++splits) {
    const int64_t blocks = strips * splits;
    const int64_t rounds = (blocks + sm_count - 1) / sm_count;
    if (10 * blocks >= 9 * rounds * sm_count) {  // blocks / (rounds * SMs) >= 0.9
      shape.splits = splits;
      break;
    }
  }
  const int64_t most_tiles = gemv_max_tiles_per_split(rows);
  if ((k_tiles + shape.splits - 1) / shape.splits > most_tiles) shape.splits = (k_tiles + most_tiles - 1) / most_tiles;
  shape.tiles_per_split = (k_tiles + shape.splits - 1) / shape.splits;
  shape.splits = (k_tiles + shape.tiles_per_split - 1) / shape.tiles_per_split;
  shape.shared_bytes = gemv_shared_bytes(shape.tiles_per_split, rows);
  shape.counter_bytes = sizeof(int32_t) * static_cast<size_t>(strips);
  const size_t partial_bytes =
      shape.splits > 1 ? sizeof(float) * static_cast<size_t>(shape.splits * rows * strips * STRIP_N) : 0;
  shape.permuted_x_offset = static_cast<size_t>(round_up(static_cast<int64_t>(partial_bytes), BUFFER_ALIGN));
  shape.scratch_bytes = shape.permuted_x_offset + 2 * static_cast<size_t>(rows * k_tiles * TILE_K);
  return shape;
}

}  // namespace pntk::cuda
