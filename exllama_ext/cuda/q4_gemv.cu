// q4 GEMV for up to 16 rows of x: y fp16 [M, N] = x fp16 [M, K] @ W + bias, M <= 16.
//
// W is the tiled matrix of q4_tile_layout.h: rows sorted by group and padded so that each
// 16-row tile has one group; columns in strips of 64. Every weight is read once (one uint4 per
// lane per 16 x 64 tile), dequantized in registers to fp16 (exactly scale * (q - zero) rounded
// once, as q4_dequant_cuda writes it), and multiplied on the tensor cores with
// mma.m16n8k16 (fp16 x fp16 products are exact, accumulated in fp32):
//   A (16 x 16) = x rows 0..15 of the tile's 16 k values (rows >= M read as 0),
//   B (16 x 8)  = one n-tile of W, C (16 x 8) fp32.
// Grid: (strips, splits). A block's 4 warps take consecutive slices of the split's k-tiles and
// add their C tiles in shared memory; with splits > 1 each block stores its fp32 sums to the
// workspace and the last block of a strip to finish (a counter per strip) adds the splits in
// order, adds the bias and writes y. With act-order (or padding, or an odd x stride) the x
// fragments are gathered through row_src in the kernel (GATHER); otherwise they are read as
// aligned fp16 pairs.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/cuda_check.cuh"
#include "cuda/q4_cuda.cuh"
#include "cuda/q4_device.cuh"

namespace pntk::cuda {
namespace {

constexpr int WARPS = GEMV_WARPS;
constexpr int THREADS = 32 * WARPS;
constexpr int PREFETCH = 4;  // k-tiles whose loads a warp issues before using the first one
constexpr int STRIP = static_cast<int>(STRIP_N);

// d += a * b over one 16 x 8 x 16 tile: fp16 inputs, fp32 accumulators.
// a: x rows (g, g+8) at k (2t, 2t+1) and (2t+8, 2t+9); b0, b1: W at k (2t, 2t+1), (2t+8, 2t+9)
// of column g; d: rows (g, g+8), columns (2t, 2t+1). sm_75 has no m16n8k16: two m16n8k8 halves.
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(b0));
  asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[2]), "r"(a[3]), "r"(b1));
#endif
}

// Weights are read once: stream them past L1.
__device__ __forceinline__ uint4 load_streaming(const uint4* p) { return __ldcs(p); }

struct GemvArgs {
  const uint4* qtile;        // [strips][Kp/16][32] uint4
  const uint4* scales;       // [strips][G][8] uint4 = 8 fp16 scales of n-tiles 0..7
  const uint32_t* zeros;     // [strips][G][8]
  const int32_t* tile_group; // [Kp/16]
  const int32_t* row_src;    // [Kp], original row of each padded row (-1: padding)
  const uint16_t* x;         // fp16 [rows, K], strides in elements
  int64_t x_row_stride, x_col_stride;
  __half* y;                 // fp16 [rows][n]
  const __half* bias;        // fp16 [n] or null
  float* partials;           // fp32 [splits][rows][n_padded] (splits > 1)
  int* counters;             // int32 [strips], zero between launches
  int64_t n, n_padded;
  int rows, k_tiles, groups, tiles_per_split, splits;
};

// fp16 pair (x[row, src.x], x[row, src.y]) of original rows; padding rows (-1) and rows >= M are 0.
__device__ __forceinline__ uint32_t gather_x_pair(const GemvArgs& args, int row, int2 src) {
  if (row >= args.rows) return 0u;
  const uint16_t* x_row = args.x + row * args.x_row_stride;
  const uint32_t lo = src.x < 0 ? 0u : __ldg(x_row + src.x * args.x_col_stride);
  const uint32_t hi = src.y < 0 ? 0u : __ldg(x_row + src.y * args.x_col_stride);
  return lo | (hi << 16);
}

// A fragment of one k-tile: x rows g and g+8 (when ROW_BLOCKS == 2) at padded rows
// k = 16 kt + (2t, 2t+1) and + 8. GATHER: through row_src; else x is unpermuted with
// unit column stride, an even row stride and a 4-byte aligned start (rows >= M are 0).
template <int ROW_BLOCKS, bool GATHER>
__device__ __forceinline__ void load_x_fragment(uint32_t (&a)[4], const GemvArgs& args, int kt, int g, int t) {
  const int64_t k = static_cast<int64_t>(kt) * TILE_K + 2 * t;
  if (GATHER) {
    const int2 src_lo = __ldg(reinterpret_cast<const int2*>(args.row_src + k));      // k, k+1
    const int2 src_hi = __ldg(reinterpret_cast<const int2*>(args.row_src + k + 8));  // k+8, k+9
    a[0] = gather_x_pair(args, g, src_lo);
    a[2] = gather_x_pair(args, g, src_hi);
    a[1] = ROW_BLOCKS == 2 ? gather_x_pair(args, g + 8, src_lo) : 0u;
    a[3] = ROW_BLOCKS == 2 ? gather_x_pair(args, g + 8, src_hi) : 0u;
    return;
  }
  const uint32_t* row = reinterpret_cast<const uint32_t*>(args.x + g * args.x_row_stride + k);
  a[0] = g < args.rows ? __ldg(row) : 0u;
  a[2] = g < args.rows ? __ldg(row + 4) : 0u;
  if (ROW_BLOCKS == 2 && g + 8 < args.rows) {
    const uint32_t* row8 = reinterpret_cast<const uint32_t*>(args.x + (g + 8) * args.x_row_stride + k);
    a[1] = __ldg(row8);
    a[3] = __ldg(row8 + 4);
  } else {
    a[1] = a[3] = 0u;
  }
}

// ROW_BLOCKS: 1 when M <= 8 (C rows g + 8 are never needed), 2 when M <= 16.
template <int ROW_BLOCKS, bool GATHER>
__global__ void __launch_bounds__(THREADS, GEMV_BLOCKS_PER_SM) q4_gemv_f16_kernel(GemvArgs args) {
  __shared__ float sums[WARPS][16][STRIP];   // per-warp C tiles of the strip
  extern __shared__ int split_groups[];      // tile_group of the split's k-tiles
  __shared__ int is_last_block;

  const int strip = blockIdx.x, split = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int split_begin = split * args.tiles_per_split;
  const int split_end = min(split_begin + args.tiles_per_split, args.k_tiles);
  for (int i = threadIdx.x; i < split_end - split_begin; i += THREADS) {
    split_groups[i] = args.tile_group[split_begin + i];
  }
  __syncthreads();

  const int per_warp = (split_end - split_begin + WARPS - 1) / WARPS;
  const int warp_begin = split_begin + warp * per_warp;
  const int warp_end = min(warp_begin + per_warp, split_end);
  const uint4* qtile = args.qtile + static_cast<int64_t>(strip) * args.k_tiles * 32 + lane;
  const uint4* scales = args.scales + static_cast<int64_t>(strip) * args.groups * 8 + g;
  const uint32_t* zeros = args.zeros + static_cast<int64_t>(strip) * args.groups * 8 + g;

  float acc[8][4] = {};
  uint32_t zero_pair[8], scale_pair[8];  // fp16 pairs (1024 + z, 1024 + z) and (s, s) of n-tile nt
  int current_group = -1;
  for (int base = warp_begin; base < warp_end; base += PREFETCH) {
    uint4 w[PREFETCH], s[PREFETCH];
    uint32_t z[PREFETCH], a[PREFETCH][4];
    int group[PREFETCH];
#pragma unroll
    for (int u = 0; u < PREFETCH; ++u) {
      if (base + u < warp_end) {
        group[u] = split_groups[base + u - split_begin];
        w[u] = load_streaming(qtile + static_cast<int64_t>(base + u) * 32);
        s[u] = __ldg(scales + group[u] * 8);
        z[u] = __ldg(zeros + group[u] * 8);
        load_x_fragment<ROW_BLOCKS, GATHER>(a[u], args, base + u, g, t);
      }
    }
#pragma unroll
    for (int u = 0; u < PREFETCH; ++u) {
      if (base + u >= warp_end) break;
      if (group[u] != current_group) {
        current_group = group[u];
        const uint32_t scale_words[4] = {s[u].x, s[u].y, s[u].z, s[u].w};
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
          // scale of n-tile nt is half nt % 2 of word nt / 2: duplicate it into both halves.
          scale_pair[nt] = __byte_perm(scale_words[nt / 2], 0, nt % 2 ? 0x3232 : 0x1010);
          zero_pair[nt] = zero_pair_1024((z[u] >> (4 * nt)) & 15u);
        }
      }
      const uint32_t words[4] = {w[u].x, w[u].y, w[u].z, w[u].w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {  // n-tile 2j + h: nibble pairs 2h (k 2t, 2t+1) and 2h+1 (k 2t+8, 2t+9)
          const int nt = 2 * j + h;
          const uint32_t b0 = dequant_pair_f16(nibble_pair_1024(words[j], 8 * h), zero_pair[nt], scale_pair[nt]);
          const uint32_t b1 = dequant_pair_f16(nibble_pair_1024(words[j], 8 * h + 4), zero_pair[nt], scale_pair[nt]);
          mma_16816(acc[nt], a[u], b0, b1);
        }
      }
    }
  }

#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    const int col = 8 * nt + 2 * t;
    sums[warp][g][col] = acc[nt][0];
    sums[warp][g][col + 1] = acc[nt][1];
    if (ROW_BLOCKS == 2) {
      sums[warp][g + 8][col] = acc[nt][2];
      sums[warp][g + 8][col + 1] = acc[nt][3];
    }
  }
  __syncthreads();

  const int64_t strip_col = static_cast<int64_t>(strip) * STRIP;
  auto write_y = [&](int row, int c, float value) {
    const int64_t col = strip_col + c;
    if (col >= args.n) return;
    if (args.bias) value += __half2float(args.bias[col]);
    args.y[row * args.n + col] = __float2half_rn(value);
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
    for (int sp = 0; sp < args.splits; ++sp) {
      value += __ldcg(&args.partials[(static_cast<int64_t>(sp) * args.rows + row) * args.n_padded + strip_col + c]);
    }
    write_y(row, c, value);
  }
  if (threadIdx.x == 0) args.counters[strip] = 0;  // ready for the next launch
}

}  // namespace

void q4_gemv_f16_cuda(const Q4TileMatrix& matrix, const uint16_t* x, int64_t rows, int64_t x_row_stride,
                      int64_t x_col_stride, uint16_t* y, const uint16_t* bias, void* workspace,
                      size_t workspace_bytes, uintptr_t stream) {
  PNTK_CHECK(rows >= 1 && rows <= MAX_GEMV_ROWS, "x",
             "must have 1 to " + std::to_string(MAX_GEMV_ROWS) + " rows for the GEMV kernel, got " + std::to_string(rows));
  PNTK_CHECK(x != nullptr && y != nullptr, "x", "and y must not be null");
  PNTK_CHECK(workspace != nullptr && reinterpret_cast<uintptr_t>(workspace) % BUFFER_ALIGN == 0, "workspace",
             "must be a buffer aligned to " + std::to_string(BUFFER_ALIGN) + " bytes");
  const int64_t k_tiles = matrix.k_padded / TILE_K, strips = matrix.n_padded / STRIP_N;
  const Q4GemvShape shape = q4_gemv_shape(k_tiles, strips, rows, device_sm_count(matrix.device));
  PNTK_CHECK(workspace_bytes >= shape.workspace_bytes, "workspace",
             "needs " + std::to_string(shape.workspace_bytes) + " bytes, got " + std::to_string(workspace_bytes));

  DeviceGuard guard(matrix.device);
  char* ws = static_cast<char*>(workspace);
  // Without act-order or padding, x can be read as aligned fp16 pairs.
  const bool gather = !(matrix.identity && x_col_stride == 1 && x_row_stride % 2 == 0 &&
                        reinterpret_cast<uintptr_t>(x) % 4 == 0);
  GemvArgs args{};
  args.x = x;
  args.x_row_stride = x_row_stride;
  args.x_col_stride = x_col_stride;
  args.row_src = matrix.row_src;
  args.qtile = reinterpret_cast<const uint4*>(matrix.qtile);
  args.scales = reinterpret_cast<const uint4*>(matrix.scales);
  args.zeros = matrix.zeros;
  args.tile_group = matrix.tile_group;
  args.y = reinterpret_cast<__half*>(y);
  args.bias = reinterpret_cast<const __half*>(bias);
  args.partials = reinterpret_cast<float*>(ws + shape.partials);
  args.counters = reinterpret_cast<int*>(ws + shape.counters);
  args.n = matrix.n;
  args.n_padded = matrix.n_padded;
  args.rows = static_cast<int>(rows);
  args.k_tiles = static_cast<int>(k_tiles);
  args.groups = static_cast<int>(matrix.groups);
  args.tiles_per_split = static_cast<int>(shape.tiles_per_split);
  args.splits = static_cast<int>(shape.splits);

  const dim3 grid(static_cast<unsigned>(strips), static_cast<unsigned>(shape.splits));
  const size_t group_bytes = sizeof(int) * static_cast<size_t>(shape.tiles_per_split);
  const cudaStream_t s = as_stream(stream);
  // The four instantiations: rows <= 8 or <= 16, x read directly or gathered.
  if (rows <= 8) {
    if (gather) q4_gemv_f16_kernel<1, true><<<grid, THREADS, group_bytes, s>>>(args);
    else q4_gemv_f16_kernel<1, false><<<grid, THREADS, group_bytes, s>>>(args);
  } else {
    if (gather) q4_gemv_f16_kernel<2, true><<<grid, THREADS, group_bytes, s>>>(args);
    else q4_gemv_f16_kernel<2, false><<<grid, THREADS, group_bytes, s>>>(args);
  }
  check_launch("q4_gemv_f16_kernel");
}

}  // namespace pntk::cuda
