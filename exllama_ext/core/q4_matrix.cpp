#include "core/q4_matrix.h"

#include "core/errors.h"
#include "core/float_round.h"
#include "core/q4_kernel_common.h"
#include "core/thread_pool.h"

namespace pntk {

namespace {

std::string str(int64_t v) { return std::to_string(v); }

void check_shape(const TensorView& t, const std::vector<int64_t>& expected, const char* name, const char* formula) {
  TensorView want;
  want.shape = expected;
  PNTK_CHECK(t.shape == expected, name,
             std::string("shape must be ") + formula + " = " + want.shape_string() + ", got " + t.shape_string());
}

bool is_float_dtype(DType d) { return d == DType::float32 || d == DType::float16 || d == DType::bfloat16; }

// One step of warming tiles [begin, end) for the GEMV, which streams them from memory: the
// cache lines of the next 4 KB of their packed weights (tiles are contiguous, touch_lines), up
// to 256 KB; false when done. A worker does this while the caller prepares x (2-5 us at K = 4096), so it
// starts its GEMV from cache instead of idling and then ramping up its stream: 0.8-3.6 us less
// per call (paired calls, 4096x4096 g32, about 45 GB/s).
bool warm_weights(const Q4Layout& w, int64_t begin, int64_t end, int64_t step) {
  constexpr int64_t kStepWords = 4096 / sizeof(uint32_t), kMaxWords = 256 * 1024 / sizeof(uint32_t);
  const int64_t words = std::min(w.qweight_offset(end) - w.qweight_offset(begin), kMaxWords);
  const int64_t first = step * kStepWords;
  if (first >= words) return false;
  const int64_t count = std::min(words, first + kStepWords) - first;
  q4::touch_lines(w.tile_qweight(begin) + first, static_cast<size_t>(count) * sizeof(uint32_t));
  return true;
}

int32_t g_idx_at(const TensorView& g_idx, int64_t k) { return g_idx.ptr<const int32_t>()[k * g_idx.strides[0]]; }

}  // namespace

GptqFormat parse_gptq_format(const std::string& checkpoint_format) {
  if (checkpoint_format == "gptq") return GptqFormat::gptq;
  if (checkpoint_format == "gptq_v2") return GptqFormat::gptq_v2;
  fail_argument("checkpoint_format", "must be 'gptq' or 'gptq_v2', got '" + checkpoint_format + "'");
}

GptqShape validate_gptq(const TensorView& qweight, const TensorView& qzeros, const TensorView& scales,
                        const TensorView* g_idx, const TensorView* bias) {
  check_dtype(qweight, DType::int32, "qweight");
  check_dims(qweight, 2, "qweight");
  check_contiguous(qweight, "qweight");
  GptqShape shape;
  shape.in_features = qweight.shape[0] * 8;
  shape.out_features = qweight.shape[1];
  const int64_t k = shape.in_features, n = shape.out_features;
  PNTK_CHECK(k > 0 && n > 0, "qweight", "must not be empty, got shape " + qweight.shape_string());
  PNTK_CHECK(n % 8 == 0, "qweight", "out_features N = " + str(n) + " must be a multiple of 8");

  check_dtype(qzeros, DType::int32, "qzeros");
  check_dims(qzeros, 2, "qzeros");
  check_contiguous(qzeros, "qzeros");
  shape.groups = qzeros.shape[0];
  const int64_t groups = shape.groups;
  PNTK_CHECK(groups >= 1, "qzeros", "must have at least one group row, got shape " + qzeros.shape_string());
  check_shape(qzeros, {groups, n / 8}, "qzeros", "[groups, N/8]");

  check_same_device(qzeros, qweight, "qzeros");

  check_dtype(scales, DType::float16, "scales");
  check_dims(scales, 2, "scales");
  check_contiguous(scales, "scales");
  check_shape(scales, {groups, n}, "scales", "[groups, N] (groups = rows of qzeros)");
  check_same_device(scales, qweight, "scales");

  if (bias) {
    PNTK_CHECK(is_float_dtype(bias->dtype), "bias", std::string("must be float16, bfloat16 or float32, got ") + dtype_name(bias->dtype));
    check_dims(*bias, 1, "bias");
    check_shape(*bias, {n}, "bias", "[N]");
    check_contiguous(*bias, "bias");
    check_same_device(*bias, qweight, "bias");
  }

  if (!g_idx) {
    PNTK_CHECK(k % groups == 0, "qzeros",
               str(groups) + " groups do not divide in_features K = " + str(k) + " into equal groups; pass g_idx");
    shape.group_size = groups == 1 ? -1 : k / groups;
    return shape;
  }
  check_dtype(*g_idx, DType::int32, "g_idx");
  check_dims(*g_idx, 1, "g_idx");
  check_shape(*g_idx, {k}, "g_idx", "[K] (K = 8 * rows of qweight)");
  PNTK_CHECK(g_idx->device == DeviceType::cpu, "g_idx", "values are validated on the CPU: pass g_idx.cpu()");
  std::vector<int64_t> rows_per_group(static_cast<size_t>(groups), 0);
  bool sorted = true;
  for (int64_t row = 0; row < k; ++row) {
    const int32_t g = g_idx_at(*g_idx, row);
    PNTK_CHECK(g >= 0 && g < groups, "g_idx",
               "value " + str(g) + " at row " + str(row) + " is outside [0, groups = " + str(groups) + ")");
    if (row > 0 && g < g_idx_at(*g_idx, row - 1)) sorted = false;
    ++rows_per_group[static_cast<size_t>(g)];
  }
  shape.act_order = !sorted;
  bool even = k % groups == 0;
  for (int64_t count : rows_per_group) even = even && count == k / groups;
  shape.group_size = groups == 1 ? -1 : (even ? k / groups : 0);
  return shape;
}

Q4Matrix::Q4Matrix(const TensorView& qweight, const TensorView& qzeros, const TensorView& scales,
                   const TensorView* g_idx, const TensorView* bias, GptqFormat format)
    : shape_(validate_gptq(qweight, qzeros, scales, g_idx, bias)) {
  for (const auto& [t, name] : {std::pair{&qweight, "qweight"}, {&qzeros, "qzeros"}, {&scales, "scales"}})
    PNTK_CHECK(t->device == DeviceType::cpu, name, "must be a CPU tensor");
  PNTK_CHECK(!bias || bias->device == DeviceType::cpu, "bias", "must be a CPU tensor");
  Q4Layout& w = layout_;
  w.k = shape_.in_features;
  w.n = shape_.out_features;
  w.groups = shape_.groups;
  const int64_t group_rows_default = w.k / w.groups;  // only used without g_idx (then it divides)
  auto group_of = [&](int64_t row) -> int64_t { return g_idx ? g_idx_at(*g_idx, row) : row / group_rows_default; };

  // Stable sort of rows by group, each group padded to a multiple of 8 rows.
  std::vector<int64_t> count(static_cast<size_t>(w.groups), 0);
  for (int64_t row = 0; row < w.k; ++row) ++count[static_cast<size_t>(group_of(row))];
  w.group_begin.assign(static_cast<size_t>(w.groups + 1), 0);
  for (int64_t g = 0; g < w.groups; ++g) w.group_begin[g + 1] = w.group_begin[g] + (count[g] + 7) / 8 * 8;
  w.packed_rows = w.group_begin[w.groups];
  w.row_of_packed.assign(static_cast<size_t>(w.packed_rows), -1);
  std::vector<int64_t> next(w.group_begin.begin(), w.group_begin.end() - 1);
  for (int64_t row = 0; row < w.k; ++row) w.row_of_packed[next[group_of(row)]++] = static_cast<int32_t>(row);

  // Repack into column tiles (q4_matrix.h): words of 8 packed rows, scales, effective zeros.
  const uint32_t* src_q = qweight.ptr<const uint32_t>();
  const uint16_t* src_s = scales.ptr<const uint16_t>();
  const uint32_t* src_z = qzeros.ptr<const uint32_t>();
  w.qweight.assign(static_cast<size_t>(w.packed_rows / 8 * w.n), 0u);
  w.scales.assign(static_cast<size_t>(w.groups * w.n), 0u);
  w.zeros.assign(static_cast<size_t>(w.groups * w.n / 8), 0u);
  for (int64_t tile = 0; tile < w.tiles(); ++tile) {
    const int64_t width = w.tile_width(tile), col0 = tile * kQ4TileColumns;
    uint32_t* dst_q = w.qweight.data() + w.qweight_offset(tile);
    uint16_t* dst_s = w.scales.data() + w.scales_offset(tile);
    uint32_t* dst_z = w.zeros.data() + w.zeros_offset(tile);
    for (int64_t p = 0; p < w.packed_rows; ++p) {
      const int32_t row = w.row_of_packed[p];
      if (row < 0) continue;
      const uint32_t* src_row = src_q + (row / 8) * w.n + col0;
      const int src_shift = 4 * (row % 8), dst_shift = static_cast<int>(4 * (p % 8));
      uint32_t* dst_row = dst_q + (p / 8) * width;
      for (int64_t c = 0; c < width; ++c) dst_row[c] |= ((src_row[c] >> src_shift) & 15u) << dst_shift;
    }
    for (int64_t g = 0; g < w.groups; ++g) {
      for (int64_t c = 0; c < width; ++c) {
        const int64_t col = col0 + c;
        dst_s[g * width + c] = src_s[g * w.n + col];
        uint32_t z = (src_z[g * (w.n / 8) + col / 8] >> (4 * (col % 8))) & 15u;
        if (format == GptqFormat::gptq) z = (z + 1) & 15u;  // v1 stores zero - 1
        dst_z[g * (width / 8) + c / 8] |= z << (4 * (c % 8));
      }
    }
  }
  if (bias) {
    w.bias.resize(static_cast<size_t>(w.n));
    q4::convert_elements_scalar(bias->data, bias->dtype, w.n, w.bias.data());
  }
}

void Q4Matrix::forward(const TensorView& x, const TensorView& out) const {
  PNTK_CHECK(is_float_dtype(x.dtype), "x", std::string("must be float16, bfloat16 or float32, got ") + dtype_name(x.dtype));
  check_dims(x, 2, "x");
  PNTK_CHECK(x.shape[1] == shape_.in_features, "x",
             "last dimension must be in_features = " + str(shape_.in_features) + ", got shape " + x.shape_string());
  PNTK_CHECK(x.device == DeviceType::cpu, "x", "must be a CPU tensor for the CPU kernels");
  check_dtype(out, x.dtype, "out");
  check_dims(out, 2, "out");
  check_shape(out, {x.shape[0], shape_.out_features}, "out", "[M, N]");
  check_contiguous(out, "out");
  PNTK_CHECK(out.device == DeviceType::cpu, "out", "must be a CPU tensor");
  const Q4CpuKernel& kernel = q4_cpu_kernel();
  const bool gemv = x.shape[0] <= kQ4GemvMaxRows;
  const auto tile_fn = gemv ? kernel.gemv_tile : kernel.gemm_tile;
  Q4Activations activations;
  // Rows in blocks, so the prepared fp32 activations stay small for long prompts.
  for (int64_t row0 = 0; row0 < x.shape[0]; row0 += kQ4GemmRowBlock) {
    TensorView x_block = x, out_block = out;
    x_block.shape[0] = out_block.shape[0] = std::min(kQ4GemmRowBlock, x.shape[0] - row0);
    x_block.data = static_cast<char*>(x.data) + row0 * x.strides[0] * dtype_size(x.dtype);
    out_block.data = static_cast<char*>(out.data) + row0 * out.strides[0] * dtype_size(out.dtype);
    parallel_for_after(
        layout_.tiles(), [&] { kernel.prepare(layout_, x_block, gemv, activations); },
        [&](int64_t begin, int64_t end, int64_t step) { return gemv && warm_weights(layout_, begin, end, step); },
        [&](int64_t begin, int64_t end) {
          for (int64_t tile = begin; tile < end; ++tile) tile_fn(layout_, activations, tile, out_block);
        });
  }
}

void Q4Matrix::dequantize(const TensorView& out) const {
  PNTK_CHECK(is_float_dtype(out.dtype), "dtype", std::string("must be float16, bfloat16 or float32, got ") + dtype_name(out.dtype));
  check_shape(out, {shape_.in_features, shape_.out_features}, "out", "[K, N]");
  check_contiguous(out, "out");
  const Q4Layout& w = layout_;
  parallel_for(w.tiles(), [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(kQ4TileColumns));
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t width = w.tile_width(tile), col0 = tile * kQ4TileColumns;
      for (int64_t g = 0; g < w.groups; ++g) {
        for (int64_t p = w.group_begin[g]; p < w.group_begin[g + 1]; ++p) {
          const int32_t k = w.row_of_packed[p];
          if (k < 0) continue;
          for (int64_t c = 0; c < width; ++c) {  // s * (q - z): exact in fp32
            const float s = half_bits_to_float(w.tile_scales(tile)[g * width + c]);
            row[c] = s * static_cast<float>(q4::packed_q(w.tile_qweight(tile), width, p, c) -
                                            q4::packed_zero(w.tile_zeros(tile), width, g, c));
          }
          char* dst = static_cast<char*>(out.data) + (k * w.n + col0) * dtype_size(out.dtype);
          q4::store_row_scalar(row.data(), width, out.dtype, dst);
        }
      }
    }
  });
}

int64_t Q4Matrix::storage_bytes() const {
  const Q4Layout& w = layout_;
  return static_cast<int64_t>(w.qweight.size() * 4 + w.scales.size() * 2 + w.zeros.size() * 4 +
                              w.row_of_packed.size() * 4 + w.group_begin.size() * 8 + w.bias.size() * 4);
}

}  // namespace pntk
