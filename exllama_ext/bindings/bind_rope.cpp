// RoPE plan and tables: converts arguments, calls the core, returns numpy arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/registry.h"
#include "core/rope_plan.h"
#include "core/rope_table.h"

namespace py = pybind11;
using pntk::RopePlan;

namespace {

pntk::RunnerOverrides make_overrides(std::optional<double> theta, double alpha_value, double compress_pos_emb,
                                     std::optional<int64_t> max_seq_len, bool static_tables) {
  pntk::RunnerOverrides overrides;
  overrides.theta = theta;
  overrides.alpha_value = alpha_value;
  overrides.compress_pos_emb = compress_pos_emb;
  overrides.max_seq_len = max_seq_len;
  overrides.static_tables = static_tables;
  return overrides;
}

py::array_t<float> inv_freq_array(const RopePlan& plan, int64_t seq_len) {
  const std::vector<float> inv = plan.inv_freq(seq_len);
  py::array_t<float> out(static_cast<py::ssize_t>(inv.size()));
  std::copy(inv.begin(), inv.end(), out.mutable_data());
  return out;
}

// (cos, sin) as numpy arrays [seq_len, rotary_dim]; bfloat16 comes back as uint16 bit patterns.
py::tuple tables(const RopePlan& plan, int64_t seq_len, int dtype_code, int64_t inv_freq_seq_len) {
  if (dtype_code < 0 || dtype_code > 2) throw std::invalid_argument("dtype: must be float32, float16 or bfloat16");
  if (seq_len < 0) throw std::invalid_argument("seq_len: must not be negative, got " + std::to_string(seq_len));
  const auto dtype = static_cast<pntk::TableDtype>(dtype_code);
  const std::vector<float> inv = plan.inv_freq(inv_freq_seq_len);
  const std::vector<py::ssize_t> shape{static_cast<py::ssize_t>(seq_len), plan.rotary_dim};
  py::array cos_table, sin_table;
  if (dtype == pntk::TableDtype::float32) {
    cos_table = py::array_t<float>(shape);
    sin_table = py::array_t<float>(shape);
  } else {
    cos_table = py::array(py::dtype(dtype == pntk::TableDtype::float16 ? "float16" : "uint16"), shape);
    sin_table = py::array(py::dtype(dtype == pntk::TableDtype::float16 ? "float16" : "uint16"), shape);
  }
  const pntk::RopeTableArgs args{inv.data(), plan.rotary_dim / 2, 0, seq_len, plan.position_scale(),
                                 plan.attention_factor, dtype};
  {
    py::gil_scoped_release release;
    pntk::rope_table(args, cos_table.mutable_data(), sin_table.mutable_data());
  }
  return py::make_tuple(cos_table, sin_table);
}

}  // namespace

PNTK_BINDINGS(bind_rope) {
  py::class_<RopePlan>(m, "RopePlan", "A resolved RoPE scaling plan (see pntk.RopePlan).")
      .def_property_readonly("method", [](const RopePlan& p) { return std::string(pntk::method_name(p.method)); })
      .def_readonly("method_note", &RopePlan::method_note)
      .def_readonly("method_field", &RopePlan::method_field)
      .def_readonly("exported_as", &RopePlan::exported_as)
      .def_readonly("factor", &RopePlan::factor)
      .def_readonly("attention_factor", &RopePlan::attention_factor)
      .def_readonly("config_theta", &RopePlan::config_theta)
      .def_readonly("base", &RopePlan::base)
      .def_readonly("rotary_dim", &RopePlan::rotary_dim)
      .def_readonly("original_max_position_embeddings", &RopePlan::original_max_position_embeddings)
      .def_readonly("extended_max_position_embeddings", &RopePlan::extended_max_position_embeddings)
      .def_readonly("max_seq_len", &RopePlan::max_seq_len)
      .def_readonly("source", &RopePlan::source)
      .def_property_readonly("position_scale", &RopePlan::position_scale)
      .def_property_readonly("theta", [](const RopePlan& p) { return p.overrides.theta.value_or(p.config_theta); })
      .def_property_readonly("alpha_value", [](const RopePlan& p) { return p.overrides.alpha_value; })
      .def_property_readonly("compress_pos_emb", [](const RopePlan& p) { return p.overrides.compress_pos_emb; })
      .def_property_readonly("static_tables", [](const RopePlan& p) { return p.overrides.static_tables; })
      .def_readonly("beta_fast", &RopePlan::beta_fast)
      .def_readonly("beta_slow", &RopePlan::beta_slow)
      .def_readonly("truncate", &RopePlan::truncate)
      .def_readonly("low_freq_factor", &RopePlan::low_freq_factor)
      .def_readonly("high_freq_factor", &RopePlan::high_freq_factor)
      .def_readonly("long_factor", &RopePlan::long_factor)
      .def_readonly("short_factor", &RopePlan::short_factor)
      .def_property_readonly("correction_ranges",
                             [](const RopePlan& p) {
                               py::list out;
                               for (const auto& r : p.correction_ranges)
                                 out.append(py::make_tuple(r.name, r.low, r.high));
                               return out;
                             })
      .def("inv_freq", &inv_freq_array, py::arg("seq_len") = 0,
           "fp32 inverse frequencies [rotary_dim/2]; seq_len matters to dynamic and longrope only.")
      .def("tables", &tables, py::arg("seq_len"), py::arg("dtype"), py::arg("inv_freq_seq_len") = 0)
      .def("describe", &RopePlan::describe);

  m.def(
      "plan_from_file",
      [](const std::string& path, std::optional<double> theta, double alpha_value, double compress_pos_emb,
         std::optional<int64_t> max_seq_len, bool static_tables) {
        return pntk::build_rope_plan(pntk::load_model_config(path),
                                     make_overrides(theta, alpha_value, compress_pos_emb, max_seq_len, static_tables));
      },
      py::arg("path"), py::arg("theta") = py::none(), py::arg("alpha_value") = 1.0, py::arg("compress_pos_emb") = 1.0,
      py::arg("max_seq_len") = py::none(), py::arg("static_tables") = false,
      "Build a RopePlan from a config.json or a model directory.");
  m.def(
      "plan_from_json",
      [](const std::string& text, const std::string& source, std::optional<double> theta, double alpha_value,
         double compress_pos_emb, std::optional<int64_t> max_seq_len, bool static_tables) {
        return pntk::build_rope_plan(pntk::parse_model_config(text, source),
                                     make_overrides(theta, alpha_value, compress_pos_emb, max_seq_len, static_tables));
      },
      py::arg("text"), py::arg("source"), py::arg("theta") = py::none(), py::arg("alpha_value") = 1.0,
      py::arg("compress_pos_emb") = 1.0, py::arg("max_seq_len") = py::none(), py::arg("static_tables") = false,
      "Build a RopePlan from config.json text; `source` names it in errors.");
}
