// Export of a plan to per-dimension frequency factors (longrope, llama.cpp rope_freqs).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings/registry.h"
#include "core/rope_export.h"

namespace py = pybind11;

PNTK_BINDINGS(bind_export) {
  m.def(
      "frequency_factors",
      [](const pntk::RopePlan& plan) {
        const std::vector<float> factors = pntk::frequency_factors(plan);
        py::array_t<float> out(static_cast<py::ssize_t>(factors.size()));
        std::copy(factors.begin(), factors.end(), out.mutable_data());
        return out;
      },
      py::arg("plan"),
      "fp32 factors f [rotary_dim/2] with 1/(f_i * p_i) == plan.inv_freq()_i (longrope, rope_freqs); "
      "raises ConfigError for plans they cannot express.");
}
