/* Pooling kernels, AVX-512 path: 16 channels per vector, masked tails. See pool.h. */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#define POOL_FN(name) name##__avx512
#define POOL_VLEN 16
#define POOL_UNROLL 4

typedef __m512 vf_t;
typedef __m512i vi_t;

static inline __mmask16 tail_mask(size_t n) { return (__mmask16)((1u << n) - 1u); }

static inline vf_t vf_load(const float* p) { return _mm512_loadu_ps(p); }
static inline void vf_store(float* p, vf_t v) { _mm512_storeu_ps(p, v); }
static inline vf_t vf_loadn(const float* p, size_t n) { return _mm512_maskz_loadu_ps(tail_mask(n), p); }
static inline void vf_storen(float* p, vf_t v, size_t n) { _mm512_mask_storeu_ps(p, tail_mask(n), v); }
static inline vf_t vf_zero(void) { return _mm512_setzero_ps(); }
static inline vf_t vf_set1(float x) { return _mm512_set1_ps(x); }
static inline vf_t vf_add(vf_t a, vf_t b) { return _mm512_add_ps(a, b); }
static inline vf_t vf_div(vf_t a, vf_t b) { return _mm512_div_ps(a, b); }
static inline vi_t vi_set1(int32_t i) { return _mm512_set1_epi32(i); }
static inline void vi_store(int32_t* p, vi_t v) { _mm512_storeu_si512(p, v); }
static inline void vi_storen(int32_t* p, vi_t v, size_t n) { _mm512_mask_storeu_epi32(p, tail_mask(n), v); }

static inline void vmax_update(vf_t* m, vi_t* i, vf_t v, vi_t iv) {
    const __mmask16 k = _mm512_cmp_ps_mask(v, *m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    *m = _mm512_mask_mov_ps(*m, k, v);
    *i = _mm512_mask_mov_epi32(*i, k, iv);
}

#include "pool_impl.h"
