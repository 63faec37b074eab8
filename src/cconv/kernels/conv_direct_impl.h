/* Bodies of the direct-convolution tile functions (conv_direct.h), compiled once per ISA: the
 * including file defines CCONV_ISA_SUFFIX, and that ISA's flags vectorise the packing, col2im
 * and store loops around the micro-kernel calls. */
#include "conv_direct.h"

#define CCONV_CAT_(a, b) a##__##b
#define CCONV_CAT(a, b) CCONV_CAT_(a, b)
#define FN(name) CCONV_CAT(name, CCONV_ISA_SUFFIX)

#include <math.h>

static inline size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

void FN(cconv_conv2d_forward_tile)(const struct cconv_conv_shape* s, const struct f32_igemm_config* cfg,
                            const float* x, const float* packed_w, const float* packed_bias,
                            float* y, const float* zero, size_t tile, float cmin, float cmax,
                            const float** a_scratch, float** c_scratch) {
    const size_t MR = cfg->mr, NR = cfg->nr;
    const size_t group = tile % s->groups, m0 = (tile / s->groups) * MR;
    const size_t pixels = s->batch * s->out_h * s->out_w;
    const size_t mr = pixels - m0 < MR ? pixels - m0 : MR;
    const size_t taps = s->kernel_h * s->kernel_w;
    const size_t cin_g = s->in_c / s->groups, cout_g = s->out_c / s->groups;

    /* (n, oh, ow) of the tile's first pixel; the next rows step through the image without
     * divisions (three 64-bit divisions per row cost as much as the FMAs of a small layer). */
    size_t ow = m0 % s->out_w, oh = (m0 / s->out_w) % s->out_h, n = m0 / (s->out_w * s->out_h);
    for (size_t i = 0; i < MR; i++) {
        if (i >= mr) {  /* rows past the end read zeros and are never stored */
            for (size_t t = 0; t < taps; t++) a_scratch[t * MR + i] = zero;
            c_scratch[i] = c_scratch[0];
            continue;
        }
        c_scratch[i] = y + (m0 + i) * s->out_c;
        for (size_t ky = 0; ky < s->kernel_h; ky++) {
            const ptrdiff_t ih = (ptrdiff_t)(oh * s->stride_h + ky * s->dilation_h) - s->pad_top;
            for (size_t kx = 0; kx < s->kernel_w; kx++) {
                const ptrdiff_t iw = (ptrdiff_t)(ow * s->stride_w + kx * s->dilation_w) - s->pad_left;
                const int inside = ih >= 0 && ih < (ptrdiff_t)s->in_h && iw >= 0 && iw < (ptrdiff_t)s->in_w;
                a_scratch[(ky * s->kernel_w + kx) * MR + i] =
                    inside ? x + ((n * s->in_h + (size_t)ih) * s->in_w + (size_t)iw) * s->in_c : zero;
            }
        }
        if (++ow == s->out_w) { ow = 0; if (++oh == s->out_h) { oh = 0; n++; } }
    }
    const size_t panels = ceil_div(cout_g, NR);
    const size_t panel_size = taps * cin_g * NR;
    for (size_t p = 0; p < panels; p++) {
        const size_t nc = cout_g - p * NR < NR ? cout_g - p * NR : NR;
        const size_t panel = group * panels + p;
        cfg->ukernel(mr, nc, cin_g, taps, a_scratch, group * cin_g, zero,
                     packed_w + panel * panel_size, packed_bias ? packed_bias + panel * NR : NULL,
                     c_scratch, group * cout_g + p * NR, 0, cmin, cmax);
    }
}

void FN(cconv_conv2d_forward_pixels_tile)(const struct cconv_conv_shape* s, const struct f32_igemm_config* cfg,
                                   const float* x, const float* w_rows, const float* bias, float* y,
                                   size_t tile, float cmin, float cmax, float* b_scratch,
                                   float* t_scratch, const float** a_rows, float** c_rows) {
    const size_t MR = cfg->mr, NR = cfg->nr;
    const size_t C = s->in_c, K = s->kernel_h * s->kernel_w * C;
    const size_t row_panels = ceil_div(s->out_w, NR);
    const size_t panel = tile % row_panels, oh = (tile / row_panels) % s->out_h;
    const size_t n = tile / (row_panels * s->out_h);
    const size_t ow0 = panel * NR, nc = s->out_w - ow0 < NR ? s->out_w - ow0 : NR;
    const float* image = x + n * s->in_h * s->in_w * C;
    const size_t step = s->stride_w * C;  /* floats between the inputs of neighbouring pixels */

    /* im2col(x)^T for the panel: row k = (ky, kx, ci) holds the nc pixels' inputs. */
    for (size_t ky = 0; ky < s->kernel_h; ky++) {
        const ptrdiff_t ih = (ptrdiff_t)(oh * s->stride_h + ky * s->dilation_h) - s->pad_top;
        for (size_t kx = 0; kx < s->kernel_w; kx++) {
            const ptrdiff_t iw0 = (ptrdiff_t)(ow0 * s->stride_w + kx * s->dilation_w) - s->pad_left;
            for (size_t ci = 0; ci < C; ci++) {
                float* out = b_scratch + ((ky * s->kernel_w + kx) * C + ci) * NR;
                if (ih < 0 || ih >= (ptrdiff_t)s->in_h) {
                    for (size_t j = 0; j < NR; j++) out[j] = 0.0f;
                    continue;
                }
                /* pixels j with 0 <= iw0 + j * stride < in_w read the image, the rest padding */
                size_t j_lo = 0, j_hi = nc;
                while (j_lo < nc && iw0 + (ptrdiff_t)(j_lo * s->stride_w) < 0) j_lo++;
                while (j_hi > j_lo && iw0 + (ptrdiff_t)((j_hi - 1) * s->stride_w) >= (ptrdiff_t)s->in_w) j_hi--;
                for (size_t j = 0; j < j_lo; j++) out[j] = 0.0f;
                const float* src = image + ((size_t)ih * s->in_w) * C + ci;
                if (j_hi > j_lo) {
                    src += (size_t)(iw0 + (ptrdiff_t)(j_lo * s->stride_w)) * C;
                    if (step == 1)
                        for (size_t j = j_lo; j < j_hi; j++) out[j] = src[j - j_lo];
                    else
                        for (size_t j = j_lo; j < j_hi; j++) out[j] = src[(j - j_lo) * step];
                }
                for (size_t j = j_hi; j < NR; j++) out[j] = 0.0f;
            }
        }
    }
    for (size_t co0 = 0; co0 < s->out_c; co0 += MR) {
        const size_t mr = s->out_c - co0 < MR ? s->out_c - co0 : MR;
        for (size_t i = 0; i < MR; i++) {
            a_rows[i] = w_rows + (co0 + (i < mr ? i : 0)) * K;
            c_rows[i] = t_scratch + (co0 + (i < mr ? i : 0)) * NR;
        }
        cfg->ukernel(mr, nc, K, 1, a_rows, 0, NULL, b_scratch, NULL, c_rows, 0, 0,
                     -INFINITY, INFINITY);
    }
    /* Transposed store with bias and clamp (max(lo, v)/min(hi, v) keep NaN, like the kernels). */
    float* out = y + ((n * s->out_h + oh) * s->out_w + ow0) * s->out_c;
    for (size_t j = 0; j < nc; j++)
        for (size_t co = 0; co < s->out_c; co++) {
            float v = t_scratch[co * NR + j] + (bias ? bias[co] : 0.0f);
            v = v < cmin ? cmin : v;
            v = v > cmax ? cmax : v;
            out[j * s->out_c + co] = v;
        }
}

void FN(cconv_conv2d_backward_data_tile)(const struct cconv_conv_shape* s, const struct f32_igemm_config* cfg,
                                  const struct cconv_conv_phase* phase, const float* dy,
                                  const float* packed_w, float* dx, const float* zero, size_t tile,
                                  const float** a_scratch, float** c_scratch) {
    const size_t MR = cfg->mr, NR = cfg->nr;
    const size_t group = tile % s->groups, m0 = (tile / s->groups) * MR;
    const size_t pixels = s->batch * phase->rows * phase->cols;
    const size_t mr = pixels - m0 < MR ? pixels - m0 : MR;
    const size_t taps = phase->n_taps;
    const size_t cin_g = s->in_c / s->groups, cout_g = s->out_c / s->groups;

    size_t l = m0 % phase->cols, j = (m0 / phase->cols) % phase->rows;
    size_t n = m0 / (phase->cols * phase->rows);
    for (size_t i = 0; i < MR; i++) {
        if (i >= mr) {
            for (size_t t = 0; t < taps; t++) a_scratch[t * MR + i] = zero;
            c_scratch[i] = c_scratch[0];
            continue;
        }
        const size_t ih = phase->ih0 + j * s->stride_h, iw = phase->iw0 + l * s->stride_w;
        c_scratch[i] = dx + ((n * s->in_h + ih) * s->in_w + iw) * s->in_c;
        for (size_t t = 0; t < taps; t++) {
            /* ih = oh*stride - pad + kh*dilation  =>  oh = (ih + pad - kh*dilation) / stride,
             * exact for every tap of this phase. */
            const ptrdiff_t num_h = (ptrdiff_t)ih + s->pad_top - (ptrdiff_t)(phase->tap_kh[t] * s->dilation_h);
            const ptrdiff_t num_w = (ptrdiff_t)iw + s->pad_left - (ptrdiff_t)(phase->tap_kw[t] * s->dilation_w);
            const ptrdiff_t oh = num_h / (ptrdiff_t)s->stride_h, ow = num_w / (ptrdiff_t)s->stride_w;
            const int inside = num_h >= 0 && num_w >= 0 && oh < (ptrdiff_t)s->out_h && ow < (ptrdiff_t)s->out_w;
            a_scratch[t * MR + i] =
                inside ? dy + ((n * s->out_h + (size_t)oh) * s->out_w + (size_t)ow) * s->out_c : zero;
        }
        if (++l == phase->cols) { l = 0; if (++j == phase->rows) { j = 0; n++; } }
    }
    const size_t panels = ceil_div(cin_g, NR);
    const size_t panel_size = taps * cout_g * NR;
    for (size_t p = 0; p < panels; p++) {
        const size_t nc = cin_g - p * NR < NR ? cin_g - p * NR : NR;
        cfg->ukernel(mr, nc, cout_g, taps, a_scratch, group * cout_g, zero,
                     packed_w + (group * panels + p) * panel_size, NULL, c_scratch,
                     group * cin_g + p * NR, 0, -INFINITY, INFINITY);
    }
}

/* Write len floats of src (zeros if src is NULL) into im2col row q at column col of a buffer of
 * NR-wide panels of `chunk` rows each, splitting the run at panel boundaries. */
static inline void put_columns(float* panels, size_t chunk, size_t NR, size_t q, size_t col,
                               const float* src, size_t len) {
    for (size_t k = 0; k < len;) {
        const size_t c = col + k, within = c % NR;
        const size_t seg = NR - within < len - k ? NR - within : len - k;
        float* out = panels + ((c / NR) * chunk + q) * NR + within;
        if (src)
            for (size_t j = 0; j < seg; j++) out[j] = src[k + j];
        else
            for (size_t j = 0; j < seg; j++) out[j] = 0.0f;
        k += seg;
    }
}

void FN(cconv_conv2d_backward_weight_part)(const struct cconv_conv_shape* s,
                                           const struct f32_igemm_config* cfg, const float* x,
                                           const float* dy, float* dw_part, size_t part,
                                           size_t n_parts, size_t chunk, float* b_scratch,
                                           float* a_scratch, const float** a_rows,
                                           float** c_rows) {
    const size_t MR = cfg->mr, NR = cfg->nr;
    const size_t cin_g = s->in_c / s->groups, cout_g = s->out_c / s->groups;
    const size_t K = s->kernel_h * s->kernel_w * cin_g, panels = ceil_div(K, NR);
    const size_t pixels = s->batch * s->out_h * s->out_w;
    const size_t first = pixels * part / n_parts, last = pixels * (part + 1) / n_parts;
    /* Taps of one kernel row are contiguous in x when there is one group and no horizontal
     * dilation: then a pixel's im2col row is kernel_h runs of kernel_w * in_c floats. */
    const int merge_taps = s->groups == 1 && s->dilation_w == 1;
    const size_t run_len = merge_taps ? s->kernel_w * cin_g : cin_g;
    const size_t runs_per_row = merge_taps ? 1 : s->kernel_w;

    /* Columns past K in the last panel are never packed: zero them once. */
    for (size_t q = 0; q < chunk; q++)
        for (size_t col = K; col < panels * NR; col++)
            b_scratch[((panels - 1) * chunk + q) * NR + col - (panels - 1) * NR] = 0.0f;

    for (size_t group = 0; group < s->groups; group++) {
        size_t ow = first % s->out_w, oh = (first / s->out_w) % s->out_h;
        size_t n = first / (s->out_w * s->out_h);
        for (size_t p0 = first; p0 < last; p0 += chunk) {
            const size_t pc = last - p0 < chunk ? last - p0 : chunk;
            for (size_t q = 0; q < pc; q++) {
                /* dy^T chunk: a_scratch[co][q] */
                const float* dy_row = dy + (p0 + q) * s->out_c + group * cout_g;
                for (size_t co = 0; co < cout_g; co++) a_scratch[co * chunk + q] = dy_row[co];
                /* im2col row of the pixel, written into the NR-wide panels */
                const float* image = x + n * s->in_h * s->in_w * s->in_c + group * cin_g;
                size_t col = 0;
                for (size_t ky = 0; ky < s->kernel_h; ky++) {
                    const ptrdiff_t ih = (ptrdiff_t)(oh * s->stride_h + ky * s->dilation_h) - s->pad_top;
                    for (size_t r = 0; r < runs_per_row; r++) {
                        const size_t kx0 = merge_taps ? 0 : r;
                        const ptrdiff_t iw0 = (ptrdiff_t)(ow * s->stride_w + kx0 * s->dilation_w) - s->pad_left;
                        const ptrdiff_t iw1 = iw0 + (ptrdiff_t)((merge_taps ? s->kernel_w - 1 : 0) * s->dilation_w);
                        const int row_inside = ih >= 0 && ih < (ptrdiff_t)s->in_h;
                        const int all_inside = row_inside && iw0 >= 0 && iw1 < (ptrdiff_t)s->in_w;
                        if (all_inside) {
                            put_columns(b_scratch, chunk, NR, q, col,
                                        image + ((size_t)ih * s->in_w + (size_t)iw0) * s->in_c, run_len);
                        } else {  /* the run touches the padding: tap by tap */
                            for (size_t t = 0; t < run_len / cin_g; t++) {
                                const ptrdiff_t iw = iw0 + (ptrdiff_t)(t * s->dilation_w);
                                const int inside = row_inside && iw >= 0 && iw < (ptrdiff_t)s->in_w;
                                put_columns(b_scratch, chunk, NR, q, col + t * cin_g,
                                            inside ? image + ((size_t)ih * s->in_w + (size_t)iw) * s->in_c
                                                   : NULL, cin_g);
                            }
                        }
                        col += run_len;
                    }
                }
                if (++ow == s->out_w) { ow = 0; if (++oh == s->out_h) { oh = 0; n++; } }
            }
            /* Panel outer: its chunk (chunk x NR floats) stays in L1 for every channel tile. */
            const int flags = p0 == first ? 0 : FC_IGEMM_ACCUMULATE;
            for (size_t panel = 0; panel < panels; panel++) {
                const size_t nc = K - panel * NR < NR ? K - panel * NR : NR;
                for (size_t co0 = 0; co0 < cout_g; co0 += MR) {
                    const size_t mr = cout_g - co0 < MR ? cout_g - co0 : MR;
                    for (size_t i = 0; i < MR; i++) {
                        const size_t co = co0 + (i < mr ? i : 0);
                        a_rows[i] = a_scratch + co * chunk;
                        c_rows[i] = dw_part + (group * cout_g + co) * K;
                    }
                    cfg->ukernel(mr, nc, pc, 1, a_rows, 0, NULL, b_scratch + panel * chunk * NR,
                                 NULL, c_rows, panel * NR, flags, -INFINITY, INFINITY);
                }
            }
        }
    }
}

void FN(cconv_conv2d_backward_data_col2im)(const struct cconv_conv_shape* s, const struct f32_igemm_config* cfg,
                                    const float* dy, const float* packed_w, float* dx,
                                    size_t tile, float* dcol_scratch, const float** a_scratch,
                                    float** c_rows) {
    const size_t MR = cfg->mr, NR = cfg->nr;
    const size_t group = tile % s->groups, n = tile / s->groups;
    const size_t cin_g = s->in_c / s->groups, cout_g = s->out_c / s->groups;
    const size_t K = s->kernel_h * s->kernel_w * cin_g, panels = ceil_div(K, NR);
    const size_t image_pixels = s->out_h * s->out_w;
    const size_t width = panels * NR;

    for (size_t i = 0; i < MR; i++) c_rows[i] = dcol_scratch + i * width;
    for (size_t m0 = 0; m0 < image_pixels; m0 += MR) {
        const size_t mr = image_pixels - m0 < MR ? image_pixels - m0 : MR;
        for (size_t i = 0; i < MR; i++)
            a_scratch[i] = dy + (n * image_pixels + m0 + (i < mr ? i : 0)) * s->out_c;
        for (size_t p = 0; p < panels; p++) {
            const size_t nc = K - p * NR < NR ? K - p * NR : NR;
            cfg->ukernel(mr, nc, cout_g, 1, a_scratch, group * cout_g, NULL,
                         packed_w + (group * panels + p) * cout_g * NR, NULL, c_rows, p * NR, 0,
                         -INFINITY, INFINITY);
        }
        /* col2im: add each tap's column block to the input pixel the tap read. */
        for (size_t i = 0; i < mr; i++) {
            const size_t m = m0 + i, ow = m % s->out_w, oh = m / s->out_w;
            const float* dcol = dcol_scratch + i * width;
            for (size_t ky = 0; ky < s->kernel_h; ky++) {
                const ptrdiff_t ih = (ptrdiff_t)(oh * s->stride_h + ky * s->dilation_h) - s->pad_top;
                if (ih < 0 || ih >= (ptrdiff_t)s->in_h) continue;
                for (size_t kx = 0; kx < s->kernel_w; kx++) {
                    const ptrdiff_t iw = (ptrdiff_t)(ow * s->stride_w + kx * s->dilation_w) - s->pad_left;
                    if (iw < 0 || iw >= (ptrdiff_t)s->in_w) continue;
                    float* dst = dx + ((n * s->in_h + (size_t)ih) * s->in_w + (size_t)iw) * s->in_c + group * cin_g;
                    const float* src = dcol + (ky * s->kernel_w + kx) * cin_g;
                    for (size_t ci = 0; ci < cin_g; ci++) dst[ci] += src[ci];
                }
            }
        }
    }
}

void FN(cconv_sum_rows)(size_t rows, size_t cols, const float* x, size_t c0, size_t c1, float* out) {
    double acc[64];
    for (size_t b = c0; b < c1; b += 64) {
        const size_t width = c1 - b < 64 ? c1 - b : 64;
        for (size_t c = 0; c < width; c++) acc[c] = 0.0;
        for (size_t r = 0; r < rows; r++) {
            const float* row = x + r * cols + b;
            for (size_t c = 0; c < width; c++) acc[c] += row[c];
        }
        for (size_t c = 0; c < width; c++) out[b + c] = (float)acc[c];
    }
}
