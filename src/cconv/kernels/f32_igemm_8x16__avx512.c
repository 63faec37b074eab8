/* 8 rows x 16 columns: 8 zmm accumulators. Body: igemm_impl.h. */
#include <immintrin.h>
#include <string.h>
#include "igemm.h"

#define IGEMM_NAME f32_igemm_ukernel_8x16__avx512
#define IGEMM_MR 8
#define IGEMM_NV 1
#define VEC __m512
#define VLEN 16
#define VZERO() _mm512_setzero_ps()
#define VSET1(x) _mm512_set1_ps(x)
#define VLOADU(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps((p), (v))
#define VFMA(a, b, acc) _mm512_fmadd_ps((a), (b), (acc))
#define VMAX(a, b) _mm512_max_ps((a), (b))
#define VMIN(a, b) _mm512_min_ps((a), (b))
#define VMASK(n) ((__mmask16)((1u << (n)) - 1u))
#define VLOAD_PART(p, n) _mm512_maskz_loadu_ps(VMASK(n), (p))
#define VSTORE_PART(p, v, n) _mm512_mask_storeu_ps((p), VMASK(n), (v))

#include "igemm_impl.h"
