// AVX-512 (F/BW/VL/DQ) traits of the q4 kernels (q4_kernel_impl.h): 16 columns per vector, 4
// vectors (a whole 64-column tile) per pass. A region body (simd_target.h): included, after
// q4_kernel_f16c.h and q4_kernel_impl.h, inside a target region that enables AVX-512 F/BW/VL/DQ.
#pragma once

namespace pntk::q4 {

namespace {  // internal linkage (q4_kernel_common.h)

struct Avx512 {
  static constexpr int kLanes = 16, kVectors = 4, kGemvRows = 4, kGemmMr = 6;  // 4 x 4 GEMV and 6 x 4 GEMM accumulators (32 registers)
  using F = __m512;
  using I = __m512i;
  using Mask = __mmask16;

  // q4::prepare_activations (q4_kernel_common.h) 16 packed rows at a time (gather_packed). It
  // runs on the calling thread while the workers warm their first weights (parallel_for_after).
  static void store_row(const float* src, int64_t count, DType dtype, void* dst) {
    store_row_f16c(src, count, dtype, dst);
  }
  static void prepare_activations(const Q4Layout& w, const TensorView& x, bool nibble_scaled, Q4Activations& out) {
    const int64_t m_total = x.shape[0];
    out.form = Q4Activations::Form::packed_fp32;
    out.m = m_total;
    out.x.resize(static_cast<size_t>(m_total * w.packed_rows));  // every element written below
    out.xsum.resize(static_cast<size_t>(m_total * w.groups));
    out.row_unscale.resize(static_cast<size_t>(m_total));
    // lane i holds packed row 8r + i % 8: 2^-4j for j = i % 8 < 7, 1 for j = 7 (q4_kernel_impl.h)
    const __m512 nibble_scale = nibble_scaled ? _mm512_setr_ps(1.0f, 0x1p-4f, 0x1p-8f, 0x1p-12f, 0x1p-16f, 0x1p-20f,
                                                               0x1p-24f, 1.0f, 1.0f, 0x1p-4f, 0x1p-8f, 0x1p-12f,
                                                               0x1p-16f, 0x1p-20f, 0x1p-24f, 1.0f)
                                              : _mm512_set1_ps(1.0f);
    touch_permutation(w);
    for (int64_t m = 0; m < m_total; ++m) {
      const ScaledRow row = scaled_row(w, x, m);
      out.row_unscale[static_cast<size_t>(m)] = row.unscale;
      float* packed = out.x.data() + m * w.packed_rows;
      for (int64_t g = 0; g < w.groups; ++g) {
        __m512 sum = _mm512_setzero_ps();
        for (int64_t p = w.group_begin[g]; p < w.group_begin[g + 1]; p += kLanes) {  // groups are whole words
          const Mask in_group = mask(static_cast<int>(std::min<int64_t>(kLanes, w.group_begin[g + 1] - p)));
          const __m512 value = gather_packed(w, row, p, in_group);
          sum = _mm512_add_ps(sum, value);
          _mm512_mask_storeu_ps(packed + p, in_group, _mm512_mul_ps(value, nibble_scale));
        }
        out.xsum[static_cast<size_t>(m * w.groups + g)] = _mm512_reduce_add_ps(sum);
      }
    }
  }

  // Row m of x converted to fp32 (per-thread scratch, original order) and the row's factor
  // (row_scale: 2^64 for a row whose largest |x| is under 2^-64, 2^-64 for one at 2^64 or more,
  // else 1).
  struct ScaledRow {
    const float* values;
    __m512 scale;
    float unscale;
  };
  static ScaledRow scaled_row(const Q4Layout& w, const TensorView& x, int64_t m) {
    float* row = thread_scratch(0, w.k);
    convert_row_f16c(x, m, row);
    __m512 largest = _mm512_setzero_ps();  // K % 8 == 0
    for (int64_t k = 0; k < w.k; k += kLanes)
      largest = _mm512_max_ps(largest, _mm512_abs_ps(_mm512_maskz_loadu_ps(mask(static_cast<int>(std::min<int64_t>(kLanes, w.k - k))), row + k)));
    const float scale = row_scale(_mm512_reduce_max_ps(largest));
    return {row, _mm512_set1_ps(scale), 1.0f / scale};
  }

  // Packed rows p .. p + 15 (lanes in `in_group`) of a scaled row: x[row_of_packed[p + i]] times
  // the row's factor; 0 in padding rows and outside in_group.
  static __m512 gather_packed(const Q4Layout& w, const ScaledRow& row, int64_t p, Mask in_group) {
    const __m512i source = _mm512_maskz_loadu_epi32(in_group, w.row_of_packed.data() + p);
    const Mask real = _mm512_mask_cmpge_epi32_mask(in_group, source, _mm512_setzero_si512());
    return _mm512_mul_ps(_mm512_mask_i32gather_ps(_mm512_setzero_ps(), real, source, row.values, 4), row.scale);
  }

  // The permutation (16 KB at K = 4096) is cold on every decode call: the weights streamed
  // since have evicted it. The gather loop holds few iterations in flight, so it waited out
  // each cache line in turn; touching every line first (touch_lines) keeps many misses in
  // flight. K = 4096 act-order after a 320 MB weight stream: 8.8 -> 4.9 us per call.
  static void touch_permutation(const Q4Layout& w) {
    touch_lines(w.row_of_packed.data(), w.row_of_packed.size() * sizeof(int32_t));
  }

  static Mask mask(int valid) { return static_cast<Mask>((1u << valid) - 1u); }
  static I load_words(const uint32_t* p, Mask m) { return _mm512_maskz_loadu_epi32(m, p); }
  // q * 2^4j as fp32 (exact) for j < 7; q for j = 7.
  template <int J>
  static F nibble_scaled(I w) {
    if constexpr (J == 7) return _mm512_cvtepi32_ps(_mm512_srli_epi32(w, 28));
    else return _mm512_cvtepi32_ps(_mm512_and_si512(w, _mm512_set1_epi32(0xF << (4 * J))));
  }
  template <int J>
  static F nibble(I w) {
    return _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(w, 4 * J), _mm512_set1_epi32(0xF)));
  }
  static F broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F fnma(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F zero() { return _mm512_setzero_ps(); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F load_scales(const uint16_t* p, Mask m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }
  // Lane i: the zeros word of column i (word i / 8, its nibble i % 8), for `valid` columns (16,
  // or <= 8: then only the first word is read).
  static I zero_words(const uint32_t* words, int valid) {
    const __m128i bits = valid > 8 ? _mm_loadl_epi64(reinterpret_cast<const __m128i*>(words))
                                   : _mm_cvtsi32_si128(static_cast<int>(words[0]));
    return _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                                    _mm512_castsi128_si512(bits));
  }
  // Zero nibbles of `valid` columns -> fp32: lane i's word shifted right by 4 (i % 8).
  static F load_zeros(const uint32_t* words, int valid) {
    const I shift = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    return _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(zero_words(words, valid), shift), _mm512_set1_epi32(0xF)));
  }
};

}  // namespace

}  // namespace pntk::q4
