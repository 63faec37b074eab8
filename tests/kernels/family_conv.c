/* Direct convolution (conv_direct.h): every function of the ISA's table, laid out as
 * cconv/_conv.pyx lays it out (weights packed per ISA for the panel width of the igemm
 * micro-kernel that f32_igemm_select hands that ISA, the same scratch sizes, tiles and blocks
 * split into runs of consecutive calls):
 *
 *   forward_tiles          random shapes: channels per group around the vector widths, kernels
 *                          1-5, strides and dilations 1-2, asymmetric padding up to a whole
 *                          kernel span (output pixels that read only padding), 1 or 2 groups,
 *                          bias or none, clamp or none;
 *   backward_data_tiles    the same shapes, split into stride phases as _backward_data does;
 *   backward_data_col2im   the same shapes (any input channels per group, not only < 8);
 *   backward_weight_part   the same shapes, in parts of the output rows and blocks of K, with
 *                          slabs of part of an image, of one or of several whole images;
 *   forward_planar and backward_weight_planar   one group, stride 1, 1-4 input channels,
 *                          kernels up to 7x7, in blocks of output rows;
 *   sum_rows               rows x cols, whole or split into column ranges.
 *
 * Each result is compared with the scalar ISA's (close: the register tiles, and so the order of
 * the float32 sums, differ between ISAs, and the ISAs use FMAs) and with a float64 reference
 * written here (so that a fault shared by every ISA fails too). The sums run over at most a few
 * thousand float32 products of values in [-1, 1): their rounding stays well under TOL relative
 * to the output's largest magnitude. sum_rows sums in float64 in the same order on every ISA, so
 * the ISA must match the scalar kernel bit for bit.
 */
#include <math.h>
#include <string.h>

#include "conv/conv_direct.h"
#include "harness.h"

#define TOL 2e-5     /* ISA vs scalar: both float32 sums in different orders */
#define REF_TOL 1e-5 /* float32 sums vs the float64 reference */

static const size_t CHANNELS[] = {1, 3, 4, 7, 8, 9, 16, 17, 24, 33};
#define N_CHANNELS (sizeof CHANNELS / sizeof CHANNELS[0])

static size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }
static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

static float* zeros(struct harness* h, size_t n) {
    float* z = harness_floats(h, n);
    memset(z, 0, n * sizeof(float));
    return z;
}

/* Indices into NHWC activations and PyTorch-order weights (out_c, in_c/groups, kh, kw). */
static size_t x_at(const struct cconv_conv_shape* s, size_t n, size_t ih, size_t iw, size_t c) {
    return ((n * s->in_h + ih) * s->in_w + iw) * s->in_c + c;
}
static size_t y_at(const struct cconv_conv_shape* s, size_t n, size_t oh, size_t ow, size_t c) {
    return ((n * s->out_h + oh) * s->out_w + ow) * s->out_c + c;
}
static size_t w_at(const struct cconv_conv_shape* s, size_t co, size_t ci, size_t ky, size_t kx) {
    return ((co * (s->in_c / s->groups) + ci) * s->kernel_h + ky) * s->kernel_w + kx;
}

/* The input pixel (ih, iw) that output pixel (oh, ow) reads at tap (ky, kx); 0 in the padding. */
static int tap_source(const struct cconv_conv_shape* s, size_t oh, size_t ow, size_t ky, size_t kx,
                      size_t* ih, size_t* iw) {
    const ptrdiff_t r = (ptrdiff_t)(oh * s->stride_h + ky * s->dilation_h) - s->pad_top;
    const ptrdiff_t c = (ptrdiff_t)(ow * s->stride_w + kx * s->dilation_w) - s->pad_left;
    if (r < 0 || r >= (ptrdiff_t)s->in_h || c < 0 || c >= (ptrdiff_t)s->in_w) return 0;
    *ih = (size_t)r;
    *iw = (size_t)c;
    return 1;
}

/* ------------------------------------------------------------------ float64 references */

static void ref_forward(const struct cconv_conv_shape* s, const float* x, const float* w,
                        const float* bias, float cmin, float cmax, float* y) {
    const size_t cin_g = s->in_c / s->groups, cout_g = s->out_c / s->groups;
    for (size_t n = 0; n < s->batch; n++)
        for (size_t oh = 0; oh < s->out_h; oh++)
            for (size_t ow = 0; ow < s->out_w; ow++)
                for (size_t co = 0; co < s->out_c; co++) {
                    const size_t c0 = co / cout_g * cin_g;
                    double acc = bias ? bias[co] : 0.0;
                    size_t ih, iw;
                    for (size_t ky = 0; ky < s->kernel_h; ky++)
                        for (size_t kx = 0; kx < s->kernel_w; kx++) {
                            if (!tap_source(s, oh, ow, ky, kx, &ih, &iw)) continue;
                            for (size_t ci = 0; ci < cin_g; ci++)
                                acc += (double)x[x_at(s, n, ih, iw, c0 + ci)] *
                                       w[w_at(s, co, ci, ky, kx)];
                        }
                    const double v = acc < cmin ? cmin : (acc > cmax ? cmax : acc);
                    y[y_at(s, n, oh, ow, co)] = (float)v;
                }
}

/* dx = the transpose of the forward pass applied to dy. */
static void ref_backward_data(struct harness* h, const struct cconv_conv_shape* s,
                              const float* dy, const float* w, float* dx) {
    const size_t cin_g = s->in_c / s->groups, cout_g = s->out_c / s->groups;
    const size_t nx = s->batch * s->in_h * s->in_w * s->in_c;
    double* acc = harness_doubles(h, nx);
    memset(acc, 0, nx * sizeof(double));
    for (size_t n = 0; n < s->batch; n++)
        for (size_t oh = 0; oh < s->out_h; oh++)
            for (size_t ow = 0; ow < s->out_w; ow++)
                for (size_t co = 0; co < s->out_c; co++) {
                    const double g = dy[y_at(s, n, oh, ow, co)];
                    const size_t c0 = co / cout_g * cin_g;
                    size_t ih, iw;
                    for (size_t ky = 0; ky < s->kernel_h; ky++)
                        for (size_t kx = 0; kx < s->kernel_w; kx++) {
                            if (!tap_source(s, oh, ow, ky, kx, &ih, &iw)) continue;
                            for (size_t ci = 0; ci < cin_g; ci++)
                                acc[x_at(s, n, ih, iw, c0 + ci)] += g * w[w_at(s, co, ci, ky, kx)];
                        }
                }
    for (size_t i = 0; i < nx; i++) dx[i] = (float)acc[i];
}

/* dw[co][ci][ky][kx] (PyTorch's order) = sum over the pixels of dy * x. */
static void ref_backward_weight(const struct cconv_conv_shape* s, const float* x, const float* dy,
                                double* dw) {
    const size_t cin_g = s->in_c / s->groups, cout_g = s->out_c / s->groups;
    memset(dw, 0, s->out_c * cin_g * s->kernel_h * s->kernel_w * sizeof(double));
    for (size_t n = 0; n < s->batch; n++)
        for (size_t oh = 0; oh < s->out_h; oh++)
            for (size_t ow = 0; ow < s->out_w; ow++)
                for (size_t co = 0; co < s->out_c; co++) {
                    const double g = dy[y_at(s, n, oh, ow, co)];
                    const size_t c0 = co / cout_g * cin_g;
                    size_t ih, iw;
                    for (size_t ky = 0; ky < s->kernel_h; ky++)
                        for (size_t kx = 0; kx < s->kernel_w; kx++) {
                            if (!tap_source(s, oh, ow, ky, kx, &ih, &iw)) continue;
                            for (size_t ci = 0; ci < cin_g; ci++)
                                dw[w_at(s, co, ci, ky, kx)] += g * x[x_at(s, n, ih, iw, c0 + ci)];
                        }
                }
}

/* ------------------------------------------------------------- the kernels, as _conv.pyx */

/* _forward_direct with _pack_forward's panels: [group][panel][tap][ci][NR], bias [group][panel][NR]. */
static void run_forward(struct harness* h, int isa, const struct cconv_conv_shape* s,
                        const float* x, const float* w, const float* bias, float cmin,
                        float cmax, size_t runs, float* y) {
    const struct cconv_conv_direct_kernels k = cconv_conv_direct_select(isa);
    const size_t cin_g = s->in_c / s->groups, cout_g = s->out_c / s->groups;
    const size_t taps = s->kernel_h * s->kernel_w;
    const struct f32_igemm_config cfg = f32_igemm_select(isa, cout_g);
    const size_t MR = cfg.mr, NR = cfg.nr, panels = ceil_div(cout_g, NR);
    float* pw = harness_floats(h, s->groups * panels * taps * cin_g * NR);
    float* pb = bias ? harness_floats(h, s->groups * panels * NR) : NULL;
    for (size_t g = 0; g < s->groups; g++)
        for (size_t p = 0; p < panels; p++) {
            for (size_t t = 0; t < taps; t++)
                for (size_t ci = 0; ci < cin_g; ci++)
                    for (size_t j = 0; j < NR; j++) {
                        const size_t co = p * NR + j;
                        pw[(((g * panels + p) * taps + t) * cin_g + ci) * NR + j] =
                            co < cout_g ? w[w_at(s, g * cout_g + co, ci, t / s->kernel_w,
                                                 t % s->kernel_w)] : 0.0f;
                    }
            for (size_t j = 0; pb && j < NR; j++)
                pb[(g * panels + p) * NR + j] = p * NR + j < cout_g ? bias[g * cout_g + p * NR + j] : 0.0f;
        }
    /* exactly the zeros the contract asks for: a kernel reading past them reads junk */
    const float* zero = zeros(h, s->kernel_w * cin_g);
    const float** a = (const float**)harness_ptrs(h, taps * MR);
    float** c = (float**)harness_ptrs(h, MR);
    float* edge = harness_floats(h, MR * taps * cin_g);
    const size_t tiles = ceil_div(s->batch * s->out_h * s->out_w, MR);
    runs = min_size(runs, tiles);
    for (size_t r = 0; r < runs; r++)
        k.forward_tiles(s, &cfg, x, pw, pb, y, zero, r * tiles / runs, (r + 1) * tiles / runs,
                        cmin, cmax, 0, a, c, edge);
}

/* _backward_data: the stride phases, each a dense convolution of dy over the taps that reach it. */
static void run_backward_data(struct harness* h, int isa, const struct cconv_conv_shape* s,
                              const float* dy, const float* w, size_t runs, float* dx) {
    const struct cconv_conv_direct_kernels k = cconv_conv_direct_select(isa);
    const size_t cin_g = s->in_c / s->groups, cout_g = s->out_c / s->groups;
    const struct f32_igemm_config cfg = f32_igemm_select(isa, cin_g);
    const size_t MR = cfg.mr, NR = cfg.nr, panels = ceil_div(cin_g, NR);
    const size_t sh = s->stride_h, sw = s->stride_w;
    const size_t phases_h = min_size(sh, s->in_h), phases_w = min_size(sw, s->in_w);
    /* taps_h[p][..]: the kernel rows whose dilated offset lands on phase row p (a remainder of
     * zero is the same test in C as in Python, negative numerators included) */
    size_t taps_h[2][5], taps_w[2][5], n_h[2] = {0, 0}, n_w[2] = {0, 0};
    for (size_t p = 0; p < phases_h; p++)
        for (size_t ky = 0; ky < s->kernel_h; ky++)
            if (((ptrdiff_t)p + s->pad_top - (ptrdiff_t)(ky * s->dilation_h)) % (ptrdiff_t)sh == 0)
                taps_h[p][n_h[p]++] = ky;
    for (size_t p = 0; p < phases_w; p++)
        for (size_t kx = 0; kx < s->kernel_w; kx++)
            if (((ptrdiff_t)p + s->pad_left - (ptrdiff_t)(kx * s->dilation_w)) % (ptrdiff_t)sw == 0)
                taps_w[p][n_w[p]++] = kx;
    int all_reached = 1;
    for (size_t p = 0; p < phases_h; p++) all_reached &= n_h[p] > 0;
    for (size_t p = 0; p < phases_w; p++) all_reached &= n_w[p] > 0;
    /* pixels no tap reaches are never written: the caller zeroes dx for them */
    if (!all_reached) memset(dx, 0, s->batch * s->in_h * s->in_w * s->in_c * sizeof(float));
    const int merged = s->groups == 1 && s->dilation_w == 1;
    const float* zero = zeros(h, s->kernel_w * cout_g);
    float* edge = harness_floats(h, MR * s->kernel_h * s->kernel_w * cout_g);
    float** c = (float**)harness_ptrs(h, MR);
    for (size_t ih0 = 0; ih0 < phases_h; ih0++)
        for (size_t iw0 = 0; iw0 < phases_w; iw0++) {
            if (!n_h[ih0] || !n_w[iw0]) continue;
            const size_t nw = n_w[iw0], T = n_h[ih0] * nw;
            /* size_t arrays in pointer-sized slots, as _conv.pyx keeps them (np.uintp) */
            size_t* tap_kh = (size_t*)harness_ptrs(h, T);
            size_t* tap_kw = (size_t*)harness_ptrs(h, T);
            for (size_t t = 0; t < T; t++) {
                tap_kh[t] = taps_h[ih0][t / nw];
                /* merged rows: descending kw, so that a row's taps read ascending dy columns */
                tap_kw[t] = taps_w[iw0][merged ? nw - 1 - t % nw : t % nw];
            }
            /* [group][panel over cin_g][tap][cout_g][NR] */
            float* pw = harness_floats(h, s->groups * panels * T * cout_g * NR);
            for (size_t g = 0; g < s->groups; g++)
                for (size_t p = 0; p < panels; p++)
                    for (size_t t = 0; t < T; t++)
                        for (size_t co = 0; co < cout_g; co++)
                            for (size_t j = 0; j < NR; j++) {
                                const size_t ci = p * NR + j;
                                pw[(((g * panels + p) * T + t) * cout_g + co) * NR + j] =
                                    ci < cin_g ? w[w_at(s, g * cout_g + co, ci, tap_kh[t], tap_kw[t])]
                                               : 0.0f;
                            }
            const struct cconv_conv_phase phase = {
                .ih0 = ih0, .iw0 = iw0,
                .rows = ceil_div(s->in_h - ih0, sh), .cols = ceil_div(s->in_w - iw0, sw),
                .n_taps = T, .row_taps = merged ? nw : 0, .tap_kh = tap_kh, .tap_kw = tap_kw,
            };
            const float** a = (const float**)harness_ptrs(h, T * MR);
            const size_t tiles = ceil_div(s->batch * phase.rows * phase.cols, MR);
            const size_t nr = min_size(runs, tiles);
            for (size_t r = 0; r < nr; r++)
                k.backward_data_tiles(s, &cfg, &phase, dy, pw, dx, zero, r * tiles / nr,
                                      (r + 1) * tiles / nr, 0, a, c, edge);
        }
}

/* _backward_data_col2im: w as [group][panel over K][cout_g][NR], K = (tap, ci); one call per
 * (image, group), into a dx of zeros. */
static void run_col2im(struct harness* h, int isa, const struct cconv_conv_shape* s,
                       const float* dy, const float* w, float* dx) {
    const struct cconv_conv_direct_kernels k = cconv_conv_direct_select(isa);
    const size_t cin_g = s->in_c / s->groups, cout_g = s->out_c / s->groups;
    const size_t taps = s->kernel_h * s->kernel_w, K = taps * cin_g;
    const struct f32_igemm_config cfg = f32_igemm_select(isa, K);
    const size_t MR = cfg.mr, NR = cfg.nr, panels = ceil_div(K, NR);
    float* pw = harness_floats(h, s->groups * panels * cout_g * NR);
    for (size_t g = 0; g < s->groups; g++)
        for (size_t p = 0; p < panels; p++)
            for (size_t co = 0; co < cout_g; co++)
                for (size_t j = 0; j < NR; j++) {
                    const size_t col = p * NR + j, t = col / cin_g;
                    pw[((g * panels + p) * cout_g + co) * NR + j] =
                        col < K ? w[w_at(s, g * cout_g + co, col % cin_g, t / s->kernel_w,
                                         t % s->kernel_w)] : 0.0f;
                }
    memset(dx, 0, s->batch * s->in_h * s->in_w * s->in_c * sizeof(float));
    float* dcol = harness_floats(h, MR * panels * NR);
    const float** a = (const float**)harness_ptrs(h, MR);
    float** c = (float**)harness_ptrs(h, MR);
    for (size_t tile = 0; tile < s->batch * s->groups; tile++)
        k.backward_data_col2im(s, &cfg, dy, pw, dx, tile, dcol, a, c);
}

/* How _backward_weight cuts the work (_WeightGradPlan), drawn instead of derived from cache
 * sizes: parts of the output rows, blocks of K, the slab and band heights. */
struct weight_plan {
    size_t parts, kblocks, slab_rows, band_rows;
};

static struct weight_plan draw_weight_plan(struct harness* h, const struct cconv_conv_shape* s) {
    struct weight_plan p;
    const size_t rows = s->batch * s->out_h;
    p.parts = harness_chance(h, 1, 2) ? 1 : (rows >= 4 && harness_chance(h, 1, 2) ? 4 : 2);
    if (p.parts > rows) p.parts = 1;
    p.kblocks = harness_range(h, 1, 3);
    const size_t images = rows / p.parts / s->out_h;
    if (images >= 2 && harness_chance(h, 1, 2)) {
        /* a slab, and its one band, of several whole images */
        p.slab_rows = p.band_rows = harness_range(h, 2, images) * s->out_h;
    } else {
        /* within one image: the band divides the slab, or the slab is the band */
        p.slab_rows = harness_range(h, 1, s->out_h);
        p.band_rows = harness_range(h, 1, p.slab_rows);
        p.slab_rows -= p.slab_rows % p.band_rows;
    }
    return p;
}

/* _backward_weight: each part's dw^T [group][K][cout_g] summed in float64 in part order. */
static void run_backward_weight(struct harness* h, int isa, const struct cconv_conv_shape* s,
                                const struct weight_plan* plan, const float* x, const float* dy,
                                float* dwt) {
    const struct cconv_conv_direct_kernels k = cconv_conv_direct_select(isa);
    const size_t cin_g = s->in_c / s->groups, cout_g = s->out_c / s->groups;
    const size_t K = s->kernel_h * s->kernel_w * cin_g, part_floats = K * s->out_c;
    const struct f32_igemm_config cfg = f32_igemm_select(isa, cout_g);
    const size_t MR = cfg.mr, NR = cfg.nr, rows = s->batch * s->out_h;
    const size_t m_tiles = ceil_div(K, MR), kblocks = min_size(plan->kblocks, m_tiles);
    float* slab = harness_floats(h, cconv_weight_grad_slab_floats(s, plan->slab_rows));
    float* b_pack = harness_floats(h, plan->band_rows * s->out_w * NR);
    size_t* offsets = (size_t*)harness_ptrs(h, K + plan->band_rows);
    const float** a = (const float**)harness_ptrs(h, plan->band_rows * MR);
    float** c = (float**)harness_ptrs(h, MR);
    float* partial = harness_floats(h, plan->parts * part_floats);
    for (size_t part = 0; part < plan->parts; part++)
        for (size_t kb = 0; kb < kblocks; kb++) {
            const size_t m_begin = m_tiles * kb / kblocks * MR;
            const size_t m_end = min_size(K, m_tiles * (kb + 1) / kblocks * MR);
            k.backward_weight_part(s, &cfg, x, dy, partial + part * part_floats,
                                   rows * part / plan->parts, rows * (part + 1) / plan->parts,
                                   m_begin, m_end, plan->slab_rows, plan->band_rows, slab, b_pack,
                                   offsets, a, c);
        }
    for (size_t i = 0; i < part_floats; i++) {
        double sum = 0.0;
        for (size_t part = 0; part < plan->parts; part++) sum += partial[part * part_floats + i];
        dwt[i] = (float)sum;
    }
}

/* _pack_forward's planar weights [out_c / cb padded][tap (ci, i, j)][cb], bias padded with zeros;
 * _forward_planar over the blocks in runs. */
static void run_forward_planar(struct harness* h, int isa, const struct cconv_conv_shape* s,
                               const float* x, const float* w, const float* bias, float cmin,
                               float cmax, size_t block_rows, size_t runs, float* y) {
    const struct cconv_conv_direct_kernels k = cconv_conv_direct_select(isa);
    const size_t taps = s->in_c * s->kernel_h * s->kernel_w;
    const size_t cb = cconv_planar_forward_channels(s->out_c), padded = ceil_div(s->out_c, cb) * cb;
    float* pw = harness_floats(h, padded * taps);
    float* pb = harness_floats(h, padded);
    for (size_t co = 0; co < padded; co++) {
        for (size_t t = 0; t < taps; t++)
            pw[(co / cb * taps + t) * cb + co % cb] = co < s->out_c ? w[co * taps + t] : 0.0f;
        pb[co] = bias && co < s->out_c ? bias[co] : 0.0f;
    }
    float* stage = harness_floats(h, s->in_c * cconv_planar_plane_floats(s, block_rows));
    const size_t blocks = s->batch * ceil_div(s->out_h, block_rows);
    runs = min_size(runs, blocks);
    for (size_t r = 0; r < runs; r++)
        k.forward_planar(s, cb, x, pw, pb, y, block_rows, r * blocks / runs,
                         (r + 1) * blocks / runs, cmin, cmax, stage);
}

/* _backward_weight_planar's calls, the runs adding to one float64 dw (the contract's +=). */
static void run_weight_planar(struct harness* h, int isa, const struct cconv_conv_shape* s,
                              const float* x, const float* dy, size_t block_rows, size_t runs,
                              double* dw) {
    const struct cconv_conv_direct_kernels k = cconv_conv_direct_select(isa);
    const size_t co_pad = ceil_div(s->out_c, CCONV_PLANAR_WG_CHANNELS) * CCONV_PLANAR_WG_CHANNELS;
    float* stage = harness_floats(h, s->in_c * cconv_planar_plane_floats(s, block_rows));
    float* dstage = harness_floats(h, co_pad * cconv_planar_grad_plane_floats(s, block_rows));
    const size_t blocks = s->batch * ceil_div(s->out_h, block_rows);
    runs = min_size(runs, blocks);
    for (size_t r = 0; r < runs; r++)
        k.backward_weight_planar(s, x, dy, dw, block_rows, r * blocks / runs,
                                 (r + 1) * blocks / runs, stage, dstage);
}

/* ------------------------------------------------------------------------------ shapes */

/* One padded extent: pads up to a whole kernel span, so that some output rows or columns read
 * only padding. Returns the output size, 0 when the kernel does not fit. */
static size_t draw_axis(struct harness* h, size_t in, size_t k, size_t stride, size_t dil,
                        ptrdiff_t* pad_lo) {
    const size_t span = (k - 1) * dil + 1;
    const size_t lo = harness_range(h, 0, span), hi = harness_range(h, 0, span);
    *pad_lo = (ptrdiff_t)lo;
    return in + lo + hi < span ? 0 : (in + lo + hi - span) / stride + 1;
}

static int draw_shape(struct harness* h, struct cconv_conv_shape* s, int planar) {
    memset(s, 0, sizeof *s);
    s->batch = harness_range(h, 1, 2);
    if (planar) {
        s->groups = 1;
        s->in_c = harness_range(h, 1, 4);
        s->out_c = harness_range(h, 1, 20);
        s->kernel_h = harness_range(h, 1, 7);
        s->kernel_w = harness_range(h, 1, 7);
        s->stride_h = s->stride_w = 1;
        s->in_h = harness_range(h, 1, 20);
        s->in_w = harness_range(h, 1, 20);
    } else {
        s->groups = harness_chance(h, 1, 4) ? 2 : 1;
        s->in_c = s->groups * CHANNELS[harness_range(h, 0, N_CHANNELS - 1)];
        s->out_c = s->groups * CHANNELS[harness_range(h, 0, N_CHANNELS - 1)];
        s->kernel_h = harness_range(h, 1, 5);
        s->kernel_w = harness_range(h, 1, 5);
        s->stride_h = harness_range(h, 1, 2);
        s->stride_w = harness_range(h, 1, 2);
        s->in_h = harness_range(h, 1, 12);
        s->in_w = harness_range(h, 1, 12);
    }
    s->dilation_h = harness_range(h, 1, 2);
    s->dilation_w = harness_range(h, 1, 2);
    s->out_h = draw_axis(h, s->in_h, s->kernel_h, s->stride_h, s->dilation_h, &s->pad_top);
    s->out_w = draw_axis(h, s->in_w, s->kernel_w, s->stride_w, s->dilation_w, &s->pad_left);
    return s->out_h && s->out_w;
}

#define SHAPE_FMT "n=%zu %zux%zux%zu -> %zux%zux%zu k=%zux%zu stride=%zu,%zu dil=%zu,%zu pad=%td,%td groups=%zu"
#define SHAPE_ARGS(s) (s).batch, (s).in_h, (s).in_w, (s).in_c, (s).out_h, (s).out_w, (s).out_c, \
    (s).kernel_h, (s).kernel_w, (s).stride_h, (s).stride_w, (s).dilation_h, (s).dilation_w,     \
    (s).pad_top, (s).pad_left, (s).groups

struct tensors {
    size_t nx, ny, nw;
    float *x, *w, *dy;
};

static struct tensors draw_tensors(struct harness* h, const struct cconv_conv_shape* s) {
    struct tensors t;
    t.nx = s->batch * s->in_h * s->in_w * s->in_c;
    t.ny = s->batch * s->out_h * s->out_w * s->out_c;
    t.nw = s->out_c * (s->in_c / s->groups) * s->kernel_h * s->kernel_w;
    t.x = harness_floats(h, t.nx);
    harness_fill(h, t.x, t.nx, -1.0f, 1.0f, 0);
    t.w = harness_floats(h, t.nw);
    harness_fill(h, t.w, t.nw, -0.5f, 0.5f, 0);
    t.dy = harness_floats(h, t.ny);
    harness_fill(h, t.dy, t.ny, -1.0f, 1.0f, 0);
    return t;
}

/* ------------------------------------------------------------------------------ cases */

static void direct_cases(struct harness* h, int isa) {
    for (int rep = 0; rep < 200; rep++) {
        harness_free(h);
        struct cconv_conv_shape s;
        if (!draw_shape(h, &s, 0)) continue;
        const struct tensors t = draw_tensors(h, &s);
        const size_t cin_g = s.in_c / s.groups, cout_g = s.out_c / s.groups;

        const int with_bias = harness_chance(h, 1, 2), clamped = harness_chance(h, 1, 3);
        float* bias = NULL;
        if (with_bias) {
            bias = harness_floats(h, s.out_c);
            harness_fill(h, bias, s.out_c, -1.0f, 1.0f, 0);
        }
        const float lo = clamped ? 0.0f : -INFINITY, hi = clamped ? 1.0f : INFINITY;
        const size_t runs = harness_range(h, 1, 4);
        harness_case(h, "forward_tiles " SHAPE_FMT " bias=%d clamp=%d runs=%zu", SHAPE_ARGS(s),
                     with_bias, clamped, runs);
        float* y_ref = harness_floats(h, t.ny);
        float* y_want = harness_floats(h, t.ny);
        float* y_got = harness_floats(h, t.ny);
        ref_forward(&s, t.x, t.w, bias, lo, hi, y_ref);
        run_forward(h, CCONV_ISA_SCALAR, &s, t.x, t.w, bias, lo, hi, runs, y_want);
        run_forward(h, isa, &s, t.x, t.w, bias, lo, hi, runs, y_got);
        harness_expect_f32_close(h, "y vs scalar", t.ny, y_got, y_want, TOL);
        harness_expect_f32_close(h, "y vs float64", t.ny, y_got, y_ref, REF_TOL);

        harness_case(h, "backward_data_tiles " SHAPE_FMT " runs=%zu", SHAPE_ARGS(s), runs);
        float* dx_ref = harness_floats(h, t.nx);
        float* dx_want = harness_floats(h, t.nx);
        float* dx_got = harness_floats(h, t.nx);
        ref_backward_data(h, &s, t.dy, t.w, dx_ref);
        run_backward_data(h, CCONV_ISA_SCALAR, &s, t.dy, t.w, runs, dx_want);
        run_backward_data(h, isa, &s, t.dy, t.w, runs, dx_got);
        harness_expect_f32_close(h, "dx vs scalar", t.nx, dx_got, dx_want, TOL);
        harness_expect_f32_close(h, "dx vs float64", t.nx, dx_got, dx_ref, REF_TOL);

        harness_case(h, "backward_data_col2im " SHAPE_FMT, SHAPE_ARGS(s));
        run_col2im(h, CCONV_ISA_SCALAR, &s, t.dy, t.w, dx_want);
        run_col2im(h, isa, &s, t.dy, t.w, dx_got);
        harness_expect_f32_close(h, "dx vs scalar", t.nx, dx_got, dx_want, TOL);
        harness_expect_f32_close(h, "dx vs float64", t.nx, dx_got, dx_ref, REF_TOL);

        const struct weight_plan plan = draw_weight_plan(h, &s);
        harness_case(h, "backward_weight_part " SHAPE_FMT " parts=%zu kblocks=%zu slab=%zu band=%zu",
                     SHAPE_ARGS(s), plan.parts, plan.kblocks, plan.slab_rows, plan.band_rows);
        double* dw_ref = harness_doubles(h, t.nw);
        ref_backward_weight(&s, t.x, t.dy, dw_ref);
        /* the reference in dw^T's layout [group][tap][ci][co of the group] */
        float* dwt_ref = harness_floats(h, t.nw);
        for (size_t co = 0; co < s.out_c; co++)
            for (size_t ci = 0; ci < cin_g; ci++)
                for (size_t tap = 0; tap < s.kernel_h * s.kernel_w; tap++)
                    dwt_ref[((co / cout_g * s.kernel_h * s.kernel_w + tap) * cin_g + ci) * cout_g +
                            co % cout_g] =
                        (float)dw_ref[w_at(&s, co, ci, tap / s.kernel_w, tap % s.kernel_w)];
        float* dwt_want = harness_floats(h, t.nw);
        float* dwt_got = harness_floats(h, t.nw);
        run_backward_weight(h, CCONV_ISA_SCALAR, &s, &plan, t.x, t.dy, dwt_want);
        run_backward_weight(h, isa, &s, &plan, t.x, t.dy, dwt_got);
        harness_expect_f32_close(h, "dw^T vs scalar", t.nw, dwt_got, dwt_want, TOL);
        harness_expect_f32_close(h, "dw^T vs float64", t.nw, dwt_got, dwt_ref, REF_TOL);
    }
}

static void planar_cases(struct harness* h, int isa) {
    for (int rep = 0; rep < 120; rep++) {
        harness_free(h);
        struct cconv_conv_shape s;
        if (!draw_shape(h, &s, 1)) continue;
        const struct tensors t = draw_tensors(h, &s);
        const size_t block_rows = harness_range(h, 1, s.out_h), runs = harness_range(h, 1, 4);

        const int with_bias = harness_chance(h, 1, 2), clamped = harness_chance(h, 1, 3);
        float* bias = NULL;
        if (with_bias) {
            bias = harness_floats(h, s.out_c);
            harness_fill(h, bias, s.out_c, -1.0f, 1.0f, 0);
        }
        const float lo = clamped ? 0.0f : -INFINITY, hi = clamped ? 1.0f : INFINITY;
        harness_case(h, "forward_planar " SHAPE_FMT " cb=%zu block_rows=%zu runs=%zu bias=%d "
                     "clamp=%d", SHAPE_ARGS(s), cconv_planar_forward_channels(s.out_c),
                     block_rows, runs, with_bias, clamped);
        float* y_ref = harness_floats(h, t.ny);
        float* y_want = harness_floats(h, t.ny);
        float* y_got = harness_floats(h, t.ny);
        ref_forward(&s, t.x, t.w, bias, lo, hi, y_ref);
        run_forward_planar(h, CCONV_ISA_SCALAR, &s, t.x, t.w, bias, lo, hi, block_rows, runs,
                           y_want);
        run_forward_planar(h, isa, &s, t.x, t.w, bias, lo, hi, block_rows, runs, y_got);
        harness_expect_f32_close(h, "y vs scalar", t.ny, y_got, y_want, TOL);
        harness_expect_f32_close(h, "y vs float64", t.ny, y_got, y_ref, REF_TOL);

        /* A quarter of the cases put NaN or infinities in x: the kernel must then sum only the
         * valid pixels (a dropped lane's 0 * inf would be NaN where the true sum is finite). */
        const int specials = harness_chance(h, 1, 4);
        if (specials) harness_fill(h, t.x, t.nx, -1.0f, 1.0f, 1);
        harness_case(h, "backward_weight_planar " SHAPE_FMT " block_rows=%zu runs=%zu specials=%d",
                     SHAPE_ARGS(s), block_rows, runs, specials);
        double* dw_ref = harness_doubles(h, t.nw);
        double* dw_want = harness_doubles(h, t.nw);
        double* dw_got = harness_doubles(h, t.nw);
        ref_backward_weight(&s, t.x, t.dy, dw_ref);
        /* dw is added to: start from values of its own */
        for (size_t i = 0; i < t.nw; i++) {
            const double init = 0.125 * (double)(i % 3) - 0.125;
            dw_want[i] = dw_got[i] = init;
            dw_ref[i] += init;
        }
        run_weight_planar(h, CCONV_ISA_SCALAR, &s, t.x, t.dy, block_rows, runs, dw_want);
        run_weight_planar(h, isa, &s, t.x, t.dy, block_rows, runs, dw_got);
        double scale = 0.0;
        for (size_t i = 0; i < t.nw; i++)
            if (isfinite(dw_ref[i]) && fabs(dw_ref[i]) > scale) scale = fabs(dw_ref[i]);
        harness_expect_f64(h, "dw vs scalar", t.nw, dw_got, dw_want, TOL, TOL * scale);
        harness_expect_f64(h, "dw vs float64", t.nw, dw_got, dw_ref, REF_TOL, REF_TOL * scale);
    }
}

static const size_t SUM_COLS[] = {1, 2, 3, 5, 8, 15, 16, 17, 31, 64, 65, 100, 300};
#define N_SUM_COLS (sizeof SUM_COLS / sizeof SUM_COLS[0])

static void sum_rows_cases(struct harness* h, int isa) {
    const struct cconv_conv_direct_kernels sk = cconv_conv_direct_select(CCONV_ISA_SCALAR);
    const struct cconv_conv_direct_kernels vk = cconv_conv_direct_select(isa);
    for (size_t ci = 0; ci < N_SUM_COLS; ci++)
        for (int rep = 0; rep < 4; rep++) {
            harness_free(h);
            const size_t cols = SUM_COLS[ci];
            const size_t rows = harness_chance(h, 1, 4) ? harness_range(h, 1, 5)
                                                        : harness_range(h, 6, 700);
            float* x = harness_floats(h, rows * cols);
            harness_fill(h, x, rows * cols, -1.0f, 1.0f, 0);
            /* whole; bias_backward's blocks of 16 columns; or one range of them */
            const unsigned mode = (unsigned)harness_range(h, 0, 2);
            size_t c0 = 0, c1 = cols;
            if (mode == 2) {
                c0 = harness_range(h, 0, cols - 1);
                c1 = harness_range(h, c0 + 1, cols);
            }
            const size_t step = mode == 1 ? 16 : cols;
            harness_case(h, "sum_rows %zu x %zu columns [%zu,%zu) in blocks of %zu", rows, cols,
                         c0, c1, step);
            /* outputs outside [c0, c1) keep the junk pattern in all three */
            float* ref = harness_floats(h, cols);
            float* want = harness_floats(h, cols);
            float* got = harness_floats(h, cols);
            double scale = 0.0;
            for (size_t c = c0; c < c1; c++) {
                double sum = 0.0;
                for (size_t r = 0; r < rows; r++) sum += x[r * cols + c];
                ref[c] = (float)sum;
                scale = fabs(sum) > scale ? fabs(sum) : scale;
            }
            for (size_t b = c0; b < c1; b += step) {
                sk.sum_rows(rows, cols, x, b, min_size(b + step, c1), want);
                vk.sum_rows(rows, cols, x, b, min_size(b + step, c1), got);
            }
            harness_expect_f32(h, "sums vs scalar", cols, got, want, 0, 0);
            /* float64 sums of at most 700 floats: the orders differ by far less than a float's
             * rounding */
            harness_expect_f32(h, "sums vs float64", cols, got, ref, 1e-6, 1e-6 * scale);
        }
}

void family_conv(struct harness* h, int isa) {
    const struct cconv_conv_direct_kernels s = cconv_conv_direct_select(CCONV_ISA_SCALAR);
    const struct cconv_conv_direct_kernels v = cconv_conv_direct_select(isa);
    harness_case(h, "kernel table");
    harness_expect_own_kernel(h, "forward_tiles", (const void*)v.forward_tiles,
                              (const void*)s.forward_tiles);
    harness_expect_own_kernel(h, "backward_data_tiles", (const void*)v.backward_data_tiles,
                              (const void*)s.backward_data_tiles);
    harness_expect_own_kernel(h, "backward_data_col2im", (const void*)v.backward_data_col2im,
                              (const void*)s.backward_data_col2im);
    harness_expect_own_kernel(h, "backward_weight_part", (const void*)v.backward_weight_part,
                              (const void*)s.backward_weight_part);
    harness_expect_own_kernel(h, "forward_planar", (const void*)v.forward_planar,
                              (const void*)s.forward_planar);
    harness_expect_own_kernel(h, "backward_weight_planar", (const void*)v.backward_weight_planar,
                              (const void*)s.backward_weight_planar);
    harness_expect_own_kernel(h, "sum_rows", (const void*)v.sum_rows, (const void*)s.sum_rows);
    direct_cases(h, isa);
    planar_cases(h, isa);
    sum_rows_cases(h, isa);
}
