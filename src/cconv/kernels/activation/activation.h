/* Activation micro-kernels: relu, leaky relu, sigmoid, tanh, relu6, hard sigmoid, hard swish,
 * silu, gelu (erf and tanh forms), forward and backward.
 *
 * Each kernel maps n contiguous float32 elements; outputs never alias inputs. The per-ISA copies
 * are the portable bodies of activation_impl.h compiled with each ISA's flags (f32_activation__ISA.c).
 */
#ifndef CCONV_ACTIVATION_H
#define CCONV_ACTIVATION_H

#include <stddef.h>

#include "core/isa.h"

#define CCONV_ACTIVATION_DECLARE(isa)                                                            \
    void cconv_f32_vrelu__##isa(size_t n, const float* x, float* y);                              \
    void cconv_f32_vrelu_backward__##isa(size_t n, const float* dy, const float* y, float* dx);   \
    void cconv_f32_vlrelu__##isa(size_t n, const float* x, float* y, float slope);                \
    void cconv_f32_vlrelu_backward__##isa(size_t n, const float* dy, const float* x, float* dx,   \
                                          float slope);                                           \
    void cconv_f32_vsigmoid__##isa(size_t n, const float* x, float* y);                           \
    void cconv_f32_vsigmoid_backward__##isa(size_t n, const float* dy, const float* y, float* dx);\
    void cconv_f32_vtanh__##isa(size_t n, const float* x, float* y);                              \
    void cconv_f32_vtanh_backward__##isa(size_t n, const float* dy, const float* y, float* dx);\
    void cconv_f32_vrelu6__##isa(size_t n, const float* x, float* y);                             \
    void cconv_f32_vrelu6_backward__##isa(size_t n, const float* dy, const float* y, float* dx);  \
    void cconv_f32_vhardsigmoid__##isa(size_t n, const float* x, float* y);                       \
    void cconv_f32_vhardsigmoid_backward__##isa(size_t n, const float* dy, const float* x,        \
                                                float* dx);                                       \
    void cconv_f32_vhardswish__##isa(size_t n, const float* x, float* y);                         \
    void cconv_f32_vhardswish_backward__##isa(size_t n, const float* dy, const float* x,          \
                                              float* dx);                                         \
    void cconv_f32_vsilu__##isa(size_t n, const float* x, float* y);                              \
    void cconv_f32_vsilu_backward__##isa(size_t n, const float* dy, const float* x, float* dx);   \
    void cconv_f32_vgelu__##isa(size_t n, const float* x, float* y);                              \
    void cconv_f32_vgelu_backward__##isa(size_t n, const float* dy, const float* x, float* dx);   \
    void cconv_f32_vgelu_tanh__##isa(size_t n, const float* x, float* y);                         \
    void cconv_f32_vgelu_tanh_backward__##isa(size_t n, const float* dy, const float* x,          \
                                              float* dx);

#define CCONV_ACTIVATION_TABLE(isa)                                                              \
    (struct cconv_activation_kernels) {                                                          \
        cconv_f32_vrelu__##isa, cconv_f32_vrelu_backward__##isa, cconv_f32_vlrelu__##isa,         \
        cconv_f32_vlrelu_backward__##isa, cconv_f32_vsigmoid__##isa,                              \
        cconv_f32_vsigmoid_backward__##isa, cconv_f32_vtanh__##isa,                               \
        cconv_f32_vtanh_backward__##isa, cconv_f32_vrelu6__##isa,                                 \
        cconv_f32_vrelu6_backward__##isa, cconv_f32_vhardsigmoid__##isa,                          \
        cconv_f32_vhardsigmoid_backward__##isa, cconv_f32_vhardswish__##isa,                      \
        cconv_f32_vhardswish_backward__##isa, cconv_f32_vsilu__##isa,                             \
        cconv_f32_vsilu_backward__##isa, cconv_f32_vgelu__##isa, cconv_f32_vgelu_backward__##isa, \
        cconv_f32_vgelu_tanh__##isa, cconv_f32_vgelu_tanh_backward__##isa                         \
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
    /* PyTorch's definitions and gradients; NaN in x propagates to y. */
    cconv_f32_vunary_fn relu6;              /* y = min(max(x, 0), 6) */
    cconv_f32_vbinary_fn relu6_backward;    /* dx = 0 < y < 6 ? dy : 0 */
    cconv_f32_vunary_fn hardsigmoid;        /* y = min(max(x + 3, 0), 6) / 6 */
    cconv_f32_vbinary_fn hardsigmoid_backward; /* dx = -3 < x < 3 ? dy / 6 : 0 */
    cconv_f32_vunary_fn hardswish;          /* y = x min(max(x + 3, 0), 6) / 6 */
    cconv_f32_vbinary_fn hardswish_backward; /* dx = x <= -3 ? 0 : x >= 3 ? dy : dy (x/3 + 1/2) */
    cconv_f32_vunary_fn silu;               /* y = x sigmoid(x) */
    cconv_f32_vbinary_fn silu_backward;     /* dx = dy s (1 + x (1 - s)), s = sigmoid(x) */
    cconv_f32_vunary_fn gelu;               /* y = x Phi(x) = x (1 + erf(x / sqrt2)) / 2 */
    cconv_f32_vbinary_fn gelu_backward;     /* dx = dy (Phi(x) + x phi(x)) */
    cconv_f32_vunary_fn gelu_tanh;          /* y = x (1 + tanh(u)) / 2, u = sqrt(2/pi) (x + 0.044715 x^3) */
    cconv_f32_vbinary_fn gelu_tanh_backward; /* dx = dy d/dx of the above */
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
