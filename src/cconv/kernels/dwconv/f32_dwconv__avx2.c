/* Depthwise convolution kernels, AVX2 + FMA path: 8 channels per vector, masked tails, register
 * tiles of 4 pixels (4 accumulators + 9 weights fit the 16 registers). See dwconv.h. */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "core/avx2_mask.h"

#define DW_FN(name) name##__avx2
#define DW_VLEN 8
#define DW_TILE 4

typedef __m256 vf_t;

static inline vf_t vf_load(const float* p) { return _mm256_loadu_ps(p); }
static inline void vf_store(float* p, vf_t v) { _mm256_storeu_ps(p, v); }
static inline vf_t vf_loadn(const float* p, size_t n) {
    return _mm256_maskload_ps(p, cconv_avx2_tail_mask(n));
}
static inline void vf_storen(float* p, vf_t v, size_t n) {
    _mm256_maskstore_ps(p, cconv_avx2_tail_mask(n), v);
}
static inline vf_t vf_zero(void) { return _mm256_setzero_ps(); }
static inline vf_t vf_set1(float x) { return _mm256_set1_ps(x); }
static inline vf_t vf_fma(vf_t a, vf_t b, vf_t c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf_t vf_max(vf_t a, vf_t b) { return _mm256_max_ps(a, b); }
static inline vf_t vf_min(vf_t a, vf_t b) { return _mm256_min_ps(a, b); }
static inline void vf_acc64(double* a, vf_t v, size_t n) {
    if (n == 0) {
        const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        _mm256_storeu_pd(a, _mm256_add_pd(_mm256_loadu_pd(a), lo));
        _mm256_storeu_pd(a + 4, _mm256_add_pd(_mm256_loadu_pd(a + 4), hi));
    } else {
        float tmp[8];
        _mm256_storeu_ps(tmp, v);
        for (size_t k = 0; k < n; k++) a[k] += (double)tmp[k];
    }
}

#include "dwconv_impl.h"
