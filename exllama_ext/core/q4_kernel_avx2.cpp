// AVX2 + FMA + F16C q4 kernels: 8 columns per vector. fp32 x and every GEMM take the generic
// fp32-FMA kernels (q4_kernel_impl.h, 2 vectors per pass); fp16 and bf16 x at M <= 16 take a
// GEMV on 16-bit integers (Int16Gemv below). x86-64 only; the code is in a target region
// (simd_target.h), the rest of the file is baseline.
//
// Int16Gemv. x is quantized per chunk (up to kChunkWordRows word rows of one group, 32 packed
// rows): xq = round(x / d), d = max |x| / 32767 over the chunk, in pairs (q4_matrix.h,
// Q4Activations::int16_pairs). A weight word w of column c holds packed rows 8r..8r+7, row
// 8r+j at bits 4j; (w >> 4j) & 0x000F000F holds q[8r+j] in its low and q[8r+j+4] in its high
// 16 bits, so vpmaddwd with the pair (xq[8r+j], xq[8r+j+4]) gives their two products summed
// in int32: 64 weights of 8 columns take 1 load, 3 shifts, 4 ANDs, 4 vpmaddwd and 4 adds.
// Over a chunk the int32 sum is exact (|sum| <= 32 * 32767 * 15 < 2^24, also exact in fp32),
// as is sum xq (q - z) = dot - z * sum xq; per chunk
//   y[m, n] += (s[g, n] * d) * (dot - z[g, n] * xsum),
// one rounding for s * d and one FMA. The only error beside fp32's is x's quantization, at
// most d / 2 = max |x| / 65534 per element of the chunk.
#include "core/q4_kernel_simd.h"

#if PNTK_X86_64
PNTK_TARGET_BEGIN("avx2,fma,f16c")
#include "core/q4_kernel_f16c.h"
#include "core/q4_kernel_impl.h"

namespace pntk::q4 {

namespace {

struct Avx2 {
  static constexpr int kLanes = 8, kVectors = 2, kGemvRows = 4, kGemmMr = 6;  // 4 x 2 GEMV and 6 x 2 GEMM accumulators (16 registers)
  using F = __m256;
  using I = __m256i;
  using Mask = int;  // tile widths are multiples of 8: every vector is full

  static void prepare_activations(const Q4Layout& w, const TensorView& x, bool nibble_scaled, Q4Activations& out) {
    q4::prepare_activations(w, x, nibble_scaled, convert_row_f16c, out);
  }
  static void store_row(const float* src, int64_t count, DType dtype, void* dst) {
    store_row_f16c(src, count, dtype, dst);
  }
  static Mask mask(int valid) { return valid; }
  static I load_words(const uint32_t* p, Mask) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  // q * 2^4j as fp32 (exact) for j < 7; q for j = 7.
  template <int J>
  static F nibble_scaled(I w) {
    if constexpr (J == 7) return _mm256_cvtepi32_ps(_mm256_srli_epi32(w, 28));
    else return _mm256_cvtepi32_ps(_mm256_and_si256(w, _mm256_set1_epi32(0xF << (4 * J))));
  }
  template <int J>
  static F nibble(I w) {
    return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(w, 4 * J), _mm256_set1_epi32(0xF)));
  }
  static F broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F fnma(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F zero() { return _mm256_setzero_ps(); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F load_scales(const uint16_t* p, Mask) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  // Zero nibbles of 8 columns (one word): byte i of the unpacked vector = nibble i.
  static F load_zeros(const uint32_t* words, int) {
    const __m128i packed = _mm_cvtsi32_si128(static_cast<int>(words[0]));
    const __m128i low = _mm_and_si128(packed, _mm_set1_epi8(0x0F));
    const __m128i high = _mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F));
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpacklo_epi8(low, high)));
  }
};

using Kernels = Q4Kernels<Avx2>;

struct Int16Gemv {
  static constexpr int L = Avx2::kLanes;
  static constexpr int64_t kChunkWordRows = 4;
  static constexpr int kRowsPerPass = 4, kVectorsPerPass = 2;  // M >= 2: 4 x 2 accumulators
  static constexpr float kLargestQ = 32767.0f;

  static bool takes(const TensorView& x) { return x.dtype == DType::float16 || x.dtype == DType::bfloat16; }

  static void prepare(const Q4Layout& w, const TensorView& x, bool for_gemv, Q4Activations& out) {
    if (!for_gemv || !takes(x)) return Kernels::prepare(w, x, for_gemv, out);
    const int64_t word_rows = w.packed_rows / 8;
    out.form = Q4Activations::Form::int16_pairs;
    out.m = x.shape[0];
    out.xpairs.resize(static_cast<size_t>(out.m * word_rows * 4));
    out.xsum_chunk.resize(static_cast<size_t>(out.m * word_rows));
    out.chunk_scale.resize(static_cast<size_t>(out.m * word_rows));
    out.row_unscale.resize(static_cast<size_t>(out.m));
    float* row = thread_scratch(0, w.k);
    for (int64_t m = 0; m < out.m; ++m) {
      convert_row_f16c(x, m, row);
      float largest = 0.0f;
      for (int64_t k = 0; k < w.k; ++k) largest = std::max(largest, std::fabs(row[k]));
      const float factor = row_scale(largest);
      out.row_unscale[static_cast<size_t>(m)] = 1.0f / factor;
      for (int64_t g = 0; g < w.groups; ++g) {
        const int64_t group_end = w.group_begin[g + 1] / 8;
        for (int64_t r0 = w.group_begin[g] / 8; r0 < group_end; r0 += kChunkWordRows)
          quantize_chunk(w, row, factor, m, r0, std::min(r0 + kChunkWordRows, group_end), out);
      }
    }
  }

  // Word rows [r0, r1) of row m of x (fp32, original order, times `factor`) -> xpairs, and the
  // chunk's d and sum of xq. A NaN or Inf in the chunk makes d NaN, which reaches every column
  // of y.
  static void quantize_chunk(const Q4Layout& w, const float* row, float factor, int64_t m, int64_t r0, int64_t r1,
                             Q4Activations& a) {
    alignas(32) float values[kChunkWordRows * 8];
    const int64_t count = (r1 - r0) * 8;
    float largest = 0.0f;
    bool not_finite = false;
    for (int64_t i = 0; i < count; ++i) {
      const int32_t k = w.row_of_packed[r0 * 8 + i];
      values[i] = k < 0 ? 0.0f : row[k] * factor;
      const float magnitude = std::fabs(values[i]);
      not_finite |= !(magnitude <= 3.4e38f);
      largest = std::max(largest, magnitude);
    }
    const float d = not_finite ? std::numeric_limits<float>::quiet_NaN() : largest / kLargestQ;
    const __m256 inverse = _mm256_set1_ps(largest > 0.0f && !not_finite ? kLargestQ / largest : 0.0f);
    __m256i sum = _mm256_setzero_si256();
    for (int64_t r = r0; r < r1; ++r) {
      const __m256i xq = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_load_ps(values + (r - r0) * 8), inverse));
      sum = _mm256_add_epi32(sum, xq);
      // (xq[j] & 0xFFFF) | xq[j + 4] << 16 for j < 4
      const __m128i low = _mm_and_si128(_mm256_castsi256_si128(xq), _mm_set1_epi32(0xFFFF));
      const __m128i high = _mm_slli_epi32(_mm256_extracti128_si256(xq, 1), 16);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(a.xpairs.data() + (r * a.m + m) * 4), _mm_or_si128(low, high));
    }
    __m128i total = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
    total = _mm_add_epi32(total, _mm_shuffle_epi32(total, 0x4E));
    total = _mm_add_epi32(total, _mm_shuffle_epi32(total, 0xB1));
    const size_t chunk = static_cast<size_t>(m * (w.packed_rows / 8) + r0);
    a.xsum_chunk[chunk] = static_cast<float>(_mm_cvtsi128_si32(total));
    a.chunk_scale[chunk] = d;
  }

  // Zero nibbles of 8 columns (one word) as fp32: the word in every lane, lane i shifted by 4i.
  static __m256 load_zeros(const uint32_t* word) {
    const __m256i words = _mm256_set1_epi32(static_cast<int>(*word));
    const __m256i nibbles = _mm256_srlv_epi32(words, _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
    return _mm256_cvtepi32_ps(_mm256_and_si256(nibbles, _mm256_set1_epi32(0xF)));
  }

  // One chunk (word_rows word rows) of MT rows of x (xpairs, ldx words per word row) on columns
  // [0, V*L) of q (row stride `width` words); y (row stride kQ4TileColumns) += the chunk's
  // products, scaled (file comment).
  template <int MT, int V>
  static void gemv_chunk(const uint32_t* q, int64_t width, int64_t word_rows, const uint32_t* x, int64_t ldx,
                         const float* xsum, const float* d, int64_t chunk_stride, const uint16_t* scales,
                         const uint32_t* zeros, float* y) {
    const __m256i low_nibbles = _mm256_set1_epi32(0x000F000F);
    __m256i acc[MT][V];
    PNTK_UNROLL
    for (auto& per_m : acc)
      PNTK_UNROLL
      for (auto& a : per_m) a = _mm256_setzero_si256();
    const auto pairs_of = [&](__m256i words, auto j) {
      return _mm256_and_si256(j == 0 ? words : _mm256_srli_epi32(words, 4 * j), low_nibbles);
    };
    const auto x_pair = [&](const uint32_t* xr, int m, int j) {
      return _mm256_set1_epi32(static_cast<int>(xr[m * 4 + j]));
    };
    for (int64_t r = 0; r < word_rows; ++r) {
      const uint32_t* xr = x + r * ldx;
      const uint32_t* qr = q + r * width;
      PNTK_UNROLL
      for (int v = 0; v < V; ++v) prefetch_l1(qr + Kernels::kPrefetchWordRows * width + v * L);
      if constexpr (MT == 1) {  // 4 pairs of x in registers, one vector of words at a time
        const __m256i xb[4] = {x_pair(xr, 0, 0), x_pair(xr, 0, 1), x_pair(xr, 0, 2), x_pair(xr, 0, 3)};
        PNTK_UNROLL
        for (int v = 0; v < V; ++v) {
          const __m256i words = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qr + v * L));
          static_for<4>([&](auto j) { acc[0][v] = _mm256_add_epi32(acc[0][v], _mm256_madd_epi16(pairs_of(words, j), xb[j])); });
        }
      } else {  // V vectors of words in registers, one pair of x at a time
        __m256i words[V];
        PNTK_UNROLL
        for (int v = 0; v < V; ++v) words[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qr + v * L));
        static_for<4>([&](auto j) {
          __m256i pairs[V];
          PNTK_UNROLL
          for (int v = 0; v < V; ++v) pairs[v] = pairs_of(words[v], j);
          PNTK_UNROLL
          for (int m = 0; m < MT; ++m) {
            const __m256i xb = x_pair(xr, m, j);
            PNTK_UNROLL
            for (int v = 0; v < V; ++v) acc[m][v] = _mm256_add_epi32(acc[m][v], _mm256_madd_epi16(pairs[v], xb));
          }
        });
      }
    }
    PNTK_UNROLL
    for (int v = 0; v < V; ++v) {
      const __m256 s = Avx2::load_scales(scales + v * L, L), z = load_zeros(zeros + v);
      PNTK_UNROLL
      for (int m = 0; m < MT; ++m) {
        const __m256 exact = _mm256_fnmadd_ps(z, _mm256_set1_ps(xsum[m * chunk_stride]), _mm256_cvtepi32_ps(acc[m][v]));
        float* yv = y + m * kQ4TileColumns + v * L;
        _mm256_storeu_ps(yv, _mm256_fmadd_ps(_mm256_mul_ps(s, _mm256_set1_ps(d[m * chunk_stride])), exact,
                                             _mm256_loadu_ps(yv)));
      }
    }
  }

  static void gemv_tile(const Q4Layout& w, const Q4Activations& a, int64_t tile, const TensorView& out) {
    if (a.form != Q4Activations::Form::int16_pairs) return Kernels::gemv_tile(w, a, tile, out);
    const int64_t width = w.tile_width(tile), word_rows_total = w.packed_rows / 8, ldx = a.m * 4;
    const uint32_t* q = w.tile_qweight(tile);
    const uint16_t* scales = w.tile_scales(tile);
    const uint32_t* zeros = w.tile_zeros(tile);
    alignas(64) float y[kQ4GemvMaxRows * kQ4TileColumns] = {};
    // M = 1: the whole tile per pass (up to 8 accumulators); M >= 2: 4 rows x 2 vectors.
    const int64_t pass = a.m == 1 ? width : kVectorsPerPass * L;
    for (int64_t g = 0; g < w.groups; ++g) {
      const int64_t group_end = w.group_begin[g + 1] / 8;
      Kernels::prefetch_group_params(scales, zeros, width, g);
      for (int64_t r0 = w.group_begin[g] / 8; r0 < group_end; r0 += kChunkWordRows) {
        const int64_t word_rows = std::min(kChunkWordRows, group_end - r0);
        for (int64_t m0 = 0; m0 < a.m; m0 += kRowsPerPass) {
          const int rows = static_cast<int>(std::min<int64_t>(kRowsPerPass, a.m - m0));
          const uint32_t* x = a.xpairs.data() + r0 * ldx + m0 * 4;
          const int64_t chunk = m0 * word_rows_total + r0;
          for (int64_t c0 = 0; c0 < width; c0 += pass) {
            const int vectors = static_cast<int>(std::min(pass, width - c0) / L);
            const uint32_t* qc = q + r0 * width + c0;
            const uint16_t* sc = scales + g * width + c0;
            const uint32_t* zc = zeros + g * (width / 8) + c0 / 8;
            float* yc = y + m0 * kQ4TileColumns + c0;
            const auto run = [&](auto mt, auto v) {
              gemv_chunk<mt, v>(qc, width, word_rows, x, ldx, a.xsum_chunk.data() + chunk, a.chunk_scale.data() + chunk,
                                word_rows_total, sc, zc, yc);
            };
            if (a.m == 1) {
              static_for<kQ4TileColumns / L>([&](auto v) {
                if (vectors == v + 1) run(std::integral_constant<int, 1>{}, std::integral_constant<int, v + 1>{});
              });
              continue;
            }
            static_for<kRowsPerPass>([&](auto mt) {
              static_for<kVectorsPerPass>([&](auto v) {
                if (rows == mt + 1 && vectors == v + 1)
                  run(std::integral_constant<int, mt + 1>{}, std::integral_constant<int, v + 1>{});
              });
            });
          }
        }
      }
    }
    Kernels::store_tile(w, a, tile, y, kQ4TileColumns, out);
  }
};

}  // namespace

}  // namespace pntk::q4
PNTK_TARGET_END

namespace pntk::q4 {
extern const Q4CpuKernel kQ4KernelAvx2{"avx2", Int16Gemv::prepare, Int16Gemv::gemv_tile, Kernels::gemm_tile};
}  // namespace pntk::q4
#endif  // PNTK_X86_64
