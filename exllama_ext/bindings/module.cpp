// pntk._core: thin bindings over the C++ core. Each bindings/*.cpp registers its functions.
#include <pybind11/pybind11.h>

#include "bindings/registry.h"
#include "core/errors.h"

namespace py = pybind11;

namespace pntk::bindings {
std::vector<Binder>& binders() {
  static std::vector<Binder> list;
  return list;
}
}  // namespace pntk::bindings

PYBIND11_MODULE(_core, m) {
  m.doc() = "pntk compiled core: RoPE plans and tables, GPTQ 4-bit matrix multiply";
  m.attr("__version__") = PNTK_VERSION;
  // pntk.ConfigError: a ValueError whose message is "<file>: <field>: <message>".
  py::register_exception<pntk::ConfigError>(m, "ConfigError", PyExc_ValueError);
  for (auto binder : pntk::bindings::binders()) binder(m);
}
