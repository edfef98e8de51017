// CUDA kernels: pntk._core.Q4CudaTiles (GPTQ 4-bit matrix on a GPU), rope_table_cuda and
// rope_apply_cuda. Checks the tensor views, then calls the launchers of exllama_ext/cuda
// (which set the device, enqueue on the given stream and check every launch).
// Compiled only with the CUDA kernels (PNTK_WITH_CUDA comes with the pntk_cuda target).
#ifdef PNTK_WITH_CUDA
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "bindings/registry.h"
#include "bindings/tensor_arg.h"
#include "core/errors.h"
#include "core/rope_plan.h"
#include "cuda/q4_cuda.cuh"
#include "cuda/rope_cuda.cuh"

namespace py = pybind11;
using pntk::DType;
using pntk::TensorView;

namespace {

void check_cuda_tensor(const TensorView& t, const char* name) {
  PNTK_CHECK(t.device == pntk::DeviceType::cuda, name, "must be a CUDA tensor");
}

void check_on_device(const TensorView& t, int device, const char* name) {
  check_cuda_tensor(t, name);
  PNTK_CHECK(t.device_index == device, name,
             "must be on cuda:" + std::to_string(device) + ", got cuda:" + std::to_string(t.device_index));
}

void check_shape(const TensorView& t, std::vector<int64_t> shape, const char* name) {
  TensorView expected;
  expected.shape = std::move(shape);
  PNTK_CHECK(t.shape == expected.shape, name, "must have shape " + expected.shape_string() + ", got " + t.shape_string());
}

// g_idx on the host (int32 or int64, [K]) as int32, each entry checked to fit.
std::vector<int32_t> host_g_idx(const TensorView& g_idx, int64_t k) {
  PNTK_CHECK(g_idx.device == pntk::DeviceType::cpu, "g_idx", "must be a CPU copy here");
  check_shape(g_idx, {k}, "g_idx");
  pntk::check_contiguous(g_idx, "g_idx");
  std::vector<int32_t> out(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) {
    int64_t value;
    if (g_idx.dtype == DType::int32) {
      value = g_idx.ptr<int32_t>()[i];
    } else {
      PNTK_CHECK(g_idx.dtype == DType::int64, "g_idx",
                 std::string("must be int32 or int64, got ") + pntk::dtype_name(g_idx.dtype));
      value = g_idx.ptr<int64_t>()[i];
    }
    PNTK_CHECK(value >= INT32_MIN && value <= INT32_MAX, "g_idx",
               "entry " + std::to_string(i) + " is " + std::to_string(value) + ", outside the int32 range");
    out[static_cast<size_t>(i)] = static_cast<int32_t>(value);
  }
  return out;
}

// A GPTQ matrix tiled for the CUDA kernels. Built in two steps so that Python allocates the
// device memory (torch's allocator): the constructor checks the GPTQ tensors and plans the
// tiles; pack() fills a buffer of device_bytes with them.
class Q4CudaTiles {
 public:
  Q4CudaTiles(const TensorView& qweight, const TensorView& qzeros, const TensorView& scales,
              const std::optional<TensorView>& g_idx, const std::string& checkpoint_format) {
    check_cuda_tensor(qweight, "qweight");
    device_ = qweight.device_index;
    pntk::check_dtype(qweight, DType::int32, "qweight");
    pntk::check_dims(qweight, 2, "qweight");
    pntk::check_contiguous(qweight, "qweight");
    pntk::check_dtype(scales, DType::float16, "scales");
    pntk::check_dims(scales, 2, "scales");
    pntk::check_contiguous(scales, "scales");
    check_on_device(scales, device_, "scales");
    const int64_t k = qweight.size(0) * 8, n = qweight.size(1), groups = scales.size(0);
    check_shape(scales, {groups, n}, "scales");
    pntk::check_dtype(qzeros, DType::int32, "qzeros");
    check_shape(qzeros, {groups, n / 8}, "qzeros");
    pntk::check_contiguous(qzeros, "qzeros");
    check_on_device(qzeros, device_, "qzeros");
    PNTK_CHECK(checkpoint_format == "gptq" || checkpoint_format == "gptq_v2", "checkpoint_format",
               "must be \"gptq\" or \"gptq_v2\", got \"" + checkpoint_format + "\"");
    std::vector<int32_t> groups_of_rows;
    if (g_idx) groups_of_rows = host_g_idx(*g_idx, k);
    plan_ = pntk::cuda::make_q4_tile_plan(k, n, groups, g_idx ? groups_of_rows.data() : nullptr);
    source_ = pntk::cuda::GptqSource{qweight.ptr<int32_t>(), qzeros.ptr<int32_t>(), scales.ptr<uint16_t>(), n,
                                     checkpoint_format == "gptq_v2"};
  }

  size_t device_bytes() const { return plan_.buffers().total; }

  // Tiles the tensors given to the constructor (which must still be alive) into `storage`.
  void pack(const TensorView& storage, uintptr_t stream) {
    PNTK_CHECK(!packed_, "storage", "this matrix is already packed");
    check_on_device(storage, device_, "storage");
    pntk::check_dtype(storage, DType::uint8, "storage");
    pntk::check_contiguous(storage, "storage");
    PNTK_CHECK(static_cast<size_t>(storage.numel()) >= device_bytes(), "storage",
               "needs " + std::to_string(device_bytes()) + " bytes, got " + std::to_string(storage.numel()));
    matrix_ = pntk::cuda::q4_pack_cuda(plan_, source_, storage.data, device_, stream);
    packed_ = true;
    source_ = {};
  }

  pntk::cuda::Q4GemvShape gemv_shape(int64_t rows) const {
    PNTK_CHECK(rows >= 1 && rows <= pntk::cuda::MAX_GEMV_ROWS, "rows",
               "must be 1 to " + std::to_string(pntk::cuda::MAX_GEMV_ROWS) + ", got " + std::to_string(rows));
    return pntk::cuda::q4_gemv_shape(plan_.k_tiles(), plan_.strips(), rows, pntk::cuda::device_sm_count(device_));
  }

  void gemv(const TensorView& x, const TensorView& y, const std::optional<TensorView>& bias,
            const TensorView& counters, const TensorView& scratch, uintptr_t stream) const {
    check_on_device(x, device_, "x");
    PNTK_CHECK(x.dtype == DType::float16 || x.dtype == DType::bfloat16, "x",
               std::string("must be float16 or bfloat16 for the GEMV kernel, got ") + pntk::dtype_name(x.dtype));
    pntk::check_dims(x, 2, "x");
    PNTK_CHECK(x.size(1) == plan_.k, "x",
               "must have " + std::to_string(plan_.k) + " columns (in_features), got shape " + x.shape_string());
    const int64_t rows = x.size(0);
    check_on_device(y, device_, "y");
    pntk::check_dtype(y, x.dtype, "y");
    check_shape(y, {rows, plan_.n}, "y");
    pntk::check_contiguous(y, "y");
    const float* bias_data = nullptr;
    if (bias) {
      check_on_device(*bias, device_, "bias");
      pntk::check_dtype(*bias, DType::float32, "bias");
      check_shape(*bias, {plan_.n}, "bias");
      pntk::check_contiguous(*bias, "bias");
      bias_data = bias->ptr<float>();
    }
    check_on_device(counters, device_, "counters");
    pntk::check_dtype(counters, DType::int32, "counters");
    pntk::check_contiguous(counters, "counters");
    check_on_device(scratch, device_, "scratch");
    pntk::check_dtype(scratch, DType::uint8, "scratch");
    pntk::check_contiguous(scratch, "scratch");
    check_packed();
    const pntk::cuda::Q4GemvCall call{x.data,
                                      rows,
                                      x.strides[0],
                                      x.strides[1],
                                      y.data,
                                      bias_data,
                                      x.dtype,
                                      counters.ptr<int32_t>(),
                                      sizeof(int32_t) * static_cast<size_t>(counters.numel()),
                                      scratch.data,
                                      static_cast<size_t>(scratch.numel())};
    pntk::cuda::q4_gemv_cuda(matrix_, call, stream);
  }

  void dequantize(const TensorView& out, uintptr_t stream) const {
    check_on_device(out, device_, "out");
    check_shape(out, {plan_.k, plan_.n}, "out");
    pntk::check_contiguous(out, "out");
    check_packed();
    pntk::cuda::q4_dequant_cuda(matrix_, out.data, out.dtype, stream);
  }

  const pntk::cuda::Q4TilePlan& plan() const { return plan_; }
  int device() const { return device_; }

 private:
  void check_packed() const { PNTK_CHECK(packed_, "storage", "pack() must be called first"); }

  pntk::cuda::Q4TilePlan plan_;
  pntk::cuda::GptqSource source_{};
  pntk::cuda::Q4TileMatrix matrix_{};
  int device_ = 0;
  bool packed_ = false;
};

pntk::TableDtype table_dtype(int code) {
  PNTK_CHECK(code >= 0 && code <= 2, "dtype", "must be float32, float16 or bfloat16");
  return static_cast<pntk::TableDtype>(code);
}

void rope_table(const pntk::RopePlan& plan, int64_t first_position, int64_t inv_freq_seq_len, const TensorView& cos,
                const TensorView& sin, uintptr_t stream) {
  check_cuda_tensor(cos, "cos");
  check_on_device(sin, cos.device_index, "sin");
  PNTK_CHECK(cos.dim() >= 1 && cos.size(-1) == plan.rotary_dim, "cos",
             "last dimension must be the rotary dim " + std::to_string(plan.rotary_dim) + ", got shape " +
                 cos.shape_string());
  check_shape(sin, cos.shape, "sin");
  pntk::check_contiguous(cos, "cos");
  pntk::check_contiguous(sin, "sin");
  PNTK_CHECK(sin.dtype == cos.dtype, "sin", "must have the dtype of cos");
  const int code = cos.dtype == DType::float32 ? 0 : cos.dtype == DType::float16 ? 1 : cos.dtype == DType::bfloat16 ? 2 : -1;
  PNTK_CHECK(code >= 0, "cos", std::string("must be float32, float16 or bfloat16, got ") + pntk::dtype_name(cos.dtype));
  PNTK_CHECK(first_position >= 0, "first_position", "must not be negative");
  const std::vector<float> inv_freq = plan.inv_freq(inv_freq_seq_len);
  const pntk::RopeTableArgs args{inv_freq.data(), plan.rotary_dim / 2, first_position, cos.numel() / plan.rotary_dim,
                                 plan.position_scale(), plan.attention_factor, table_dtype(code)};
  pntk::cuda::rope_table_cuda(args, cos.data, sin.data, cos.device_index, stream);
}

void rope_apply(const TensorView& x, const TensorView& cos, const TensorView& sin,
                const std::optional<TensorView>& positions, int64_t position_offset, uintptr_t stream) {
  check_cuda_tensor(x, "x");
  pntk::check_dims(x, 4, "x");
  PNTK_CHECK(x.strides[3] == 1, "x", "must have a unit stride in its last dimension (head_dim)");
  for (const auto* table : {&cos, &sin}) {
    const char* name = table == &cos ? "cos" : "sin";
    check_on_device(*table, x.device_index, name);
    pntk::check_dims(*table, 2, name);
    pntk::check_contiguous(*table, name);
    PNTK_CHECK(table->dtype == x.dtype, name,
               std::string("must have the dtype of x (") + pntk::dtype_name(x.dtype) + "), got " +
                   pntk::dtype_name(table->dtype));
  }
  check_shape(sin, cos.shape, "sin");
  pntk::cuda::RopeApplyArgs args{};
  args.x = x.data;
  args.dtype = x.dtype;
  args.batch = x.size(0);
  args.seq = x.size(1);
  args.heads = x.size(2);
  args.head_dim = x.size(3);
  args.batch_stride = x.strides[0];
  args.seq_stride = x.strides[1];
  args.head_stride = x.strides[2];
  args.cos = cos.data;
  args.sin = sin.data;
  args.table_rows = cos.size(0);
  args.rotary_dim = cos.size(1);
  args.position_offset = position_offset;
  args.positions_dtype = DType::int64;
  if (positions) {
    check_on_device(*positions, x.device_index, "positions");
    PNTK_CHECK(positions->dim() == 1 || positions->dim() == 2, "positions",
               "must be [seq] or [batch, seq], got shape " + positions->shape_string());
    const bool batched = positions->dim() == 2;
    PNTK_CHECK(positions->size(-1) == args.seq && (!batched || positions->size(0) == args.batch), "positions",
               "must match x's batch and seq, got shape " + positions->shape_string() + " for x " + x.shape_string());
    args.positions = positions->data;
    args.positions_dtype = positions->dtype;
    args.positions_seq_stride = positions->strides.back();
    args.positions_batch_stride = batched ? positions->strides[0] : 0;
  }
  pntk::cuda::rope_apply_cuda(args, x.device_index, stream);
}

}  // namespace

PNTK_BINDINGS(bind_cuda) {
  m.attr("CUDA_MAX_GEMV_ROWS") = pntk::cuda::MAX_GEMV_ROWS;
  py::class_<Q4CudaTiles>(m, "Q4CudaTiles",
                          "A GPTQ 4-bit matrix tiled for the CUDA kernels (see pntk.q4_cuda.CudaQ4Backend).")
      .def(py::init<const TensorView&, const TensorView&, const TensorView&, const std::optional<TensorView>&,
                    const std::string&>(),
           py::arg("qweight"), py::arg("qzeros"), py::arg("scales"), py::arg("g_idx_host"),
           py::arg("checkpoint_format"),
           "Checks qweight int32 [K/8, N], qzeros int32 [G, N/8], scales fp16 [G, N] (CUDA, contiguous) and "
           "g_idx (a CPU copy, int32/int64 [K], or None: row k in group k / (K / G)), and plans the tiles.")
      .def_property_readonly("device_bytes", &Q4CudaTiles::device_bytes, "bytes of the storage pack() fills")
      .def_property_readonly("device", &Q4CudaTiles::device)
      .def_property_readonly("in_features", [](const Q4CudaTiles& t) { return t.plan().k; })
      .def_property_readonly("out_features", [](const Q4CudaTiles& t) { return t.plan().n; })
      .def_property_readonly("padded_in_features", [](const Q4CudaTiles& t) { return t.plan().k_padded; })
      .def_property_readonly("identity_rows", [](const Q4CudaTiles& t) { return t.plan().identity; },
                             "True when no row needs to move (no act-order, no padding)")
      .def("pack", &Q4CudaTiles::pack, py::arg("storage"), py::arg("stream"),
           "Tile the constructor's tensors (still alive) into storage, uint8 [device_bytes] on their device.")
      .def("gemv_workspace", [](const Q4CudaTiles& t, int64_t rows) {
             const pntk::cuda::Q4GemvShape shape = t.gemv_shape(rows);
             return py::make_tuple(shape.counter_bytes, shape.scratch_bytes);
           }, py::arg("rows"),
           "(counter bytes, scratch bytes) the GEMV needs for `rows` rows of x: an int32 counters buffer, zero "
           "when first used (the kernels leave it so), and a uint8 scratch buffer (any contents).")
      .def("gemv", &Q4CudaTiles::gemv, py::arg("x"), py::arg("y"), py::arg("bias"), py::arg("counters"),
           py::arg("scratch"), py::arg("stream"),
           "y [M, N] = x [M, K] @ W (+ bias float32 [N]), x and y both float16 or both bfloat16 (compute "
           "capability 8.0+), M <= CUDA_MAX_GEMV_ROWS.")
      .def("gemv_takes_bfloat16", [](const Q4CudaTiles& t) { return pntk::cuda::gemv_takes_bfloat16(t.device()); },
           "Whether this matrix's GPU runs the bfloat16 GEMV (compute capability 8.0 or newer).")
      .def("dequantize", &Q4CudaTiles::dequantize, py::arg("out"), py::arg("stream"),
           "out [K, N] float32/float16/bfloat16 (contiguous) = scale * (q - zero), original row order.");
  m.def("rope_table_cuda", &rope_table, py::arg("plan"), py::arg("first_position"), py::arg("inv_freq_seq_len"),
        py::arg("cos"), py::arg("sin"), py::arg("stream"),
        "Write the plan's cos/sin tables [..., rotary_dim] (CUDA, contiguous, float32/float16/bfloat16) in place, "
        "rows for positions first_position, first_position + 1, ...");
  m.def("rope_apply_cuda", &rope_apply, py::arg("x"), py::arg("cos"), py::arg("sin"), py::arg("positions"),
        py::arg("position_offset"), py::arg("stream"),
        "Rotate x [batch, seq, heads, head_dim] in place (NeoX layout) by tables [rows, rotary_dim] at positions "
        "(int32/int64 [seq] or [batch, seq], or None: position_offset + s).");
}
#endif  // PNTK_WITH_CUDA
