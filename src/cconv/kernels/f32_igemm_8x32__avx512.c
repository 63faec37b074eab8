/* AVX-512 micro-kernel: 8 rows x 32 columns = 16 zmm accumulators, 2 weight registers;
 * tails of nc handled with store masks. */
#include <immintrin.h>
#include "igemm.h"

void f32_igemm_ukernel_8x32__avx512(size_t mr, size_t nc, size_t kc, size_t ks,
                                    const float* const* a, size_t a_offset, const float* zero,
                                    const float* w, const float* bias, float* const* c,
                                    size_t c_offset, int flags, float cmin, float cmax) {
    enum { MR = 8, NR = 32 };
    const __mmask16 m0 = nc >= 16 ? 0xFFFF : (__mmask16)((1u << nc) - 1u);
    const __mmask16 m1 = nc >= 32 ? 0xFFFF : nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1u) : 0;
    __m512 acc0[MR], acc1[MR];
    if (flags & FC_IGEMM_ACCUMULATE) {
        for (size_t i = 0; i < MR; i++) {
            if (i < mr) {
                acc0[i] = _mm512_maskz_loadu_ps(m0, c[i] + c_offset);
                acc1[i] = _mm512_maskz_loadu_ps(m1, c[i] + c_offset + 16);
            } else {
                acc0[i] = acc1[i] = _mm512_setzero_ps();
            }
        }
    } else {
        const __m512 b0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
        const __m512 b1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
        for (size_t i = 0; i < MR; i++) { acc0[i] = b0; acc1[i] = b1; }
    }
    for (size_t t = 0; t < ks; t++) {
        const float* ap[MR];
        for (size_t i = 0; i < MR; i++) {
            ap[i] = a[t * MR + i];
            if (ap[i] != zero) ap[i] += a_offset;
        }
        for (size_t k = 0; k < kc; k++) {
            const __m512 w0 = _mm512_loadu_ps(w);
            const __m512 w1 = _mm512_loadu_ps(w + 16);
            w += NR;
#pragma GCC unroll 8
            for (size_t i = 0; i < MR; i++) {
                const __m512 av = _mm512_set1_ps(ap[i][k]);
                acc0[i] = _mm512_fmadd_ps(av, w0, acc0[i]);
                acc1[i] = _mm512_fmadd_ps(av, w1, acc1[i]);
            }
        }
    }
    /* max(lo, x) / min(hi, x) return x when x is NaN: NaN propagates like PyTorch's. */
    const __m512 lo = _mm512_set1_ps(cmin), hi = _mm512_set1_ps(cmax);
    for (size_t i = 0; i < mr; i++) {
        float* out = c[i] + c_offset;
        _mm512_mask_storeu_ps(out, m0, _mm512_min_ps(hi, _mm512_max_ps(lo, acc0[i])));
        if (m1) _mm512_mask_storeu_ps(out + 16, m1, _mm512_min_ps(hi, _mm512_max_ps(lo, acc1[i])));
    }
}
