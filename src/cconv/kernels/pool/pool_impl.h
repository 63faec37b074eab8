/* Portable body of the pooling kernels (pool.h), included once by each f32_pool__ISA.c.
 *
 * The including file defines, for its instruction set:
 *   POOL_FN(name)      the function name with the ISA suffix
 *   POOL_VLEN          floats per vector; POOL_UNROLL vectors per channel block
 *   vf_t, vi_t         float and int32 vectors
 *   vf_load/vf_store, vf_loadn/vf_storen (first n < POOL_VLEN lanes, others untouched),
 *   vf_zero, vf_set1, vf_add, vf_div, vi_set1, vi_store, vi_storen,
 *   vmax_update(&m, &i, v, iv): where v > m or v is NaN, m = v and i = iv.
 * Channels go in blocks of POOL_UNROLL vectors, then single vectors, then one partial vector,
 * so every channel sees the same operations in the same order on every ISA.
 */
#include <math.h>

#include "pool.h"

#define POOL_ALWAYS_INLINE static inline __attribute__((always_inline))

/* -------------------------------------------------------------------------------- max pooling */

POOL_ALWAYS_INLINE vf_t pool_ld(const float* p, size_t tail) {
    return tail ? vf_loadn(p, tail) : vf_load(p);
}

POOL_ALWAYS_INLINE void pool_st(float* p, vf_t v, size_t tail) {
    if (tail) vf_storen(p, v, tail);
    else vf_store(p, v);
}

/* U vectors of channels (U <= POOL_UNROLL), or one partial vector of `tail` lanes (U == 1). */
POOL_ALWAYS_INLINE void maxpool_block(const size_t U, const size_t tail, size_t rows, size_t cols,
                                      const float* x, size_t row_stride, size_t col_stride,
                                      int32_t index, int32_t row_step, int32_t col_step, float* y,
                                      int32_t* idx) {
    vf_t m[POOL_UNROLL];
    vi_t mi[POOL_UNROLL];
    const vi_t first = vi_set1(index);
    for (size_t u = 0; u < U; u++) {
        m[u] = pool_ld(x + u * POOL_VLEN, tail);
        mi[u] = first;
    }
    for (size_t r = 0; r < rows; r++) {
        const float* xr = x + r * row_stride;
        const int32_t ir = index + (int32_t)r * row_step;
        for (size_t q = (r == 0); q < cols; q++) {
            const float* xp = xr + q * col_stride;
            const vi_t iv = vi_set1(ir + (int32_t)q * col_step);
            for (size_t u = 0; u < U; u++)
                vmax_update(&m[u], &mi[u], pool_ld(xp + u * POOL_VLEN, tail), iv);
        }
    }
    for (size_t u = 0; u < U; u++) {
        pool_st(y + u * POOL_VLEN, m[u], tail);
        if (tail) vi_storen(idx + u * POOL_VLEN, mi[u], tail);
        else vi_store(idx + u * POOL_VLEN, mi[u]);
    }
}

void POOL_FN(cconv_f32_maxpool_window)(size_t rows, size_t cols, const float* x, size_t row_stride,
                                       size_t col_stride, int32_t index, int32_t row_step,
                                       int32_t col_step, size_t channels, float* y, int32_t* idx) {
    if (rows == 0 || cols == 0) {
        for (size_t c = 0; c < channels; c++) {
            y[c] = -INFINITY;
            idx[c] = -1;
        }
        return;
    }
    size_t c = 0;
    for (; c + POOL_UNROLL * POOL_VLEN <= channels; c += POOL_UNROLL * POOL_VLEN)
        maxpool_block(POOL_UNROLL, 0, rows, cols, x + c, row_stride, col_stride, index, row_step,
                      col_step, y + c, idx + c);
    for (; c + POOL_VLEN <= channels; c += POOL_VLEN)
        maxpool_block(1, 0, rows, cols, x + c, row_stride, col_stride, index, row_step, col_step,
                      y + c, idx + c);
    if (c < channels)
        maxpool_block(1, channels - c, rows, cols, x + c, row_stride, col_stride, index, row_step,
                      col_step, y + c, idx + c);
}

/* A scatter by index: the compiler gets the plain loop; lanes of one pixel never collide (they
 * are different channels), and pixels go in order, so the sums are deterministic. */
void POOL_FN(cconv_f32_maxpool_backward)(size_t pixels, size_t channels, size_t stride,
                                         const float* dy, const int32_t* idx, float* dx) {
    for (size_t p = 0; p < pixels; p++) {
        const float* g = dy + p * stride;
        const int32_t* ip = idx + p * stride;
        for (size_t c = 0; c < channels; c++) {
            const int32_t i = ip[c];
            if (i >= 0) dx[(size_t)i * stride + c] += g[c];
        }
    }
}

/* ---------------------------------------------------------------------- sum / average pooling */

POOL_ALWAYS_INLINE void sumpool_block(const size_t U, const size_t tail, size_t rows, size_t cols,
                                      const float* x, size_t row_stride, size_t col_stride,
                                      vf_t divisor, float* y) {
    vf_t acc[POOL_UNROLL];
    for (size_t u = 0; u < U; u++) acc[u] = vf_zero();
    for (size_t r = 0; r < rows; r++) {
        const float* xr = x + r * row_stride;
        vf_t part[POOL_UNROLL];
        for (size_t u = 0; u < U; u++) part[u] = vf_zero();
        for (size_t q = 0; q < cols; q++) {
            const float* xp = xr + q * col_stride;
            for (size_t u = 0; u < U; u++) part[u] = vf_add(part[u], pool_ld(xp + u * POOL_VLEN, tail));
        }
        for (size_t u = 0; u < U; u++) acc[u] = vf_add(acc[u], part[u]);
    }
    for (size_t u = 0; u < U; u++) pool_st(y + u * POOL_VLEN, vf_div(acc[u], divisor), tail);
}

void POOL_FN(cconv_f32_sumpool_window)(size_t rows, size_t cols, const float* x, size_t row_stride,
                                       size_t col_stride, size_t channels, float divisor,
                                       float* y) {
    const vf_t d = vf_set1(divisor);
    size_t c = 0;
    for (; c + POOL_UNROLL * POOL_VLEN <= channels; c += POOL_UNROLL * POOL_VLEN)
        sumpool_block(POOL_UNROLL, 0, rows, cols, x + c, row_stride, col_stride, d, y + c);
    for (; c + POOL_VLEN <= channels; c += POOL_VLEN)
        sumpool_block(1, 0, rows, cols, x + c, row_stride, col_stride, d, y + c);
    if (c < channels)
        sumpool_block(1, channels - c, rows, cols, x + c, row_stride, col_stride, d, y + c);
}

POOL_ALWAYS_INLINE void sumpool_backward_block(const size_t U, const size_t tail, size_t rows,
                                               size_t cols, const float* dy, size_t row_stride,
                                               size_t col_stride, const float* div,
                                               size_t div_row_stride, float* dx) {
    vf_t acc[POOL_UNROLL];
    for (size_t u = 0; u < U; u++) acc[u] = vf_zero();
    for (size_t r = 0; r < rows; r++) {
        for (size_t q = 0; q < cols; q++) {
            const float* g = dy + r * row_stride + q * col_stride;
            if (div) {
                const vf_t d = vf_set1(div[r * div_row_stride + q]);
                for (size_t u = 0; u < U; u++)
                    acc[u] = vf_add(acc[u], vf_div(pool_ld(g + u * POOL_VLEN, tail), d));
            } else {
                for (size_t u = 0; u < U; u++) acc[u] = vf_add(acc[u], pool_ld(g + u * POOL_VLEN, tail));
            }
        }
    }
    for (size_t u = 0; u < U; u++) pool_st(dx + u * POOL_VLEN, acc[u], tail);
}

void POOL_FN(cconv_f32_sumpool_backward)(size_t rows, size_t cols, const float* dy,
                                         size_t row_stride, size_t col_stride, const float* div,
                                         size_t div_row_stride, size_t channels, float* dx) {
    size_t c = 0;
    for (; c + POOL_UNROLL * POOL_VLEN <= channels; c += POOL_UNROLL * POOL_VLEN)
        sumpool_backward_block(POOL_UNROLL, 0, rows, cols, dy + c, row_stride, col_stride, div,
                               div_row_stride, dx + c);
    for (; c + POOL_VLEN <= channels; c += POOL_VLEN)
        sumpool_backward_block(1, 0, rows, cols, dy + c, row_stride, col_stride, div,
                               div_row_stride, dx + c);
    if (c < channels)
        sumpool_backward_block(1, channels - c, rows, cols, dy + c, row_stride, col_stride, div,
                               div_row_stride, dx + c);
}

/* ------------------------------------------------------------------- global average pooling */

void POOL_FN(cconv_f32_gavgpool_backward)(size_t pixels, size_t channels, const float* dy,
                                          float divisor, float* dx) {
    if (pixels == 0) return;
    /* First pixel: the division, channel-vectorised; the others copy it. */
    const vf_t d = vf_set1(divisor);
    size_t c = 0;
    for (; c + POOL_VLEN <= channels; c += POOL_VLEN) vf_store(dx + c, vf_div(vf_load(dy + c), d));
    if (c < channels) vf_storen(dx + c, vf_div(vf_loadn(dy + c, channels - c), d), channels - c);
    for (size_t p = 1; p < pixels; p++) {
        float* out = dx + p * channels;
        for (c = 0; c + POOL_VLEN <= channels; c += POOL_VLEN) vf_store(out + c, vf_load(dx + c));
        if (c < channels) vf_storen(out + c, vf_loadn(dx + c, channels - c), channels - c);
    }
}
