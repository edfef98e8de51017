// Each bindings/*.cpp registers its part of pntk._core with PNTK_BINDINGS(name) { ... },
// so adding an op never edits a shared list. module.cpp runs them all at import.
#pragma once
#include <pybind11/pybind11.h>

#include <vector>

namespace pntk::bindings {

using Binder = void (*)(pybind11::module_&);
std::vector<Binder>& binders();

struct Registration {
  explicit Registration(Binder binder) { binders().push_back(binder); }
};

}  // namespace pntk::bindings

#define PNTK_BINDINGS(name)                                                          \
  static void name(pybind11::module_& m);                                            \
  static const ::pntk::bindings::Registration name##_registration{&name};            \
  static void name(pybind11::module_& m)
