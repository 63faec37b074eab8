/* Depthwise convolution rows (dwconv.h): forward, backward-data and backward-weight of one image
 * row over all channels, for kernel sizes 1-5, strides and dilations 1-2, left padding from none
 * to kernel - 1, channel counts around every vector width, vertical padding (rows of zeros,
 * and NULL rows where backward passes allow them). The ISAs use FMAs where the scalar path
 * rounds the product and the sum apart, so results are compared to a tolerance. */
#include <string.h>

#include "dwconv/dwconv.h"
#include "harness.h"

#define TOL 1e-5

static const size_t CHANNELS[] = {1, 3, 4, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 64, 65};
#define N_CHANNELS (sizeof CHANNELS / sizeof CHANNELS[0])

struct dw_case {
    struct cconv_dw_geom g;
    size_t kh, in_w, out_w, c;
};

static int draw(struct harness* h, struct dw_case* k, size_t c) {
    memset(k, 0, sizeof *k);
    k->kh = harness_range(h, 1, 5);
    const size_t kw = harness_range(h, 1, 5), stride = harness_range(h, 1, 2),
                 dil = harness_range(h, 1, 2);
    const size_t pad = harness_range(h, 0, kw - 1);
    k->in_w = harness_range(h, 1, 23);
    const ptrdiff_t span = (ptrdiff_t)(dil * (kw - 1) + 1);
    const ptrdiff_t room = (ptrdiff_t)(k->in_w + 2 * pad) - span;
    if (room < 0) return 0;
    k->out_w = (size_t)room / stride + 1;
    k->c = c;
    k->g = (struct cconv_dw_geom){.channels = c, .in_w = k->in_w, .out_w = k->out_w,
                                  .kernel_h = k->kh, .kernel_w = kw, .stride_w = stride,
                                  .dilation_w = dil, .pad_left = (ptrdiff_t)pad};
    return 1;
}

void family_dwconv(struct harness* h, int isa) {
    const cconv_dwconv_kernels s = cconv_dwconv_select(CCONV_ISA_SCALAR);
    const cconv_dwconv_kernels v = cconv_dwconv_select(isa);
    /* NEON has no depthwise kernels yet: ARM64 runs the scalar ones, and the family reports no
     * cases there rather than comparing the scalar kernel with itself. */
    if (isa == CCONV_ISA_NEON && v.forward_row == s.forward_row) return;
    harness_case(h, "kernel table");
    harness_expect_own_kernel(h, "forward_row", (const void*)v.forward_row,
                              (const void*)s.forward_row);
    harness_expect_own_kernel(h, "backward_data_row", (const void*)v.backward_data_row,
                              (const void*)s.backward_data_row);
    harness_expect_own_kernel(h, "backward_weight_row", (const void*)v.backward_weight_row,
                              (const void*)s.backward_weight_row);

    for (size_t ci = 0; ci < N_CHANNELS; ci++) {
        for (int rep = 0; rep < 6; rep++) {
            harness_free(h);
            struct dw_case k;
            if (!draw(h, &k, CHANNELS[ci])) continue;
            const struct cconv_dw_geom* g = &k.g;
            const size_t c = k.c, kw = g->kernel_w, taps = k.kh * kw;
            const float** scratch = (const float**)harness_ptrs(h, 2 * taps);
            float* w = harness_floats(h, taps * c);
            harness_fill(h, w, taps * c, -1.0f, 1.0f, 0);
            float* zeros = harness_floats(h, (k.in_w > k.out_w ? k.in_w : k.out_w) * c);
            memset(zeros, 0, (k.in_w > k.out_w ? k.in_w : k.out_w) * c * sizeof(float));

            /* Input rows: some taps fall on vertical padding (a row of zeros). */
            const float** rows = (const float**)harness_ptrs(h, k.kh);
            for (size_t i = 0; i < k.kh; i++) {
                if (harness_chance(h, 1, 5)) { rows[i] = zeros; continue; }
                float* r = harness_floats(h, k.in_w * c);
                harness_fill(h, r, k.in_w * c, -1.0f, 1.0f, 0);
                rows[i] = r;
            }

            const int with_bias = harness_chance(h, 1, 2), clamped = harness_chance(h, 1, 3);
            harness_case(h, "forward_row c=%zu k=%zux%zu w=%zu->%zu stride=%zu dil=%zu pad=%td "
                         "bias=%d clamp=%d", c, k.kh, kw, k.in_w, k.out_w, g->stride_w,
                         g->dilation_w, g->pad_left, with_bias, clamped);
            float* bias = NULL;
            if (with_bias) {
                bias = harness_floats(h, c);
                harness_fill(h, bias, c, -1.0f, 1.0f, 0);
            }
            const float lo = clamped ? 0.0f : -__builtin_inff(), hi = clamped ? 6.0f : __builtin_inff();
            float* y_got = harness_floats(h, k.out_w * c);
            float* y_want = harness_floats(h, k.out_w * c);
            s.forward_row(g, rows, w, bias, y_want, lo, hi, NULL, scratch);
            v.forward_row(g, rows, w, bias, y_got, lo, hi, NULL, scratch);
            harness_expect_f32_close(h, "y", k.out_w * c, y_got, y_want, TOL);

            /* Backward-data: the rows of dy that each tap row maps onto; NULL for a stride
             * phase that reaches no output row, zeros past the image. */
            harness_case(h, "backward_data_row c=%zu k=%zux%zu w=%zu->%zu stride=%zu dil=%zu pad=%td",
                         c, k.kh, kw, k.in_w, k.out_w, g->stride_w, g->dilation_w, g->pad_left);
            const float** dy_rows = (const float**)harness_ptrs(h, k.kh);
            for (size_t i = 0; i < k.kh; i++) {
                const unsigned pick = (unsigned)harness_range(h, 0, 5);
                if (pick == 0) { dy_rows[i] = NULL; continue; }
                if (pick == 1) { dy_rows[i] = zeros; continue; }
                float* r = harness_floats(h, k.out_w * c);
                harness_fill(h, r, k.out_w * c, -1.0f, 1.0f, 0);
                dy_rows[i] = r;
            }
            float* dx_got = harness_floats(h, k.in_w * c);
            float* dx_want = harness_floats(h, k.in_w * c);
            s.backward_data_row(g, dy_rows, w, dx_want, NULL, scratch);
            v.backward_data_row(g, dy_rows, w, dx_got, NULL, scratch);
            harness_expect_f32_close(h, "dx", k.in_w * c, dx_got, dx_want, TOL);

            /* Backward-weight over a block of channels and tap rows, added to acc. */
            const size_t blocks = (c + DWCONV_CHANNEL_BLOCK - 1) / DWCONV_CHANNEL_BLOCK;
            const size_t b0 = harness_range(h, 0, blocks - 1);
            const size_t c_begin = b0 * DWCONV_CHANNEL_BLOCK;
            const size_t c_end = harness_chance(h, 1, 2) ? c
                : c_begin + harness_range(h, 1, c - c_begin);
            const size_t i_begin = harness_range(h, 0, k.kh - 1);
            const size_t i_end = harness_range(h, i_begin + 1, k.kh);
            harness_case(h, "backward_weight_row c=%zu [%zu,%zu) taps rows [%zu,%zu) k=%zux%zu "
                         "w=%zu->%zu stride=%zu dil=%zu pad=%td", c, c_begin, c_end, i_begin,
                         i_end, k.kh, kw, k.in_w, k.out_w, g->stride_w, g->dilation_w,
                         g->pad_left);
            const float** wrows = (const float**)harness_ptrs(h, k.kh);
            for (size_t i = 0; i < k.kh; i++)
                wrows[i] = harness_chance(h, 1, 6) ? NULL : rows[i];
            float* dy = harness_floats(h, k.out_w * c);
            harness_fill(h, dy, k.out_w * c, -1.0f, 1.0f, 0);
            double* acc_got = harness_doubles(h, taps * c);
            double* acc_want = harness_doubles(h, taps * c);
            for (size_t t = 0; t < taps * c; t++) acc_got[t] = acc_want[t] = 0.25 * (double)(t % 5);
            s.backward_weight_row(g, wrows, dy, c_begin, c_end, i_begin, i_end, acc_want, NULL,
                                  scratch);
            v.backward_weight_row(g, wrows, dy, c_begin, c_end, i_begin, i_end, acc_got, NULL,
                                  scratch);
            double scale = 0.0;
            for (size_t t = 0; t < taps * c; t++)
                scale = acc_want[t] > scale ? acc_want[t] : (-acc_want[t] > scale ? -acc_want[t] : scale);
            harness_expect_f64(h, "dw acc", taps * c, acc_got, acc_want, TOL, TOL * scale + 1e-30);
        }
    }
}
