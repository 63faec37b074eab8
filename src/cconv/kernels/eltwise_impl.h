/* Portable bodies of the add and dropout micro-kernels (see eltwise.h), included once per ISA by
 * f32_veltwise__ISA.c with CCONV_ISA_SUFFIX defined. */
#include <stddef.h>
#include <stdint.h>

#include "eltwise.h"
#include "vmath.h"

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
