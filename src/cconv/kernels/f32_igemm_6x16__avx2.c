/* 6 rows x 16 columns: 12 ymm accumulators. Body: igemm_impl.h. */
#include <immintrin.h>
#include <string.h>
#include "igemm.h"

#define IGEMM_NAME f32_igemm_ukernel_6x16__avx2
#define IGEMM_MR 6
#define IGEMM_NV 2
#define VEC __m256
#define VLEN 8
#define VZERO() _mm256_setzero_ps()
#define VSET1(x) _mm256_set1_ps(x)
#define VLOADU(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VFMA(a, b, acc) _mm256_fmadd_ps((a), (b), (acc))
#define VMAX(a, b) _mm256_max_ps((a), (b))
#define VMIN(a, b) _mm256_min_ps((a), (b))

/* AVX2 has no cheap store masks: partial rows go through a small buffer. */
static inline __m256 load_part(const float* p, size_t n) {
    float tmp[8] = {0};
    memcpy(tmp, p, n * sizeof(float));
    return _mm256_loadu_ps(tmp);
}
static inline void store_part(float* p, __m256 v, size_t n) {
    float tmp[8];
    _mm256_storeu_ps(tmp, v);
    memcpy(p, tmp, n * sizeof(float));
}
#define VLOAD_PART(p, n) load_part((p), (n))
#define VSTORE_PART(p, v, n) store_part((p), (v), (n))

#include "igemm_impl.h"
