/* Pooling micro-kernels: max (with argmax), sum/average, global average; forward and backward.
 *
 * NHWC float32. Every kernel works on the channels of one pixel (or one channel block of an
 * image) and vectorises across them; the caller (cconv/_pool.pyx) walks the pixels and threads.
 * Strides are in floats. The body is shared by all ISAs (pool_impl.h); each f32_pool__ISA.c
 * supplies the vector primitives of its instruction set.
 */
#ifndef CCONV_POOL_H
#define CCONV_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "core/isa.h"

/* Max over one window, for `channels` channels of one output pixel.
 * The window's valid taps form a rows x cols grid: tap (r, q) is at x + r*row_stride +
 * q*col_stride and has the flat input index `index + r*row_step + q*col_step` (ih * W + iw).
 * y[c] is the maximum in row-major tap order, the first one on ties; a NaN wins (among several
 * NaNs the last one, as in PyTorch); idx[c] is its index. An empty window (rows or cols 0)
 * gives y = -inf and idx = -1. */
typedef void (*cconv_f32_maxpool_window_fn)(size_t rows, size_t cols, const float* x,
                                            size_t row_stride, size_t col_stride, int32_t index,
                                            int32_t row_step, int32_t col_step, size_t channels,
                                            float* y, int32_t* idx);

/* Max-pooling gradient of one channel block of one image, pixel after pixel (fixed order):
 * for p < pixels, c < channels: i = idx[p*stride + c]; if i >= 0: dx[i*stride + c] += dy[p*stride + c].
 * dy, idx and dx point at the block's first channel; stride is the image's channel count. */
typedef void (*cconv_f32_maxpool_backward_fn)(size_t pixels, size_t channels, size_t stride,
                                              const float* dy, const int32_t* idx, float* dx);

/* Sum over one window divided by `divisor`: y[c] = (sum_r sum_q tap(r, q)[c]) / divisor, the
 * taps of each row summed first, rows added in order. An empty window gives 0. */
typedef void (*cconv_f32_sumpool_window_fn)(size_t rows, size_t cols, const float* x,
                                            size_t row_stride, size_t col_stride, size_t channels,
                                            float divisor, float* y);

/* Gradient of sum/average pooling at one input pixel, gathered from the output pixels whose
 * windows hold it (rows x cols of them, row-major): dx[c] = sum dy(r, q)[c] / div(r, q) with
 * dy(r, q) at dy + r*row_stride + q*col_stride and div(r, q) = div[r*div_row_stride + q];
 * div == NULL means divisor 1 (sum pooling). Nothing to gather gives 0. */
typedef void (*cconv_f32_sumpool_backward_fn)(size_t rows, size_t cols, const float* dy,
                                              size_t row_stride, size_t col_stride,
                                              const float* div, size_t div_row_stride,
                                              size_t channels, float* dx);

/* Global-average-pooling gradient for `pixels` consecutive pixels: dx[p*channels + c] =
 * dy[c] / divisor. */
typedef void (*cconv_f32_gavgpool_backward_fn)(size_t pixels, size_t channels, const float* dy,
                                               float divisor, float* dx);

typedef struct {
    cconv_f32_maxpool_window_fn maxpool_window;
    cconv_f32_maxpool_backward_fn maxpool_backward;
    cconv_f32_sumpool_window_fn sumpool_window;
    cconv_f32_sumpool_backward_fn sumpool_backward;
    cconv_f32_gavgpool_backward_fn gavgpool_backward;
} cconv_pool_kernels;

#define CCONV_POOL_DECLARE(isa)                                                                 \
    void cconv_f32_maxpool_window__##isa(size_t, size_t, const float*, size_t, size_t, int32_t, \
                                         int32_t, int32_t, size_t, float*, int32_t*);           \
    void cconv_f32_maxpool_backward__##isa(size_t, size_t, size_t, const float*,                \
                                           const int32_t*, float*);                             \
    void cconv_f32_sumpool_window__##isa(size_t, size_t, const float*, size_t, size_t, size_t,  \
                                         float, float*);                                        \
    void cconv_f32_sumpool_backward__##isa(size_t, size_t, const float*, size_t, size_t,        \
                                           const float*, size_t, size_t, float*);               \
    void cconv_f32_gavgpool_backward__##isa(size_t, size_t, const float*, float, float*);

#define CCONV_POOL_TABLE(isa)                                                                   \
    (cconv_pool_kernels) {                                                                      \
        cconv_f32_maxpool_window__##isa, cconv_f32_maxpool_backward__##isa,                     \
            cconv_f32_sumpool_window__##isa, cconv_f32_sumpool_backward__##isa,                 \
            cconv_f32_gavgpool_backward__##isa                                                  \
    }

CCONV_POOL_DECLARE(scalar)
#if defined(__x86_64__) || defined(_M_X64)
CCONV_POOL_DECLARE(avx2)
CCONV_POOL_DECLARE(avx512)
#elif defined(__aarch64__)
CCONV_POOL_DECLARE(neon)
#endif

/* The one place where the pooling kernels are chosen. */
static inline cconv_pool_kernels cconv_pool_select(int isa) {
#if defined(__x86_64__) || defined(_M_X64)
    if (isa == CCONV_ISA_AVX512) return CCONV_POOL_TABLE(avx512);
    if (isa == CCONV_ISA_AVX2) return CCONV_POOL_TABLE(avx2);
#elif defined(__aarch64__)
    if (isa == CCONV_ISA_NEON) return CCONV_POOL_TABLE(neon);
#endif
    (void)isa;
    return CCONV_POOL_TABLE(scalar);
}

#endif
