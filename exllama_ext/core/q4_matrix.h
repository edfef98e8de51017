// GPTQ 4-bit matrix on the CPU: validation of GPTQ tensors, the packed layout, and y = x @ W + bias.
//
// GPTQ format (DESIGN.md), K = in_features, N = out_features, G = groups:
//   qweight int32 [K/8, N]  row k in word k/8, bits 4*(k%8)
//   qzeros  int32 [G, N/8]  column n in word n/8, bits 4*(n%8)
//   scales  fp16  [G, N]
//   g_idx   int32 [K]       group of row k, any value in [0, G) (default k / (K/G))
//   bias    fp16/bf16/fp32 [N], optional
//   W[k, n] = scales[g, n] * (q[k, n] - zero[g, n]), g = g_idx[k], with
//   zero = (z + 1) & 15 for checkpoint_format "gptq" (v1) and zero = z for "gptq_v2".
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "core/huge_pages.h"
#include "core/tensor_view.h"

namespace pntk {

// Explicit values; grow only at the end.
enum class GptqFormat : int { gptq = 0, gptq_v2 = 1 };
GptqFormat parse_gptq_format(const std::string& checkpoint_format);  // names "checkpoint_format" on error

struct GptqShape {
  int64_t in_features = 0;   // K
  int64_t out_features = 0;  // N
  int64_t groups = 0;        // G
  int64_t group_size = 0;    // K / G when g_idx is absent or regular; -1 when G == 1; 0 for uneven groups
  bool act_order = false;    // g_idx present and not non-decreasing
};

// The one validation of GPTQ tensors, for every backend: dtypes, dims, shapes that agree,
// K % 8 == 0, N % 8 == 0, g_idx length and range. Only g_idx's values are read, so it must
// be a CPU tensor; the others may live on any device (their metadata is checked).
GptqShape validate_gptq(const TensorView& qweight, const TensorView& qzeros, const TensorView& scales,
                        const TensorView* g_idx, const TensorView* bias);

// Packed layout, built once at load. Rows are sorted by group (stable) and each group is
// padded with zero rows to a multiple of 8, so a packed word never spans two groups.
// Columns are cut into tiles of kQ4TileColumns (the last tile may be narrower, a multiple
// of 8); each tile's data is contiguous, so a thread streams its tiles sequentially:
//   qweight[tile][r][c]  uint32, r < packed_rows/8, c < width(tile): packed rows 8r..8r+7
//                        of column c, row 8r+j at bits 4*j (the GPTQ word, rows reordered)
//   scales [tile][g][c]  fp16 bits
//   zeros  [tile][g][c/8] effective zero (v1 already decoded) of column c at bits 4*(c%8)
// Tile t starts at column kQ4TileColumns*t; all tiles before it are full, so its offsets are
// kQ4TileColumns*t * (rows per column) in each array.
constexpr int64_t kQ4TileColumns = 64;

struct Q4Layout {
  int64_t k = 0, n = 0, groups = 0;
  int64_t packed_rows = 0;               // K' >= K, a multiple of 8
  std::vector<int32_t> row_of_packed;    // [K'] original row of each packed row, -1 for padding
  std::vector<int64_t> group_begin;      // [G+1] first packed row of each group (multiples of 8)
  std::vector<uint32_t, HugePageAllocator<uint32_t>> qweight;  // [N/T][K'/8][T]
  std::vector<uint16_t, HugePageAllocator<uint16_t>> scales;   // [N/T][G][T]
  std::vector<uint32_t, HugePageAllocator<uint32_t>> zeros;    // [N/T][G][T/8]
  std::vector<float> bias;               // [N] or empty

  int64_t tiles() const { return (n + kQ4TileColumns - 1) / kQ4TileColumns; }
  int64_t tile_width(int64_t tile) const { return std::min(kQ4TileColumns, n - tile * kQ4TileColumns); }
  int64_t qweight_offset(int64_t tile) const { return tile * kQ4TileColumns * (packed_rows / 8); }
  int64_t scales_offset(int64_t tile) const { return tile * kQ4TileColumns * groups; }
  int64_t zeros_offset(int64_t tile) const { return tile * kQ4TileColumns / 8 * groups; }
  const uint32_t* tile_qweight(int64_t tile) const { return qweight.data() + qweight_offset(tile); }
  const uint16_t* tile_scales(int64_t tile) const { return scales.data() + scales_offset(tile); }
  const uint32_t* tile_zeros(int64_t tile) const { return zeros.data() + zeros_offset(tile); }
};

// Activations prepared once per call, in one of two forms (`form`):
// - packed_fp32: x [M][K'] fp32 in packed row order (0 in padding rows), and for the GEMV
//   kernels also the per-group sums xsum [M][G] (fp32). A row whose largest |x| is under
//   2^-64 is stored times 2^64 (exact), so x * 2^-24 (the nibble-scaled GEMV) and vdpbf16ps
//   (no denormals) lose nothing, and one whose largest |x| is 2^64 or more times 2^-64, so no
//   sum overflows before y does; kernels multiply that row of y by row_unscale [M] (2^-64,
//   2^64, else 1; q4::row_scale).
// - bf16_pairs (the avx512bf16 GEMV, q4_kernel_avx512bf16.cpp): x (times the same row factor)
//   as bf16 pairs in xpair_parts exact parts (1 for bf16 x, 2 for fp16 x), xpairs
//   [M][K'/8][parts][4], with sums over chunks of groups, xsum_chunk [M][K'/8], and
//   row_unscale; x and xsum stay empty.
// - int16_pairs (the avx2 GEMV for fp16 and bf16 x, q4_kernel_avx2.cpp): x (times the row
//   factor) per chunk of a group (up to 32 packed rows) as 16-bit integers xq = round(x / d),
//   d = the chunk's largest |x| / 32767, in pairs xpairs [K'/8][M][4] (xq[8r+j] in the low and
//   xq[8r+j+4] in the high half, j < 4); at the chunk's first word row, d in chunk_scale
//   [M][K'/8] and the sum of its xq in xsum_chunk [M][K'/8]; row_unscale; and the outliers
//   left out of xq (q4_kernel_int16.h), row m's in outliers[outlier_begin[m], outlier_begin[m+1]).
struct Q4Activations {
  enum class Form { packed_fp32, bf16_pairs, int16_pairs };
  Form form = Form::packed_fp32;
  int64_t m = 0;
  std::vector<float> x;
  std::vector<float> xsum;
  std::vector<float> row_unscale;
  std::vector<uint32_t> xpairs;
  int xpair_parts = 0;
  std::vector<float> xsum_chunk;
  std::vector<float> chunk_scale;
  struct Outlier {
    int32_t packed_row, group;
    float value;  // x times the row factor
  };
  std::vector<Outlier> outliers;
  std::vector<int64_t> outlier_begin;  // [M + 1]
};

// One CPU kernel family (a row of the dispatch table in q4_cpu_kernels.cpp).
struct Q4CpuKernel {
  const char* name;  // "scalar", "avx2", "avx512", "avx512bf16"
  // x [M, K] (any strides, fp16/bf16/fp32) -> prepared activations for gemv_tile
  // (for_gemv) or gemm_tile; each family decides what its kernels want (q4_kernel_impl.h).
  void (*prepare)(const Q4Layout& w, const TensorView& x, bool for_gemv, Q4Activations& out);
  // Columns of tile `tile` for all M rows: out[m, n] = sum_k x W + bias, in out's dtype.
  void (*gemv_tile)(const Q4Layout& w, const Q4Activations& a, int64_t tile, const TensorView& out);  // M <= 16
  void (*gemm_tile)(const Q4Layout& w, const Q4Activations& a, int64_t tile, const TensorView& out);  // any M
};
constexpr int64_t kQ4GemvMaxRows = 16;
constexpr int64_t kQ4GemmRowBlock = 256;  // rows of x prepared and multiplied at a time

// Kernels this CPU can run, best first; the first is the default.
std::vector<const Q4CpuKernel*> q4_cpu_kernels();
const Q4CpuKernel& q4_cpu_kernel();               // the one in use
void q4_set_cpu_kernel(const std::string& name);  // for tests and benchmarks; names "kernel" on error

class Q4Matrix {
 public:
  // Validates (validate_gptq) and packs; all tensors must be CPU tensors.
  Q4Matrix(const TensorView& qweight, const TensorView& qzeros, const TensorView& scales,
           const TensorView* g_idx, const TensorView* bias, GptqFormat format);

  const GptqShape& shape() const { return shape_; }
  const Q4Layout& layout() const { return layout_; }

  // out [M, N] = x [M, K] @ W + bias; x fp16/bf16/fp32 (last stride 1 not required),
  // out contiguous with x's dtype. Rows M <= 16 take the GEMV path, larger M the GEMM path.
  void forward(const TensorView& x, const TensorView& out) const;
  // out [K, N] (fp32, fp16 or bf16, contiguous) = W in the original row order.
  void dequantize(const TensorView& out) const;
  // Bytes held: packed weights, scales, zeros, permutation, bias.
  int64_t storage_bytes() const;

 private:
  GptqShape shape_;
  Q4Layout layout_;
};

}  // namespace pntk
