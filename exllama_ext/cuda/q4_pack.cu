// Load-time repacking of a GPTQ 4-bit matrix into the tile layout of q4_tile_layout.h: one
// thread per qtile word (pack_tile_word) and one per 8 scales + 8 zeros (pack_tile_scales);
// both functions, and so the layout, are checked on the host by tests/cpp.
//
// Input:  qweight int32 [K/8, N]: q[k, n] = (qweight[k/8, n] >> 4*(k%8)) & 15
//         qzeros  int32 [G, N/8]: z[g, n] = (qzeros[g, n/8] >> 4*(n%8)) & 15
//         scales  fp16  [G, N]
// Output: qtile word (strip, kt, lane, j) holds, at nibble p (0..7),
//           q[row_src[16*kt + cell.row], 64*strip + cell.col], cell = tile_cell(lane, j, p)
//           (0 for padded rows and columns);
//         scales_t[strip][g'][gi][nt] = scale[g', 64*strip + 8*nt + gi]   (0 for padded columns)
//         zeros_t[strip][g'][gi] nibble nt = zero[g', 64*strip + 8*nt + gi], zero = z ("gptq_v2")
//           or (z + 1) & 15 ("gptq", AutoGPTQ's reading of v1 checkpoints).
#include <cuda_runtime.h>

#include <mutex>
#include <vector>

#include "cuda/cuda_check.cuh"
#include "cuda/q4_cuda.cuh"

namespace pntk::cuda {
namespace {

constexpr int PACK_THREADS = 256;

struct PackArgs {
  GptqSource source;
  const int32_t* row_src;  // [Kp]
  uint32_t* qtile;         // [strips][Kp/16][32][4]
  uint16_t* scales_t;      // [strips][G][8][8]
  uint32_t* zeros_t;       // [strips][G][8]
  int64_t groups, k_tiles, strips;
};

// One thread per qtile word.
__global__ void q4_pack_qweight_kernel(PackArgs args) {
  const int64_t word = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (word >= args.strips * args.k_tiles * 128) return;
  args.qtile[word] = pack_tile_word(args.source, args.row_src, args.k_tiles, word);
}

// One thread per (strip, group, gi): one word of 8 zeros and the scales of the same 8 columns.
__global__ void q4_pack_scales_kernel(PackArgs args) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= args.strips * args.groups * 8) return;
  args.zeros_t[index] = pack_tile_scales(args.source, args.groups, index, args.scales_t);
}

}  // namespace

namespace {

// An attribute of `device`, asked once (attributes are positive) and cached by device.
template <cudaDeviceAttr ATTRIBUTE>
int cached_device_attribute(int device) {
  static std::mutex mutex;
  static std::vector<int> values;  // by device, 0 = not asked yet
  std::lock_guard<std::mutex> lock(mutex);
  if (device < 0) throw std::invalid_argument("device: must not be negative");
  if (values.size() <= static_cast<size_t>(device)) values.resize(static_cast<size_t>(device) + 1, 0);
  int& value = values[static_cast<size_t>(device)];
  if (value == 0) check_cuda(cudaDeviceGetAttribute(&value, ATTRIBUTE, device), "cudaDeviceGetAttribute");
  return value;
}

}  // namespace

int64_t device_sm_count(int device) { return cached_device_attribute<cudaDevAttrMultiProcessorCount>(device); }

bool gemv_takes_bfloat16(int device) { return cached_device_attribute<cudaDevAttrComputeCapabilityMajor>(device) >= 8; }

Q4TileMatrix q4_pack_cuda(const Q4TilePlan& plan, const GptqSource& gptq, void* buffer, int device, uintptr_t stream) {
  PNTK_CHECK(gptq.n == plan.n, "qweight", "does not match the plan's out_features");
  PNTK_CHECK(buffer != nullptr, "storage", "must not be null");
  PNTK_CHECK(reinterpret_cast<uintptr_t>(buffer) % BUFFER_ALIGN == 0, "storage",
             "must be aligned to " + std::to_string(BUFFER_ALIGN) + " bytes");
  const Q4TileBuffers parts = plan.buffers();
  char* base = static_cast<char*>(buffer);
  Q4TileMatrix m{};
  m.row_src = reinterpret_cast<const int32_t*>(base + parts.row_src);
  m.tile_group = reinterpret_cast<const int32_t*>(base + parts.tile_group);
  m.qtile = reinterpret_cast<const uint32_t*>(base + parts.qtile);
  m.scales = reinterpret_cast<const uint16_t*>(base + parts.scales);
  m.zeros = reinterpret_cast<const uint32_t*>(base + parts.zeros);
  m.k = plan.k;
  m.n = plan.n;
  m.groups = plan.groups;
  m.k_padded = plan.k_padded;
  m.n_padded = plan.n_padded;
  m.identity = plan.identity;
  m.device = device;

  DeviceGuard guard(device);
  const cudaStream_t s = as_stream(stream);
  // From pageable memory: returns once the host vectors are staged, so they may go away.
  check_cuda(cudaMemcpyAsync(base + parts.row_src, plan.row_src.data(), sizeof(int32_t) * plan.row_src.size(),
                             cudaMemcpyHostToDevice, s),
             "q4_pack_cuda: copy row_src");
  check_cuda(cudaMemcpyAsync(base + parts.tile_group, plan.tile_group.data(),
                             sizeof(int32_t) * plan.tile_group.size(), cudaMemcpyHostToDevice, s),
             "q4_pack_cuda: copy tile_group");
  PackArgs args{gptq,
                m.row_src,
                reinterpret_cast<uint32_t*>(base + parts.qtile),
                reinterpret_cast<uint16_t*>(base + parts.scales),
                reinterpret_cast<uint32_t*>(base + parts.zeros),
                plan.groups,
                plan.k_tiles(),
                plan.strips()};
  const int64_t words = plan.strips() * plan.k_tiles() * 128;
  q4_pack_qweight_kernel<<<static_cast<unsigned>(ceil_div(words, PACK_THREADS)), PACK_THREADS, 0, s>>>(args);
  check_launch("q4_pack_qweight_kernel");
  const int64_t scale_rows = plan.strips() * plan.groups * 8;
  q4_pack_scales_kernel<<<static_cast<unsigned>(ceil_div(scale_rows, PACK_THREADS)), PACK_THREADS, 0, s>>>(args);
  check_launch("q4_pack_scales_kernel");
  return m;
}

}  // namespace pntk::cuda
