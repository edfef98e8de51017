// GEMV on 16-bit integers for fp16 and bf16 x (M <= 16), over an ISA traits struct; fp32 x
// and every other case go to `Kernels` (a Q4Kernels, q4_kernel_impl.h). A region body
// (simd_target.h): included after q4_kernel_impl.h inside a kernel file's target region; x86
// only, as the preparation of x is written with AVX2 (which every x86 SIMD family has).
//
// x is quantized per chunk (up to kChunkWordRows word rows of one group, 32 packed
// rows): xq = round(x / d), d = max |x| / 32767 over the chunk, in pairs (q4_matrix.h,
// Q4Activations::int16_pairs). A weight word w of column c holds packed rows 8r..8r+7, row
// 8r+j at bits 4j; (w >> 4j) & 0x000F000F holds q[8r+j] in its low and q[8r+j+4] in its high
// 16 bits, so vpmaddwd with the pair (xq[8r+j], xq[8r+j+4]) gives their two products summed
// in int32 (vpdpwssd also adds them to the accumulator): 8 rows of a column take 3 shifts,
// 4 ANDs and 4 vpmaddwd + add, or 4 vpdpwssd, per vector of columns.
// Over a chunk the int32 sum is exact (|sum| <= 32 * 32767 * 15 < 2^24, also exact in fp32),
// as is sum xq (q - z) = dot - z * sum xq; per chunk
//   y[m, n] += (s[g, n] * d) * (dot - z[g, n] * xsum),
// one rounding for s * d and one FMA. The only error beside fp32's is x's quantization, at
// most d / 2 = max |x| / 65534 per element of the chunk.
//
// Traits (struct Isa), beside those of q4_kernel_impl.h: kInt16Rows, kInt16Vectors (rows of x
// and vectors per pass for M >= 2), kInt16RowInRegisters (M = 1 keeps a tile's y in registers),
// kInt16Chains (independent accumulator chains a pass needs:
// the latency of dot_pairs' add times its throughput); I zero_int(); add_int(a, b);
// broadcast_pair(u32); nibble_pairs<j>(w) = (w >> 4j) & 0x000F000F; dot_pairs(acc, a, b) =
// acc + the pairwise products of a and b (int16) summed per int32 lane; to_float(i).
#pragma once

namespace pntk::q4 {

namespace {  // internal linkage: compiled for the including file's ISA

template <class Isa, class Kernels>
struct Int16Gemv {
  using I = typename Isa::I;
  using F = typename Isa::F;
  static constexpr int L = Isa::kLanes;
  static constexpr int64_t kChunkWordRows = 4;
  static constexpr int kRowsPerPass = Isa::kInt16Rows, kVectorsPerPass = Isa::kInt16Vectors;  // M >= 2
  static constexpr int kTileVectors = kQ4TileColumns / L;  // M = 1: a whole tile per pass
  static constexpr float kLargestQ = 32767.0f;
  // An element of x more than 8 times its chunk's mean |x| (padding rows counted as 0) is an
  // outlier. A normal chunk has none (that takes |x| > 6.4 sigma); the few channels of 10-1000x
  // that LLM activations carry are: left in, they would set d and leave the chunk's other
  // elements a few bits.
  static constexpr float kOutlierRatio = 8.0f;

  // Independent accumulators per (row, vector): enough for Isa::kInt16Chains chains in all.
  template <int MT, int V>
  static constexpr int chains() {
    return std::min(4, std::max(1, Isa::kInt16Chains / (MT * V)));
  }

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
    out.outliers.clear();
    out.outlier_begin.assign(1, 0);
    float* row = thread_scratch(0, w.k);
    for (int64_t m = 0; m < out.m; ++m) {
      convert_row_f16c(x, m, row);
      __m256 largest = _mm256_setzero_ps();  // K % 8 == 0
      for (int64_t k = 0; k < w.k; k += 8) largest = _mm256_max_ps(largest, magnitudes(_mm256_loadu_ps(row + k)));
      const float factor = row_scale(horizontal_max(largest));
      out.row_unscale[static_cast<size_t>(m)] = 1.0f / factor;
      for (int64_t g = 0; g < w.groups; ++g) {
        const int64_t group_end = w.group_begin[g + 1] / 8;
        for (int64_t r0 = w.group_begin[g] / 8; r0 < group_end; r0 += kChunkWordRows)
          quantize_chunk(w, row, factor, m, g, r0, std::min(r0 + kChunkWordRows, group_end), out);
      }
      out.outlier_begin.push_back(static_cast<int64_t>(out.outliers.size()));
    }
  }

  static __m256 magnitudes(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
  static float horizontal_max(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
  }
  static float horizontal_sum(__m256 v) {
    __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)));
  }

  // Word rows [r0, r1) of group g of row m of x (fp32, original order, times `factor`) ->
  // xpairs, the chunk's d and sum of xq, and its outliers, which leave the integer sums (xq = 0)
  // and are added exactly, x * W[p, :] in fp32 (add_outliers), so that the rest set d. A NaN or
  // Inf in the chunk makes d NaN, which reaches every column of y.
  static void quantize_chunk(const Q4Layout& w, const float* row, float factor, int64_t m, int64_t g, int64_t r0,
                             int64_t r1, Q4Activations& a) {
    constexpr int kMaxVectors = static_cast<int>(kChunkWordRows);
    const int vectors = static_cast<int>(r1 - r0);
    const __m256 scale = _mm256_set1_ps(factor);
    __m256 values[kMaxVectors], sum = _mm256_setzero_ps(), largest = _mm256_setzero_ps();
    int not_finite = 0;
    for (int v = 0; v < vectors; ++v) {  // packed rows 8 (r0 + v) .. + 7; padding (-1) gives 0
      const __m256i source = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.row_of_packed.data() + (r0 + v) * 8));
      const __m256 real = _mm256_castsi256_ps(_mm256_cmpgt_epi32(source, _mm256_set1_epi32(-1)));
      values[v] = _mm256_mul_ps(_mm256_mask_i32gather_ps(_mm256_setzero_ps(), row, source, real, 4), scale);
      const __m256 magnitude = magnitudes(values[v]);
      not_finite |= _mm256_movemask_ps(_mm256_cmp_ps(magnitude, _mm256_set1_ps(std::numeric_limits<float>::max()), _CMP_NLE_UQ));
      sum = _mm256_add_ps(sum, magnitude);
      largest = _mm256_max_ps(largest, magnitude);
    }
    float regular_largest = horizontal_max(largest);
    if (!not_finite) {
      const __m256 outlier_above = _mm256_set1_ps(kOutlierRatio * horizontal_sum(sum) / static_cast<float>(vectors * 8));
      int any = 0;
      for (int v = 0; v < vectors; ++v) any |= _mm256_movemask_ps(_mm256_cmp_ps(magnitudes(values[v]), outlier_above, _CMP_GT_OQ));
      if (any) regular_largest = take_outliers(values, vectors, outlier_above, static_cast<int32_t>(r0 * 8), g, a);
    }
    const float d = not_finite ? std::numeric_limits<float>::quiet_NaN() : regular_largest / kLargestQ;
    const __m256 inverse = _mm256_set1_ps(regular_largest > 0.0f && !not_finite ? kLargestQ / regular_largest : 0.0f);
    __m256i xq_sum = _mm256_setzero_si256();
    for (int v = 0; v < vectors; ++v) {
      const __m256i xq = _mm256_cvtps_epi32(_mm256_mul_ps(values[v], inverse));
      xq_sum = _mm256_add_epi32(xq_sum, xq);
      // (xq[j] & 0xFFFF) | xq[j + 4] << 16 for j < 4
      const __m128i low = _mm_and_si128(_mm256_castsi256_si128(xq), _mm_set1_epi32(0xFFFF));
      const __m128i high = _mm_slli_epi32(_mm256_extracti128_si256(xq, 1), 16);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(a.xpairs.data() + ((r0 + v) * a.m + m) * 4), _mm_or_si128(low, high));
    }
    __m128i total = _mm_add_epi32(_mm256_castsi256_si128(xq_sum), _mm256_extracti128_si256(xq_sum, 1));
    total = _mm_add_epi32(total, _mm_shuffle_epi32(total, 0x4E));
    total = _mm_add_epi32(total, _mm_shuffle_epi32(total, 0xB1));
    const size_t chunk = static_cast<size_t>(m * (w.packed_rows / 8) + r0);
    a.xsum_chunk[chunk] = static_cast<float>(_mm_cvtsi128_si32(total));
    a.chunk_scale[chunk] = d;
  }

  // Moves the chunk's values over `outlier_above` to a.outliers (packed rows from p0, group g),
  // zeroing them in `values`; returns the largest |x| left.
  static float take_outliers(__m256* values, int vectors, __m256 outlier_above, int32_t p0, int64_t g,
                             Q4Activations& a) {
    alignas(32) float lanes[kChunkWordRows * 8];
    float largest = 0.0f;
    for (int v = 0; v < vectors; ++v) _mm256_store_ps(lanes + v * 8, values[v]);
    const float above = _mm256_cvtss_f32(outlier_above);
    for (int i = 0; i < vectors * 8; ++i) {
      if (std::fabs(lanes[i]) > above) {
        a.outliers.push_back({p0 + i, static_cast<int32_t>(g), lanes[i]});
        lanes[i] = 0.0f;
      }
      largest = std::max(largest, std::fabs(lanes[i]));
    }
    for (int v = 0; v < vectors; ++v) values[v] = _mm256_load_ps(lanes + v * 8);
    return largest;
  }

  // acc[m][v] = the int32 sums over word rows [0, word_rows) of q (row stride `width` words) of
  // xq * q, for MT rows of x (xpairs, ldx words per word row), on columns [0, (V - 1) * L +
  // last_valid); A chains per (row, vector), to be added up.
  template <int MT, int V, int A = chains<MT, V>()>
  static void chunk_dots(const uint32_t* q, int64_t width, int64_t word_rows, const uint32_t* x, int64_t ldx,
                         int last_valid, I (&acc)[MT][V][A]) {
    const auto mask = [&](int v) { return Isa::mask(v == V - 1 ? last_valid : L); };
    PNTK_UNROLL
    for (auto& per_m : acc)
      PNTK_UNROLL
      for (auto& per_v : per_m)
        PNTK_UNROLL
        for (auto& a : per_v) a = Isa::zero_int();
    for (int64_t r = 0; r < word_rows; ++r) {
      const uint32_t* xr = x + r * ldx;
      const uint32_t* qr = q + r * width;
      PNTK_UNROLL
      for (int v = 0; v < V; ++v) prefetch_l1(qr + Kernels::kPrefetchWordRows * width + v * L);
      if constexpr (MT == 1) {  // 4 pairs of x in registers, one vector of words at a time
        const I xb[4] = {Isa::broadcast_pair(xr[0]), Isa::broadcast_pair(xr[1]), Isa::broadcast_pair(xr[2]),
                         Isa::broadcast_pair(xr[3])};
        PNTK_UNROLL
        for (int v = 0; v < V; ++v) {
          const I words = Isa::load_words(qr + v * L, mask(v));
          static_for<4>([&](auto j) {
            acc[0][v][j % A] = Isa::dot_pairs(acc[0][v][j % A], Isa::template nibble_pairs<j>(words), xb[j]);
          });
        }
      } else {  // V vectors of words in registers, one pair of x at a time
        I words[V];
        PNTK_UNROLL
        for (int v = 0; v < V; ++v) words[v] = Isa::load_words(qr + v * L, mask(v));
        static_for<4>([&](auto j) {
          I pairs[V];
          PNTK_UNROLL
          for (int v = 0; v < V; ++v) pairs[v] = Isa::template nibble_pairs<j>(words[v]);
          PNTK_UNROLL
          for (int m = 0; m < MT; ++m) {
            const I xb = Isa::broadcast_pair(xr[m * 4 + j]);
            PNTK_UNROLL
            for (int v = 0; v < V; ++v) acc[m][v][j % A] = Isa::dot_pairs(acc[m][v][j % A], pairs[v], xb);
          }
        });
      }
    }
  }

  // y + (s * d) * (dot - z * xsum): a chunk's sums (chains added up) into y (file comment).
  template <int A>
  static F add_chunk(F y, const I (&acc)[A], F s, F z, float xsum, float d) {
    I dot = acc[0];
    PNTK_UNROLL
    for (int a = 1; a < A; ++a) dot = Isa::add_int(dot, acc[a]);
    const F exact = Isa::fnma(z, Isa::broadcast(&xsum), Isa::to_float(dot));
    return Isa::fma(Isa::mul(s, Isa::broadcast(&d)), exact, y);
  }

  // One chunk (word_rows word rows) of MT rows of x on columns [0, (V - 1) * L + last_valid) of
  // q; y (row stride kQ4TileColumns) += the chunk's products, scaled.
  template <int MT, int V>
  static void gemv_chunk(const uint32_t* q, int64_t width, int64_t word_rows, const uint32_t* x, int64_t ldx,
                         const float* xsum, const float* d, int64_t chunk_stride, const uint16_t* scales,
                         const uint32_t* zeros, int last_valid, float* y) {
    I acc[MT][V][chains<MT, V>()];
    chunk_dots<MT, V>(q, width, word_rows, x, ldx, last_valid, acc);
    PNTK_UNROLL
    for (int v = 0; v < V; ++v) {
      const int valid = v == V - 1 ? last_valid : L;
      const F s = Isa::load_scales(scales + v * L, Isa::mask(valid)), z = Isa::load_zeros(zeros + v * L / 8, valid);
      PNTK_UNROLL
      for (int m = 0; m < MT; ++m) {
        float* yv = y + m * kQ4TileColumns + v * L;
        Isa::store(yv, add_chunk(Isa::load(yv), acc[m][v], s, z, xsum[m * chunk_stride], d[m * chunk_stride]));
      }
    }
  }

  // M = 1 on a full tile, where the registers allow (Isa::kInt16RowInRegisters): the tile's
  // kTileVectors vectors of y stay in registers over all of K.
  static void gemv_row_full_tile(const Q4Layout& w, const Q4Activations& a, int64_t tile, float* y_out) {
    constexpr int V = kTileVectors;
    const uint32_t* q = w.tile_qweight(tile);
    const uint16_t* scales = w.tile_scales(tile);
    const uint32_t* zeros = w.tile_zeros(tile);
    F y[V];
    for (auto& v : y) v = Isa::zero();
    for (int64_t g = 0; g < w.groups; ++g) {
      const int64_t group_end = w.group_begin[g + 1] / 8;
      Kernels::prefetch_group_params(scales, zeros, kQ4TileColumns, g);
      for (int64_t r0 = w.group_begin[g] / 8; r0 < group_end; r0 += kChunkWordRows) {
        I acc[1][V][chains<1, V>()];
        chunk_dots<1, V>(q + r0 * kQ4TileColumns, kQ4TileColumns, std::min(kChunkWordRows, group_end - r0),
                         a.xpairs.data() + r0 * 4, 4, L, acc);
        const float xsum = a.xsum_chunk[static_cast<size_t>(r0)], d = a.chunk_scale[static_cast<size_t>(r0)];
        PNTK_UNROLL
        for (int v = 0; v < V; ++v) {
          const F s = Isa::load_scales(scales + g * kQ4TileColumns + v * L, Isa::mask(L));
          const F z = Isa::load_zeros(zeros + g * (kQ4TileColumns / 8) + v * L / 8, L);
          y[v] = add_chunk(y[v], acc[0][v], s, z, xsum, d);
        }
      }
    }
    for (int v = 0; v < V; ++v) Isa::store(y_out + v * L, y[v]);
  }

  static void gemv_tile(const Q4Layout& w, const Q4Activations& a, int64_t tile, const TensorView& out) {
    if (a.form != Q4Activations::Form::int16_pairs) return Kernels::gemv_tile(w, a, tile, out);
    const int64_t width = w.tile_width(tile), word_rows_total = w.packed_rows / 8, ldx = a.m * 4;
    const uint32_t* q = w.tile_qweight(tile);
    const uint16_t* scales = w.tile_scales(tile);
    const uint32_t* zeros = w.tile_zeros(tile);
    alignas(64) float y[kQ4GemvMaxRows * kQ4TileColumns] = {};
    if (Isa::kInt16RowInRegisters && a.m == 1 && width == kQ4TileColumns) {
      gemv_row_full_tile(w, a, tile, y);
      add_outliers(w, a, tile, y);
      return Kernels::store_tile(w, a, tile, y, kQ4TileColumns, out);
    }
    const int64_t pass = a.m == 1 ? kQ4TileColumns : kVectorsPerPass * L;
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
            const int columns = static_cast<int>(std::min(pass, width - c0));
            const int vectors = (columns + L - 1) / L, last_valid = columns - (vectors - 1) * L;
            const uint32_t* qc = q + r0 * width + c0;
            const uint16_t* sc = scales + g * width + c0;
            const uint32_t* zc = zeros + g * (width / 8) + c0 / 8;
            float* yc = y + m0 * kQ4TileColumns + c0;
            const auto run = [&](auto mt, auto v) {
              gemv_chunk<mt, v>(qc, width, word_rows, x, ldx, a.xsum_chunk.data() + chunk, a.chunk_scale.data() + chunk,
                                word_rows_total, sc, zc, last_valid, yc);
            };
            if (a.m == 1) {
              static_for<kTileVectors>([&](auto v) {
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
    add_outliers(w, a, tile, y);
    Kernels::store_tile(w, a, tile, y, kQ4TileColumns, out);
  }

  // y[m, n] += x * s[g, n] * (q[p, n] - z[g, n]) for each outlier (p, g, x) of row m (fp32, one
  // FMA into y), on the tile's columns.
  static void add_outliers(const Q4Layout& w, const Q4Activations& a, int64_t tile, float* y) {
    const int64_t width = w.tile_width(tile);
    const uint32_t* q = w.tile_qweight(tile);
    for (int64_t m = 0; m < a.m; ++m) {
      for (int64_t o = a.outlier_begin[m]; o < a.outlier_begin[m + 1]; ++o) {
        const Q4Activations::Outlier& outlier = a.outliers[static_cast<size_t>(o)];
        const F x = Isa::broadcast(&outlier.value);
        for (int64_t c0 = 0; c0 < width; c0 += L) {
          const int valid = static_cast<int>(std::min<int64_t>(L, width - c0));
          const auto mask = Isa::mask(valid);
          const I words = Isa::load_words(q + outlier.packed_row / 8 * width + c0, mask);
          F nibble = Isa::zero();
          static_for<8>([&](auto j) {
            if (outlier.packed_row % 8 == j) nibble = Isa::template nibble<j>(words);
          });
          const F s = Isa::load_scales(w.tile_scales(tile) + outlier.group * width + c0, mask);
          const F z = Isa::load_zeros(w.tile_zeros(tile) + outlier.group * (width / 8) + c0 / 8, valid);
          float* yv = y + m * kQ4TileColumns + c0;
          Isa::store(yv, Isa::fma(x, Isa::mul(s, Isa::sub(nibble, z)), Isa::load(yv)));
        }
      }
    }
  }
};

}  // namespace

}  // namespace pntk::q4
