/* Portable bodies of the activation micro-kernels (see activation.h). Included once per ISA by
 * f32_activation__ISA.c with CCONV_ISA_SUFFIX defined; the compiler vectorises every loop with that
 * ISA's flags. Selects go through cconv_selectf: branch-free also in the scalar build, where a
 * data-dependent branch per element would be mispredicted half of the time. */
#include <stddef.h>

#include "activation.h"
#include "core/vmath.h"

void CCONV_UKERNEL(f32_vrelu)(size_t n, const float* restrict x, float* restrict y) {
    for (size_t i = 0; i < n; i++) y[i] = cconv_selectf(x[i] < 0.0f, 0.0f, x[i]);
}

void CCONV_UKERNEL(f32_vrelu_backward)(size_t n, const float* restrict dy, const float* restrict y,
                                       float* restrict dx) {
    for (size_t i = 0; i < n; i++) dx[i] = cconv_selectf(y[i] > 0.0f, dy[i], 0.0f);
}

void CCONV_UKERNEL(f32_vlrelu)(size_t n, const float* restrict x, float* restrict y, float slope) {
    for (size_t i = 0; i < n; i++) y[i] = x[i] * cconv_selectf(x[i] > 0.0f, 1.0f, slope);
}

void CCONV_UKERNEL(f32_vlrelu_backward)(size_t n, const float* restrict dy,
                                        const float* restrict x, float* restrict dx, float slope) {
    for (size_t i = 0; i < n; i++) dx[i] = dy[i] * cconv_selectf(x[i] > 0.0f, 1.0f, slope);
}

void CCONV_UKERNEL(f32_vsigmoid)(size_t n, const float* restrict x, float* restrict y) {
    for (size_t i = 0; i < n; i++) y[i] = cconv_sigmoidf(x[i]);
}

void CCONV_UKERNEL(f32_vsigmoid_backward)(size_t n, const float* restrict dy,
                                          const float* restrict y, float* restrict dx) {
    for (size_t i = 0; i < n; i++) dx[i] = dy[i] * (y[i] * (1.0f - y[i]));
}

void CCONV_UKERNEL(f32_vtanh)(size_t n, const float* restrict x, float* restrict y) {
    for (size_t i = 0; i < n; i++) y[i] = cconv_tanhf(x[i]);
}

/* 1 - y^2 as (1 - y)(1 + y): exact differences, no cancellation where |y| is close to 1. */
void CCONV_UKERNEL(f32_vtanh_backward)(size_t n, const float* restrict dy, const float* restrict y,
                                       float* restrict dx) {
    for (size_t i = 0; i < n; i++) dx[i] = dy[i] * ((1.0f - y[i]) * (1.0f + y[i]));
}

/* relu6, hard sigmoid and hard swish clamp with selects that keep NaN (every comparison with NaN
 * is false), in PyTorch's order of operations: min(max(x + 3, 0), 6) / 6. */
static inline float cconv_clamp06f(float t) {
    t = cconv_selectf(t < 0.0f, 0.0f, t);
    return cconv_selectf(t > 6.0f, 6.0f, t);
}

void CCONV_UKERNEL(f32_vrelu6)(size_t n, const float* restrict x, float* restrict y) {
    for (size_t i = 0; i < n; i++) y[i] = cconv_clamp06f(x[i]);
}

/* The mask from the output: 0 < y < 6 exactly where 0 < x < 6 (PyTorch's hardtanh gradient). */
void CCONV_UKERNEL(f32_vrelu6_backward)(size_t n, const float* restrict dy,
                                        const float* restrict y, float* restrict dx) {
    for (size_t i = 0; i < n; i++)
        dx[i] = cconv_selectf((y[i] > 0.0f) & (y[i] < 6.0f), dy[i], 0.0f);
}

void CCONV_UKERNEL(f32_vhardsigmoid)(size_t n, const float* restrict x, float* restrict y) {
    for (size_t i = 0; i < n; i++) y[i] = cconv_clamp06f(x[i] + 3.0f) / 6.0f;
}

void CCONV_UKERNEL(f32_vhardsigmoid_backward)(size_t n, const float* restrict dy,
                                              const float* restrict x, float* restrict dx) {
    for (size_t i = 0; i < n; i++)
        dx[i] = cconv_selectf((x[i] > -3.0f) & (x[i] < 3.0f), dy[i] * (1.0f / 6.0f), 0.0f);
}

/* 0 (not -Inf * 0) where the clamp is 0, so that -Inf gives 0 like every x <= -3. */
void CCONV_UKERNEL(f32_vhardswish)(size_t n, const float* restrict x, float* restrict y) {
    for (size_t i = 0; i < n; i++) {
        float t = cconv_clamp06f(x[i] + 3.0f);
        y[i] = cconv_zero_iff(t == 0.0f, x[i] * t / 6.0f);
    }
}

/* PyTorch's gradient (2.x), its values at the kinks included: 0 for x <= -3, dy (x / 3 + 1/2)
 * for -3 < x < 3, dy for x >= 3 (the one-sided limits from outside); NaN in x gives NaN. */
void CCONV_UKERNEL(f32_vhardswish_backward)(size_t n, const float* restrict dy,
                                            const float* restrict x, float* restrict dx) {
    for (size_t i = 0; i < n; i++) {
        float mid = dy[i] * (x[i] / 3.0f + 0.5f);
        float r = cconv_selectf(x[i] >= 3.0f, dy[i], mid);
        dx[i] = cconv_selectf(x[i] <= -3.0f, 0.0f, r);
    }
}

/* x sigmoid(x); 0 (not -Inf * 0) where the sigmoid is 0. */
void CCONV_UKERNEL(f32_vsilu)(size_t n, const float* restrict x, float* restrict y) {
    for (size_t i = 0; i < n; i++) {
        float s = cconv_sigmoidf(x[i]);
        y[i] = cconv_zero_iff(s == 0.0f, x[i] * s);
    }
}

/* s + x s (1 - s), with 1 - s = sigmoid(-x) computed directly; the product term is 0 where
 * s (1 - s) is, so that +-Inf give 1 and 0. */
void CCONV_UKERNEL(f32_vsilu_backward)(size_t n, const float* restrict dy,
                                       const float* restrict x, float* restrict dx) {
    for (size_t i = 0; i < n; i++) {
        float s, c;
        cconv_sigmoid_pairf(x[i], &s, &c);
        float q = s * c;
        dx[i] = dy[i] * (s + cconv_zero_iff(q == 0.0f, x[i] * q));
    }
}

void CCONV_UKERNEL(f32_vgelu)(size_t n, const float* restrict x, float* restrict y) {
    for (size_t i = 0; i < n; i++) {
        float p = cconv_normcdff(x[i]);
        y[i] = cconv_zero_iff(p == 0.0f, x[i] * p);
    }
}

void CCONV_UKERNEL(f32_vgelu_backward)(size_t n, const float* restrict dy,
                                       const float* restrict x, float* restrict dx) {
    for (size_t i = 0; i < n; i++) {
        float d = cconv_normpdff(x[i]);
        dx[i] = dy[i] * (cconv_normcdff(x[i]) + cconv_zero_iff(d == 0.0f, x[i] * d));
    }
}

/* The tanh approximation, written 0.5 x (1 + tanh(u)) = x sigmoid(2u): no cancellation of
 * 1 + tanh(u) where u is very negative. */
#define CCONV_GELU_BETA 0.797884560802865356f  /* sqrt(2 / pi) */
#define CCONV_GELU_KAPPA 0.044715f

void CCONV_UKERNEL(f32_vgelu_tanh)(size_t n, const float* restrict x, float* restrict y) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float u2 = (2.0f * CCONV_GELU_BETA) * CCONV_FMADD(CCONV_GELU_KAPPA * v, v * v, v);
        float s = cconv_sigmoidf(u2);
        y[i] = cconv_zero_iff(s == 0.0f, v * s);
    }
}

/* d/dx x sigmoid(2u) = s + x 2u' s (1 - s), u' = sqrt(2/pi) (1 + 3 0.044715 x^2). */
void CCONV_UKERNEL(f32_vgelu_tanh_backward)(size_t n, const float* restrict dy,
                                            const float* restrict x, float* restrict dx) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float u2 = (2.0f * CCONV_GELU_BETA) * CCONV_FMADD(CCONV_GELU_KAPPA * v, v * v, v);
        float s, c;
        cconv_sigmoid_pairf(u2, &s, &c);
        float q = s * c;
        float k = (2.0f * CCONV_GELU_BETA) * CCONV_FMADD(3.0f * CCONV_GELU_KAPPA * v, v, 1.0f);
        dx[i] = dy[i] * (s + cconv_zero_iff(q == 0.0f, (v * k) * q));
    }
}
