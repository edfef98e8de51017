// q4 GEMV for up to 16 rows of x: y [M, N] = x [M, K] @ W + bias, M <= 16, x and y fp16 or
// bf16 (the same), fp32 sums.
//
// W is the tiled matrix of q4_tile_layout.h: rows sorted by group and padded so that each
// 16-row tile has one group; columns in strips of 64. Every weight is read once (one uint4 per
// lane per 16 x 64 tile) and unpacked in registers to exact values in x's type (q4_device.cuh:
// in fp16 the nibbles themselves as subnormals, one AND per register; in bf16 q - zero), which
// mma.m16n8k16 multiplies on the tensor cores (products exact, sums in fp32) with the roles of
// y^T = W^T x^T:
//   A (16 x 16) = W^T: 16 columns of W x the tile's 16 k values (two words of a lane),
//   B (16 x 8)  = x^T: the tile's 16 k values x 8 rows of x (rows >= M read as 0),
//   C (16 x 8)  = y^T, fp32: 4 mma per tile for M <= 8, 8 for M <= 16; in fp16 one more per
//                 8 rows with A = 1, the sums of x that carry the zero point.
// A warp sums a group's tiles into `group_sum`, then adds scale * (group_sum - zero * x_sum) in
// fp16, scale * group_sum in bf16, to `acc` in fp32: no weight is ever rounded, so y's error is
// the fp32 summation plus the one rounding of y.
// Grid: (strips, splits). A block's 4 warps take consecutive slices of the split's k-tiles.
// Each warp streams its weights through a ring of STAGES tiles in shared memory (cp.async:
// STAGES - 1 tiles in flight while it computes one; a lane reads back only its own 16 bytes,
// so no synchronisation is needed). The block first stages its split's x in shared memory in
// padded row order, from which the A fragments are read: copied in 16-byte pieces from x
// itself (no act-order, aligned contiguous rows) or from a copy in padded row order that
// q4_permute_x_kernel writes first; with at most GEMV_MAX_GATHER_ROWS rows the block gathers
// its few values through row_src itself (one kernel launch less). The warps add their C tiles in shared memory; with splits > 1 each
// block stores its fp32 sums to the partials buffer and the last block of a strip to finish (a
// counter per strip) adds the splits in order, adds the bias and writes y.
#include <cuda_runtime.h>

#include "cuda/cuda_check.cuh"
#include "cuda/q4_cuda.cuh"
#include "cuda/q4_device.cuh"

namespace pntk::cuda {
namespace {

constexpr int WARPS = GEMV_WARPS;
constexpr int THREADS = 32 * WARPS;
constexpr int STAGES = 8;  // ring slots per warp: 7 tiles (3.5 KB) in flight per warp
constexpr int STRIP = static_cast<int>(STRIP_N);

// 16-byte global -> shared copy that bypasses L1 (weights are read once). sm_75 has no
// cp.async: there it is an ordinary load and store.
__device__ __forceinline__ void copy_async_16(uint4* shared, const uint4* global) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(address), "l"(global));
#else
  *shared = __ldcs(global);
#endif
}

__device__ __forceinline__ void copy_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most PENDING of this thread's most recent copy groups are in flight.
template <int PENDING>
__device__ __forceinline__ void copy_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING) : "memory");
#endif
}

__device__ __forceinline__ float half_bits_to_float(uint32_t bits) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
}

struct GemvArgs {
  const uint4* qtile;        // [strips][Kp/16][32] uint4
  const uint4* scales;       // fp16 [strips][G][4][8][2]: two uint4 per (strip, group, t)
  const uint32_t* zeros;     // [strips][G][8]
  const int32_t* tile_group; // [Kp/16]
  const int32_t* row_src;    // [Kp], original row of each padded row (-1: padding)
  const uint16_t* x;         // fp16 / bf16 bits [rows, K], strides in elements
  int64_t x_row_stride, x_col_stride;
  const uint4* x_padded;     // or x in padded row order [rows][x_padded_stride], 16-byte aligned rows
  int64_t x_padded_stride;   // in elements, a multiple of 8
  uint16_t* y;               // fp16 / bf16 bits [rows][n]
  const float* bias;         // [n] or null
  float* partials;           // [splits][rows][n_padded] (splits > 1)
  int* counters;             // [strips], zero between launches
  int64_t n, n_padded;
  int rows, k_tiles, groups, tiles_per_split, splits, x_row_words;
};

// Loads a thread issues before it stores any (independent loads overlap their latency).
constexpr int STAGE_BATCH = 8;
constexpr int GATHER_QUADS = 5;  // 2560 k values per round: a whole split of K = 5120 in 2 splits

// x of the split's k-tiles into shared memory [rows][x_row_words] in padded row order.
__device__ __forceinline__ void stage_x(const GemvArgs& args, uint32_t* x_words, int split_begin, int split_tiles) {
  const int64_t first_k = static_cast<int64_t>(split_begin) * TILE_K;
  if (args.x_padded) {  // 16-byte pieces: 2 per tile and row
    const int pieces_per_row = 2 * split_tiles;
    for (int base = threadIdx.x; base < args.rows * pieces_per_row; base += THREADS * STAGE_BATCH) {
      uint4 piece[STAGE_BATCH];
#pragma unroll
      for (int u = 0; u < STAGE_BATCH; ++u) {
        const int i = base + u * THREADS, r = i / pieces_per_row, p = i % pieces_per_row;
        if (i < args.rows * pieces_per_row) piece[u] = __ldg(args.x_padded + (r * args.x_padded_stride + first_k) / 8 + p);
      }
#pragma unroll
      for (int u = 0; u < STAGE_BATCH; ++u) {
        const int i = base + u * THREADS, r = i / pieces_per_row, p = i % pieces_per_row;
        if (i < args.rows * pieces_per_row) reinterpret_cast<uint4*>(x_words + r * args.x_row_words)[p] = piece[u];
      }
    }
    return;
  }
  // One row (GEMV_MAX_GATHER_ROWS), gathered through row_src: a thread takes GATHER_QUADS
  // quads of 4 consecutive padded rows (one int4 of row_src each), so that a split of up to
  // THREADS * 4 * GATHER_QUADS k values costs one round trip for row_src and one for x.
  const int quads = split_tiles * static_cast<int>(TILE_K / 4);
  const int4* row_src_quads = reinterpret_cast<const int4*>(args.row_src + first_k);  // 16-byte aligned
  uint2* x_quads = reinterpret_cast<uint2*>(x_words);
  for (int base = threadIdx.x; base < quads; base += THREADS * GATHER_QUADS) {
    int4 src[GATHER_QUADS];
#pragma unroll
    for (int u = 0; u < GATHER_QUADS; ++u) {
      const int quad = base + u * THREADS;
      src[u] = quad < quads ? __ldg(row_src_quads + quad) : make_int4(-1, -1, -1, -1);
    }
    uint32_t value[GATHER_QUADS][4];
#pragma unroll
    for (int u = 0; u < GATHER_QUADS; ++u) {
      const int rows_of_quad[4] = {src[u].x, src[u].y, src[u].z, src[u].w};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        value[u][e] = rows_of_quad[e] >= 0 ? __ldg(args.x + rows_of_quad[e] * args.x_col_stride) : 0u;
      }
    }
#pragma unroll
    for (int u = 0; u < GATHER_QUADS; ++u) {
      const int quad = base + u * THREADS;
      if (quad < quads) x_quads[quad] = make_uint2(value[u][0] | value[u][1] << 16, value[u][2] | value[u][3] << 16);
    }
  }
}

// x [rows, K] (any strides) -> x_padded [rows][Kp] in padded row order (0 for padding rows).
__global__ void q4_permute_x_kernel(const uint16_t* x, int64_t x_row_stride, int64_t x_col_stride,
                                    const int32_t* row_src, int64_t k_padded, int64_t rows, uint16_t* x_padded) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * k_padded) return;
  const int64_t r = i / k_padded;
  const int32_t src = row_src[i % k_padded];
  x_padded[i] = src < 0 ? 0 : x[r * x_row_stride + src * x_col_stride];
}

// ROW_BLOCKS: blocks of 8 rows of x, 1 when M <= 8, 2 when M <= 16.
// Shared memory: static, the weight rings (later the warps' C tiles, same bytes); dynamic,
// x [rows][x_row_words] then the split's tile groups [tiles_per_split] (gemv_shared_bytes).
template <class Pair, int ROW_BLOCKS>
__global__ void __launch_bounds__(THREADS, GEMV_BLOCKS_PER_SM) q4_gemv_kernel(GemvArgs args) {
  static_assert(STAGES * 32 * sizeof(uint4) >= 16 * STRIP * sizeof(float), "the rings hold the warps' C tiles");
  __shared__ __align__(16) unsigned char ring_bytes[WARPS * STAGES * 32 * sizeof(uint4)];
  extern __shared__ __align__(16) uint32_t dynamic_shared[];
  __shared__ int is_last_block;
  auto ring = reinterpret_cast<uint4 (*)[STAGES][32]>(ring_bytes);
  auto sums = reinterpret_cast<float (*)[16][STRIP]>(ring_bytes);

  const int strip = blockIdx.x, split = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int split_begin = split * args.tiles_per_split;
  const int split_tiles = min(args.tiles_per_split, args.k_tiles - split_begin);
  const int per_warp = (split_tiles + WARPS - 1) / WARPS;
  const int warp_first = warp * per_warp;  // within the split
  const int warp_tiles = max(0, min(per_warp, split_tiles - warp_first));
  const uint4* qtile = args.qtile + (static_cast<int64_t>(strip) * args.k_tiles + split_begin + warp_first) * 32 + lane;

  // Start the weight stream, then stage the tile groups and x while it is in flight.
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < warp_tiles) copy_async_16(&ring[warp][s][lane], qtile + s * 32);
    copy_async_commit();
  }
  uint32_t* x_words = dynamic_shared;  // rows of x_row_words (16-byte multiples: 4 mod 32 words)
  int* split_groups = reinterpret_cast<int*>(dynamic_shared + args.rows * args.x_row_words);
  for (int i = threadIdx.x; i < split_tiles; i += THREADS) split_groups[i] = args.tile_group[split_begin + i];
  stage_x(args, x_words, split_begin, split_tiles);
  __syncthreads();

  const uint4* scales = args.scales + static_cast<int64_t>(strip) * args.groups * 8 + g;
  const uint32_t* zeros = args.zeros + static_cast<int64_t>(strip) * args.groups * 8 + g;
  // C entries of the column block m (columns 16m..16m+15) and row block mb: [0], [1] column
  // 16m + g, [2], [3] column 16m + 8 + g, for the x rows 8 mb + 2t and 8 mb + 2t + 1.
  float acc[4][ROW_BLOCKS][4] = {};        // sum over finished groups of scale * group_sum
  float group_sum[4][ROW_BLOCKS][4] = {};  // sum over the current group's tiles of x * weights
  float x_sum[ROW_BLOCKS][4] = {};         // ZERO_BY_X_SUM: [0], [1] the group's sum of x rows 8 mb + 2t, +1
  uint32_t zero_pairs[8] = {};  // subtracting pair types: (OFFSET + z, OFFSET + z) of column 8 nt + g
  uint4 scale_word = {};        // fp16 scales of the group's columns 8 nt + g, nt = 0..7
  uint32_t zero_word = 0;       // ZERO_BY_X_SUM: the group's zeros, nibble nt for column 8 nt + g
  int current_group = -1;
  // acc += scale * (sum of x * (q - zero)) for the group that ends: scale * unit * group_sum,
  // and with ZERO_BY_X_SUM - scale * zero * x_sum (scale * zero is exact in fp32).
  auto add_group = [&]() {
    const uint32_t words[4] = {scale_word.x, scale_word.y, scale_word.z, scale_word.w};
#pragma unroll
    for (int m = 0; m < 4; ++m) {  // columns 16m + g (scale nt = 2m) and 16m + 8 + g (nt = 2m + 1)
      const float scale[2] = {half_bits_to_float(words[m] & 0xFFFFu), half_bits_to_float(words[m] >> 16)};
      const float zero[2] = {static_cast<float>((zero_word >> (8 * m)) & 15u),
                             static_cast<float>((zero_word >> (8 * m + 4)) & 15u)};
#pragma unroll
      for (int mb = 0; mb < ROW_BLOCKS; ++mb) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          acc[m][mb][c] = fmaf(scale[c / 2] * Pair::unit(m & 1), group_sum[m][mb][c], acc[m][mb][c]);
          if constexpr (Pair::ZERO_BY_X_SUM) acc[m][mb][c] = fmaf(-scale[c / 2] * zero[c / 2], x_sum[mb][c & 1], acc[m][mb][c]);
          group_sum[m][mb][c] = 0.0f;
        }
      }
    }
#pragma unroll
    for (int mb = 0; mb < ROW_BLOCKS; ++mb) {
#pragma unroll
      for (int c = 0; c < 4; ++c) x_sum[mb][c] = 0.0f;
    }
  };
  // Subtracting pair types: zero words two tiles ahead (they change with the group, and most
  // reads hit L1).
  const int* groups = split_groups + warp_first;
  uint32_t zero_ahead = 0, zero_ahead_next = 0;
  if constexpr (!Pair::ZERO_BY_X_SUM) {
    zero_ahead = warp_tiles > 0 ? __ldg(zeros + groups[0] * 8) : 0u;
    zero_ahead_next = warp_tiles > 1 ? __ldg(zeros + groups[1] * 8) : 0u;
  }
  const uint4* next_tile = qtile + (STAGES - 1) * 32;  // the next tile to copy into the ring
  // B fragments (x^T): x row 8 mb + g at k = 16 kt + (2t, 2t+1) and + 8 (rows >= M are 0).
  const uint32_t* x_rows[ROW_BLOCKS];
  bool row_in[ROW_BLOCKS];
#pragma unroll
  for (int mb = 0; mb < ROW_BLOCKS; ++mb) {
    row_in[mb] = 8 * mb + g < args.rows;
    x_rows[mb] = x_words + (8 * mb + g) * args.x_row_words + warp_first * static_cast<int>(TILE_K / 2) + t;
  }
  // Unrolled by the ring's length, so that slots are constants: tile i = i0 + s is in slot s.
  for (int i0 = 0; i0 < warp_tiles; i0 += STAGES) {
#pragma unroll
    for (int s = 0; s < STAGES; ++s) {
      const int i = i0 + s;
      if (i >= warp_tiles) break;
      copy_async_wait<STAGES - 2>();  // tile i has landed
      const uint4 w = ring[warp][s][lane];
      if (i + STAGES - 1 < warp_tiles) copy_async_16(&ring[warp][(s + STAGES - 1) % STAGES][lane], next_tile);
      copy_async_commit();  // (into the slot read in the previous iteration)
      next_tile += 32;

      const int group = groups[i];
      uint32_t z = 0;
      if constexpr (!Pair::ZERO_BY_X_SUM) {
        z = zero_ahead;
        zero_ahead = zero_ahead_next;
        if (i + 2 < warp_tiles) zero_ahead_next = __ldg(zeros + groups[i + 2] * 8);
      }
      if (group != current_group) {
        if (current_group >= 0) add_group();
        current_group = group;
        // Needed when the group ends: latency hidden.
        scale_word = __ldg(scales + current_group * 8);
        if constexpr (Pair::ZERO_BY_X_SUM) {
          zero_word = __ldg(zeros + current_group * 8);
        } else {
#pragma unroll
          for (int nt = 0; nt < 8; ++nt) zero_pairs[nt] = zero_pair<Pair>((z >> (4 * nt)) & 15u);
        }
      }
      uint32_t b[ROW_BLOCKS][2];
#pragma unroll
      for (int mb = 0; mb < ROW_BLOCKS; ++mb) {
        b[mb][0] = row_in[mb] ? x_rows[mb][i * static_cast<int>(TILE_K / 2)] : 0u;
        b[mb][1] = row_in[mb] ? x_rows[mb][i * static_cast<int>(TILE_K / 2) + 4] : 0u;
      }
      // Words 2P, 2P+1 hold the column blocks 2P (even nibbles) and 2P+1 (odd nibbles); a word
      // gives a0 / a2 as is and a1 / a3 shifted by 8 (q4_tile_layout.h).
      const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int pair = 0; pair < 2; ++pair) {
        const uint32_t first = words[2 * pair], second = words[2 * pair + 1];
        const uint32_t first_high = first >> 8, second_high = second >> 8;
#pragma unroll
        for (int odd = 0; odd < 2; ++odd) {
          const int m = 2 * pair + odd;
          const uint32_t a[4] = {Pair::weights(first, odd, zero_pairs[2 * m]),
                                 Pair::weights(first_high, odd, zero_pairs[2 * m + 1]),
                                 Pair::weights(second, odd, zero_pairs[2 * m]),
                                 Pair::weights(second_high, odd, zero_pairs[2 * m + 1])};
#pragma unroll
          for (int mb = 0; mb < ROW_BLOCKS; ++mb) mma_16816<Pair>(group_sum[m][mb], a, b[mb][0], b[mb][1], group_sum[m][mb]);
        }
      }
      if constexpr (Pair::ZERO_BY_X_SUM) {  // the group's sums of x, by one more mma with A = 1
        const uint32_t ones[4] = {Pair::ONES, Pair::ONES, Pair::ONES, Pair::ONES};
#pragma unroll
        for (int mb = 0; mb < ROW_BLOCKS; ++mb) mma_16816<Pair>(x_sum[mb], ones, b[mb][0], b[mb][1], x_sum[mb]);
      }
    }
  }
  if (current_group >= 0) add_group();
  copy_async_wait<0>();
  __syncthreads();  // every ring is drained: its bytes become the C tiles

#pragma unroll
  for (int j = 0; j < 4; ++j) {
#pragma unroll
    for (int mb = 0; mb < ROW_BLOCKS; ++mb) {
      const int row = 8 * mb + 2 * t;
      sums[warp][row][16 * j + g] = acc[j][mb][0];
      sums[warp][row + 1][16 * j + g] = acc[j][mb][1];
      sums[warp][row][16 * j + 8 + g] = acc[j][mb][2];
      sums[warp][row + 1][16 * j + 8 + g] = acc[j][mb][3];
    }
  }
  __syncthreads();

  const int64_t strip_col = static_cast<int64_t>(strip) * STRIP;
  auto write_y = [&](int row, int c, float value) {
    const int64_t col = strip_col + c;
    if (col >= args.n) return;
    if (args.bias) value += args.bias[col];
    args.y[row * args.n + col] = Pair::from_float(value);
  };
  for (int i = threadIdx.x; i < args.rows * STRIP; i += THREADS) {
    const int row = i / STRIP, c = i % STRIP;
    float value = 0.0f;
#pragma unroll
    for (int v = 0; v < WARPS; ++v) value += sums[v][row][c];
    if (args.splits == 1) {
      write_y(row, c, value);
    } else {
      args.partials[(static_cast<int64_t>(split) * args.rows + row) * args.n_padded + strip_col + c] = value;
    }
  }
  if (args.splits == 1) return;

  // Last block of the strip: add the splits' partial sums in split order.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) is_last_block = atomicAdd(&args.counters[strip], 1) == args.splits - 1;
  __syncthreads();
  if (!is_last_block) return;
  __threadfence();
  for (int i = threadIdx.x; i < args.rows * STRIP; i += THREADS) {
    const int row = i / STRIP, c = i % STRIP;
    float value = 0.0f;
#pragma unroll 8
    for (int sp = 0; sp < args.splits; ++sp) {
      value += __ldcg(&args.partials[(static_cast<int64_t>(sp) * args.rows + row) * args.n_padded + strip_col + c]);
    }
    write_y(row, c, value);
  }
  if (threadIdx.x == 0) args.counters[strip] = 0;  // ready for the next launch
}

// The two instantiations of one pair type: rows <= 8 or <= 16.
template <class Pair>
void launch_gemv(const GemvArgs& args, dim3 grid, size_t shared_bytes, cudaStream_t stream) {
  if (args.rows <= 8) {
    q4_gemv_kernel<Pair, 1><<<grid, THREADS, shared_bytes, stream>>>(args);
  } else {
    q4_gemv_kernel<Pair, 2><<<grid, THREADS, shared_bytes, stream>>>(args);
  }
  check_launch("q4_gemv_kernel");
}

}  // namespace

void q4_gemv_cuda(const Q4TileMatrix& matrix, const Q4GemvCall& call, uintptr_t stream) {
  PNTK_CHECK(call.rows >= 1 && call.rows <= MAX_GEMV_ROWS, "x",
             "must have 1 to " + std::to_string(MAX_GEMV_ROWS) + " rows for the GEMV kernel, got " +
                 std::to_string(call.rows));
  PNTK_CHECK(call.dtype == DType::float16 || call.dtype == DType::bfloat16, "x",
             std::string("must be float16 or bfloat16 for the GEMV kernel, got ") + dtype_name(call.dtype));
  PNTK_CHECK(call.dtype != DType::bfloat16 || gemv_takes_bfloat16(matrix.device), "x",
             "bfloat16 needs a GPU of compute capability 8.0 or newer for the GEMV kernel");
  PNTK_CHECK(call.x != nullptr && call.y != nullptr, "x", "and y must not be null");
  const int64_t k_tiles = matrix.k_padded / TILE_K, strips = matrix.n_padded / STRIP_N;
  const Q4GemvShape shape = q4_gemv_shape(k_tiles, strips, call.rows, device_sm_count(matrix.device));
  PNTK_CHECK(call.counters != nullptr && reinterpret_cast<uintptr_t>(call.counters) % 4 == 0, "counters",
             "must be a 4-byte aligned buffer");
  PNTK_CHECK(call.counter_bytes >= shape.counter_bytes, "counters",
             "needs " + std::to_string(shape.counter_bytes) + " bytes, got " + std::to_string(call.counter_bytes));
  PNTK_CHECK(call.scratch != nullptr && reinterpret_cast<uintptr_t>(call.scratch) % BUFFER_ALIGN == 0, "scratch",
             "must be a buffer aligned to " + std::to_string(BUFFER_ALIGN) + " bytes");
  PNTK_CHECK(call.scratch_bytes >= shape.scratch_bytes, "scratch",
             "needs " + std::to_string(shape.scratch_bytes) + " bytes, got " + std::to_string(call.scratch_bytes));

  DeviceGuard guard(matrix.device);
  GemvArgs args{};
  args.x = static_cast<const uint16_t*>(call.x);
  args.x_row_stride = call.x_row_stride;
  args.x_col_stride = call.x_col_stride;
  args.row_src = matrix.row_src;
  args.qtile = reinterpret_cast<const uint4*>(matrix.qtile);
  args.scales = reinterpret_cast<const uint4*>(matrix.scales);
  args.zeros = matrix.zeros;
  args.tile_group = matrix.tile_group;
  args.y = static_cast<uint16_t*>(call.y);
  args.bias = call.bias;
  args.partials = static_cast<float*>(call.scratch);
  args.counters = call.counters;
  args.n = matrix.n;
  args.n_padded = matrix.n_padded;
  args.rows = static_cast<int>(call.rows);
  args.k_tiles = static_cast<int>(k_tiles);
  args.groups = static_cast<int>(matrix.groups);
  args.tiles_per_split = static_cast<int>(shape.tiles_per_split);
  args.splits = static_cast<int>(shape.splits);
  args.x_row_words = static_cast<int>(gemv_x_row_words(shape.tiles_per_split));

  const cudaStream_t s = as_stream(stream);
  // x's staging source: x itself when it is already in padded row order as aligned rows; else
  // a permuted copy in the scratch buffer, unless the blocks gather the few rows themselves.
  const bool x_is_padded = matrix.identity && call.x_col_stride == 1 && call.x_row_stride % 8 == 0 &&
                           reinterpret_cast<uintptr_t>(call.x) % 16 == 0;
  if (x_is_padded) {
    args.x_padded = static_cast<const uint4*>(call.x);
    args.x_padded_stride = call.x_row_stride;
  } else if (call.rows > GEMV_MAX_GATHER_ROWS) {
    uint16_t* permuted = reinterpret_cast<uint16_t*>(static_cast<char*>(call.scratch) + shape.permuted_x_offset);
    const int64_t elements = call.rows * matrix.k_padded;
    q4_permute_x_kernel<<<static_cast<unsigned>(ceil_div(elements, 256)), 256, 0, s>>>(
        args.x, call.x_row_stride, call.x_col_stride, matrix.row_src, matrix.k_padded, call.rows, permuted);
    check_launch("q4_permute_x_kernel");
    args.x_padded = reinterpret_cast<const uint4*>(permuted);
    args.x_padded_stride = matrix.k_padded;
  }
  const dim3 grid(static_cast<unsigned>(strips), static_cast<unsigned>(shape.splits));
  if (call.dtype == DType::float16) {
    launch_gemv<Fp16Pair>(args, grid, shape.shared_bytes, s);
  } else {
    launch_gemv<Bf16Pair>(args, grid, shape.shared_bytes, s);
  }
}

}  // namespace pntk::cuda
