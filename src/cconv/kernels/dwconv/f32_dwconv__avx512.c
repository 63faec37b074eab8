/* Depthwise convolution kernels, AVX-512 path: 16 channels per vector, masked tails, register
 * tiles of 8 pixels. See dwconv.h. */
#include <immintrin.h>
#include <stddef.h>

#define DW_FN(name) name##__avx512
#define DW_VLEN 16
#define DW_TILE 8

typedef __m512 vf_t;

static inline __mmask16 tail_mask(size_t n) { return (__mmask16)((1u << n) - 1u); }

static inline vf_t vf_load(const float* p) { return _mm512_loadu_ps(p); }
static inline void vf_store(float* p, vf_t v) { _mm512_storeu_ps(p, v); }
static inline vf_t vf_loadn(const float* p, size_t n) { return _mm512_maskz_loadu_ps(tail_mask(n), p); }
static inline void vf_storen(float* p, vf_t v, size_t n) { _mm512_mask_storeu_ps(p, tail_mask(n), v); }
static inline vf_t vf_zero(void) { return _mm512_setzero_ps(); }
static inline vf_t vf_set1(float x) { return _mm512_set1_ps(x); }
static inline vf_t vf_fma(vf_t a, vf_t b, vf_t c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf_t vf_max(vf_t a, vf_t b) { return _mm512_max_ps(a, b); }
static inline vf_t vf_min(vf_t a, vf_t b) { return _mm512_min_ps(a, b); }
static inline void vf_acc64(double* a, vf_t v, size_t n) {
    const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    const __m512d hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
    if (n == 0) {
        _mm512_storeu_pd(a, _mm512_add_pd(_mm512_loadu_pd(a), lo));
        _mm512_storeu_pd(a + 8, _mm512_add_pd(_mm512_loadu_pd(a + 8), hi));
    } else {
        const __mmask16 m = tail_mask(n);
        const __mmask8 ml = (__mmask8)(m & 0xff), mh = (__mmask8)(m >> 8);
        _mm512_mask_storeu_pd(a, ml, _mm512_add_pd(_mm512_maskz_loadu_pd(ml, a), lo));
        _mm512_mask_storeu_pd(a + 8, mh, _mm512_add_pd(_mm512_maskz_loadu_pd(mh, a + 8), hi));
    }
}

#include "dwconv_impl.h"
