/* Depthwise convolution (groups == in_channels == out_channels: one kh x kw filter per channel):
 * forward, backward-data and backward-weight, NHWC float32, SIMD across channels.
 *
 * Every kernel works on one image row and all (or a range of) channels; the caller
 * (cconv/_depthwise.pyx) walks the rows, builds the row pointers (vertical padding is a row of
 * zeros, or NULL where a tap row does not reach the row at all) and runs the threads. The kernels
 * handle the horizontal geometry: border pixels, whose windows leave the image, read only their
 * valid taps; the interior pixels read every tap through a register tile of DWCONV_TILE pixels x
 * one channel vector, with the 3x3 case (9 taps) keeping its weight vectors in registers.
 *
 * Weights are packed tap-major, w[(i * kw + j) * channels + c] (PyTorch's (C, 1, kh, kw)
 * transposed). Every output element is computed by one call, in an order that depends on the
 * geometry only, so results do not depend on how rows or channels are split over threads.
 * The body is shared by all ISAs (dwconv_impl.h); each f32_dwconv__ISA.c supplies the vector
 * primitives of its instruction set.
 */
#ifndef CCONV_DWCONV_H
#define CCONV_DWCONV_H

#include <stddef.h>

#include "core/isa.h"

/* The horizontal geometry of a depthwise convolution, in the forward direction (x -> y). */
struct cconv_dw_geom {
    size_t channels;
    size_t in_w, out_w;
    size_t kernel_h, kernel_w;
    size_t stride_w, dilation_w;
    ptrdiff_t pad_left;
};

/* What the caller's next call will touch for the first time: every row kernel fetches it into
 * L2 while it computes (prefetcht2, prefetchw for `out`), so that the streams from and to
 * memory overlap the arithmetic. A hint only: nothing in it is read or written. NULL: none.
 *   in, n_in   consecutive rows of the kernel's input (x, or dy for backward-data);
 *   out        the next output row (y or dx), NULL for none;
 *   dy         backward-weight only: the next row of dy. */
struct cconv_dw_next {
    const float* in;
    size_t n_in;
    float* out;
    const float* dy;
};

/* Forward, one output row: y[ow][c] = clamp(bias[c] + sum_{i, j} rows[i][iw][c] * w[i, j][c])
 * with iw = ow * stride_w - pad_left + j * dilation_w, the taps with iw outside [0, in_w) left
 * out. rows: kernel_h pointers to input rows (in_w * channels floats; a row of zeros stands for
 * vertical padding). bias may be NULL (zero). clamp(v) = min(cmax, max(cmin, v)), NaN kept.
 * scratch: 2 * kernel_h * kernel_w pointers. */
typedef void (*cconv_dwconv_forward_row_fn)(const struct cconv_dw_geom* g, const float* const* rows,
                                         const float* w, const float* bias, float* y, float cmin,
                                         float cmax, const struct cconv_dw_next* next,
                                         const float** scratch);

/* Backward-data, one input row: dx[iw][c] = sum over the taps (i, j) and output pixels ow with
 * ow * stride_w - pad_left + j * dilation_w == iw of dy_rows[i][ow][c] * w[i, j][c].
 * dy_rows: kernel_h pointers to rows of dy (out_w * channels floats): the output row that tap
 * row i maps onto this input row, a row of zeros when that output row is outside dy, or NULL
 * when tap row i reaches no output row (stride phase). Input pixels are split by the horizontal
 * stride phase, each phase a dense gather over its own taps (no scatter). Every pixel of dx is
 * written. scratch: 2 * kernel_h * kernel_w pointers. */
typedef void (*cconv_dwconv_backward_data_row_fn)(const struct cconv_dw_geom* g,
                                               const float* const* dy_rows, const float* w,
                                               float* dx, const struct cconv_dw_next* next,
                                               const float** scratch);

/* Backward-weight, one output row, channels [c_begin, c_end) and tap rows [i_begin, i_end):
 * acc[(i * kw + j) * channels + c] += sum_ow rows[i][iw][c] * dy[ow][c] (iw as in the forward,
 * taps outside the image left out; rows[i]: a row of zeros or NULL for tap row i outside the
 * image). The sum over a run of pixels (a whole row for 3x3 kernels) is taken in float, pixel
 * after pixel, then added to the float64 acc. c_begin must be a multiple of
 * DWCONV_CHANNEL_BLOCK. Only channels [c_begin, c_end) of `next` are
 * fetched. scratch: 2 * kernel_h * kernel_w pointers. */
typedef void (*cconv_dwconv_backward_weight_row_fn)(const struct cconv_dw_geom* g,
                                                 const float* const* rows, const float* dy,
                                                 size_t c_begin, size_t c_end, size_t i_begin,
                                                 size_t i_end, double* acc,
                                                 const struct cconv_dw_next* next,
                                                 const float** scratch);

/* Channels per work unit of the backward-weight pass: a multiple of every SIMD width. */
#define DWCONV_CHANNEL_BLOCK 16

typedef struct {
    cconv_dwconv_forward_row_fn forward_row;
    cconv_dwconv_backward_data_row_fn backward_data_row;
    cconv_dwconv_backward_weight_row_fn backward_weight_row;
} cconv_dwconv_kernels;

#define CCONV_DWCONV_DECLARE(isa)                                                                  \
    void f32_dwconv_forward_row__##isa(const struct cconv_dw_geom*, const float* const*,           \
                                       const float*, const float*, float*, float, float,        \
                                       const struct cconv_dw_next*, const float**);                \
    void f32_dwconv_backward_data_row__##isa(const struct cconv_dw_geom*, const float* const*,     \
                                             const float*, float*, const struct cconv_dw_next*,    \
                                             const float**);                                    \
    void f32_dwconv_backward_weight_row__##isa(const struct cconv_dw_geom*, const float* const*,   \
                                               const float*, size_t, size_t, size_t, size_t,    \
                                               double*, const struct cconv_dw_next*,               \
                                               const float**);

#define CCONV_DWCONV_TABLE(isa)                                                                    \
    (cconv_dwconv_kernels) {                                                                       \
        f32_dwconv_forward_row__##isa, f32_dwconv_backward_data_row__##isa,                     \
            f32_dwconv_backward_weight_row__##isa                                               \
    }

CCONV_DWCONV_DECLARE(scalar)
#if defined(__x86_64__) || defined(_M_X64)
CCONV_DWCONV_DECLARE(avx2)
CCONV_DWCONV_DECLARE(avx512)
#endif

/* The one place where the depthwise kernels are chosen. */
static inline cconv_dwconv_kernels cconv_dwconv_select(int isa) {
#if defined(__x86_64__) || defined(_M_X64)
    if (isa == CCONV_ISA_AVX512) return CCONV_DWCONV_TABLE(avx512);
    if (isa == CCONV_ISA_AVX2) return CCONV_DWCONV_TABLE(avx2);
#endif
    (void)isa;
    return CCONV_DWCONV_TABLE(scalar);
}

#endif
