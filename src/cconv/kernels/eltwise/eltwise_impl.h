/* Portable bodies of the add and dropout micro-kernels (see eltwise.h), included once per ISA by
 * f32_eltwise__ISA.c with CCONV_ISA_SUFFIX defined. */
#include <stddef.h>
#include <stdint.h>

#include "eltwise.h"
#include "core/vmath.h"

void CCONV_UKERNEL(f32_vadd)(size_t n, const float* restrict a, const float* restrict b,
                             float* restrict y) {
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void CCONV_UKERNEL(f32_dropout)(size_t n, const float* restrict x, float* restrict y,
                                uint8_t* restrict mask, uint64_t key, uint64_t first,
                                uint32_t threshold, float scale) {
    uint64_t state = key + first * CCONV_DROPOUT_GOLDEN;
    for (size_t i = 0; i < n; i++) {
        uint64_t h = cconv_mix64(state + (uint64_t)i * CCONV_DROPOUT_GOLDEN);
        uint8_t keep = (uint32_t)(h >> 32) >= threshold;
        mask[i] = keep;
        /* A multiply, not a select: NaN or Inf in x shows in y even where it is dropped. */
        y[i] = x[i] * cconv_selectf(keep, scale, 0.0f);
    }
}

void CCONV_UKERNEL(f32_dropout_backward)(size_t n, const float* restrict dy,
                                         const uint8_t* restrict mask, float* restrict dx,
                                         float scale) {
    for (size_t i = 0; i < n; i++) dx[i] = dy[i] * cconv_selectf(mask[i], scale, 0.0f);
}

void CCONV_UKERNEL(f32_gate_mul)(size_t pixels, size_t channels, const float* restrict x,
                                 const float* restrict g, float* restrict y) {
    for (size_t p = 0; p < pixels; p++) {
        const float* restrict xp = x + p * channels;
        float* restrict yp = y + p * channels;
        for (size_t j = 0; j < channels; j++) yp[j] = xp[j] * g[j];
    }
}

/* The products dy * x are exact in double, and the double sums of up to millions of pixels stay
 * far below float32's rounding: dg is the correctly rounded sum in practice. */
void CCONV_UKERNEL(f32_gate_backward)(size_t pixels, size_t channels, size_t stride,
                                      const float* restrict dy, const float* restrict x,
                                      const float* restrict g, float* restrict dx,
                                      float* restrict dg) {
    double acc[CCONV_GATE_BLOCK];
    if (channels > CCONV_GATE_BLOCK) channels = CCONV_GATE_BLOCK;
    for (size_t j = 0; j < channels; j++) acc[j] = 0.0;
    for (size_t p = 0; p < pixels; p++) {
        const float* restrict dyp = dy + p * stride;
        const float* restrict xp = x + p * stride;
        float* restrict dxp = dx + p * stride;
        for (size_t j = 0; j < channels; j++) {
            dxp[j] = dyp[j] * g[j];
            acc[j] += (double)dyp[j] * (double)xp[j];
        }
    }
    for (size_t j = 0; j < channels; j++) dg[j] = (float)acc[j];
}
