/* AVX2+FMA micro-kernel: 6 rows x 16 columns = 12 ymm accumulators, 2 weight registers,
 * 1 broadcast (15 of the 16 ymm registers). */
#include <immintrin.h>
#include <string.h>
#include "igemm.h"

void f32_igemm_ukernel_6x16__avx2(size_t mr, size_t nc, size_t kc, size_t ks,
                                  const float* const* a, size_t a_offset, const float* zero,
                                  const float* w, const float* bias, float* const* c,
                                  size_t c_offset, int flags, float cmin, float cmax) {
    enum { MR = 6, NR = 16 };
    __m256 acc0[MR], acc1[MR];
    if (flags & FC_IGEMM_ACCUMULATE) {
        for (size_t i = 0; i < MR; i++) {
            float row[NR] = {0};
            if (i < mr) memcpy(row, c[i] + c_offset, nc * sizeof(float));
            acc0[i] = _mm256_loadu_ps(row);
            acc1[i] = _mm256_loadu_ps(row + 8);
        }
    } else {
        const __m256 b0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
        const __m256 b1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
        for (size_t i = 0; i < MR; i++) { acc0[i] = b0; acc1[i] = b1; }
    }
    for (size_t t = 0; t < ks; t++) {
        const float* ap[MR];
        for (size_t i = 0; i < MR; i++) {
            ap[i] = a[t * MR + i];
            if (ap[i] != zero) ap[i] += a_offset;
        }
        for (size_t k = 0; k < kc; k++) {
            const __m256 w0 = _mm256_loadu_ps(w);
            const __m256 w1 = _mm256_loadu_ps(w + 8);
            w += NR;
#pragma GCC unroll 6
            for (size_t i = 0; i < MR; i++) {
                const __m256 av = _mm256_broadcast_ss(ap[i] + k);
                acc0[i] = _mm256_fmadd_ps(av, w0, acc0[i]);
                acc1[i] = _mm256_fmadd_ps(av, w1, acc1[i]);
            }
        }
    }
    /* max(lo, x) / min(hi, x) return x when x is NaN: NaN propagates like PyTorch's. */
    const __m256 lo = _mm256_set1_ps(cmin), hi = _mm256_set1_ps(cmax);
    for (size_t i = 0; i < mr; i++) {
        const __m256 v0 = _mm256_min_ps(hi, _mm256_max_ps(lo, acc0[i]));
        const __m256 v1 = _mm256_min_ps(hi, _mm256_max_ps(lo, acc1[i]));
        float* out = c[i] + c_offset;
        if (nc == NR) {
            _mm256_storeu_ps(out, v0);
            _mm256_storeu_ps(out + 8, v1);
        } else {
            float row[NR];
            _mm256_storeu_ps(row, v0);
            _mm256_storeu_ps(row + 8, v1);
            memcpy(out, row, nc * sizeof(float));
        }
    }
}
