/* Activation micro-kernels: relu, leaky relu, sigmoid, tanh, forward and backward.
 *
 * Each kernel maps n contiguous float32 elements; outputs never alias inputs. The per-ISA copies
 * are the portable bodies of activation_impl.h compiled with each ISA's flags (f32_vact__ISA.c).
 */
#ifndef CCONV_ACTIVATION_H
#define CCONV_ACTIVATION_H

#include <stddef.h>

#include "isa.h"

#define CCONV_ACTIVATION_DECLARE(isa)                                                            \
    void cconv_f32_vrelu__##isa(size_t n, const float* x, float* y);                              \
    void cconv_f32_vrelu_backward__##isa(size_t n, const float* dy, const float* y, float* dx);   \
    void cconv_f32_vlrelu__##isa(size_t n, const float* x, float* y, float slope);                \
    void cconv_f32_vlrelu_backward__##isa(size_t n, const float* dy, const float* x, float* dx,   \
                                          float slope);                                           \
    void cconv_f32_vsigmoid__##isa(size_t n, const float* x, float* y);                           \
    void cconv_f32_vsigmoid_backward__##isa(size_t n, const float* dy, const float* y, float* dx);\
    void cconv_f32_vtanh__##isa(size_t n, const float* x, float* y);                              \
    void cconv_f32_vtanh_backward__##isa(size_t n, const float* dy, const float* y, float* dx);

#define CCONV_ACTIVATION_TABLE(isa)                                                              \
    (struct cconv_activation_kernels) {                                                          \
        cconv_f32_vrelu__##isa, cconv_f32_vrelu_backward__##isa, cconv_f32_vlrelu__##isa,         \
        cconv_f32_vlrelu_backward__##isa, cconv_f32_vsigmoid__##isa,                              \
        cconv_f32_vsigmoid_backward__##isa, cconv_f32_vtanh__##isa,                               \
        cconv_f32_vtanh_backward__##isa                                                           \
    }

typedef void (*cconv_f32_vunary_fn)(size_t n, const float* x, float* y);
typedef void (*cconv_f32_vbinary_fn)(size_t n, const float* a, const float* b, float* y);
typedef void (*cconv_f32_vunary_param_fn)(size_t n, const float* x, float* y, float param);
typedef void (*cconv_f32_vbinary_param_fn)(size_t n, const float* a, const float* b, float* y,
                                           float param);

struct cconv_activation_kernels {
    cconv_f32_vunary_fn relu;               /* y = max(x, 0) (NaN propagates) */
    cconv_f32_vbinary_fn relu_backward;     /* dx = y > 0 ? dy : 0 */
    cconv_f32_vunary_param_fn lrelu;        /* y = x > 0 ? x : slope x */
    cconv_f32_vbinary_param_fn lrelu_backward; /* dx = x > 0 ? dy : slope dy */
    cconv_f32_vunary_fn sigmoid;            /* y = 1 / (1 + exp(-x)) */
    cconv_f32_vbinary_fn sigmoid_backward;  /* dx = dy y (1 - y) */
    cconv_f32_vunary_fn tanh;               /* y = tanh(x) */
    cconv_f32_vbinary_fn tanh_backward;     /* dx = dy (1 - y^2) */
};

CCONV_ACTIVATION_DECLARE(scalar)
#if defined(__x86_64__) || defined(_M_X64)
CCONV_ACTIVATION_DECLARE(avx2)
CCONV_ACTIVATION_DECLARE(avx512)
#elif defined(__aarch64__)
CCONV_ACTIVATION_DECLARE(neon)
#endif

/* The one place where the activation kernels are chosen. */
static inline struct cconv_activation_kernels cconv_activation_select(int isa) {
#if defined(__x86_64__) || defined(_M_X64)
    if (isa == CCONV_ISA_AVX512) return CCONV_ACTIVATION_TABLE(avx512);
    if (isa == CCONV_ISA_AVX2) return CCONV_ACTIVATION_TABLE(avx2);
#elif defined(__aarch64__)
    if (isa == CCONV_ISA_NEON) return CCONV_ACTIVATION_TABLE(neon);
#endif
    (void)isa;
    return CCONV_ACTIVATION_TABLE(scalar);
}

#endif
