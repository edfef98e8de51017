#include "core/tensor_view.h"

#include <cstdlib>

#include "core/errors.h"

namespace pntk {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::float32: return "float32";
    case DType::float16: return "float16";
    case DType::bfloat16: return "bfloat16";
    case DType::int32: return "int32";
    case DType::int64: return "int64";
    case DType::uint8: return "uint8";
    case DType::int8: return "int8";
  }
  std::abort();
}

int dtype_size(DType dtype) {
  switch (dtype) {
    case DType::float32: case DType::int32: return 4;
    case DType::float16: case DType::bfloat16: return 2;
    case DType::int64: return 8;
    case DType::uint8: case DType::int8: return 1;
  }
  std::abort();
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

bool TensorView::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    const size_t k = static_cast<size_t>(i);
    if (shape[k] != 1 && strides[k] != expected) return false;
    expected *= shape[k];
  }
  return true;
}

std::string TensorView::shape_string() const {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

void check_dtype(const TensorView& t, DType dtype, const char* name) {
  PNTK_CHECK(t.dtype == dtype, name,
             std::string("must be ") + dtype_name(dtype) + ", got " + dtype_name(t.dtype));
}

void check_dims(const TensorView& t, int64_t dims, const char* name) {
  PNTK_CHECK(t.dim() == dims, name,
             "must have " + std::to_string(dims) + " dimensions, got shape " + t.shape_string());
}

void check_contiguous(const TensorView& t, const char* name) {
  PNTK_CHECK(t.is_contiguous(), name, "must be contiguous");
}

void check_same_device(const TensorView& a, const TensorView& b, const char* name) {
  PNTK_CHECK(a.device == b.device && a.device_index == b.device_index, name,
             "must be on the same device as the weights");
}

}  // namespace pntk
