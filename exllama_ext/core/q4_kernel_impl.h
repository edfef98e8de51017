// SIMD q4 kernels, written once over an ISA traits struct. A region body (simd_target.h):
// included inside a kernel file's target region, after q4_kernel_simd.h; it includes nothing.
//
// Layout (q4_matrix.h): per tile of 64 columns, word-row r holds packed rows 8r..8r+7 of
// each column; a vector load of `kLanes` words gives kLanes columns x 8 rows.
//
// GEMV (M <= 16), per group g, rows [p0, p1):
//   y[m, n] += s[g, n] * (sum_p x[m, p] * q[p, n]  -  z[g, n] * sum_p x[m, p])
// The inner product is fp32 FMA on q as an exact float. Nibble j of a word is taken as
// (w & 0xF << 4j), i.e. q * 2^4j (exact, fits in int32 for j < 7) and x[p] was prepared
// as x[p] * 2^-4j: the product is q * x exactly, and the shift is saved. Nibble 7 is w >> 28.
// GEMM (M > 16): a block of kGemmRows packed rows of the tile is dequantized to fp32
// (W = s * (q - z), exact) into a buffer, then a register-blocked kGemmMr x (V*kLanes) kernel.
//
// Traits (struct Isa) provide: kLanes, kVectors (vectors per column pass), kGemvRows (rows of
// x per GEMV pass), kGemmMr; prepare_activations(w, x, nibble_scaled, out) (as the one in
// q4_kernel_common.h); store_row(src, count, dtype, dst) (as store_row_scalar);
// types F (fp32 vector), I (int32 vector), Mask; mask(valid); load_words(p, mask);
// nibble_scaled<j>(w); nibble<j>(w); broadcast(p); fma(a, b, c) = a*b + c; fnma(a, b, c) =
// c - a*b; add, sub, mul, zero; load/store(p) full vectors; load_scales(fp16*, mask);
// load_zeros(words, valid) (zero nibbles of `valid` columns starting at words' first nibble;
// with kLanes < 8, load_zeros(words, first, valid), starting at nibble `first` of words[0]).

#pragma once

namespace pntk::q4 {

namespace {  // internal linkage: each kernel file has its own copy, compiled for its ISA

// static_for<N>(f) calls f(std::integral_constant<int, 0>) ... f(<N-1>): the index stays a
// compile-time constant (shift counts, accumulator slots) without relying on unrolling. It is
// defined in the region so that it and the lambdas it calls inline into the kernels.
template <int... I, class F>
inline void static_for_impl(std::integer_sequence<int, I...>, F&& f) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class F>
inline void static_for(F&& f) {
  static_for_impl(std::make_integer_sequence<int, N>{}, std::forward<F>(f));
}

// Unrolls the loop that follows over a small register array (accumulators, words of a row):
// the array then lives in registers. Left to itself GCC 12 kept some of these loops rolled, and
// such an array in memory: 16 accumulator stores per word row in the M = 1 bf16 GEMV (193 ->
// 255 us cache-hot, 4096 x 4096) after an unrelated edit of the loop around it.
#define PNTK_UNROLL _Pragma("GCC unroll 16")

// A read prefetch into L1 (prefetcht0 on x86, prfm pldl1keep on aarch64).
inline void prefetch_l1(const void* p) { __builtin_prefetch(p, 0, 3); }

template <class Isa>
struct Q4Kernels {
  using F = typename Isa::F;
  using I = typename Isa::I;
  using Mask = typename Isa::Mask;
  static constexpr int L = Isa::kLanes;
  static constexpr int kPass = Isa::kVectors * L;  // columns per pass over a tile
  static constexpr int64_t kGemmRows = 256;        // packed rows dequantized per GEMM block
  static constexpr int64_t kPrefetchWordRows = 32;  // GEMV software prefetch distance (32 x 256 B per tile)
  static constexpr int64_t kPrefetchGroups = 4;     // groups ahead for a tile's scales and zeros

  // Scales (width fp16) and zeros (width / 8 words) of group g + kPrefetchGroups of a tile into
  // L1: they are streams apart from the weights, which the hardware prefetcher alone served
  // late. Zen 5, 2 threads, M = 1 (avx512bf16), weights streamed, at ~48 GB/s: 4096 x 4096
  // group 32 from 87-88% to 90-94% of the read bandwidth, 5120 x 27648 group 128 from 89-92%
  // to 91-99%. 2 and 8 groups ahead measured the same within the noise; an L2 prefetch of the
  // weights 64 or 128 word rows ahead lost 2-7 points. (A prefetch past the end of the arrays
  // is harmless: it never faults.)
  static void prefetch_group_params(const uint16_t* scales, const uint32_t* zeros, int64_t width, int64_t g) {
    const char* s = reinterpret_cast<const char*>(scales + (g + kPrefetchGroups) * width);
    for (int64_t line = 0; line < width * 2; line += 64) prefetch_l1(s + line);
    prefetch_l1(zeros + (g + kPrefetchGroups) * (width / 8));
  }

  // Zero points of columns [c, c + valid) of one group's zero words (8 columns a word).
  static F zeros_at(const uint32_t* group_zeros, int64_t c, int valid) {
    if constexpr (L % 8 == 0) return Isa::load_zeros(group_zeros + c / 8, valid);
    else return Isa::load_zeros(group_zeros + c / 8, static_cast<int>(c % 8), valid);
  }

  static void prepare(const Q4Layout& w, const TensorView& x, bool for_gemv, Q4Activations& out) {
    Isa::prepare_activations(w, x, for_gemv, out);
  }

  // Group block: rows `word_rows` x 8 of one group, columns [0, V*L) of q (row stride
  // `width` words), MT rows of x (row stride ldx). y (row stride kQ4TileColumns) += result.
  template <int MT, int V>
  static void gemv_group(const uint32_t* q, int64_t width, int64_t word_rows, const float* x, int64_t ldx,
                         const float* xsum, int64_t xsum_stride, const uint16_t* scales, const uint32_t* zeros,
                         int last_valid, float* y) {
    // Independent FMA chains: at least 8 (FMA latency x ports), split over nibble parity.
    constexpr int A = MT * V >= 8 ? 1 : (MT * V >= 4 ? 2 : 4);
    const Mask last = Isa::mask(last_valid), full = Isa::mask(L);
    F acc[MT][V][A];
    PNTK_UNROLL
    for (auto& per_m : acc)
      PNTK_UNROLL
      for (auto& per_v : per_m)
        PNTK_UNROLL
        for (auto& a : per_v) a = Isa::zero();
    for (int64_t r = 0; r < word_rows; ++r) {
      I words[V];
      PNTK_UNROLL
      for (int v = 0; v < V; ++v) words[v] = Isa::load_words(q + r * width + v * L, v == V - 1 ? last : full);
      PNTK_UNROLL
      for (int v = 0; v < V; ++v)  // a few word rows ahead: the next group's words arrive in time
        prefetch_l1(q + (r + kPrefetchWordRows) * width + v * L);
      const float* xr = x + r * 8;
      static_for<8>([&](auto j) {
        F qf[V];
        PNTK_UNROLL
        for (int v = 0; v < V; ++v) qf[v] = Isa::template nibble_scaled<j>(words[v]);
        PNTK_UNROLL
        for (int m = 0; m < MT; ++m) {
          const F xb = Isa::broadcast(xr + m * ldx + j);
          PNTK_UNROLL
          for (int v = 0; v < V; ++v) acc[m][v][j % A] = Isa::fma(xb, qf[v], acc[m][v][j % A]);
        }
      });
    }
    PNTK_UNROLL
    for (int v = 0; v < V; ++v) {
      const int valid = v == V - 1 ? last_valid : L;
      const F s = Isa::load_scales(scales + v * L, v == V - 1 ? last : full);
      const F z = zeros_at(zeros, v * L, valid);
      PNTK_UNROLL
      for (int m = 0; m < MT; ++m) {
        F dot = acc[m][v][0];
        PNTK_UNROLL
        for (int a = 1; a < A; ++a) dot = Isa::add(dot, acc[m][v][a]);
        dot = Isa::fnma(z, Isa::broadcast(xsum + m * xsum_stride), dot);
        float* yv = y + m * kQ4TileColumns + v * L;
        Isa::store(yv, Isa::fma(s, dot, Isa::load(yv)));
      }
    }
  }

  template <int MT>
  static void gemv_group_columns(int vectors, const uint32_t* q, int64_t width, int64_t word_rows, const float* x,
                                 int64_t ldx, const float* xsum, int64_t xsum_stride, const uint16_t* scales,
                                 const uint32_t* zeros, int last_valid, float* y) {
    static_for<Isa::kVectors>([&](auto i) {
      if (vectors == i + 1)
        gemv_group<MT, i + 1>(q, width, word_rows, x, ldx, xsum, xsum_stride, scales, zeros, last_valid, y);
    });
  }

  // Undoes the row scaling (Q4Activations::row_unscale), adds bias, rounds to out's dtype and
  // stores rows [0, M) of a tile's fp32 results.
  static void store_tile(const Q4Layout& w, const Q4Activations& a, int64_t tile, const float* y, int64_t ldy,
                         const TensorView& out) {
    const int64_t width = w.tile_width(tile), col0 = tile * kQ4TileColumns;
    alignas(64) float row[kQ4TileColumns];
    for (int64_t m = 0; m < a.m; ++m) {
      const float unscale = a.row_unscale[m];
      for (int64_t c = 0; c < width; ++c)
        row[c] = y[m * ldy + c] * unscale + (w.bias.empty() ? 0.0f : w.bias[col0 + c]);
      char* dst = static_cast<char*>(out.data) + (m * out.strides[0] + col0) * dtype_size(out.dtype);
      Isa::store_row(row, width, out.dtype, dst);
    }
  }

  static void gemv_tile(const Q4Layout& w, const Q4Activations& a, int64_t tile, const TensorView& out) {
    const int64_t width = w.tile_width(tile);
    const uint32_t* q = w.tile_qweight(tile);
    const uint16_t* scales = w.tile_scales(tile);
    const uint32_t* zeros = w.tile_zeros(tile);
    alignas(64) float y[kQ4GemvMaxRows * kQ4TileColumns] = {};
    for (int64_t g = 0; g < w.groups; ++g) {
      const int64_t p0 = w.group_begin[g], word_rows = (w.group_begin[g + 1] - p0) / 8;
      if (word_rows == 0) continue;
      prefetch_group_params(scales, zeros, width, g);
      for (int64_t m0 = 0; m0 < a.m; m0 += Isa::kGemvRows) {
        const float* x = a.x.data() + m0 * w.packed_rows + p0;
        const float* xsum = a.xsum.data() + m0 * w.groups + g;
        for (int64_t c0 = 0; c0 < width; c0 += kPass) {
          const int columns = static_cast<int>(std::min<int64_t>(kPass, width - c0));
          const int vectors = (columns + L - 1) / L, last_valid = columns - (vectors - 1) * L;
          const uint32_t* qc = q + p0 / 8 * width + c0;
          const uint16_t* sc = scales + g * width + c0;
          const uint32_t* zc = zeros + g * (width / 8) + c0 / 8;
          float* yc = y + m0 * kQ4TileColumns + c0;
          const int rows = static_cast<int>(std::min<int64_t>(Isa::kGemvRows, a.m - m0));
          static_for<Isa::kGemvRows>([&](auto i) {
            if (rows == i + 1)
              gemv_group_columns<i + 1>(vectors, qc, width, word_rows, x, w.packed_rows, xsum, w.groups, sc, zc,
                                        last_valid, yc);
          });
        }
      }
    }
    store_tile(w, a, tile, y, kQ4TileColumns, out);
  }

  // Dequantizes packed rows [p0, p0 + rows) of a tile into wbuf [rows][kQ4TileColumns] fp32.
  // Columns past the tile's width come out as 0 (masked loads).
  static void dequantize_block(const Q4Layout& w, int64_t tile, int64_t p0, int64_t rows, float* wbuf) {
    const int64_t width = w.tile_width(tile);
    const uint32_t* q = w.tile_qweight(tile);
    const uint16_t* scales = w.tile_scales(tile);
    const uint32_t* zeros = w.tile_zeros(tile);
    int64_t g = static_cast<int64_t>(std::upper_bound(w.group_begin.begin(), w.group_begin.end(), p0) -
                                     w.group_begin.begin()) - 1;
    for (int64_t p = p0; p < p0 + rows; p += 8) {
      while (w.group_begin[g + 1] <= p) ++g;
      for (int64_t c0 = 0; c0 < width; c0 += L) {
        const int valid = static_cast<int>(std::min<int64_t>(L, width - c0));
        const Mask mask = Isa::mask(valid);
        const F s = Isa::load_scales(scales + g * width + c0, mask);
        const F sz = Isa::mul(s, zeros_at(zeros + g * (width / 8), c0, valid));  // exact: 16 bits
        const I words = Isa::load_words(q + p / 8 * width + c0, mask);
        float* dst = wbuf + (p - p0) * kQ4TileColumns + c0;
        static_for<8>([&](auto j) {
          Isa::store(dst + j * kQ4TileColumns, Isa::fma(s, Isa::template nibble<j>(words), Isa::sub(Isa::zero(), sz)));
        });
      }
    }
  }

  // c[m][0..V*L) += sum_k a[m][k] * b[k][0..V*L), m < MR, k < depth; b and c rows are
  // kQ4TileColumns apart, a rows lda apart.
  template <int MR, int V>
  static void gemm_micro(const float* a, int64_t lda, const float* b, int64_t depth, float* c) {
    F acc[MR][V];
    PNTK_UNROLL
    for (int m = 0; m < MR; ++m)
      PNTK_UNROLL
      for (int v = 0; v < V; ++v) acc[m][v] = Isa::load(c + m * kQ4TileColumns + v * L);
    for (int64_t k = 0; k < depth; ++k) {
      F bv[V];
      PNTK_UNROLL
      for (int v = 0; v < V; ++v) bv[v] = Isa::load(b + k * kQ4TileColumns + v * L);
      PNTK_UNROLL
      for (int m = 0; m < MR; ++m) {
        const F av = Isa::broadcast(a + m * lda + k);
        PNTK_UNROLL
        for (int v = 0; v < V; ++v) acc[m][v] = Isa::fma(av, bv[v], acc[m][v]);
      }
    }
    PNTK_UNROLL
    for (int m = 0; m < MR; ++m)
      PNTK_UNROLL
      for (int v = 0; v < V; ++v) Isa::store(c + m * kQ4TileColumns + v * L, acc[m][v]);
  }

  static void gemm_tile(const Q4Layout& w, const Q4Activations& a, int64_t tile, const TensorView& out) {
    constexpr int MR = Isa::kGemmMr;
    const int64_t width = w.tile_width(tile);
    float* wbuf = thread_scratch(0, kGemmRows * kQ4TileColumns);
    float* c = thread_scratch(1, a.m * kQ4TileColumns);
    for (int64_t i = 0; i < a.m * kQ4TileColumns; ++i) c[i] = 0.0f;
    for (int64_t p0 = 0; p0 < w.packed_rows; p0 += kGemmRows) {
      const int64_t rows = std::min(kGemmRows, w.packed_rows - p0);
      dequantize_block(w, tile, p0, rows, wbuf);
      for (int64_t c0 = 0; c0 < width; c0 += kPass) {
        for (int64_t m0 = 0; m0 < a.m; m0 += MR) {
          const float* x = a.x.data() + m0 * w.packed_rows + p0;
          float* cc = c + m0 * kQ4TileColumns + c0;
          const int mr = static_cast<int>(std::min<int64_t>(MR, a.m - m0));
          static_for<MR>([&](auto i) {
            if (mr == i + 1) gemm_micro<i + 1, Isa::kVectors>(x, w.packed_rows, wbuf + c0, rows, cc);
          });
        }
      }
    }
    store_tile(w, a, tile, c, kQ4TileColumns, out);
  }
};

}  // namespace

}  // namespace pntk::q4
