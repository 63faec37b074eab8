/* Portable body of the depthwise-convolution kernels (dwconv.h), included once by each
 * f32_dwconv__ISA.c.
 *
 * The including file defines, for its instruction set:
 *   DW_FN(name)        the function name with the ISA suffix
 *   DW_VLEN            floats per vector; DW_TILE output pixels per register tile
 *   vf_t               the float vector
 *   vf_load/vf_store, vf_loadn/vf_storen (first n < DW_VLEN lanes; loadn zeroes the others,
 *   storen leaves them untouched), vf_zero, vf_set1, vf_fma(a, b, c) = a * b + c,
 *   vf_max(a, b), vf_min(a, b) (b when either is NaN, as x86 MAXPS/MINPS),
 *   vf_acc64(a, v, n): a[k] += (double)v[k] for the first n lanes (all when n == 0).
 *
 * A "segment" is a run of pixels that all read the same list of taps: the interior of a row
 * (every tap inside the image) is one segment, each border pixel is a segment of one pixel with
 * its valid taps only. Within a segment the pixels go in register tiles and the channels in
 * vectors (the last one masked). 3x3 kernels with dilation 1 and stride 1 or 2 have tiles that
 * load each input vector once for all the taps that read it. Per output element the arithmetic
 * is always the same: start from the bias (or zero) and add the taps in list order with one FMA
 * each; per weight-gradient element: a float sum over a run of pixels in order (a segment, or a
 * whole row for 3x3), from zero, added to the float64 accumulator. So the results depend on the
 * shapes only, never on how the caller splits rows over threads.
 *
 * Every row kernel also fetches into L2, while it computes, what the caller's next call will
 * read for the first time (struct cconv_dw_next): the streams from and to memory then overlap the
 * arithmetic, which matters because depthwise convolution does little arithmetic per byte.
 */
#include <math.h>
#include <stddef.h>

#include "dwconv.h"

#define DW_INLINE static inline __attribute__((always_inline))

DW_INLINE vf_t dw_ld(const float* p, size_t tail) {
    return (DW_VLEN > 1 && tail) ? vf_loadn(p, tail) : vf_load(p);
}

DW_INLINE void dw_st(float* p, vf_t v, size_t tail) {
    if (DW_VLEN > 1 && tail) vf_storen(p, v, tail);
    else vf_store(p, v);
}

/* min(hi, max(lo, v)): a NaN in v comes through. */
DW_INLINE vf_t dw_clamp(vf_t v, vf_t lo, vf_t hi) { return vf_min(hi, vf_max(lo, v)); }

/* Rows that the caller's next call will read for the first time: while a run of output
 * pixels is computed, the same part of those rows is fetched into L2 (prefetcht2), so that the
 * streams from memory overlap the arithmetic. base is at the run's first pixel; an output pixel
 * covers `step` floats of each row, in pixels of `pix` floats (step = stride * pix). */
struct dw_pf {
    const float* base;
    size_t rows, row_floats, step, pix;
    int write;  /* to be written: fetched for ownership (prefetchw) */
};

/* Output pixels [p, p + n) of every prefetched row, channels [c0, c0 + nc) of each pixel. */
DW_INLINE void dw_prefetch(const struct dw_pf* pf, size_t p, size_t n, size_t c0, size_t nc) {
    if (!pf || !pf->rows) return;
    for (size_t r = 0; r < pf->rows; r++) {
        const float* row = pf->base + r * pf->row_floats;
        if (nc == pf->pix) {  /* whole pixels: one contiguous range */
            const char* a = (const char*)(row + p * pf->step);
            const char* b = (const char*)(row + (p + n) * pf->step);
            if (pf->write)
                for (; a < b; a += 64) __builtin_prefetch(a, 1, 1);
            else
                for (; a < b; a += 64) __builtin_prefetch(a, 0, 1);
            continue;
        }
        for (const float* q = row + p * pf->step + c0; q < row + (p + n) * pf->step; q += pf->pix) {
            __builtin_prefetch(q, 0, 1);
            if (((size_t)q & 63) + nc * sizeof(float) > 64)  /* the channels cross a line */
                __builtin_prefetch(q + nc - 1, 0, 1);
        }
    }
}

/* The prefetch of a run that starts `off` floats into rows of `row_floats` floats. */
static struct dw_pf dw_pf_at(const float* next, size_t n_next, size_t row_floats, ptrdiff_t off,
                             size_t step, size_t pix) {
    struct dw_pf pf = {NULL, 0, row_floats, step, pix, 0};
    if (next && n_next) {
        pf.base = next + off;
        pf.rows = n_next;
    }
    return pf;
}

/* The pixels [lo, hi) of an output row whose every tap lies inside [0, in): o*s - pad >= 0 and
 * o*s - pad + (k-1)*d <= in - 1. Returns lo <= hi <= out. */
static void dw_interior(size_t in, size_t out, size_t k, size_t s, size_t d, ptrdiff_t pad,
                        size_t* lo, size_t* hi) {
    size_t a = pad > 0 ? ((size_t)pad + s - 1) / s : 0;
    const ptrdiff_t last = (ptrdiff_t)in - 1 + pad - (ptrdiff_t)((k - 1) * d);
    size_t b = last < 0 ? 0 : (size_t)last / s + 1;
    if (a > out) a = out;
    if (b > out) b = out;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}

/* ------------------------------------------------------------------------ output segments */

/* U pixels from p (U a compile-time width) of one channel vector at c0:
 * y[q*y_step] = clamp(b + sum_t xp[t][q*x_step] * w_t) for q in [p, p+U). NT > 0: exactly NT
 * taps, weights wv[] held in registers; NT == 0: nt taps, weights loaded from wp[]. */
DW_INLINE void dw_out_tile(const size_t NT, size_t nt, const size_t U, const size_t tail,
                           size_t c0, size_t p, const float* const* xp, const float* const* wp,
                           const vf_t* wv, size_t x_step, vf_t b, float* y, size_t y_step,
                           vf_t lo, vf_t hi) {
    const size_t n_taps = NT ? NT : nt;
    vf_t acc[DW_TILE];
#pragma GCC unroll 16
    for (size_t u = 0; u < U; u++) acc[u] = b;
#pragma GCC unroll 16
    for (size_t t = 0; t < n_taps; t++) {
        const vf_t w = NT ? wv[t] : dw_ld(wp[t] + c0, tail);
        const float* x = xp[t] + c0 + p * x_step;
#pragma GCC unroll 16
        for (size_t u = 0; u < U; u++) acc[u] = vf_fma(dw_ld(x + u * x_step, tail), w, acc[u]);
    }
#pragma GCC unroll 16
    for (size_t u = 0; u < U; u++) dw_st(y + c0 + (p + u) * y_step, dw_clamp(acc[u], lo, hi), tail);
}

/* The 3x3 taps as three rows of three adjacent pixels (xp[3i + j] == xp[3i] + j*C, C floats a
 * pixel), output pixel u reading pixel u*S + j of each row (S = 1 or 2, compile-time): each
 * input vector is loaded once per tile and feeds every tap that reads it. Per output element
 * the FMAs come in the same (i, j) order as in dw_out_tile, so the results are the same. */
DW_INLINE void dw_out_tile3(const size_t S, const size_t U, const size_t tail, size_t C,
                            size_t c0, size_t p, const float* const* xp, const vf_t* wv, vf_t b,
                            float* y, size_t y_step, vf_t lo, vf_t hi) {
    vf_t acc[DW_TILE];
#pragma GCC unroll 16
    for (size_t u = 0; u < U; u++) acc[u] = b;
#pragma GCC unroll 3
    for (size_t i = 0; i < 3; i++) {
        const float* r = xp[3 * i] + c0 + p * S * C;
#pragma GCC unroll 32
        for (size_t px = 0; px < (U - 1) * S + 3; px++) {
            const vf_t xv = dw_ld(r + px * C, tail);
#pragma GCC unroll 3
            for (size_t j = 0; j < 3; j++) {
                if (px >= j && (px - j) % S == 0 && (px - j) / S < U)
                    acc[(px - j) / S] = vf_fma(xv, wv[3 * i + j], acc[(px - j) / S]);
            }
        }
    }
#pragma GCC unroll 16
    for (size_t u = 0; u < U; u++) dw_st(y + c0 + (p + u) * y_step, dw_clamp(acc[u], lo, hi), tail);
}

/* How a segment's taps are read: any list (runtime count), 9 taps with their weights in
 * registers, or the 3x3 row layout of dw_out_tile3 with stride 1 or 2. */
enum { DW_ANY = 0, DW_NINE = 9, DW_ROWS3_S1 = 31, DW_ROWS3_S2 = 32 };

DW_INLINE void dw_out_tile_any(const int MODE, size_t nt, const size_t U, const size_t tail,
                               size_t C, size_t c0, size_t p, const float* const* xp,
                               const float* const* wp, const vf_t* wv, size_t x_step, vf_t b,
                               float* y, size_t y_step, vf_t lo, vf_t hi) {
    if (MODE == DW_ROWS3_S1) dw_out_tile3(1, U, tail, C, c0, p, xp, wv, b, y, y_step, lo, hi);
    else if (MODE == DW_ROWS3_S2) dw_out_tile3(2, U, tail, C, c0, p, xp, wv, b, y, y_step, lo, hi);
    else dw_out_tile(MODE == DW_NINE ? 9 : 0, nt, U, tail, c0, p, xp, wp, wv, x_step, b, y, y_step,
                     lo, hi);
}

/* U pixels from p, every channel: the channel vectors in order, each with its weights. */
DW_INLINE void dw_out_tile_channels(const int MODE, size_t nt, const size_t U, size_t channels,
                                    size_t p, const float* const* xp, const float* const* wp,
                                    size_t x_step, const float* bias, float* y, size_t y_step,
                                    vf_t lo, vf_t hi, const struct dw_pf* pf) {
    const size_t NT = MODE == DW_ANY ? 0 : 9;
    dw_prefetch(pf, p, U, 0, pf ? pf->pix : 0);
    dw_prefetch(pf ? pf + 1 : NULL, p, U, 0, pf ? pf[1].pix : 0);
    const size_t tail = channels % DW_VLEN, full = channels - tail;
    vf_t wv[9];
    for (size_t c0 = 0; c0 < full; c0 += DW_VLEN) {
#pragma GCC unroll 16
        for (size_t t = 0; t < NT; t++) wv[t] = vf_load(wp[t] + c0);
        dw_out_tile_any(MODE, nt, U, 0, channels, c0, p, xp, wp, wv, x_step,
                        bias ? vf_load(bias + c0) : vf_zero(), y, y_step, lo, hi);
    }
    if (DW_VLEN > 1 && tail) {
#pragma GCC unroll 16
        for (size_t t = 0; t < NT; t++) wv[t] = dw_ld(wp[t] + full, tail);
        dw_out_tile_any(MODE, nt, U, tail, channels, full, p, xp, wp, wv, x_step,
                        bias ? dw_ld(bias + full, tail) : vf_zero(), y, y_step, lo, hi);
    }
}

/* npix pixels, pixel tiles outer and channel vectors inner, so that the input and output rows
 * are read and written front to back. Full tiles, then a last full tile that overlaps the
 * previous one (the pixels computed twice get the same bits), or for short runs halving tiles. */
DW_INLINE void dw_out_run(const int MODE, size_t nt, size_t channels, size_t npix,
                          const float* const* xp, const float* const* wp, size_t x_step,
                          const float* bias, float* y, size_t y_step, vf_t lo, vf_t hi,
                          const struct dw_pf* pf) {
    if (npix >= DW_TILE) {
        size_t p = 0;
        for (; p + DW_TILE <= npix; p += DW_TILE)
            dw_out_tile_channels(MODE, nt, DW_TILE, channels, p, xp, wp, x_step, bias, y, y_step,
                                 lo, hi, pf);
        if (p < npix)
            dw_out_tile_channels(MODE, nt, DW_TILE, channels, npix - DW_TILE, xp, wp, x_step,
                                 bias, y, y_step, lo, hi, pf);
        return;
    }
    size_t p = 0;
    if (DW_TILE > 4 && npix - p >= 4) {
        dw_out_tile_channels(MODE, nt, 4, channels, p, xp, wp, x_step, bias, y, y_step, lo, hi, pf);
        p += 4;
    }
    if (DW_TILE > 2 && npix - p >= 2) {
        dw_out_tile_channels(MODE, nt, 2, channels, p, xp, wp, x_step, bias, y, y_step, lo, hi, pf);
        p += 2;
    }
    if (p < npix)
        dw_out_tile_channels(MODE, nt, 1, channels, p, xp, wp, x_step, bias, y, y_step, lo, hi, pf);
}

/* Whether 9 taps are three rows of three adjacent pixels (the layout of dw_out_tile3). */
static int dw_rows3(size_t nt, const float* const* xp, size_t C) {
    if (nt != 9) return 0;
    for (size_t t = 0; t < 9; t++)
        if (xp[t] != xp[t - t % 3] + (t % 3) * C) return 0;
    return 1;
}

/* One pixel, channel vectors [c0, c0 + U*DW_VLEN) side by side (independent FMA chains). */
DW_INLINE void dw_out_pixel(const size_t U, size_t nt, size_t c0, const float* const* xp,
                            const float* const* wp, const float* bias, float* y, vf_t lo,
                            vf_t hi) {
    vf_t acc[DW_TILE];
#pragma GCC unroll 16
    for (size_t u = 0; u < U; u++) acc[u] = bias ? vf_load(bias + c0 + u * DW_VLEN) : vf_zero();
    for (size_t t = 0; t < nt; t++) {
#pragma GCC unroll 16
        for (size_t u = 0; u < U; u++)
            acc[u] = vf_fma(vf_load(xp[t] + c0 + u * DW_VLEN), vf_load(wp[t] + c0 + u * DW_VLEN),
                            acc[u]);
    }
#pragma GCC unroll 16
    for (size_t u = 0; u < U; u++) vf_store(y + c0 + u * DW_VLEN, dw_clamp(acc[u], lo, hi));
}

/* All channels of one segment. pf: NULL, or two prefetches: the inputs and the outputs of the
 * caller's next call. */
static void dw_out_segment(size_t channels, size_t nt, size_t npix, const float* const* xp,
                           const float* const* wp, size_t x_step, const float* bias, float* y,
                           size_t y_step, float cmin, float cmax, const struct dw_pf* pf) {
    const vf_t lo = vf_set1(cmin), hi = vf_set1(cmax);
    const size_t tail = channels % DW_VLEN, full = channels - tail;
    if (npix == 1) {  /* border pixels: several channel vectors at a time */
        size_t c0 = 0;
        for (; c0 + DW_TILE * DW_VLEN <= full; c0 += DW_TILE * DW_VLEN)
            dw_out_pixel(DW_TILE, nt, c0, xp, wp, bias, y, lo, hi);
        for (; c0 < full; c0 += DW_VLEN) dw_out_pixel(1, nt, c0, xp, wp, bias, y, lo, hi);
        if (DW_VLEN > 1 && tail)
            dw_out_tile(0, nt, 1, tail, full, 0, xp, wp, NULL, 0,
                        bias ? dw_ld(bias + full, tail) : vf_zero(), y, y_step, lo, hi);
        return;
    }
    if (dw_rows3(nt, xp, channels) && x_step == channels)
        dw_out_run(DW_ROWS3_S1, 9, channels, npix, xp, wp, x_step, bias, y, y_step, lo, hi, pf);
    else if (dw_rows3(nt, xp, channels) && x_step == 2 * channels)
        dw_out_run(DW_ROWS3_S2, 9, channels, npix, xp, wp, x_step, bias, y, y_step, lo, hi, pf);
    else if (nt == 9)
        dw_out_run(DW_NINE, 9, channels, npix, xp, wp, x_step, bias, y, y_step, lo, hi, pf);
    else
        dw_out_run(DW_ANY, nt, channels, npix, xp, wp, x_step, bias, y, y_step, lo, hi, pf);
}

/* ----------------------------------------------------------------------------- forward */

void DW_FN(f32_dwconv_forward_row)(const struct cconv_dw_geom* g, const float* const* rows,
                                   const float* w, const float* bias, float* y, float cmin,
                                   float cmax, const struct cconv_dw_next* next,
                                   const float** scratch) {
    const size_t C = g->channels, kh = g->kernel_h, kw = g->kernel_w;
    const size_t s = g->stride_w, d = g->dilation_w, in_w = g->in_w, out_w = g->out_w;
    const ptrdiff_t pl = g->pad_left;
    const float** xp = scratch;
    const float** wp = scratch + kh * kw;
    size_t lo, hi;
    dw_interior(in_w, out_w, kw, s, d, pl, &lo, &hi);

    for (size_t ow = 0; ow < out_w; ow++) {
        if (ow == lo) ow = hi;  /* the interior comes below */
        if (ow >= out_w) break;
        size_t nt = 0;
        for (size_t i = 0; i < kh; i++) {
            if (!rows[i]) continue;
            for (size_t j = 0; j < kw; j++) {
                const ptrdiff_t iw = (ptrdiff_t)(ow * s + j * d) - pl;
                if (iw < 0 || iw >= (ptrdiff_t)in_w) continue;
                xp[nt] = rows[i] + (size_t)iw * C;
                wp[nt] = w + (i * kw + j) * C;
                nt++;
            }
        }
        dw_out_segment(C, nt, 1, xp, wp, 0, bias, y + ow * C, C, cmin, cmax, NULL);
    }
    if (hi > lo) {
        size_t nt = 0;
        for (size_t i = 0; i < kh; i++) {
            if (!rows[i]) continue;
            for (size_t j = 0; j < kw; j++) {
                xp[nt] = rows[i] + (size_t)((ptrdiff_t)(lo * s + j * d) - pl) * C;
                wp[nt] = w + (i * kw + j) * C;
                nt++;
            }
        }
        struct dw_pf pf[2] = {
            dw_pf_at(next ? next->in : NULL, next ? next->n_in : 0, in_w * C,
                     ((ptrdiff_t)(lo * s) - pl) * (ptrdiff_t)C, s * C, C),
            dw_pf_at(next ? next->out : NULL, 1, out_w * C, (ptrdiff_t)(lo * C), C, C)};
        pf[1].write = 1;
        dw_out_segment(C, nt, hi - lo, xp, wp, s * C, bias, y + lo * C, C, cmin, cmax, pf);
    }
}

/* ----------------------------------------------------------------------- backward data */

void DW_FN(f32_dwconv_backward_data_row)(const struct cconv_dw_geom* g, const float* const* dy_rows,
                                         const float* w, float* dx,
                                         const struct cconv_dw_next* next, const float** scratch) {
    const size_t C = g->channels, kh = g->kernel_h, kw = g->kernel_w;
    const size_t s = g->stride_w, d = g->dilation_w, in_w = g->in_w, out_w = g->out_w;
    const ptrdiff_t pl = g->pad_left;
    const float** xp = scratch;
    const float** wp = scratch + kh * kw;
    int any_row = 0;
    for (size_t i = 0; i < kh; i++) any_row |= dy_rows[i] != NULL;

    /* Input pixel iw = ph + q*s (phase ph) receives tap j from output pixel ow = q + off_j,
     * off_j = (ph + pad - j*d) / s, for the taps j where that division is exact. */
    for (size_t ph = 0; ph < s && ph < in_w; ph++) {
        const size_t nq = (in_w - ph + s - 1) / s;
        ptrdiff_t q_lo = 0, q_hi = (ptrdiff_t)nq;
        size_t n_j = 0;
        for (size_t j = 0; j < kw; j++) {
            const ptrdiff_t v = (ptrdiff_t)ph + pl - (ptrdiff_t)(j * d);
            if (v % (ptrdiff_t)s) continue;
            const ptrdiff_t off = v / (ptrdiff_t)s;
            n_j++;
            if (-off > q_lo) q_lo = -off;
            if ((ptrdiff_t)out_w - off < q_hi) q_hi = (ptrdiff_t)out_w - off;
        }
        if (!any_row || n_j == 0) {  /* no tap reaches this phase: zero gradient */
            for (size_t q = 0; q < nq; q++) {
                float* p = dx + (ph + q * s) * C;
                for (size_t c = 0; c < C; c++) p[c] = 0.0f;
            }
            continue;
        }
        if (q_lo > (ptrdiff_t)nq) q_lo = (ptrdiff_t)nq;
        if (q_hi < q_lo) q_hi = q_lo;

        for (size_t q = 0; q < nq; q++) {
            if ((ptrdiff_t)q == q_lo) q = (size_t)q_hi;
            if (q >= nq) break;
            size_t nt = 0;
            for (size_t i = 0; i < kh; i++) {
                if (!dy_rows[i]) continue;
                for (size_t jj = 0; jj < kw; jj++) {
                    const size_t j = kw - 1 - jj;
                    const ptrdiff_t v = (ptrdiff_t)ph + pl - (ptrdiff_t)(j * d);
                    if (v % (ptrdiff_t)s) continue;
                    const ptrdiff_t ow = (ptrdiff_t)q + v / (ptrdiff_t)s;
                    if (ow < 0 || ow >= (ptrdiff_t)out_w) continue;
                    xp[nt] = dy_rows[i] + (size_t)ow * C;
                    wp[nt] = w + (i * kw + j) * C;
                    nt++;
                }
            }
            dw_out_segment(C, nt, 1, xp, wp, 0, NULL, dx + (ph + q * s) * C, C, -INFINITY,
                           INFINITY, NULL);
        }
        if (q_hi > q_lo) {
            size_t nt = 0;
            const float* first_row = NULL;
            for (size_t i = 0; i < kh; i++) {
                if (!dy_rows[i]) continue;
                if (!first_row) first_row = dy_rows[i];
                for (size_t jj = 0; jj < kw; jj++) {  /* j descending: dy pixels ascending */
                    const size_t j = kw - 1 - jj;
                    const ptrdiff_t v = (ptrdiff_t)ph + pl - (ptrdiff_t)(j * d);
                    if (v % (ptrdiff_t)s) continue;
                    xp[nt] = dy_rows[i] + (size_t)(q_lo + v / (ptrdiff_t)s) * C;
                    wp[nt] = w + (i * kw + j) * C;
                    nt++;
                }
            }
            /* the first phase fetches the next call's new row of dy from its first tap on,
             * and the next row of dx */
            struct dw_pf pf[2] = {
                dw_pf_at(ph == 0 && next ? next->in : NULL, next ? next->n_in : 0, out_w * C,
                         xp[0] - first_row, C, C),
                dw_pf_at(ph == 0 && next ? next->out : NULL, 1, in_w * C, q_lo * (ptrdiff_t)(s * C),
                         s * C, s * C)};
            pf[1].write = 1;
            dw_out_segment(C, nt, (size_t)(q_hi - q_lo), xp, wp, C, NULL,
                           dx + (ph + (size_t)q_lo * s) * C, s * C, -INFINITY, INFINITY, pf);
        }
    }
}

/* --------------------------------------------------------------------- backward weight */

/* NT taps (a compile-time count) of one channel vector: for each tap, a float sum over the
 * segment's pixels in order, from zero, then added to its float64 accumulator. */
DW_INLINE void dw_w_block(const size_t NT, const size_t tail, size_t c0, size_t npix,
                          const float* const* xp, const size_t* tix, size_t x_step,
                          const float* dy, size_t C, double* acc, const struct dw_pf* pf,
                          const struct dw_pf* pf_dy) {
    vf_t sum[9];  /* NT <= 9 */
#pragma GCC unroll 16
    for (size_t t = 0; t < NT; t++) sum[t] = vf_zero();
    const float* dyc = dy + c0;
    for (size_t p0 = 0; p0 < npix; p0 += DW_TILE) {
        const size_t n = npix - p0 < DW_TILE ? npix - p0 : DW_TILE;
        dw_prefetch(pf, p0, n, c0, DW_VLEN);
        dw_prefetch(pf_dy, p0, n, c0, DW_VLEN);
        for (size_t p = p0; p < p0 + n; p++) {
            const vf_t dv = dw_ld(dyc + p * C, tail);
#pragma GCC unroll 16
            for (size_t t = 0; t < NT; t++)
                sum[t] = vf_fma(dw_ld(xp[t] + c0 + p * x_step, tail), dv, sum[t]);
        }
    }
#pragma GCC unroll 16
    for (size_t t = 0; t < NT; t++) vf_acc64(acc + tix[t] * C + c0, sum[t], tail);
}

/* 3x3 taps, dilation 1, stride S (1 or 2): U output pixels of one channel vector, reading
 * columns iw .. iw + (U-1)*S + 2 of the three input rows (iw: column of tap j = 0 of the first
 * pixel). Each input vector is loaded once and feeds every tap that reads it; each tap's sum
 * takes the pixels in order. GUARD: columns outside [0, in_w) read as zeros (the padding). */
DW_INLINE void dw_w_tile3(const size_t S, const size_t U, const int GUARD, const size_t tail,
                          size_t C, size_t c0, const float* const* rows, ptrdiff_t iw,
                          size_t in_w, const float* dy, vf_t* sum) {
    vf_t dv[DW_TILE];
#pragma GCC unroll 16
    for (size_t u = 0; u < U; u++) dv[u] = dw_ld(dy + c0 + u * C, tail);
#pragma GCC unroll 3
    for (size_t i = 0; i < 3; i++) {
#pragma GCC unroll 32
        for (size_t px = 0; px < (U - 1) * S + 3; px++) {
            const ptrdiff_t col = iw + (ptrdiff_t)px;
            vf_t xv;
            if (GUARD && (col < 0 || col >= (ptrdiff_t)in_w)) xv = vf_zero();
            else xv = dw_ld(rows[i] + (size_t)col * C + c0, tail);
#pragma GCC unroll 3
            for (size_t j = 0; j < 3; j++) {
                if (px >= j && (px - j) % S == 0 && (px - j) / S < U)
                    sum[3 * i + j] = vf_fma(xv, dv[(px - j) / S], sum[3 * i + j]);
            }
        }
    }
}

/* A whole output row of one channel vector in 3x3 tiles: every pixel, border ones included
 * (their taps in the padding read zeros), summed in order, then added to acc. */
DW_INLINE void dw_w_row3(const size_t S, const size_t tail, size_t c0, size_t out_w,
                         size_t in_w, ptrdiff_t pl, const float* const* rows, const float* dy,
                         size_t C, double* acc, const struct dw_pf* pf,
                         const struct dw_pf* pf_dy) {
    vf_t sum[9];
#pragma GCC unroll 16
    for (size_t t = 0; t < 9; t++) sum[t] = vf_zero();
    size_t p = 0;
    for (; p + DW_TILE <= out_w; p += DW_TILE) {
        dw_prefetch(pf, p, DW_TILE, c0, DW_VLEN);
        dw_prefetch(pf_dy, p, DW_TILE, c0, DW_VLEN);
        const ptrdiff_t iw = (ptrdiff_t)(p * S) - pl;
        if (iw >= 0 && iw + (ptrdiff_t)((DW_TILE - 1) * S + 2) < (ptrdiff_t)in_w)
            dw_w_tile3(S, DW_TILE, 0, tail, C, c0, rows, iw, in_w, dy + p * C, sum);
        else
            dw_w_tile3(S, DW_TILE, 1, tail, C, c0, rows, iw, in_w, dy + p * C, sum);
    }
    for (; p < out_w; p++)
        dw_w_tile3(S, 1, 1, tail, C, c0, rows, (ptrdiff_t)(p * S) - pl, in_w, dy + p * C, sum);
#pragma GCC unroll 16
    for (size_t t = 0; t < 9; t++) vf_acc64(acc + t * C + c0, sum[t], tail);
}

/* Channels [c_begin, c_end) of one segment, one channel vector after the other; the taps in
 * groups held in registers (the grouping does not change any element's arithmetic). */
DW_INLINE void dw_w_channels(const size_t tail, size_t c_begin, size_t c_end, size_t nt,
                             size_t npix, const float* const* xp, const size_t* tix,
                             size_t x_step, const float* dy, size_t C, double* acc,
                             const struct dw_pf* pf, const struct dw_pf* pf_dy) {
    const size_t step = tail ? tail : DW_VLEN;
    for (size_t c0 = c_begin; c0 < c_end; c0 += step) {
        if (nt == 9) {
            dw_w_block(9, tail, c0, npix, xp, tix, x_step, dy, C, acc, pf, pf_dy);
            continue;
        }
        size_t t = 0;
        for (; t + 8 <= nt; t += 8, pf = pf_dy = NULL)
            dw_w_block(8, tail, c0, npix, xp + t, tix + t, x_step, dy, C, acc, pf, pf_dy);
        if (t + 4 <= nt) {
            dw_w_block(4, tail, c0, npix, xp + t, tix + t, x_step, dy, C, acc, pf, pf_dy);
            t += 4;
            pf = pf_dy = NULL;
        }
        if (t + 2 <= nt) {
            dw_w_block(2, tail, c0, npix, xp + t, tix + t, x_step, dy, C, acc, pf, pf_dy);
            t += 2;
            pf = pf_dy = NULL;
        }
        if (t < nt) dw_w_block(1, tail, c0, npix, xp + t, tix + t, x_step, dy, C, acc, pf, pf_dy);
    }
}

static void dw_w_segment(size_t c_begin, size_t c_end, size_t nt, size_t npix,
                         const float* const* xp, const size_t* tix, size_t x_step,
                         const float* dy, size_t C, double* acc, const struct dw_pf* pf,
                         const struct dw_pf* pf_dy) {
    const size_t tail = (c_end - c_begin) % DW_VLEN, full = c_end - tail;
    if (full > c_begin)
        dw_w_channels(0, c_begin, full, nt, npix, xp, tix, x_step, dy, C, acc, pf, pf_dy);
    if (tail) dw_w_channels(tail, full, c_end, nt, npix, xp, tix, x_step, dy, C, acc, pf, pf_dy);
}

void DW_FN(f32_dwconv_backward_weight_row)(const struct cconv_dw_geom* g, const float* const* rows,
                                           const float* dy, size_t c_begin, size_t c_end,
                                           size_t i_begin, size_t i_end, double* acc,
                                           const struct cconv_dw_next* next,
                                           const float** scratch) {
    const size_t C = g->channels, kh = g->kernel_h, kw = g->kernel_w;
    const size_t s = g->stride_w, d = g->dilation_w, in_w = g->in_w, out_w = g->out_w;
    const ptrdiff_t pl = g->pad_left;
    const float** xp = scratch;
    size_t* tix = (size_t*)(void*)(scratch + kh * kw);
    if (c_end <= c_begin || i_end <= i_begin) return;

    if (kh == 3 && kw == 3 && d == 1 && (s == 1 || s == 2) && i_begin == 0 && i_end == 3 &&
        rows[0] && rows[1] && rows[2]) {  /* the common 3x3: whole rows in register tiles */
        const struct dw_pf pf =
            dw_pf_at(next ? next->in : NULL, next ? next->n_in : 0, in_w * C, 0, s * C, C);
        const struct dw_pf pf_dy = dw_pf_at(next ? next->dy : NULL, 1, out_w * C, 0, C, C);
        const size_t tail = (c_end - c_begin) % DW_VLEN, full = c_end - tail;
        for (size_t c0 = c_begin; c0 < full; c0 += DW_VLEN) {
            if (s == 1) dw_w_row3(1, 0, c0, out_w, in_w, pl, rows, dy, C, acc, &pf, &pf_dy);
            else dw_w_row3(2, 0, c0, out_w, in_w, pl, rows, dy, C, acc, &pf, &pf_dy);
        }
        if (DW_VLEN > 1 && tail) {
            if (s == 1) dw_w_row3(1, tail, full, out_w, in_w, pl, rows, dy, C, acc, &pf, &pf_dy);
            else dw_w_row3(2, tail, full, out_w, in_w, pl, rows, dy, C, acc, &pf, &pf_dy);
        }
        return;
    }

    size_t lo, hi;
    dw_interior(in_w, out_w, kw, s, d, pl, &lo, &hi);

    /* Left border, interior, right border: pixels in ascending order. */
    for (size_t ow = 0; ow < out_w; ow++) {
        if (ow == lo && hi > lo) {
            size_t nt = 0;
            for (size_t i = i_begin; i < i_end; i++) {
                if (!rows[i]) continue;
                for (size_t j = 0; j < kw; j++) {
                    xp[nt] = rows[i] + (size_t)((ptrdiff_t)(lo * s + j * d) - pl) * C;
                    tix[nt] = i * kw + j;
                    nt++;
                }
            }
            const struct dw_pf pf = dw_pf_at(next ? next->in : NULL, next ? next->n_in : 0,
                                             in_w * C, ((ptrdiff_t)(lo * s) - pl) * (ptrdiff_t)C,
                                             s * C, C);
            const struct dw_pf pf_dy =
                dw_pf_at(next ? next->dy : NULL, 1, out_w * C, (ptrdiff_t)(lo * C), C, C);
            if (nt)
                dw_w_segment(c_begin, c_end, nt, hi - lo, xp, tix, s * C, dy + lo * C, C, acc, &pf,
                             &pf_dy);
            ow = hi - 1;
            continue;
        }
        size_t nt = 0;
        for (size_t i = i_begin; i < i_end; i++) {
            if (!rows[i]) continue;
            for (size_t j = 0; j < kw; j++) {
                const ptrdiff_t iw = (ptrdiff_t)(ow * s + j * d) - pl;
                if (iw < 0 || iw >= (ptrdiff_t)in_w) continue;
                xp[nt] = rows[i] + (size_t)iw * C;
                tix[nt] = i * kw + j;
                nt++;
            }
        }
        if (nt) dw_w_segment(c_begin, c_end, nt, 1, xp, tix, 0, dy + ow * C, C, acc, NULL, NULL);
    }
}
