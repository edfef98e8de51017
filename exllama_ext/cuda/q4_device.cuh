// Device helpers of the q4 GEMV (tile layout: q4_tile_layout.h): exact unpacking of 4-bit
// weights to fp16 / bf16 integer pairs, and the tensor-core product of one 16 x 8 x 16 tile.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace pntk::cuda {

// (a & b) | c in one instruction.
__device__ __forceinline__ uint32_t lop3_and_or(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

// The pair type of the mma inputs, and how a register of weights (two 4-bit q of one column,
// tile layout: q4_tile_layout.h) becomes an A register of the GEMV's mma, exactly:
//  - fp16: the masked nibbles themselves, read as the fp16 subnormals q * 2^-24 (even nibbles)
//    and 16 q * 2^-24 (odd nibbles, mask 0x00F000F0): one AND per register. Their products
//    with x are exact in the fp32 sums, which the GEMV rescales by UNIT (2^24, 2^20) and from
//    which it subtracts zero * (the group's sum of x) once per group (ZERO_BY_X_SUM).
//  - bf16 (7-bit mantissa: no room for 16 q, and its subnormals times a small x leave fp32's
//    range): the OFFSET trick of FasterTransformer / ExLlama / Marlin. OFFSET is a power of two
//    whose ulp is 1 (128): OR-ing q into its low mantissa bits gives OFFSET + q exactly, and
//    (OFFSET + q) - (OFFSET + zero) = q - zero exactly; odd nibbles are shifted down first.
// Neither applies the scale to a weight: the GEMV multiplies a group's fp32 sums by it, so no
// weight is ever rounded.
// a - b on two 16-bit halves of type Half2 (__half2 or __nv_bfloat162), as bits.
template <class Half2>
__device__ __forceinline__ uint32_t subtract_halves(uint32_t a, uint32_t b) {
  Half2 ha, hb;
  memcpy(&ha, &a, 4);
  memcpy(&hb, &b, 4);
  const Half2 d = __hsub2(ha, hb);
  uint32_t bits;
  memcpy(&bits, &d, 4);
  return bits;
}

struct Fp16Pair {
  static constexpr bool ZERO_BY_X_SUM = true;
  static constexpr uint32_t ONES = 0x3C003C00u;  // (1.0, 1.0): the A of the x-sum mma
  // A register of `word` (or word >> 8): the even or the odd nibbles 0 and 4 (zero_pair unused).
  __device__ static uint32_t weights(uint32_t word, bool odd, uint32_t) {
    return word & (odd ? 0x00F000F0u : 0x000F000Fu);
  }
  // What an fp32 sum of x * weights(..) is multiplied by to be the sum of x * q.
  __device__ static float unit(bool odd) { return odd ? 1048576.0f : 16777216.0f; }  // 2^20, 2^24
  __device__ static uint16_t from_float(float v) { return __half_as_ushort(__float2half_rn(v)); }
};

struct Bf16Pair {
  static constexpr bool ZERO_BY_X_SUM = false;
  static constexpr uint32_t OFFSET = 0x4300u;  // 128.0
  // A register (q - zero, q' - zero) of `word` (or word >> 8): the even or the odd nibbles 0, 4.
  __device__ static uint32_t weights(uint32_t word, bool odd, uint32_t zero_pair) {
    return subtract_halves<__nv_bfloat162>(lop3_and_or(odd ? word >> 4 : word, 0x000F000Fu, OFFSET * 0x00010001u),
                                           zero_pair);
  }
  __device__ static float unit(bool) { return 1.0f; }
  __device__ static uint16_t from_float(float v) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); }
};

// Pair (OFFSET + z, OFFSET + z) for a zero point z in [0, 15] (the subtracting pair types).
template <class Pair>
__device__ __forceinline__ uint32_t zero_pair(uint32_t z) { return (Pair::OFFSET | z) * 0x00010001u; }

// d = a * b + c over one 16 x 8 x 16 tile, fp32 sums. a: x rows (g, g+8) at k (2t, 2t+1) and
// (2t+8, 2t+9); b0, b1: W at k (2t, 2t+1), (2t+8, 2t+9) of column g; c, d: rows (g, g+8),
// columns (2t, 2t+1). sm_75 has no m16n8k16 (two m16n8k8 halves) and no bf16 mma.
template <class Pair>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1,
                                          const float (&c)[4]);

template <>
__device__ __forceinline__ void mma_16816<Fp16Pair>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1,
                                                    const float (&c)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
  float half_sum[4];
  asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%7,%8,%9,%10};\n"
      : "=f"(half_sum[0]), "=f"(half_sum[1]), "=f"(half_sum[2]), "=f"(half_sum[3])
      : "r"(a[0]), "r"(a[1]), "r"(b0), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
  asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%7,%8,%9,%10};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[2]), "r"(a[3]), "r"(b1), "f"(half_sum[0]), "f"(half_sum[1]), "f"(half_sum[2]), "f"(half_sum[3]));
#endif
}

template <>
__device__ __forceinline__ void mma_16816<Bf16Pair>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1,
                                                    const float (&c)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
  __trap();  // the launcher refuses bfloat16 below compute capability 8.0
#endif
}

}  // namespace pntk::cuda
