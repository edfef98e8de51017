// AVX-512 BF16 q4 kernels: a GEMV on vdpbf16ps for bf16 x (one exact bf16 part) and for fp16
// x with M = 1 (two exact parts); fp16 x with M >= 2 and fp32 x take the avx512 family's
// fp32-FMA GEMV, and every GEMM is the avx512 family's. Measured on Zen 5, act-order:
// - one core, weights in cache (4096 x 1024, group 32): vdpbf16ps runs 1.6x (bf16 x) and
//   1.3x (fp16 x, 2 parts) the fp32-FMA GEMV at M = 1, 1.7x (bf16 x) at M = 8; fp16 x in 2
//   parts gained 5% at M = 2 and nothing beyond, so it stops at M = 1;
// - two cores, weights streamed from memory, fp16 x at M = 1: 88-94% of the measured read
//   bandwidth when the machine gives ~50 GB/s, 82-94% at ~80 GB/s, where the per-core speed
//   and the fixed cost of a call count (scripts/bench_q4_cpu.py).
// (A GEMV on vpdpbusd, x in 2 s8 parts, ran 1.5x the fp32 FMAs on cache-resident weights but
// read memory at only 70-80% of the bandwidth at M = 1 and 40-50% at M = 2, so it was removed.)
//
// Weights go straight from the packed word to bf16 pairs. Word w of column c holds packed
// rows 8r..8r+7 (row 8r+j at bits 4j); for j < 4
//   pair_j(w) = 0x3F803F80 | (w >> (4j - 3) & 0x00780078)       (w << 3 for j = 0)
// puts nibble j at bits 3..6 and nibble j+4 at bits 19..22: the bf16 pair
// (1 + q[8r+j]/16, 1 + q[8r+j+4]/16), exact (q fills the top 4 of bf16's 7 fraction bits).
// Activations, in pairs, Q4Activations::xpairs [M][K'/8][parts][4] uint32:
//   xpairs[m][r][part][j] = bits of x_part[m][8r+j] | those of x_part[m][8r+j+4] << 16, j < 4,
// with x_0 = bf16(16 x) and, for fp16 x, x_1 = 16 x - x_0 (both exact, 16 x = x_0 + x_1; the
// factor 16 is exact and saves a multiply per chunk below).
// vdpbf16ps multiplies a pair with pair_j(w) and adds both products into fp32: they are exact
// (8 x 5 significant bits). So 32 weights take one shift and one vpternlogd (shared by the rows
// of x) and one vdpbf16ps per row of x and part. (vdpbf16ps takes bf16 denormals, |x| < 2^-126,
// as 0: a row of x that small is scaled by 2^64 first (Q4Activations), so what it drops is
// below 2^-62 of the row's largest |x|; a row at 2^64 or more is scaled by 2^-64.)
// Per chunk of a group g (kChunkWordRows word rows from the group's start, the last one
// shorter: this bounds the error of the offset terms summed into acc), with
// acc = sum_p 16 x[p] (1 + q[p]/16) and xsum = sum_p x[p] over the chunk:
//   y[m, n] += s[g, n] * (acc - (16 + z[g, n]) xsum)  =  s * sum_p x[p] (q[p] - z)
// Q4Activations::xsum_chunk [M][K'/8] holds xsum at the chunk's first word row (0 elsewhere).
// 16 + z comes straight from the zero nibble as fp32 bits (zeros_plus_16).
// The common decode case, M = 1 on a full 64-column tile, has its own loop
// (gemv_row_full_tile): y stays in 4 registers over the whole of K, so a chunk's epilogue is
// 3 adds, one FNMA and one FMA per vector. On one core with cached weights (Zen 5, fp16 x,
// group 32) this took 4096 x 4096 from 216 to 193 us; the word-row loop itself runs near
// vdpbf16ps's 2 per cycle (8 per 64 bytes of weights with 2 parts).
#include "core/q4_kernel_simd.h"

#if PNTK_X86_64
PNTK_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")
#include "core/q4_kernel_f16c.h"
#include "core/q4_kernel_impl.h"
#include "core/q4_kernel_avx512.h"

namespace pntk::q4 {

namespace {

using Avx512Kernels = Q4Kernels<Avx512>;

struct Bf16Gemv {
  static constexpr int L = Avx512::kLanes;
  static constexpr int64_t kSplitFp16MaxRows = 1;  // fp16 x in 2 bf16 parts up to this M
  static constexpr int kPass = Avx512::kVectors * L;
  static constexpr int64_t kPrefetchWordRows = Avx512Kernels::kPrefetchWordRows;
  static constexpr int64_t kChunkWordRows = 16;

  template <int J>
  static __m512bh pair(__m512i w) {
    const __m512i shifted = J == 0 ? _mm512_slli_epi32(w, 3) : _mm512_srli_epi32(w, 4 * J - 3);
    // 0xEC: b | (a & c), the shifted words (a) overwritten in place
    return (__m512bh)_mm512_ternarylogic_epi32(shifted, _mm512_set1_epi32(0x3F803F80),
                                               _mm512_set1_epi32(0x00780078), 0xEC);
  }

  // 16 + z as fp32 for the zero nibbles of `valid` columns (Avx512::zero_words): lane i rotates
  // nibble i % 8 of its word to bits 19..22 and takes the sign and exponent of 16.0f
  // (0x41800000 | z << 19 = 16 (1 + z/16)).
  static __m512 zeros_plus_16(const uint32_t* words, int valid) {
    const __m512i rotated = _mm512_rolv_epi32(Avx512::zero_words(words, valid),
                                              _mm512_setr_epi32(19, 15, 11, 7, 3, 31, 27, 23, 19, 15, 11, 7, 3, 31, 27, 23));
    return _mm512_castsi512_ps(
        _mm512_ternarylogic_epi32(rotated, _mm512_set1_epi32(0x41800000), _mm512_set1_epi32(0x00780000), 0xEC));
  }

  // A group's scale s and 16 + z (zeros_plus_16) for `valid` columns from their first.
  struct GroupParams {
    __m512 scale, zero_plus_16;
  };
  static GroupParams group_params(const uint16_t* scales, const uint32_t* zeros, int valid) {
    return {Avx512::load_scales(scales, Avx512::mask(valid)), zeros_plus_16(zeros, valid)};
  }

  // A chunk's products added to y: y + s (dot - (16 + z) xsum) = y + s sum_p x[p] (q[p] - z).
  static __m512 add_chunk(__m512 y, const GroupParams& params, __m512 xsum, __m512 dot) {
    return _mm512_fmadd_ps(params.scale, _mm512_fnmadd_ps(params.zero_plus_16, xsum, dot), y);
  }

  // bf16 parts of x for this GEMV: 1 (bf16 x), 2 (fp16 x, M <= kSplitFp16MaxRows), or 0 (the
  // fp32-FMA GEMV takes it).
  static int parts_for(const TensorView& x) {
    if (x.dtype == DType::bfloat16) return 1;
    return x.dtype == DType::float16 && x.shape[0] <= kSplitFp16MaxRows ? 2 : 0;
  }

  static void prepare(const Q4Layout& w, const TensorView& x, bool for_gemv, Q4Activations& out) {
    const int parts = for_gemv ? parts_for(x) : 0;
    if (parts == 0) return Avx512Kernels::prepare(w, x, for_gemv, out);
    prepare_pairs(w, x, parts, out);
  }

  // x -> a.xpairs (`parts` bf16 parts) and a.xsum_chunk, straight from x (no packed fp32 copy):
  // each chunk two word rows (16 packed rows) at a time, gathered into packed order.
  static void prepare_pairs(const Q4Layout& w, const TensorView& x, int parts, Q4Activations& a) {
    a.form = Q4Activations::Form::bf16_pairs;
    a.m = x.shape[0];
    a.xpair_parts = parts;
    const int64_t word_rows = w.packed_rows / 8, ldx = word_rows * 4 * parts;
    a.xpairs.resize(static_cast<size_t>(a.m * ldx));
    a.xsum_chunk.assign(static_cast<size_t>(a.m * word_rows), 0.0f);
    a.row_unscale.resize(static_cast<size_t>(a.m));
    // 16-bit elements x[0..8) of each word row -> x[0], x[4], x[1], x[5], ...
    const __m256i pair_order = _mm256_setr_epi16(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15);
    Avx512::touch_permutation(w);
    for (int64_t m = 0; m < a.m; ++m) {
      const Avx512::ScaledRow row = Avx512::scaled_row(w, x, m);
      a.row_unscale[static_cast<size_t>(m)] = row.unscale;
      uint32_t* pairs = a.xpairs.data() + m * ldx;
      for (int64_t g = 0; g < w.groups; ++g) {
        const int64_t group_end = w.group_begin[g + 1] / 8;
        for (int64_t r0 = w.group_begin[g] / 8; r0 < group_end; r0 += kChunkWordRows) {
          const int64_t chunk_end = std::min(r0 + kChunkWordRows, group_end);
          __m512 sum = _mm512_setzero_ps();
          for (int64_t r = r0; r < chunk_end; r += 2) {
            const bool two = r + 1 < chunk_end;
            __m512 values = Avx512::gather_packed(w, row, r * 8, two ? 0xFFFF : 0x00FF);
            sum = _mm512_add_ps(sum, values);
            values = _mm512_mul_ps(values, _mm512_set1_ps(16.0f));  // exact: x' = 16 x
            for (int part = 0; part < parts; ++part) {
              // part 0 rounds x to bf16 (exact for bf16 x); part 1 is the remainder, exact for
              // fp16 x (11 significant bits = 8 + at most 3 more, and no bf16 denormals: |x| >= 2^-24)
              const __m256i bits = (__m256i)_mm512_cvtneps_pbh(values);
              const __m256i ordered = _mm256_permutexvar_epi16(pair_order, bits);
              uint32_t* dst = pairs + r * 4 * parts + part * 4;
              _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm256_castsi256_si128(ordered));
              if (two) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 4 * parts), _mm256_extracti128_si256(ordered, 1));
              const __m512 rounded = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
              values = _mm512_sub_ps(values, rounded);
            }
          }
          a.xsum_chunk[m * word_rows + r0] = _mm512_reduce_add_ps(sum);
        }
      }
    }
  }

  // dots[m][v] = sum over word rows [0, word_rows) of q of 16 x_m (1 + q/16) (the chunk's
  // products, xpairs of MT rows of x from x, row stride ldx, Parts parts) on columns [0, V*L);
  // the last vector holds last_valid columns.
  template <int Parts, int MT, int V>
  static __attribute__((always_inline)) inline void chunk_dots(const uint32_t* q, int64_t width, int64_t word_rows,
                                                             const uint32_t* x, int64_t ldx, int last_valid,
                                                             __m512 (&dots)[MT][V]) {
    // Independent vdpbf16ps chains: at least 12 (latency 6 x 2 per cycle), split over j.
    constexpr int A = MT * V >= 12 ? 1 : (MT * V >= 6 ? 2 : 4);
    const __mmask16 last = Avx512::mask(last_valid), full = Avx512::mask(L);
    __m512 acc[MT][V][A];
    PNTK_UNROLL
    for (auto& per_m : acc)
      PNTK_UNROLL
      for (auto& per_v : per_m)
        PNTK_UNROLL
        for (auto& a : per_v) a = _mm512_setzero_ps();
    for (int64_t r = 0; r < word_rows; ++r) {
      __m512i words[V];
      PNTK_UNROLL
      for (int v = 0; v < V; ++v) words[v] = Avx512::load_words(q + r * width + v * L, v == V - 1 ? last : full);
      PNTK_UNROLL
      for (int v = 0; v < V; ++v)
        prefetch_l1(q + (r + kPrefetchWordRows) * width + v * L);
      const uint32_t* xr = x + r * 4 * Parts;
      static_for<4>([&](auto j) {
        __m512bh wp[V];
        PNTK_UNROLL
        for (int v = 0; v < V; ++v) wp[v] = pair<j>(words[v]);
        PNTK_UNROLL
        for (int m = 0; m < MT; ++m)
          PNTK_UNROLL
          for (int part = 0; part < Parts; ++part) {
            const __m512bh xb = (__m512bh)_mm512_set1_epi32(static_cast<int>(xr[m * ldx + part * 4 + j]));
            PNTK_UNROLL
            for (int v = 0; v < V; ++v) acc[m][v][j % A] = _mm512_dpbf16_ps(acc[m][v][j % A], wp[v], xb);
          }
      });
    }
    PNTK_UNROLL
    for (int m = 0; m < MT; ++m)
      PNTK_UNROLL
      for (int v = 0; v < V; ++v) {  // a pairwise sum of the chains
        __m512 sums[A];
        PNTK_UNROLL
        for (int a = 0; a < A; ++a) sums[a] = acc[m][v][a];
        PNTK_UNROLL
        for (int half = A / 2; half >= 1; half /= 2)
          PNTK_UNROLL
          for (int a = 0; a < half; ++a) sums[a] = _mm512_add_ps(sums[a], sums[a + half]);
        dots[m][v] = sums[0];
      }
  }

  // One chunk of a group, MT rows of x (xpairs row stride ldx, Parts parts) on columns
  // [0, V*L) of q: y (row stride kQ4TileColumns) += s * (dot - (16 + z) xsum).
  template <int Parts, int MT, int V>
  static void gemv_group(const uint32_t* q, int64_t width, int64_t word_rows, const uint32_t* x, int64_t ldx,
                         const float* xsum, int64_t xsum_stride, const uint16_t* scales, const uint32_t* zeros,
                         int last_valid, float* y) {
    __m512 dots[MT][V];
    chunk_dots<Parts, MT, V>(q, width, word_rows, x, ldx, last_valid, dots);
    PNTK_UNROLL
    for (int v = 0; v < V; ++v) {
      const GroupParams params = group_params(scales + v * L, zeros + v * L / 8, v == V - 1 ? last_valid : L);
      PNTK_UNROLL
      for (int m = 0; m < MT; ++m) {
        float* yv = y + m * kQ4TileColumns + v * L;
        _mm512_storeu_ps(yv, add_chunk(_mm512_loadu_ps(yv), params, _mm512_set1_ps(xsum[m * xsum_stride]), dots[m][v]));
      }
    }
  }

  // One row of x on a full tile (4 vectors): the tile's 4 vectors of y stay in registers over
  // all chunks, and each chunk's epilogue adds into them.
  template <int Parts>
  static void gemv_row_full_tile(const Q4Layout& w, const Q4Activations& a, int64_t tile, float* y_out) {
    constexpr int V = Avx512::kVectors;
    const uint32_t* q = w.tile_qweight(tile);
    const uint16_t* scales = w.tile_scales(tile);
    const uint32_t* zeros = w.tile_zeros(tile);
    __m512 y[V];
    for (auto& v : y) v = _mm512_setzero_ps();
    for (int64_t g = 0; g < w.groups; ++g) {
      const int64_t group_end = w.group_begin[g + 1] / 8;
      Avx512Kernels::prefetch_group_params(scales, zeros, kQ4TileColumns, g);
      for (int64_t r0 = w.group_begin[g] / 8; r0 < group_end; r0 += kChunkWordRows) {
        __m512 dots[1][V];
        chunk_dots<Parts, 1, V>(q + r0 * kQ4TileColumns, kQ4TileColumns, std::min(kChunkWordRows, group_end - r0),
                                a.xpairs.data() + r0 * 4 * Parts, 0, L, dots);
        const __m512 xsum = _mm512_set1_ps(a.xsum_chunk[static_cast<size_t>(r0)]);
        for (int v = 0; v < V; ++v) {
          const GroupParams params =
              group_params(scales + g * kQ4TileColumns + v * L, zeros + g * (kQ4TileColumns / 8) + v * L / 8, L);
          y[v] = add_chunk(y[v], params, xsum, dots[0][v]);
        }
      }
    }
    for (int v = 0; v < V; ++v) _mm512_storeu_ps(y_out + v * L, y[v]);
  }

  static void gemv_tile(const Q4Layout& w, const Q4Activations& a, int64_t tile, const TensorView& out) {
    if (a.form != Q4Activations::Form::bf16_pairs) return Avx512Kernels::gemv_tile(w, a, tile, out);
    static_for<2>([&](auto i) {
      if (a.xpair_parts == i + 1) gemv_tile_parts<i + 1>(w, a, tile, out);
    });
  }

  template <int Parts>
  static void gemv_tile_parts(const Q4Layout& w, const Q4Activations& a, int64_t tile, const TensorView& out) {
    if (a.m == 1 && w.tile_width(tile) == kQ4TileColumns) {
      alignas(64) float y[kQ4TileColumns];
      gemv_row_full_tile<Parts>(w, a, tile, y);
      return Avx512Kernels::store_tile(w, a, tile, y, kQ4TileColumns, out);
    }
    const int64_t width = w.tile_width(tile), ldx = w.packed_rows / 8 * 4 * Parts;
    const uint32_t* q = w.tile_qweight(tile);
    alignas(64) float y[kQ4GemvMaxRows * kQ4TileColumns] = {};
    const int64_t word_rows_total = w.packed_rows / 8;
    for (int64_t g = 0; g < w.groups; ++g) {
      const int64_t group_end = w.group_begin[g + 1] / 8;
      Avx512Kernels::prefetch_group_params(w.tile_scales(tile), w.tile_zeros(tile), width, g);
      for (int64_t r0 = w.group_begin[g] / 8; r0 < group_end; r0 += kChunkWordRows) {
        const int64_t word_rows = std::min(kChunkWordRows, group_end - r0);
        for (int64_t m0 = 0; m0 < a.m; m0 += Avx512::kGemvRows) {
          const uint32_t* x = a.xpairs.data() + m0 * ldx + r0 * 4 * Parts;
          const float* xsum = a.xsum_chunk.data() + m0 * word_rows_total + r0;
          const int rows = static_cast<int>(std::min<int64_t>(Avx512::kGemvRows, a.m - m0));
          for (int64_t c0 = 0; c0 < width; c0 += kPass) {
            const int columns = static_cast<int>(std::min<int64_t>(kPass, width - c0));
            const int vectors = (columns + L - 1) / L, last_valid = columns - (vectors - 1) * L;
            const uint32_t* qc = q + r0 * width + c0;
            const uint16_t* sc = w.tile_scales(tile) + g * width + c0;
            const uint32_t* zc = w.tile_zeros(tile) + g * (width / 8) + c0 / 8;
            float* yc = y + m0 * kQ4TileColumns + c0;
            static_for<Avx512::kGemvRows>([&](auto mt) {
              static_for<Avx512::kVectors>([&](auto v) {
                if (rows == mt + 1 && vectors == v + 1)
                  gemv_group<Parts, mt + 1, v + 1>(qc, width, word_rows, x, ldx, xsum, word_rows_total, sc, zc, last_valid,
                                            yc);
              });
            });
          }
        }
      }
    }
    Avx512Kernels::store_tile(w, a, tile, y, kQ4TileColumns, out);
  }
};

}  // namespace

}  // namespace pntk::q4
PNTK_TARGET_END

namespace pntk::q4 {
extern const Q4CpuKernel kQ4KernelAvx512Bf16{"avx512bf16", Bf16Gemv::prepare, Bf16Gemv::gemv_tile,
                                             Avx512Kernels::gemm_tile};
}  // namespace pntk::q4
#endif  // PNTK_X86_64
