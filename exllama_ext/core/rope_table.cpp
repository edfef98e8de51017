#include "core/rope_table.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/errors.h"
#include "core/float_round.h"

namespace pntk {
namespace {

// Stores one value, rounded once from double, per output dtype.
template <TableDtype D>
struct TableStore;
template <>
struct TableStore<TableDtype::float32> {
  using type = float;
  static type store(double x) { return static_cast<float>(x); }
};
template <>
struct TableStore<TableDtype::float16> {
  using type = uint16_t;
  static type store(double x) { return double_to_half_bits(x); }
};
template <>
struct TableStore<TableDtype::bfloat16> {
  using type = uint16_t;
  static type store(double x) { return double_to_bfloat16_bits(x); }
};

template <TableDtype D>
void rope_table_typed(const RopeTableArgs& args, void* cos_out, void* sin_out) {
  using T = typename TableStore<D>::type;
  const int half = args.half_dim;
  const int64_t width = 2 * static_cast<int64_t>(half);
  std::vector<double> inv(half);
  for (int i = 0; i < half; ++i) inv[i] = static_cast<double>(args.inv_freq[i]);
  T* cos_table = static_cast<T*>(cos_out);
  T* sin_table = static_cast<T*>(sin_out);
  for (int64_t row = 0; row < args.positions; ++row) {
    // position * inv_freq is exact in double when position_scale is 1 (17 + 24 bits < 53).
    const double position = static_cast<double>(args.first_position + row) * args.position_scale;
    T* c = cos_table + row * width;
    T* s = sin_table + row * width;
    for (int i = 0; i < half; ++i) {
      double sin_value, cos_value;
      ::sincos(position * inv[i], &sin_value, &cos_value);
      c[i] = c[i + half] = TableStore<D>::store(args.attention_factor * cos_value);
      s[i] = s[i + half] = TableStore<D>::store(args.attention_factor * sin_value);
    }
  }
}

}  // namespace

int table_dtype_size(TableDtype dtype) {
  switch (dtype) {
    case TableDtype::float32: return 4;
    case TableDtype::float16: return 2;
    case TableDtype::bfloat16: return 2;
  }
  std::abort();
}

void rope_table(const RopeTableArgs& args, void* cos_out, void* sin_out) {
  PNTK_CHECK(args.inv_freq != nullptr, "inv_freq", "must not be null");
  PNTK_CHECK(args.half_dim > 0, "rotary_dim", "must be positive");
  PNTK_CHECK(args.positions >= 0 && args.first_position >= 0, "seq_len", "must not be negative");
  switch (args.dtype) {
    case TableDtype::float32: return rope_table_typed<TableDtype::float32>(args, cos_out, sin_out);
    case TableDtype::float16: return rope_table_typed<TableDtype::float16>(args, cos_out, sin_out);
    case TableDtype::bfloat16: return rope_table_typed<TableDtype::bfloat16>(args, cos_out, sin_out);
  }
  std::abort();
}

}  // namespace pntk
