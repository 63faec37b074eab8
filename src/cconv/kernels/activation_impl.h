/* Portable bodies of the activation micro-kernels (see activation.h). Included once per ISA by
 * f32_vact__ISA.c with CCONV_ISA_SUFFIX defined; the compiler vectorises every loop with that
 * ISA's flags. Selects go through cconv_selectf: branch-free also in the scalar build, where a
 * data-dependent branch per element would be mispredicted half of the time. */
#include <stddef.h>

#include "activation.h"
#include "vmath.h"

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
