// Device helpers shared by the q4 kernels (tile layout: q4_tile_layout.h).
#pragma once
#include <cuda_fp16.h>

#include <cstdint>

namespace pntk::cuda {

// (a & b) | c in one instruction. With b = 0x000F000F and c = 0x64006400 it turns nibbles 0
// and 4 of `a` into the fp16 pair (1024 + q0, 1024 + q4): 0x6400 is 1024, whose fp16 ulp is 1
// (the dequantization trick of FasterTransformer / ExLlama / Marlin).
__device__ __forceinline__ uint32_t lop3_and_or(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

// fp16 pair (1024 + q_lo, 1024 + q_hi) from nibbles `shift/4` and `shift/4 + 4` of `word`.
__device__ __forceinline__ uint32_t nibble_pair_1024(uint32_t word, int shift) {
  return lop3_and_or(word >> shift, 0x000F000Fu, 0x64006400u);
}

// fp16 pair (1024 + z, 1024 + z) for a zero point z in [0, 15].
__device__ __forceinline__ uint32_t zero_pair_1024(uint32_t z) { return (0x6400u | z) * 0x00010001u; }

__device__ __forceinline__ __half2 as_half2(uint32_t bits) {
  __half2 h;
  static_assert(sizeof h == sizeof bits, "half2 is 32 bits");
  memcpy(&h, &bits, sizeof bits);
  return h;
}

__device__ __forceinline__ uint32_t as_bits(__half2 h) {
  uint32_t bits;
  memcpy(&bits, &h, sizeof bits);
  return bits;
}

// scale * (q - zero) for two weights, rounded once to fp16: (1024 + q) - (1024 + z) is exact.
__device__ __forceinline__ uint32_t dequant_pair_f16(uint32_t q_pair_1024, uint32_t zero_pair, uint32_t scale_pair) {
  return as_bits(__hmul2(__hsub2(as_half2(q_pair_1024), as_half2(zero_pair)), as_half2(scale_pair)));
}

}  // namespace pntk::cuda
