/* Row-wise softmax micro-kernels over (rows, c) float32 matrices, and the fused softmax
 * cross-entropy (per-row loss in float64, probabilities, gradient).
 *
 * Each row is computed on its own, always the same way, so any split of the rows into chunks or
 * threads gives bitwise identical results. Row reductions use 16 independent lanes combined in a
 * fixed order (vectorised by every ISA's flags, no reassociation needed).
 */
#ifndef CCONV_SOFTMAX_H
#define CCONV_SOFTMAX_H

#include <stddef.h>
#include <stdint.h>

#include "core/isa.h"

#define CCONV_SOFTMAX_DECLARE(isa)                                                                \
    void cconv_f32_softmax__##isa(size_t rows, size_t c, const float* x, float* y);                \
    void cconv_f32_softmax_backward__##isa(size_t rows, size_t c, const float* dy, const float* y, \
                                           float* dx);                                            \
    void cconv_f32_softmax_xent__##isa(size_t rows, size_t c, const float* logits,                 \
                                       const int64_t* labels, float smoothing, float* probs,      \
                                       double* loss);                                             \
    void cconv_f32_softmax_xent_backward__##isa(size_t rows, size_t c, const float* probs,         \
                                                const int64_t* labels, float smoothing,           \
                                                float scale, float* dlogits);

#define CCONV_SOFTMAX_TABLE(isa)                                                                  \
    (struct cconv_softmax_kernels) {                                                              \
        cconv_f32_softmax__##isa, cconv_f32_softmax_backward__##isa,                              \
        cconv_f32_softmax_xent__##isa, cconv_f32_softmax_xent_backward__##isa                     \
    }

struct cconv_softmax_kernels {
    /* y = exp(x - max) / sum(exp(x - max)) per row */
    void (*softmax)(size_t rows, size_t c, const float* x, float* y);
    /* dx = y * (dy - sum(dy * y)) per row */
    void (*softmax_backward)(size_t rows, size_t c, const float* dy, const float* y, float* dx);
    /* probs = softmax(logits); loss[r] = (1 - s) * -log p[label] + s * mean_j(-log p[j]), in
     * float64 (s = label smoothing; labels already checked to lie in [0, c)). */
    void (*xent)(size_t rows, size_t c, const float* logits, const int64_t* labels,
                 float smoothing, float* probs, double* loss);
    /* dlogits = (probs - ((1 - s) onehot(label) + s / c)) * scale */
    void (*xent_backward)(size_t rows, size_t c, const float* probs, const int64_t* labels,
                          float smoothing, float scale, float* dlogits);
};

CCONV_SOFTMAX_DECLARE(scalar)
#if defined(__x86_64__) || defined(_M_X64)
CCONV_SOFTMAX_DECLARE(avx2)
CCONV_SOFTMAX_DECLARE(avx512)
#elif defined(__aarch64__)
CCONV_SOFTMAX_DECLARE(neon)
#endif

/* The one place where the softmax kernels are chosen. */
static inline struct cconv_softmax_kernels cconv_softmax_select(int isa) {
#if defined(__x86_64__) || defined(_M_X64)
    if (isa == CCONV_ISA_AVX512) return CCONV_SOFTMAX_TABLE(avx512);
    if (isa == CCONV_ISA_AVX2) return CCONV_SOFTMAX_TABLE(avx2);
#elif defined(__aarch64__)
    if (isa == CCONV_ISA_NEON) return CCONV_SOFTMAX_TABLE(neon);
#endif
    (void)isa;
    return CCONV_SOFTMAX_TABLE(scalar);
}

#endif
