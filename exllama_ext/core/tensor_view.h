// A non-owning view of a tensor that crossed the Python boundary: pointer, shape, strides
// (in elements), dtype and device. The core never links against torch; bindings build these.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pntk {

// Explicit values; grow only at the end.
enum class DType : int { float32 = 0, float16 = 1, bfloat16 = 2, int32 = 3, int64 = 4, uint8 = 5, int8 = 6 };
const char* dtype_name(DType dtype);
int dtype_size(DType dtype);

enum class DeviceType : int { cpu = 0, cuda = 1 };

struct TensorView {
  void* data = nullptr;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in elements
  DType dtype = DType::float32;
  DeviceType device = DeviceType::cpu;
  int device_index = 0;

  int64_t dim() const { return static_cast<int64_t>(shape.size()); }
  int64_t size(int64_t i) const { return shape.at(static_cast<size_t>(i < 0 ? i + dim() : i)); }
  int64_t numel() const;
  bool is_contiguous() const;
  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }
  std::string shape_string() const;  // "[4096, 12288]"
};

// Argument checks that name the argument: "qweight: must be int32, got float16".
void check_dtype(const TensorView& t, DType dtype, const char* name);
void check_dims(const TensorView& t, int64_t dims, const char* name);
void check_contiguous(const TensorView& t, const char* name);
void check_same_device(const TensorView& a, const TensorView& b, const char* name);

}  // namespace pntk
