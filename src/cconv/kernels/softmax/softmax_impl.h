/* Portable bodies of the softmax micro-kernels (see softmax.h), included once per ISA by
 * f32_softmax__ISA.c with CCONV_ISA_SUFFIX defined. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "softmax.h"
#include "core/vmath.h"

#define LANES 16

/* Largest element (NaN elements are skipped here; they still poison the row through exp). */
static inline float row_max(size_t n, const float* restrict x) {
    float m[LANES];
    for (int l = 0; l < LANES; l++) m[l] = -INFINITY;
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) m[l] = x[i + l] > m[l] ? x[i + l] : m[l];
    for (int l = 0; i < n; i++, l++) m[l] = x[i] > m[l] ? x[i] : m[l];
    float r = m[0];
    for (int l = 1; l < LANES; l++) r = m[l] > r ? m[l] : r;
    return r;
}

/* sum(x) in float64: a float32 sum over a long row (tens of thousands of classes) would be off
 * by more than 1e-5. */
static inline double row_sum_f64(size_t n, const float* restrict x) {
    double s[LANES] = {0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) s[l] += (double)x[i + l];
    for (int l = 0; i < n; i++, l++) s[l] += (double)x[i];
    double r = 0.0;
    for (int l = 0; l < LANES; l++) r += s[l];
    return r;
}

/* sum(a * b) in float64: softmax's backward subtracts it from dy, where a float32 dot would leave
 * an error of the size of dy in a result that is much smaller when the softmax is peaked. */
static inline double row_dot_f64(size_t n, const float* restrict a, const float* restrict b) {
    double s[LANES] = {0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) s[l] += (double)a[i + l] * (double)b[i + l];
    for (int l = 0; i < n; i++, l++) s[l] += (double)a[i] * (double)b[i];
    double r = 0.0;
    for (int l = 0; l < LANES; l++) r += s[l];
    return r;
}

/* sum(m - x): the distance of every logit below the row maximum (all terms >= 0). */
static inline double row_sum_below(size_t n, const float* restrict x, float m) {
    double s[LANES] = {0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) s[l] += (double)m - (double)x[i + l];
    for (int l = 0; i < n; i++, l++) s[l] += (double)m - (double)x[i];
    double r = 0.0;
    for (int l = 0; l < LANES; l++) r += s[l];
    return r;
}

/* y = exp(x - max(x)) / sum; returns the sum of the exponentials (>= 1 unless NaN). */
static inline double softmax_row(size_t n, const float* restrict x, float* restrict y, float* max) {
    float m = row_max(n, x);
    for (size_t i = 0; i < n; i++) y[i] = cconv_expf_nonpos(x[i] - m);
    double s = row_sum_f64(n, y);
    float inv = (float)(1.0 / s);
    for (size_t i = 0; i < n; i++) y[i] *= inv;
    *max = m;
    return s;
}

void CCONV_UKERNEL(f32_softmax)(size_t rows, size_t c, const float* restrict x,
                                float* restrict y) {
    float m;
    for (size_t r = 0; r < rows; r++) softmax_row(c, x + r * c, y + r * c, &m);
}

void CCONV_UKERNEL(f32_softmax_backward)(size_t rows, size_t c, const float* restrict dy,
                                         const float* restrict y, float* restrict dx) {
    for (size_t r = 0; r < rows; r++) {
        const float* dyr = dy + r * c;
        const float* yr = y + r * c;
        float* dxr = dx + r * c;
        double dot = row_dot_f64(c, dyr, yr);
        for (size_t i = 0; i < c; i++) dxr[i] = (float)((double)yr[i] * ((double)dyr[i] - dot));
    }
}

void CCONV_UKERNEL(f32_softmax_xent)(size_t rows, size_t c, const float* restrict logits,
                                     const int64_t* restrict labels, float smoothing,
                                     float* restrict probs, double* restrict loss) {
    for (size_t r = 0; r < rows; r++) {
        const float* xr = logits + r * c;
        float m;
        double s = softmax_row(c, xr, probs + r * c, &m);
        /* -log p[j] = log(s) + (m - x[j]): no cancellation, whatever the logits' magnitude. */
        double log_s = log(s);
        double nll = log_s + ((double)m - (double)xr[labels[r]]);
        /* A term of weight 0 contributes nothing, even when infinite (a label of probability 0
           with smoothing 1, say): no 0 * inf = NaN. */
        double value = smoothing != 1.0f ? (1.0 - (double)smoothing) * nll : 0.0;
        if (smoothing != 0.0f)
            value += (double)smoothing * (log_s + row_sum_below(c, xr, m) / (double)c);
        loss[r] = value;
    }
}

void CCONV_UKERNEL(f32_softmax_xent_backward)(size_t rows, size_t c, const float* restrict probs,
                                              const int64_t* restrict labels, float smoothing,
                                              float scale, float* restrict dlogits) {
    float off = smoothing / (float)c;     /* target of every class */
    float on = off + (1.0f - smoothing);  /* target of the labelled class */
    for (size_t r = 0; r < rows; r++) {
        const float* pr = probs + r * c;
        float* dr = dlogits + r * c;
        for (size_t i = 0; i < c; i++) dr[i] = (pr[i] - off) * scale;
        int64_t y = labels[r];
        dr[y] = (pr[y] - on) * scale;
    }
}

#undef LANES
