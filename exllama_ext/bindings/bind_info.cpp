// pntk._core.build_info(): what this build of the extension contains.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <sstream>
#include <string>
#include <vector>

#include "bindings/registry.h"
#include "core/q4_matrix.h"
#include "core/thread_pool.h"

namespace py = pybind11;

namespace {

std::vector<int> cuda_archs() {
  std::vector<int> archs;
#ifdef PNTK_CUDA_ARCHS
  std::stringstream list(PNTK_CUDA_ARCHS);  // "75,80,86,89,90" (from CMAKE_CUDA_ARCHITECTURES)
  std::string item;
  while (std::getline(list, item, ',')) archs.push_back(std::stoi(item));
#endif
  return archs;
}

}  // namespace

PNTK_BINDINGS(bind_info) {
  m.def("build_info", []() {
    py::dict info;
    info["version"] = PNTK_VERSION;
#ifdef PNTK_WITH_CUDA
    info["cuda"] = true;
#else
    info["cuda"] = false;
#endif
    info["cuda_archs"] = cuda_archs();
    info["cpu_kernel"] = pntk::q4_cpu_kernel().name;
    info["cpu_threads"] = pntk::thread_runtime_name();
    return info;
  });
}
