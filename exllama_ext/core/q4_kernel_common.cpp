// Out-of-line helpers of the CPU q4 kernels, compiled without ISA flags (q4_kernel_common.h).
#include "core/q4_kernel_common.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/float_round.h"

namespace pntk::q4 {

namespace {

float load_as_float(const void* base, DType dtype, int64_t index) {
  switch (dtype) {
    case DType::float32: return static_cast<const float*>(base)[index];
    case DType::float16: return half_bits_to_float(static_cast<const uint16_t*>(base)[index]);
    case DType::bfloat16: return bfloat16_bits_to_float(static_cast<const uint16_t*>(base)[index]);
    default: std::abort();
  }
}

// fp32 -> bf16 bits, round to nearest even; NaN stays NaN.
uint16_t float_to_bfloat16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace

float fp16_to_float(uint16_t bits) { return half_bits_to_float(bits); }

void convert_row_scalar(const TensorView& x, int64_t m, float* dst) {
  const int64_t k_total = x.shape[1];
  for (int64_t k = 0; k < k_total; ++k) dst[k] = load_as_float(x.data, x.dtype, m * x.strides[0] + k * x.strides[1]);
}

void convert_elements_scalar(const void* src, DType dtype, int64_t count, float* dst) {
  for (int64_t i = 0; i < count; ++i) dst[i] = load_as_float(src, dtype, i);
}

void store_row_scalar(const float* src, int64_t count, DType dtype, void* dst) {
  for (int64_t i = 0; i < count; ++i) {
    switch (dtype) {
      case DType::float32: static_cast<float*>(dst)[i] = src[i]; break;
      case DType::float16: static_cast<uint16_t*>(dst)[i] = double_to_half_bits(src[i]); break;
      case DType::bfloat16: static_cast<uint16_t*>(dst)[i] = float_to_bfloat16_bits(src[i]); break;
      default: std::abort();
    }
  }
}

void prepare_activations(const Q4Layout& w, const TensorView& x, bool nibble_scaled, ConvertRowFn convert_row,
                         Q4Activations& out) {
  const int64_t m_total = x.shape[0];
  out.form = Q4Activations::Form::packed_fp32;
  out.m = m_total;
  out.x.assign(static_cast<size_t>(m_total * w.packed_rows), 0.0f);
  out.xsum.assign(static_cast<size_t>(m_total * w.groups), 0.0f);
  out.row_unscale.assign(static_cast<size_t>(m_total), 1.0f);
  // 2^-4j for j = p % 8 < 7 (exact power-of-two scaling), 1 for j = 7.
  float scale[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  if (nibble_scaled)
    for (int j = 0; j < 7; ++j) scale[j] = std::ldexp(1.0f, -4 * j);
  std::vector<float> row(static_cast<size_t>(w.k) + 1, 0.0f);  // row[K] = 0 stands for padding
  for (int64_t m = 0; m < m_total; ++m) {
    convert_row(x, m, row.data());
    float largest = 0.0f;
    for (int64_t k = 0; k < w.k; ++k) largest = std::max(largest, std::fabs(row[k]));
    const float factor = row_scale(largest);
    out.row_unscale[m] = 1.0f / factor;
    float* packed = out.x.data() + m * w.packed_rows;
    for (int64_t g = 0; g < w.groups; ++g) {
      float partial[8] = {};  // one sum per row of a word: 8 independent chains
      for (int64_t p0 = w.group_begin[g]; p0 < w.group_begin[g + 1]; p0 += 8) {
        for (int j = 0; j < 8; ++j) {
          const int32_t k = w.row_of_packed[p0 + j];
          const float value = row[k < 0 ? w.k : k] * factor;
          partial[j] += value;
          packed[p0 + j] = value * scale[j];
        }
      }
      double sum = 0.0;
      for (float part : partial) sum += part;
      out.xsum[m * w.groups + g] = static_cast<float>(sum);
    }
  }
}

float row_scale(float largest) {
  if (largest >= 0x1p64f) return 0x1p-64f;
  return largest > 0.0f && largest < 0x1p-64f ? 0x1p64f : 1.0f;
}

void touch_lines(const void* data, size_t bytes) {
  const char* bytes_of = static_cast<const char*>(data);
  char touched = 0;
  for (size_t i = 0; i < bytes; i += 64) touched |= bytes_of[i];
  asm volatile("" : : "r"(touched));
}

float* thread_scratch(int slot, int64_t floats) {
  thread_local std::vector<float> buffers[2];
  std::vector<float>& buffer = buffers[slot];
  if (static_cast<int64_t>(buffer.size()) < floats) buffer.resize(static_cast<size_t>(floats));
  return buffer.data();
}

}  // namespace pntk::q4
