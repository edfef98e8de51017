// GPTQ 4-bit matrix (CPU) and its validation: converts arguments, calls the core.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>

#include "bindings/registry.h"
#include "bindings/tensor_arg.h"
#include "core/cpu_features.h"
#include "core/q4_matrix.h"
#include "core/thread_pool.h"

namespace py = pybind11;
using pntk::TensorView;
using OptionalView = std::optional<TensorView>;

namespace {

const TensorView* ptr(const OptionalView& view) { return view ? &*view : nullptr; }

py::dict shape_dict(const pntk::GptqShape& shape) {
  py::dict out;
  out["in_features"] = shape.in_features;
  out["out_features"] = shape.out_features;
  out["groups"] = shape.groups;
  out["group_size"] = shape.group_size;
  out["act_order"] = shape.act_order;
  return out;
}

}  // namespace

PNTK_BINDINGS(bind_q4) {
  m.def(
      "validate_gptq",
      [](const TensorView& qweight, const TensorView& qzeros, const TensorView& scales, const OptionalView& g_idx,
         const OptionalView& bias, const std::string& checkpoint_format) {
        pntk::parse_gptq_format(checkpoint_format);
        return shape_dict(pntk::validate_gptq(qweight, qzeros, scales, ptr(g_idx), ptr(bias)));
      },
      py::arg("qweight"), py::arg("qzeros"), py::arg("scales"), py::arg("g_idx"), py::arg("bias"),
      py::arg("checkpoint_format"),
      "Checks GPTQ tensors (any device; g_idx on the CPU) and returns in_features, out_features, groups, "
      "group_size, act_order. Raises ValueError naming the tensor.");

  py::class_<pntk::Q4Matrix>(m, "Q4MatrixCpu", "GPTQ 4-bit matrix packed for the CPU kernels.")
      .def(py::init([](const TensorView& qweight, const TensorView& qzeros, const TensorView& scales,
                       const OptionalView& g_idx, const OptionalView& bias, const std::string& checkpoint_format) {
             const pntk::GptqFormat format = pntk::parse_gptq_format(checkpoint_format);
             py::gil_scoped_release release;
             return new pntk::Q4Matrix(qweight, qzeros, scales, ptr(g_idx), ptr(bias), format);
           }),
           py::arg("qweight"), py::arg("qzeros"), py::arg("scales"), py::arg("g_idx"), py::arg("bias"),
           py::arg("checkpoint_format"))
      .def_property_readonly("shape", [](const pntk::Q4Matrix& w) { return shape_dict(w.shape()); })
      .def_property_readonly("storage_bytes", &pntk::Q4Matrix::storage_bytes)
      .def(
          "forward",
          [](const pntk::Q4Matrix& w, const TensorView& x, const TensorView& out) {
            py::gil_scoped_release release;
            w.forward(x, out);
          },
          py::arg("x"), py::arg("out"), "out [M, N] = x [M, K] @ W + bias (out: contiguous, x's dtype).")
      .def(
          "dequantize",
          [](const pntk::Q4Matrix& w, const TensorView& out) {
            py::gil_scoped_release release;
            w.dequantize(out);
          },
          py::arg("out"), "out [K, N] = W in the original row order.");

  m.def("set_num_threads", &pntk::set_num_threads, py::arg("threads"), "Threads of the CPU kernels (>= 1).");
  m.def("get_num_threads", &pntk::get_num_threads);
  m.def(
      "set_thread_runtime",
      [](const std::string& name) { pntk::set_thread_runtime(pntk::thread_runtime_from_name(name, "runtime")); },
      py::arg("runtime"), "Threads of the CPU kernels: 'auto', 'openmp' (the process's OpenMP runtime) or 'pntk'.");
  m.def("q4_cpu_kernels", [] {
    std::vector<std::string> names;
    for (const auto* kernel : pntk::q4_cpu_kernels()) names.emplace_back(kernel->name);
    return names;
  }, "CPU kernel families this CPU can run, best first.");
  m.def("q4_cpu_kernel_families", [] {
    py::list families;
    for (const pntk::CpuKernelFamily& family : pntk::q4_cpu_kernel_families()) {
      py::dict f;
      f["name"] = family.name;
      f["requires"] = family.requires;
      f["missing"] = family.missing;
      families.append(f);
    }
    return families;
  }, "Every CPU kernel family built into this module, best first: name, the CPU features it requires and "
     "those this CPU lacks (none where it runs).");
  m.def("q4_cpu_kernel", [] { return std::string(pntk::q4_cpu_kernel().name); });
  m.def("q4_set_cpu_kernel", &pntk::q4_set_cpu_kernel, py::arg("name"));
}
