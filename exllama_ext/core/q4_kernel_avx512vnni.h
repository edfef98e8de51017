// AVX-512 VNNI q4 GEMV (VnniGemv), for the files built with AVX512_VNNI: vpdpbusd (u8 x s8 ->
// int32) for fp16 and bf16 x, M <= 16; fp32 x goes to the avx512 GEMV. Per 128 weights (one
// 64-byte load: 16 columns x 8 packed rows) it spends an AND, a shift, an AND and 4 vpdpbusd
// (2 parts of x), where the fp32 GEMV spends 8 ANDs, 8 converts and 8 FMAs. Measured on Zen 5, one core: the
// inner loop runs 2.7x faster; the whole GEMV, with its per-group work, 1.5x (group 32) to 1.7x
// (group 128).
//
// Weights: word w of column c holds packed rows 8r..8r+7 (row 8r+j at bits 4j). Its bytes
//   even(w) = w & 0x0F0F0F0F          = q[8r+0], q[8r+2], q[8r+4], q[8r+6]   (u8, 0..15)
//   odd(w)  = (w >> 4) & 0x0F0F0F0F   = q[8r+1], q[8r+3], q[8r+5], q[8r+7]
// are exact unsigned bytes, so 16 columns x 4 rows take one vpdpbusd against 4 bytes of x.
//
// Activations: each row of x is cut into chunks of up to kChunkWordRows word rows (32 packed
// rows) of one group; each chunk gets a power of two 2^e and integers
//   xi = round-to-nearest-even(x * 2^-e),   x = 2^e xi + d,   |d| <= 2^(e-1),
// e the smallest with max|x| * 2^-e < 32639.5, so |xi| <= 32639 and |d| <= max|x| / 32640:
// 15 to 16 significant bits per chunk. That is the kernel's one approximation besides fp32
// sums; its error stays well under the fp16 output rounding (2^-11), which
// test_gemv_error_is_the_output_rounding and test_gemv_error_with_outliers_in_x check.
// xi = 256 h + l with h = (xi + 128) >> 8 and l = xi - 256 h, both in [-128, 127] (s8).
// Q4Activations::xq [M][K'/8][4] uint32, per word row r:
//   { h bytes of rows 8r+0,2,4,6;  h of 8r+1,3,5,7;  l of 8r+0,2,4,6;  l of 8r+1,3,5,7 }
// Q4Activations::xq_scale [M][K'/8] holds 2^e (exact in fp32, e >= -147 for bf16 x) at a
// chunk's first word row; xsum [M][G] the sum over a group's chunks of 2^e sum xi.
// Sums: per chunk, hi = sum q h and lo = sum q l over 16 columns in int32 (|.| <= 32 * 15 * 128);
// 256 hi + lo = sum q xi is exact in int32 and in fp32 (< 2^24), and t[n] += 2^e (256 hi + lo).
// Per group g:
//   y[m, n] += s[g, n] * (t[n] - z[g, n] * xsum)  =  s * sum_p 2^e xi[p] (q[p] - z).
// A chunk holding NaN or +-Inf gets 2^e = NaN and xi = 0, so its row of y comes out NaN.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/q4_kernel_avx512.h"

namespace pntk::q4 {

namespace {  // internal linkage (q4_kernel_common.h)

using Avx512Kernels = Q4Kernels<Avx512>;

struct VnniGemv {
  static constexpr int L = Avx512::kLanes;
  static constexpr int kRowsPerPass = 2;            // rows of x per pass
  static constexpr int64_t kChunkWordRows = 4;      // 32 packed rows: sum q xi < 2^24
  static constexpr int32_t kLargestMagnitude = 32639;  // 256 * 127 + 127
  static constexpr int64_t kPrefetchWordRows = Avx512Kernels::kPrefetchWordRows;

  // Columns per pass with MT rows of x: 8 int32 accumulators (hi, lo) in flight. vpdpbusd
  // throughput bounds the GEMV (64 products of parts per instruction, 2 per cycle on Zen 5),
  // so more rows per pass would only add registers.
  static constexpr int vectors_for_rows(int rows) { return rows == 1 ? 4 : 2; }

  static bool quantizes(const TensorView& x) {
    return x.dtype == DType::float16 || x.dtype == DType::bfloat16;
  }

  static void prepare(const Q4Layout& w, const TensorView& x, bool for_gemv, Q4Activations& out) {
    if (for_gemv && quantizes(x)) return quantize(w, x, out);
    Avx512Kernels::prepare(w, x, for_gemv, out);
  }

  // Exponent e of a chunk whose largest |x| is `largest` (finite, > 0): the smallest e
  // with largest * 2^-e < 32639.5, so largest * 2^-e lies in [16319.75, 32639.5).
  static int chunk_exponent(float largest) {
    uint32_t bits;
    std::memcpy(&bits, &largest, sizeof bits);
    if (bits < 0x00800000u) {  // subnormal (bf16 x only)
      int e = std::ilogb(largest) - 14;
      return std::ldexp(largest, -e) >= kLargestMagnitude + 0.5f ? e + 1 : e;
    }
    // largest = 1.f * 2^E: 1.f * 2^14 >= 32639.5 <=> fraction bits >= (32639.5 - 2^14) * 2^9
    constexpr uint32_t kFractionAtLimit = (2 * kLargestMagnitude + 1 - 2 * 16384) * 256;
    const int biased = static_cast<int>(bits >> 23);
    return biased - 127 - 14 + ((bits & 0x007FFFFFu) >= kFractionAtLimit ? 1 : 0);
  }
  static float power_of_two(int e) {  // exact for e in [-149, 127]
    const uint32_t bits = e >= -126 ? static_cast<uint32_t>(e + 127) << 23 : 1u << (e + 149);
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
  }

  // x -> a.xq, a.xq_scale and a.xsum (see the top): each row converted to fp32, then one chunk
  // (<= 32 packed rows) at a time gathered into packed order and rounded to integers.
  static void quantize(const Q4Layout& w, const TensorView& x, Q4Activations& a) {
    const int64_t word_rows = w.packed_rows / 8;
    a.form = Q4Activations::Form::chunk_integers;
    a.m = x.shape[0];
    a.xq.resize(static_cast<size_t>(a.m * word_rows * 4));
    a.xq_scale.assign(static_cast<size_t>(a.m * word_rows), 0.0f);
    a.xsum.assign(static_cast<size_t>(a.m * w.groups), 0.0f);
    a.row_unscale.assign(static_cast<size_t>(a.m), 1.0f);  // the chunk scales cover every magnitude
    float* row = thread_scratch(0, w.k);
    // int8 x of 2 word rows -> per word row: rows 0, 2, 4, 6, then 1, 3, 5, 7
    const __m128i quad_order = _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
    for (int64_t m = 0; m < a.m; ++m) {
      convert_row_f16c(x, m, row);
      uint32_t* xq = a.xq.data() + m * word_rows * 4;
      for (int64_t g = 0; g < w.groups; ++g) {
        const int64_t group_end = w.group_begin[g + 1] / 8;
        double sum = 0.0;
        for (int64_t r0 = w.group_begin[g] / 8; r0 < group_end; r0 += kChunkWordRows) {
          const int rows = static_cast<int>(std::min(kChunkWordRows, group_end - r0));
          __m512 v[2];
          for (int i = 0; i < 2; ++i) {  // packed rows 8 r0 + 16 i + [0, 16); -1 (padding) reads 0
            const int count = std::clamp(rows * 8 - 16 * i, 0, 16);
            const __mmask16 in_chunk = static_cast<__mmask16>((1u << count) - 1u);
            const __m512i source = _mm512_maskz_loadu_epi32(in_chunk, w.row_of_packed.data() + r0 * 8 + 16 * i);
            const __mmask16 real = _mm512_mask_cmpge_epi32_mask(in_chunk, source, _mm512_setzero_si512());
            v[i] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), real, source, row, 4);
          }
          // fpclass 0x99: QNaN | +Inf | -Inf | SNaN
          const bool finite = (_mm512_fpclass_ps_mask(v[0], 0x99) | _mm512_fpclass_ps_mask(v[1], 0x99)) == 0;
          const float largest = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
          const int e = finite && largest > 0.0f ? chunk_exponent(largest) : 0;
          const float scale = finite ? power_of_two(e) : NAN;
          a.xq_scale[m * word_rows + r0] = scale;
          const __m512 unscale = _mm512_set1_ps(static_cast<float>(-e));
          int32_t chunk_sum = 0;
          for (int i = 0; i < 2 && 2 * i < rows; ++i) {
            const __m512i xi = finite ? _mm512_cvt_roundps_epi32(_mm512_scalef_ps(v[i], unscale),
                                                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
                                      : _mm512_setzero_si512();
            chunk_sum += _mm512_reduce_add_epi32(xi);
            const __m512i h = _mm512_srai_epi32(_mm512_add_epi32(xi, _mm512_set1_epi32(128)), 8);
            const __m512i l = _mm512_sub_epi32(xi, _mm512_slli_epi32(h, 8));
            const __m128i h8 = _mm_shuffle_epi8(_mm512_cvtepi32_epi8(h), quad_order);
            const __m128i l8 = _mm_shuffle_epi8(_mm512_cvtepi32_epi8(l), quad_order);
            uint32_t* dst = xq + (r0 + 2 * i) * 4;
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_unpacklo_epi64(h8, l8));
            if (2 * i + 1 < rows) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 4), _mm_unpackhi_epi64(h8, l8));
          }
          sum += static_cast<double>(chunk_sum) * scale;  // exact: |chunk_sum| < 2^20
        }
        a.xsum[m * w.groups + g] = static_cast<float>(sum);
      }
    }
  }

  // Word rows [r0, r0 + rows) (one chunk) of MT rows of x on V vectors of columns: t += 2^e sum q xi.
  template <int MT, int V, int kRows>
  static void chunk(const uint32_t* q, int64_t width, int64_t r0, int rows, const uint32_t* xq, const float* scale,
                    int64_t word_rows_total, __mmask16 last, __m512 (&t)[MT][V]) {
    const __m512i low_nibbles = _mm512_set1_epi8(0x0F);
    __m512i hi[MT][V], lo[MT][V];
    for (int m = 0; m < MT; ++m)
      for (int v = 0; v < V; ++v) hi[m][v] = lo[m][v] = _mm512_setzero_si512();
    const auto word_row = [&](int64_t r) {
      for (int v = 0; v < V; ++v)
        _mm_prefetch(reinterpret_cast<const char*>(q + (r + kPrefetchWordRows) * width + v * L), _MM_HINT_T0);
      for (int v = 0; v < V; ++v) {
        const __m512i words = Avx512::load_words(q + r * width + v * L, v == V - 1 ? last : Avx512::mask(L));
        const __m512i even = _mm512_and_si512(words, low_nibbles);
        const __m512i odd = _mm512_and_si512(_mm512_srli_epi16(words, 4), low_nibbles);
        for (int m = 0; m < MT; ++m) {
          const uint32_t* x = xq + (m * word_rows_total + r) * 4;
          hi[m][v] = _mm512_dpbusd_epi32(hi[m][v], even, _mm512_set1_epi32(static_cast<int>(x[0])));
          hi[m][v] = _mm512_dpbusd_epi32(hi[m][v], odd, _mm512_set1_epi32(static_cast<int>(x[1])));
          lo[m][v] = _mm512_dpbusd_epi32(lo[m][v], even, _mm512_set1_epi32(static_cast<int>(x[2])));
          lo[m][v] = _mm512_dpbusd_epi32(lo[m][v], odd, _mm512_set1_epi32(static_cast<int>(x[3])));
        }
      }
    };
    if constexpr (kRows > 0) static_for<kRows>([&](auto i) { word_row(r0 + i); });
    else for (int i = 0; i < rows; ++i) word_row(r0 + i);
    for (int m = 0; m < MT; ++m) {
      const __m512 chunk_scale = _mm512_set1_ps(scale[m * word_rows_total + r0]);
      for (int v = 0; v < V; ++v) {
        const __m512i sum = _mm512_add_epi32(_mm512_slli_epi32(hi[m][v], 8), lo[m][v]);
        t[m][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), chunk_scale, t[m][v]);
      }
    }
  }

  // MT rows of x, columns [c0, c0 + V*L) (the last vector `last_valid` wide) of a tile, all
  // groups: y[m][0..V*L) (row stride kQ4TileColumns) = the fp32 results.
  template <int MT, int V>
  static void gemv_pass(const Q4Layout& w, const Q4Activations& a, int64_t tile, int64_t m0, int64_t c0,
                        int last_valid, float* y) {
    const int64_t width = w.tile_width(tile), word_rows_total = w.packed_rows / 8;
    const uint32_t* q = w.tile_qweight(tile) + c0;
    const uint16_t* scales = w.tile_scales(tile) + c0;
    const uint32_t* zeros = w.tile_zeros(tile) + c0 / 8;
    const uint32_t* xq = a.xq.data() + m0 * word_rows_total * 4;
    const float* chunk_scale = a.xq_scale.data() + m0 * word_rows_total;
    const float* xsum = a.xsum.data() + m0 * w.groups;
    const __mmask16 last = Avx512::mask(last_valid);
    __m512 acc[MT][V];
    for (auto& per_m : acc)
      for (auto& av : per_m) av = _mm512_setzero_ps();
    for (int64_t g = 0; g < w.groups; ++g) {
      const int64_t r_end = w.group_begin[g + 1] / 8;
      __m512 t[MT][V];
      for (auto& per_m : t)
        for (auto& tv : per_m) tv = _mm512_setzero_ps();
      int64_t r0 = w.group_begin[g] / 8;
      for (; r0 + kChunkWordRows <= r_end; r0 += kChunkWordRows)
        chunk<MT, V, kChunkWordRows>(q, width, r0, kChunkWordRows, xq, chunk_scale, word_rows_total, last, t);
      if (r0 < r_end)
        chunk<MT, V, 0>(q, width, r0, static_cast<int>(r_end - r0), xq, chunk_scale, word_rows_total, last, t);
      for (int v = 0; v < V; ++v) {
        const __m512 s = Avx512::load_scales(scales + g * width + v * L, v == V - 1 ? last : Avx512::mask(L));
        const __m512 z = Avx512::load_zeros(zeros + g * (width / 8) + v * L / 8, v == V - 1 ? last_valid : L);
        for (int m = 0; m < MT; ++m)
          acc[m][v] = _mm512_fmadd_ps(s, _mm512_fnmadd_ps(z, _mm512_set1_ps(xsum[m * w.groups + g]), t[m][v]),
                                      acc[m][v]);
      }
    }
    for (int m = 0; m < MT; ++m)
      for (int v = 0; v < V; ++v) _mm512_storeu_ps(y + m * kQ4TileColumns + v * L, acc[m][v]);
  }

  template <int MT>
  static void gemv_passes(const Q4Layout& w, const Q4Activations& a, int64_t tile, int64_t m0, float* y) {
    constexpr int V = vectors_for_rows(MT);
    const int64_t width = w.tile_width(tile);
    for (int64_t c0 = 0; c0 < width; c0 += V * L) {
      const int columns = static_cast<int>(std::min<int64_t>(V * L, width - c0));
      const int vectors = (columns + L - 1) / L, last_valid = columns - (vectors - 1) * L;
      static_for<V>([&](auto i) {
        if (vectors == i + 1) gemv_pass<MT, i + 1>(w, a, tile, m0, c0, last_valid, y + m0 * kQ4TileColumns + c0);
      });
    }
  }

  static void gemv_tile(const Q4Layout& w, const Q4Activations& a, int64_t tile, const TensorView& out) {
    if (a.form != Q4Activations::Form::chunk_integers) return Avx512Kernels::gemv_tile(w, a, tile, out);
    alignas(64) float y[kQ4GemvMaxRows * kQ4TileColumns];
    for (int64_t m0 = 0; m0 < a.m; m0 += kRowsPerPass) {
      const int rows = static_cast<int>(std::min<int64_t>(kRowsPerPass, a.m - m0));
      static_for<kRowsPerPass>([&](auto i) {
        if (rows == i + 1) gemv_passes<i + 1>(w, a, tile, m0, y);
      });
    }
    Avx512Kernels::store_tile(w, a, tile, y, kQ4TileColumns, out);
  }
};

}  // namespace

}  // namespace pntk::q4
