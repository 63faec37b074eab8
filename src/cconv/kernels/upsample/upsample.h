/* Upsampling micro-kernel (nearest and bilinear, forward and backward): one weighted gather.
 *
 * Both interpolations are separable: an output row is a weighted sum of input rows, an output
 * pixel a weighted sum of the pixels of that row; their gradients are the same sums with the
 * tables transposed (gathered per input row, so no scatter and no atomics). cconv/_upsample.pyx
 * builds the tables (PyTorch's index and weight rules) and runs the two passes over NHWC rows;
 * this kernel computes one pass. Plain C loops over the contiguous axis (channels, or a whole
 * row), auto-vectorised with each ISA's flags (f32_upsample__ISA.c): the work is a few
 * multiply-adds per float read, so the loops run at memory speed.
 */
#ifndef CCONV_UPSAMPLE_H
#define CCONV_UPSAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "core/isa.h"

/* For i < count, j < len:
 *   dst[i*len + j] = sum over k in [offsets[i], offsets[i+1]) of weight[k] * src[index[k]*stride + j]
 * terms added in k order, the first one a plain product (a single term of weight 1 copies its
 * source exactly, -0 and NaN included); an empty sum gives 0. */
typedef void (*cconv_f32_upsample_gather_fn)(size_t count, size_t len, const int32_t* offsets,
                                             const int32_t* index, const float* weight,
                                             const float* src, size_t stride, float* dst);

struct cconv_upsample_kernels {
    cconv_f32_upsample_gather_fn gather;
};

#define CCONV_UPSAMPLE_DECLARE(isa)                                                              \
    void cconv_f32_upsample_gather__##isa(size_t count, size_t len, const int32_t* offsets,      \
                                          const int32_t* index, const float* weight,             \
                                          const float* src, size_t stride, float* dst);

#define CCONV_UPSAMPLE_TABLE(isa) \
    (struct cconv_upsample_kernels) { cconv_f32_upsample_gather__##isa }

CCONV_UPSAMPLE_DECLARE(scalar)
#if defined(__x86_64__) || defined(_M_X64)
CCONV_UPSAMPLE_DECLARE(avx2)
CCONV_UPSAMPLE_DECLARE(avx512)
#elif defined(__aarch64__)
CCONV_UPSAMPLE_DECLARE(neon)
#endif

/* The one place where the upsampling kernels are chosen. */
static inline struct cconv_upsample_kernels cconv_upsample_select(int isa) {
#if defined(__x86_64__) || defined(_M_X64)
    if (isa == CCONV_ISA_AVX512) return CCONV_UPSAMPLE_TABLE(avx512);
    if (isa == CCONV_ISA_AVX2) return CCONV_UPSAMPLE_TABLE(avx2);
#elif defined(__aarch64__)
    if (isa == CCONV_ISA_NEON) return CCONV_UPSAMPLE_TABLE(neon);
#endif
    (void)isa;
    return CCONV_UPSAMPLE_TABLE(scalar);
}

#endif
