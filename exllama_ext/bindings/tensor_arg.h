// pybind11 conversion of a tensor argument. Python passes pntk._tensor.view(t):
//   (data_ptr: int, shape: tuple, strides: tuple, dtype: int (pntk::DType), device: int, index: int)
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "core/tensor_view.h"

namespace pybind11::detail {

template <>
struct type_caster<pntk::TensorView> {
  PYBIND11_TYPE_CASTER(pntk::TensorView, const_name("TensorView"));

  bool load(handle source, bool) {
    if (!isinstance<tuple>(source)) return false;
    const tuple items = reinterpret_borrow<tuple>(source);
    if (items.size() != 6) return false;
    value.data = reinterpret_cast<void*>(items[0].cast<uintptr_t>());
    value.shape = items[1].cast<std::vector<int64_t>>();
    value.strides = items[2].cast<std::vector<int64_t>>();
    value.dtype = static_cast<pntk::DType>(items[3].cast<int>());
    value.device = static_cast<pntk::DeviceType>(items[4].cast<int>());
    value.device_index = items[5].cast<int>();
    return value.shape.size() == value.strides.size();
  }
};

}  // namespace pybind11::detail
