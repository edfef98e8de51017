// Dequantization of a tiled q4 matrix (q4_tile_layout.h) to a dense [K, N] matrix in the
// original row order, for cuBLAS (torch.matmul) when x has more rows than the GEMV takes:
//   out[row_src[k'], n] = scale[g, n] * (q[k', n] - zero[g, n]),  g = tile_group[k' / 16].
// (q - zero) * scale is exact in fp32 (a 5-bit integer times an 11-bit fp16), so the value is
// rounded once, to the output type, and the fp16 result equals the GEMV kernel's weights.
// One warp per 16 x 64 tile: it unpacks its uint4 per lane into shared memory, then writes
// the 16 rows as 16-byte chunks (a row of 64 columns is contiguous in `out`).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/cuda_check.cuh"
#include "cuda/q4_cuda.cuh"

namespace pntk::cuda {
namespace {

constexpr int WARPS = 4;
constexpr int STRIP = static_cast<int>(STRIP_N);

template <typename T>
__device__ __forceinline__ T from_exact_float(float x);
template <>
__device__ __forceinline__ float from_exact_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_exact_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_exact_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

struct DequantArgs {
  const uint4* qtile;         // [strips][Kp/16][32] uint4
  const __half* scales;       // [strips][G][8][8]
  const uint32_t* zeros;      // [strips][G][8]
  const int32_t* tile_group;  // [Kp/16]
  const int32_t* row_src;     // [Kp]
  int64_t n, groups, k_tiles;
};

// Grid (strips, ceil(k_tiles / 4)); warp w of block (strip, b) handles k-tile 4b + w.
template <typename T>
__global__ void __launch_bounds__(32 * WARPS) q4_dequant_kernel(DequantArgs args, T* out) {
  __shared__ __align__(16) T tile[WARPS][16][STRIP];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int64_t strip = blockIdx.x;
  const int64_t kt = static_cast<int64_t>(blockIdx.y) * WARPS + warp;
  if (kt >= args.k_tiles) return;
  const int64_t group = args.tile_group[kt];
  const uint4 w = args.qtile[(strip * args.k_tiles + kt) * 32 + lane];
  const __half* scales = args.scales + ((strip * args.groups + group) * 8 + g) * 8;
  const uint32_t zeros = args.zeros[(strip * args.groups + group) * 8 + g];
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int p = 0; p < 8; ++p) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const TileCell cell = tile_cell(lane, j, p);
      const int nt = cell.col / 8;  // the lane's column in n-tile nt is 8 nt + g
      const int q = static_cast<int>((words[j] >> (4 * p)) & 15u);
      const int zero = static_cast<int>((zeros >> (4 * nt)) & 15u);
      const float scale = __half2float(scales[nt]);
      tile[warp][cell.row][cell.col] = from_exact_float<T>(static_cast<float>(q - zero) * scale);
    }
  }
  __syncwarp();
  constexpr int CHUNKS_PER_ROW = STRIP / 8;  // 8 columns = 16 or 32 bytes, whole uint4s
  for (int c = lane; c < 16 * CHUNKS_PER_ROW; c += 32) {
    const int row = c / CHUNKS_PER_ROW, chunk = c % CHUNKS_PER_ROW;
    const int32_t dst = args.row_src[kt * TILE_K + row];
    const int64_t col = strip * STRIP + 8 * chunk;
    if (dst < 0 || col >= args.n) continue;
    const uint4* from = reinterpret_cast<const uint4*>(&tile[warp][row][8 * chunk]);
    uint4* to = reinterpret_cast<uint4*>(out + dst * args.n + col);
#pragma unroll
    for (int v = 0; v < static_cast<int>(8 * sizeof(T) / 16); ++v) to[v] = from[v];
  }
}

template <typename T>
void launch_dequant(const Q4TileMatrix& m, void* out, cudaStream_t stream) {
  const DequantArgs args{reinterpret_cast<const uint4*>(m.qtile), reinterpret_cast<const __half*>(m.scales), m.zeros,
                         m.tile_group, m.row_src, m.n, m.groups, m.k_padded / TILE_K};
  const dim3 grid(static_cast<unsigned>(m.n_padded / STRIP_N), static_cast<unsigned>(ceil_div(args.k_tiles, WARPS)));
  q4_dequant_kernel<T><<<grid, 32 * WARPS, 0, stream>>>(args, static_cast<T*>(out));
  check_launch("q4_dequant_kernel");
}

}  // namespace

void q4_dequant_cuda(const Q4TileMatrix& matrix, void* out, DType dtype, uintptr_t stream) {
  PNTK_CHECK(out != nullptr && reinterpret_cast<uintptr_t>(out) % 16 == 0, "out", "must be aligned to 16 bytes");
  PNTK_CHECK(matrix.k_padded / TILE_K <= 65535LL * WARPS, "qweight", "has too many rows for the dequantize kernel");
  DeviceGuard guard(matrix.device);
  switch (dtype) {
    case DType::float32: return launch_dequant<float>(matrix, out, as_stream(stream));
    case DType::float16: return launch_dequant<__half>(matrix, out, as_stream(stream));
    case DType::bfloat16: return launch_dequant<__nv_bfloat16>(matrix, out, as_stream(stream));
    default: fail_argument("dtype", std::string("must be float32, float16 or bfloat16, got ") + dtype_name(dtype));
  }
}

}  // namespace pntk::cuda
