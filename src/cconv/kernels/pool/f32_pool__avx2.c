/* Pooling kernels, AVX2 path: 8 channels per vector. See pool.h. */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "core/avx2_mask.h"

#define POOL_FN(name) name##__avx2
#define POOL_VLEN 8
#define POOL_UNROLL 4

typedef __m256 vf_t;
typedef __m256i vi_t;

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
static inline vf_t vf_add(vf_t a, vf_t b) { return _mm256_add_ps(a, b); }
static inline vf_t vf_div(vf_t a, vf_t b) { return _mm256_div_ps(a, b); }
static inline vi_t vi_set1(int32_t i) { return _mm256_set1_epi32(i); }
static inline void vi_store(int32_t* p, vi_t v) { _mm256_storeu_si256((__m256i*)p, v); }
static inline void vi_storen(int32_t* p, vi_t v, size_t n) {
    _mm256_maskstore_epi32((int*)p, cconv_avx2_tail_mask(n), v);
}

static inline void vmax_update(vf_t* m, vi_t* i, vf_t v, vi_t iv) {
    const __m256 k = _mm256_or_ps(_mm256_cmp_ps(v, *m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    *m = _mm256_blendv_ps(*m, v, k);
    *i = _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(*i), _mm256_castsi256_ps(iv), k));
}

#include "pool_impl.h"
