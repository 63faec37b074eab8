/* Batch-norm micro-kernels over a chunk of rows of a (rows, c) float32 matrix (NHWC flattened:
 * channels last). They know one chunk; the Cython layer splits the rows into chunks whose
 * boundaries depend on the shape only and combines the chunks' float64 results in a fixed order.
 */
#ifndef CCONV_BATCHNORM_H
#define CCONV_BATCHNORM_H

#include <stddef.h>

#include "core/isa.h"

#define CCONV_BATCHNORM_DECLARE(isa)                                                              \
    void cconv_f32_bn_stats__##isa(size_t rows, size_t c, const float* x, double* mean,           \
                                   double* m2);                                                   \
    void cconv_f32_bn_apply__##isa(size_t rows, size_t c, const float* x, const float* mean_hi,   \
                                   const float* mean_lo, const float* scale, const float* shift,  \
                                   const float* residual, float lo, float* y);                    \
    void cconv_f32_bn_backward_reduce__##isa(size_t rows, size_t c, const float* dy,              \
                                             const float* x, const float* y, const float* mean,   \
                                             double* sum_dy, double* sum_dy_xmu);                 \
    void cconv_f32_bn_backward_dx__##isa(size_t rows, size_t c, const float* dy, const float* x,  \
                                         const float* y, const float* mean, const double* a,      \
                                         const double* b, const double* k, float* dx);            \
    void cconv_f32_bn_backward_dx_f32__##isa(size_t rows, size_t c, const float* dy,              \
                                             const float* x, const float* y, const float* mean,   \
                                             const float* a, const float* b, const float* k,      \
                                             float* dx);

#define CCONV_BATCHNORM_TABLE(isa)                                                                \
    (struct cconv_batchnorm_kernels) {                                                            \
        cconv_f32_bn_stats__##isa, cconv_f32_bn_apply__##isa,                                     \
        cconv_f32_bn_backward_reduce__##isa, cconv_f32_bn_backward_dx__##isa,                     \
        cconv_f32_bn_backward_dx_f32__##isa                                                       \
    }

struct cconv_batchnorm_kernels {
    /* Per channel: mean and m2 = sum (x - mean)^2 over the rows, in float64, two passes. */
    void (*stats)(size_t rows, size_t c, const float* x, double* mean, double* m2);
    /* y = max(lo, ((x - mean_hi) - mean_lo) * scale + shift [+ residual]): lo = -INFINITY for
     * none, 0 for a fused ReLU (NaN passes); residual: NULL, or a (rows, c) array added before
     * the clamp (a residual block's join). The mean as an unevaluated float sum mean_hi +
     * mean_lo keeps x - mean accurate when |mean| is large next to the spread. */
    void (*apply)(size_t rows, size_t c, const float* x, const float* mean_hi,
                  const float* mean_lo, const float* scale, const float* shift,
                  const float* residual, float lo, float* y);
    /* Per channel, in float64: sum_dy = sum g, sum_dy_xmu = sum g (x - mean) (overwritten),
     * g = dy, or with a fused ReLU whose output is y (not NULL) g = y > 0 ? dy : 0. */
    void (*backward_reduce)(size_t rows, size_t c, const float* dy, const float* x,
                            const float* y, const float* mean, double* sum_dy,
                            double* sum_dy_xmu);
    /* dx = a g + b (x - mean) + k, g as in backward_reduce, per channel float64 coefficients,
     * computed in float64. */
    void (*backward_dx)(size_t rows, size_t c, const float* dy, const float* x, const float* y,
                        const float* mean, const double* a, const double* b, const double* k,
                        float* dx);
    /* The same in float32 (two FMAs an element), for many rows per channel: then the terms are
     * of the size of their sum, and float64 only costs time. */
    void (*backward_dx_f32)(size_t rows, size_t c, const float* dy, const float* x,
                            const float* y, const float* mean, const float* a, const float* b,
                            const float* k, float* dx);
};

CCONV_BATCHNORM_DECLARE(scalar)
#if defined(__x86_64__) || defined(_M_X64)
CCONV_BATCHNORM_DECLARE(avx2)
CCONV_BATCHNORM_DECLARE(avx512)
#elif defined(__aarch64__)
CCONV_BATCHNORM_DECLARE(neon)
#endif

/* The one place where the batch-norm kernels are chosen. */
static inline struct cconv_batchnorm_kernels cconv_batchnorm_select(int isa) {
#if defined(__x86_64__) || defined(_M_X64)
    if (isa == CCONV_ISA_AVX512) return CCONV_BATCHNORM_TABLE(avx512);
    if (isa == CCONV_ISA_AVX2) return CCONV_BATCHNORM_TABLE(avx2);
#elif defined(__aarch64__)
    if (isa == CCONV_ISA_NEON) return CCONV_BATCHNORM_TABLE(neon);
#endif
    (void)isa;
    return CCONV_BATCHNORM_TABLE(scalar);
}

#endif
