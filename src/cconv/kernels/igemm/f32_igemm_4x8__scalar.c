/* Portable reference micro-kernel: 4 rows x 8 columns, plain C, compiled without vectorisation. */
#include "igemm.h"

void f32_igemm_ukernel_4x8__scalar(size_t mr, size_t nc, size_t kc, size_t ks,
                                   const float* const* a, size_t a_offset, size_t a_stride,
                                   const float* zero,
                                   const float* w, size_t w_stride, const float* bias,
                                   float* const* c, size_t c_offset, int flags, float cmin,
                                   float cmax) {
    enum { MR = 4, NR = 8 };
    float acc[MR][NR];
    for (size_t i = 0; i < MR; i++)
        for (size_t j = 0; j < NR; j++)
            acc[i][j] = (flags & FC_IGEMM_ACCUMULATE) ? (i < mr && j < nc ? c[i][c_offset + j] : 0.0f)
                                                      : (bias ? bias[j] : 0.0f);
    for (size_t t = 0; t < ks; t++) {
        const float* ap[MR];
        for (size_t i = 0; i < MR; i++) {
            ap[i] = a[t * MR + i];
            if (ap[i] != zero) ap[i] += a_offset;
        }
        for (size_t k = 0; k < kc; k++) {
            for (size_t i = 0; i < MR; i++) {
                const float av = ap[i][k * a_stride];
                for (size_t j = 0; j < NR; j++) acc[i][j] += av * w[j];
            }
            w += w_stride;
        }
    }
    for (size_t i = 0; i < mr; i++)
        for (size_t j = 0; j < nc; j++) {
            float v = acc[i][j];
            v = v < cmin ? cmin : v;
            v = v > cmax ? cmax : v;
            c[i][c_offset + j] = v;
        }
}
