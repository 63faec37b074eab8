/* Portable bodies of the batch-norm micro-kernels (see batchnorm.h), included once per ISA by
 * f32_batchnorm__ISA.c with CCONV_ISA_SUFFIX defined.
 *
 * Every loop runs across channels, which vectorises when there are many. Fewer than SMALL_C
 * channels are handled in periods of k rows (k c >= SMALL_C elements): per-position accumulators
 * and per-position copies of the channel parameters, folded back to channels at the end, so that
 * the inner loop is long enough for the vector units whatever the channel count.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "batchnorm.h"
#include "core/vmath.h"

#define SMALL_C 32
#define PERIOD_MAX (2 * SMALL_C) /* k c < SMALL_C + c <= 2 SMALL_C */

static inline size_t period_rows(size_t c) { return c >= SMALL_C ? 1 : (SMALL_C + c - 1) / c; }

/* Channel values repeated over a period of k rows: local[q] = value[q % c]. */
static inline const float* tile_f32(const float* value, size_t c, size_t k, float* local) {
    if (k == 1) return value;
    for (size_t t = 0; t < k; t++)
        for (size_t ch = 0; ch < c; ch++) local[t * c + ch] = value[ch];
    return local;
}

static inline const double* tile_f64(const double* value, size_t c, size_t k, double* local) {
    if (k == 1) return value;
    for (size_t t = 0; t < k; t++)
        for (size_t ch = 0; ch < c; ch++) local[t * c + ch] = value[ch];
    return local;
}

/* out[ch] = sum over t of acc[t c + ch], in order of t. */
static inline void fold(const double* acc, size_t c, size_t k, double* out) {
    if (acc == out) return;
    for (size_t ch = 0; ch < c; ch++) {
        double s = 0.0;
        for (size_t t = 0; t < k; t++) s += acc[t * c + ch];
        out[ch] = s;
    }
}

/* Sums over the periods of lanes [q0, q0 + LANES) of a period, in locals that the compiler keeps
 * in vector registers: two independent sets (even and odd periods) so that the additions do not
 * wait on each other. The accumulating kernels run their periods through these where a whole
 * block of LANES fits, and a plain loop over the rest. */
#define LANES 32

static inline void block_sum(const float* restrict x, size_t p, size_t periods, double* out) {
    double a[LANES] = {0};
    for (size_t b = 0; b < periods; b++)
        for (size_t j = 0; j < LANES; j++) a[j] += (double)x[b * p + j];
    for (size_t j = 0; j < LANES; j++) out[j] = a[j];
}

static inline void block_sum_sq_dev(const float* restrict x, size_t p, size_t periods,
                                    const double* mean, double* out) {
    double m[LANES], a[LANES] = {0};
    for (size_t j = 0; j < LANES; j++) m[j] = mean[j];
    for (size_t b = 0; b < periods; b++)
        for (size_t j = 0; j < LANES; j++) {
            const double d = (double)x[b * p + j] - m[j];
            a[j] += d * d;
        }
    for (size_t j = 0; j < LANES; j++) out[j] = a[j];
}

void CCONV_UKERNEL(f32_bn_stats)(size_t rows, size_t c, const float* restrict x, double* mean,
                                 double* m2) {
    const size_t k = period_rows(c), p = k * c, periods = rows / k, tail = rows - periods * k;
    const size_t whole = periods ? p / LANES * LANES : 0;  /* lanes summed in blocks */
    double local_acc[PERIOD_MAX], local_mean[PERIOD_MAX];
    const float* xt = x + periods * p;

    double* acc = k == 1 ? mean : local_acc;
    for (size_t q = 0; q < whole; q += LANES) block_sum(x + q, p, periods, acc + q);
    for (size_t q = whole; q < p; q++) acc[q] = 0.0;
    for (size_t b = 0; b < periods; b++) {
        const float* xb = x + b * p;
        for (size_t q = whole; q < p; q++) acc[q] += (double)xb[q];
    }
    for (size_t r = 0; r < tail; r++)
        for (size_t ch = 0; ch < c; ch++) acc[ch] += (double)xt[r * c + ch];
    fold(acc, c, k, mean);
    for (size_t ch = 0; ch < c; ch++) mean[ch] /= (double)rows;

    const double* mp = mean;
    if (k > 1) {
        for (size_t q = 0; q < p; q++) local_mean[q] = mean[q % c];
        mp = local_mean;
    }
    acc = k == 1 ? m2 : local_acc;
    for (size_t q = 0; q < whole; q += LANES) block_sum_sq_dev(x + q, p, periods, mp + q, acc + q);
    for (size_t q = whole; q < p; q++) acc[q] = 0.0;
    for (size_t b = 0; b < periods; b++) {
        const float* xb = x + b * p;
        for (size_t q = whole; q < p; q++) {
            double d = (double)xb[q] - mp[q];
            acc[q] += d * d;
        }
    }
    for (size_t r = 0; r < tail; r++)
        for (size_t ch = 0; ch < c; ch++) {
            double d = (double)xt[r * c + ch] - mean[ch];
            acc[ch] += d * d;
        }
    fold(acc, c, k, m2);
}

void CCONV_UKERNEL(f32_bn_apply)(size_t rows, size_t c, const float* restrict x,
                                 const float* mean_hi, const float* mean_lo, const float* scale,
                                 const float* shift, const float* restrict residual, float lo,
                                 float* restrict y) {
    const size_t k = period_rows(c), p = k * c;
    float l_hi[PERIOD_MAX], l_lo[PERIOD_MAX], l_scale[PERIOD_MAX], l_shift[PERIOD_MAX];
    const float* restrict mh = tile_f32(mean_hi, c, k, l_hi);
    const float* restrict ml = tile_f32(mean_lo, c, k, l_lo);
    const float* restrict s = tile_f32(scale, c, k, l_scale);
    const float* restrict t = tile_f32(shift, c, k, l_shift);
    size_t periods = rows / k, tail = rows - periods * k;
    /* The tail rows are whole rows: the first c entries of the period arrays serve them. */
    for (size_t b = 0; b < periods + (tail != 0); b++) {
        const size_t n = b < periods ? p : tail * c;
        const float* xb = x + b * p;
        float* yb = y + b * p;
        if (residual) {  /* the clamp (if any) after the sum: v < lo ? lo : v keeps NaN */
            const float* rb = residual + b * p;
            for (size_t q = 0; q < n; q++) {
                const float v = CCONV_FMADD((xb[q] - mh[q]) - ml[q], s[q], t[q]) + rb[q];
                yb[q] = v < lo ? lo : v;
            }
        } else if (lo == -INFINITY) {
            for (size_t q = 0; q < n; q++) yb[q] = CCONV_FMADD((xb[q] - mh[q]) - ml[q], s[q], t[q]);
        } else {  /* fused clamp: v < lo ? lo : v keeps NaN, as the ReLU does */
            for (size_t q = 0; q < n; q++) {
                const float v = CCONV_FMADD((xb[q] - mh[q]) - ml[q], s[q], t[q]);
                yb[q] = v < lo ? lo : v;
            }
        }
    }
}

/* dy through a fused ReLU whose output is y: dy where y > 0, else +0 (whatever dy holds, NaN
 * included, as relu_backward). A bit mask rather than a ?: so that GCC vectorises the loop. */
static inline float relu_masked(const float* restrict y, const float* restrict dy, size_t q) {
    uint32_t bits;
    float g = dy[q];
    memcpy(&bits, &g, sizeof bits);
    bits &= (uint32_t)0 - (uint32_t)(y[q] > 0.0f);
    memcpy(&g, &bits, sizeof g);
    return g;
}

/* Lanes [q0, q0 + LANES) of backward_reduce's sums (g as there; y may be NULL), in registers
 * as block_sum. */
static inline void block_reduce(const float* restrict dy, const float* restrict x,
                                const float* restrict y, size_t p, size_t periods,
                                const float* mean, double* sum_dy, double* sum_dyx) {
    double m[LANES], s[LANES] = {0}, t[LANES] = {0};
    for (size_t j = 0; j < LANES; j++) m[j] = (double)mean[j];
    for (size_t b = 0; b < periods; b++) {
        const size_t o = b * p;
        for (size_t j = 0; j < LANES; j++) {
            const double g = (double)(y ? relu_masked(y + o, dy + o, j) : dy[o + j]);
            s[j] += g;
            t[j] += g * ((double)x[o + j] - m[j]);
        }
    }
    for (size_t j = 0; j < LANES; j++) {
        sum_dy[j] = s[j];
        sum_dyx[j] = t[j];
    }
}

void CCONV_UKERNEL(f32_bn_backward_reduce)(size_t rows, size_t c, const float* restrict dy,
                                           const float* restrict x, const float* restrict y,
                                           const float* mean, double* sum_dy,
                                           double* sum_dy_xmu) {
    const size_t k = period_rows(c), p = k * c, periods = rows / k, tail = rows - periods * k;
    const size_t whole = periods ? p / LANES * LANES : 0;
    double local_dy[PERIOD_MAX], local_dyx[PERIOD_MAX];
    float local_mean[PERIOD_MAX];
    const float* restrict m = tile_f32(mean, c, k, local_mean);
    double* acc_dy = k == 1 ? sum_dy : local_dy;
    double* acc_dyx = k == 1 ? sum_dy_xmu : local_dyx;
    for (size_t q = 0; q < whole; q += LANES)
        if (y)
            block_reduce(dy + q, x + q, y + q, p, periods, m + q, acc_dy + q, acc_dyx + q);
        else
            block_reduce(dy + q, x + q, NULL, p, periods, m + q, acc_dy + q, acc_dyx + q);
    for (size_t q = whole; q < p; q++) {
        acc_dy[q] = 0.0;
        acc_dyx[q] = 0.0;
    }
    /* The lanes past the whole blocks over every period, then the tail rows (lanes < c). */
    for (size_t b = 0; b < periods + (tail != 0); b++) {
        const size_t q0 = b < periods ? whole : 0, n = b < periods ? p : tail * c;
        const float* dyb = dy + b * p;
        const float* xb = x + b * p;
        if (y == NULL) {
            for (size_t q = q0; q < n; q++) {
                double g = (double)dyb[q];
                acc_dy[q] += g;
                acc_dyx[q] += g * ((double)xb[q] - (double)m[q]);
            }
        } else {
            const float* yb = y + b * p;
            for (size_t q = q0; q < n; q++) {
                double g = (double)relu_masked(yb, dyb, q);
                acc_dy[q] += g;
                acc_dyx[q] += g * ((double)xb[q] - (double)m[q]);
            }
        }
    }
    fold(acc_dy, c, k, sum_dy);
    fold(acc_dyx, c, k, sum_dy_xmu);
}

/* In float64: with few rows the three terms are far larger than their sum (dx vanishes for two
 * rows), and float32 arithmetic would leave an error of the size of the terms. */
void CCONV_UKERNEL(f32_bn_backward_dx)(size_t rows, size_t c, const float* restrict dy,
                                       const float* restrict x, const float* restrict y,
                                       const float* mean, const double* a, const double* b,
                                       const double* k_, float* restrict dx) {
    const size_t k = period_rows(c), p = k * c;
    float l_mean[PERIOD_MAX];
    double l_a[PERIOD_MAX], l_b[PERIOD_MAX], l_k[PERIOD_MAX];
    const float* restrict m = tile_f32(mean, c, k, l_mean);
    const double* restrict ca = tile_f64(a, c, k, l_a);
    const double* restrict cb = tile_f64(b, c, k, l_b);
    const double* restrict ck = tile_f64(k_, c, k, l_k);
    size_t periods = rows / k, tail = rows - periods * k;
    for (size_t blk = 0; blk < periods + (tail != 0); blk++) {
        const size_t n = blk < periods ? p : tail * c;
        const float* dyb = dy + blk * p;
        const float* xb = x + blk * p;
        float* dxb = dx + blk * p;
        if (y == NULL) {
            for (size_t q = 0; q < n; q++)
                dxb[q] = (float)(ca[q] * (double)dyb[q] +
                                 (cb[q] * ((double)xb[q] - (double)m[q]) + ck[q]));
        } else {
            const float* yb = y + blk * p;
            for (size_t q = 0; q < n; q++)
                dxb[q] = (float)(ca[q] * (double)relu_masked(yb, dyb, q) +
                                 (cb[q] * ((double)xb[q] - (double)m[q]) + ck[q]));
        }
    }
}

void CCONV_UKERNEL(f32_bn_backward_dx_f32)(size_t rows, size_t c, const float* restrict dy,
                                           const float* restrict x, const float* restrict y,
                                           const float* mean, const float* a, const float* b,
                                           const float* k_, float* restrict dx) {
    const size_t k = period_rows(c), p = k * c;
    float l_mean[PERIOD_MAX], l_a[PERIOD_MAX], l_b[PERIOD_MAX], l_k[PERIOD_MAX];
    const float* restrict m = tile_f32(mean, c, k, l_mean);
    const float* restrict ca = tile_f32(a, c, k, l_a);
    const float* restrict cb = tile_f32(b, c, k, l_b);
    const float* restrict ck = tile_f32(k_, c, k, l_k);
    size_t periods = rows / k, tail = rows - periods * k;
    for (size_t blk = 0; blk < periods + (tail != 0); blk++) {
        const size_t n = blk < periods ? p : tail * c;
        const float* dyb = dy + blk * p;
        const float* xb = x + blk * p;
        float* dxb = dx + blk * p;
        if (y == NULL) {
            for (size_t q = 0; q < n; q++)
                dxb[q] = CCONV_FMADD(ca[q], dyb[q], CCONV_FMADD(cb[q], xb[q] - m[q], ck[q]));
        } else {
            const float* yb = y + blk * p;
            for (size_t q = 0; q < n; q++)
                dxb[q] = CCONV_FMADD(ca[q], relu_masked(yb, dyb, q),
                                     CCONV_FMADD(cb[q], xb[q] - m[q], ck[q]));
        }
    }
}

#undef SMALL_C
#undef PERIOD_MAX
#undef LANES
