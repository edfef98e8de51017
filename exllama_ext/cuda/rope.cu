// RoPE on the device: the core's cos/sin tables (core/rope_table.h) written in place on a
// runner's device, and the in-place NeoX ("rotate half") rotation of q or k.
//
// Tables, [positions, d] with d = 2 * half_dim, the pair index i = j mod half_dim:
//   cos[row, j] = attention_factor * cos(((first_position + row) * position_scale) * inv_freq_i)
// angle and cos/sin in double, rounded once to the table type, like the CPU tables (which
// they match to within 1 ulp of the table type: the two libm's sin may differ in the last
// bit of the double).
// Rotation, for a row of x at position p and r = rotary_dim, i < r/2 (fp32, rounded once):
//   x[i]       <- x[i] cos[p, i] - x[i + r/2] sin[p, i]
//   x[i + r/2] <- x[i + r/2] cos[p, i + r/2] + x[i] sin[p, i + r/2]
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <string>

#include "core/errors.h"
#include "cuda/cuda_check.cuh"
#include "cuda/rope_cuda.cuh"

namespace pntk::cuda {
namespace {

constexpr int THREADS = 256;

// Value conversions of the three table / activation types.
template <typename T>
struct Convert;
template <>
struct Convert<float> {
  __device__ static float from_double(double x) { return static_cast<float>(x); }
  __device__ static float to_float(float x) { return x; }
  __device__ static float from_float(float x) { return x; }
};
template <>
struct Convert<__half> {
  __device__ static __half from_double(double x) { return __double2half(x); }
  __device__ static float to_float(__half x) { return __half2float(x); }
  __device__ static __half from_float(float x) { return __float2half_rn(x); }
};
template <>
struct Convert<__nv_bfloat16> {
  __device__ static __nv_bfloat16 from_double(double x) { return __double2bfloat16(x); }
  __device__ static float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  __device__ static __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
};

// Calls f.template operator()<T>() with the CUDA type of a float dtype.
template <typename F>
void dispatch_float_type(DType dtype, const char* argument, F&& f) {
  switch (dtype) {
    case DType::float32: return f(float{});
    case DType::float16: return f(__half{});
    case DType::bfloat16: return f(__nv_bfloat16{});
    default: fail_argument(argument, std::string("must be float32, float16 or bfloat16, got ") + dtype_name(dtype));
  }
}

struct TableParams {
  float inv_freq[ROPE_MAX_HALF_DIM];
  int half_dim;
  int64_t first_position, positions;
  double position_scale, attention_factor;
};

// One thread per (row, i).
template <typename T>
__global__ void rope_table_kernel(const TableParams params, T* cos_out, T* sin_out) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int half = params.half_dim;
  if (index >= params.positions * half) return;
  const int64_t row = index / half;
  const int i = static_cast<int>(index % half);
  const double position = static_cast<double>(params.first_position + row) * params.position_scale;
  double sin_value, cos_value;
  sincos(position * static_cast<double>(params.inv_freq[i]), &sin_value, &cos_value);
  const T c = Convert<T>::from_double(params.attention_factor * cos_value);
  const T s = Convert<T>::from_double(params.attention_factor * sin_value);
  T* cos_row = cos_out + row * 2 * half;
  T* sin_row = sin_out + row * 2 * half;
  cos_row[i] = cos_row[i + half] = c;
  sin_row[i] = sin_row[i + half] = s;
}

// Smallest and largest position of a [batch, seq] tensor, into range[0], range[1].
template <typename P>
__global__ void positions_range_kernel(const P* positions, int64_t batch, int64_t seq, int64_t batch_stride,
                                       int64_t seq_stride, long long* range) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= batch * seq) return;
  const long long p = positions[(index / seq) * batch_stride + (index % seq) * seq_stride];
  atomicMin(&range[0], p);
  atomicMax(&range[1], p);
}

// One thread per (b, s, h, i < rotary_dim / 2).
template <typename T, typename P>
__global__ void rope_apply_kernel(RopeApplyArgs args) {
  const int64_t half = args.rotary_dim / 2;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= args.batch * args.seq * args.heads * half) return;
  const int64_t i = index % half;
  const int64_t h = (index / half) % args.heads;
  const int64_t s = (index / (half * args.heads)) % args.seq;
  const int64_t b = index / (half * args.heads * args.seq);
  const int64_t p = args.positions
                        ? static_cast<int64_t>(static_cast<const P*>(
                              args.positions)[b * args.positions_batch_stride + s * args.positions_seq_stride])
                        : args.position_offset + s;
  T* row = static_cast<T*>(args.x) + b * args.batch_stride + s * args.seq_stride + h * args.head_stride;
  const T* cos_row = static_cast<const T*>(args.cos) + p * args.rotary_dim;
  const T* sin_row = static_cast<const T*>(args.sin) + p * args.rotary_dim;
  const float x1 = Convert<T>::to_float(row[i]), x2 = Convert<T>::to_float(row[i + half]);
  row[i] = Convert<T>::from_float(x1 * Convert<T>::to_float(cos_row[i]) - x2 * Convert<T>::to_float(sin_row[i]));
  row[i + half] = Convert<T>::from_float(x2 * Convert<T>::to_float(cos_row[i + half]) +
                                         x1 * Convert<T>::to_float(sin_row[i + half]));
}

// Positions position_offset .. position_offset + seq - 1 must have table rows.
void check_position_offset(const RopeApplyArgs& args) {
  PNTK_CHECK(args.position_offset >= 0 && args.position_offset + args.seq <= args.table_rows, "positions",
             std::to_string(args.position_offset) + " to " + std::to_string(args.position_offset + args.seq - 1) +
                 " are outside the table (" + std::to_string(args.table_rows) + " rows)");
}

// Every entry of the positions tensor must have a table row: one reduction, one sync.
void check_position_tensor(const RopeApplyArgs& args, cudaStream_t stream) {
  long long* range = nullptr;
  check_cuda(cudaMallocAsync(reinterpret_cast<void**>(&range), 2 * sizeof(long long), stream), "rope_apply_cuda");
  const long long initial[2] = {LLONG_MAX, LLONG_MIN};
  long long found[2] = {0, 0};
  cudaError_t status = cudaMemcpyAsync(range, initial, sizeof initial, cudaMemcpyHostToDevice, stream);
  if (status == cudaSuccess) {
    const int64_t count = args.batch * args.seq;
    const unsigned blocks = static_cast<unsigned>(ceil_div(count, THREADS));
    if (args.positions_dtype == DType::int64) {
      positions_range_kernel<<<blocks, THREADS, 0, stream>>>(static_cast<const int64_t*>(args.positions), args.batch,
                                                             args.seq, args.positions_batch_stride,
                                                             args.positions_seq_stride, range);
    } else {
      positions_range_kernel<<<blocks, THREADS, 0, stream>>>(static_cast<const int32_t*>(args.positions), args.batch,
                                                             args.seq, args.positions_batch_stride,
                                                             args.positions_seq_stride, range);
    }
    status = cudaGetLastError();
  }
  if (status == cudaSuccess) status = cudaMemcpyAsync(found, range, sizeof found, cudaMemcpyDeviceToHost, stream);
  if (status == cudaSuccess) status = cudaStreamSynchronize(stream);
  cudaFreeAsync(range, stream);
  check_cuda(status, "positions_range_kernel");
  PNTK_CHECK(found[0] >= 0 && found[1] < args.table_rows, "positions",
             "values " + std::to_string(found[0]) + " to " + std::to_string(found[1]) + " are outside the table (" +
                 std::to_string(args.table_rows) + " rows)");
}

}  // namespace

void rope_table_cuda(const RopeTableArgs& args, void* cos_out, void* sin_out, int device, uintptr_t stream) {
  PNTK_CHECK(args.inv_freq != nullptr, "inv_freq", "must not be null");
  PNTK_CHECK(args.half_dim > 0 && args.half_dim <= ROPE_MAX_HALF_DIM, "rotary_dim",
             "must be between 2 and " + std::to_string(2 * ROPE_MAX_HALF_DIM) + " for the CUDA tables, got " +
                 std::to_string(2 * args.half_dim));
  PNTK_CHECK(args.positions >= 0 && args.first_position >= 0, "seq_len", "must not be negative");
  PNTK_CHECK(cos_out != nullptr && sin_out != nullptr, "cos", "and sin must not be null");
  TableParams params{};
  for (int i = 0; i < args.half_dim; ++i) params.inv_freq[i] = args.inv_freq[i];
  params.half_dim = args.half_dim;
  params.first_position = args.first_position;
  params.positions = args.positions;
  params.position_scale = args.position_scale;
  params.attention_factor = args.attention_factor;
  const int64_t count = args.positions * args.half_dim;
  if (count == 0) return;
  DeviceGuard guard(device);
  const DType dtype = args.dtype == TableDtype::float32   ? DType::float32
                      : args.dtype == TableDtype::float16 ? DType::float16
                                                          : DType::bfloat16;
  dispatch_float_type(dtype, "dtype", [&](auto type_tag) {
    using T = decltype(type_tag);
    rope_table_kernel<T><<<static_cast<unsigned>(ceil_div(count, THREADS)), THREADS, 0, as_stream(stream)>>>(
        params, static_cast<T*>(cos_out), static_cast<T*>(sin_out));
    check_launch("rope_table_kernel");
  });
}

void rope_apply_cuda(const RopeApplyArgs& args, int device, uintptr_t stream) {
  PNTK_CHECK(args.rotary_dim > 0 && args.rotary_dim % 2 == 0 && args.rotary_dim <= args.head_dim, "cos",
             "rotary dim (last dimension) must be even and at most head_dim (" + std::to_string(args.head_dim) +
                 "), got " + std::to_string(args.rotary_dim));
  PNTK_CHECK(args.positions == nullptr || args.positions_dtype == DType::int32 || args.positions_dtype == DType::int64,
             "positions", std::string("must be int32 or int64, got ") + dtype_name(args.positions_dtype));
  const int64_t count = args.batch * args.seq * args.heads * (args.rotary_dim / 2);
  if (count == 0) return;
  if (!args.positions) check_position_offset(args);
  DeviceGuard guard(device);
  const cudaStream_t s = as_stream(stream);
  if (args.positions) check_position_tensor(args, s);
  dispatch_float_type(args.dtype, "x", [&](auto type_tag) {
    using T = decltype(type_tag);
    const unsigned blocks = static_cast<unsigned>(ceil_div(count, THREADS));
    if (args.positions_dtype == DType::int32) {
      rope_apply_kernel<T, int32_t><<<blocks, THREADS, 0, s>>>(args);
    } else {
      rope_apply_kernel<T, int64_t><<<blocks, THREADS, 0, s>>>(args);
    }
    check_launch("rope_apply_kernel");
  });
}

}  // namespace pntk::cuda
