/* 8 rows x 8 columns: 8 ymm accumulators (AVX-512VL store masks). Body: igemm_impl.h. */
#include <immintrin.h>
#include <string.h>
#include "igemm.h"

#define IGEMM_NAME f32_igemm_ukernel_8x8__avx512
#define IGEMM_MR 8
#define IGEMM_NV 1
#define VEC __m256
#define VLEN 8
#define VZERO() _mm256_setzero_ps()
#define VSET1(x) _mm256_set1_ps(x)
#define VLOADU(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VFMA(a, b, acc) _mm256_fmadd_ps((a), (b), (acc))
#define VMAX(a, b) _mm256_max_ps((a), (b))
#define VMIN(a, b) _mm256_min_ps((a), (b))
#define VMASK(n) ((__mmask8)((1u << (n)) - 1u))
#define VLOAD_PART(p, n) _mm256_maskz_loadu_ps(VMASK(n), (p))
#define VSTORE_PART(p, v, n) _mm256_mask_storeu_ps((p), VMASK(n), (v))

#include "igemm_impl.h"
