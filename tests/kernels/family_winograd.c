/* Winograd F(2x2, 3x3) and F(4x4, 3x3) (winograd.h): the weight transform, blocks of tiles of
 * the forward pass (input transform, GEMMs through the ISA's igemm micro-kernel, output
 * transform with bias and clamp) and the weight gradient (wgrad_block over blocks of tiles,
 * accumulated, then wgrad_out), laid out as cconv/_winograd.pyx lays them out. Each ISA packs the
 * weights for its own micro-kernel's panel width. The transforms use FMAs where the ISA has
 * them and the GEMMs' register tiles differ, so results are compared to a tolerance relative to
 * the output's largest magnitude. */
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "winograd/winograd.h"

#define TOL 2e-5
#define ALIGN 16 /* floats: 64-byte rows and planes, as _winograd.pyx keeps them */

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

/* A 64-byte aligned block of n floats inside a harness buffer (guarded like every other). */
static float* aligned_floats(struct harness* h, size_t n) {
    float* raw = harness_floats(h, n + ALIGN);
    return (float*)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
}

struct problem {
    size_t batch, in_h, in_w, in_c, out_h, out_w, out_c;
    ptrdiff_t pad_top, pad_left;
    const float* x;  /* NHWC */
    const float* w;  /* (out_c, in_c, 3, 3) */
    const float* dy; /* NHWC (batch, out_h, out_w, out_c) */
};

/* y of the forward pass with `isa`'s kernels: weights packed panel by panel, tiles run in
 * blocks of `cap_mult` register tiles (the last one short), output channels in chunks. */
static void forward(struct harness* h, int isa, int m, const struct problem* p, const float* bias,
                    float cmin, float cmax, size_t cap_mult, size_t chunk_panels, float* y) {
    const struct f32_wino_config wc = f32_wino_select(isa, m);
    const struct f32_igemm_config cfg = f32_igemm_select(isa, p->out_c);
    const size_t alpha2 = wc.alpha * wc.alpha, nr = cfg.nr;
    const size_t panels = (p->out_c + nr - 1) / nr;
    float* packed = harness_floats(h, alpha2 * panels * p->in_c * nr);
    for (size_t panel = 0; panel < panels; panel++)
        wc.weights(p->out_c, p->in_c, p->w, (ptrdiff_t)(p->in_c * 9), 9, 3, 1, nr, panel, packed);
    float* padded_bias = NULL;
    if (bias) {
        padded_bias = harness_floats(h, panels * nr);
        memset(padded_bias, 0, panels * nr * sizeof(float));
        memcpy(padded_bias, bias, p->out_c * sizeof(float));
    }
    struct cconv_wino_shape s = {
        .batch = p->batch, .in_h = p->in_h, .in_w = p->in_w, .in_c = p->in_c,
        .out_h = p->out_h, .out_w = p->out_w, .out_c = p->out_c,
        .pad_top = p->pad_top, .pad_left = p->pad_left,
        .tiles_h = (p->out_h + wc.m - 1) / wc.m, .tiles_w = (p->out_w + wc.m - 1) / wc.m,
    };
    s.co_chunk = (chunk_panels < panels ? chunk_panels : panels) * nr;
    const size_t cap = cap_mult * cfg.mr;
    s.v_row = round_up(p->in_c, ALIGN);
    s.v_plane = cap * s.v_row + ALIGN;
    s.m_row = round_up(s.co_chunk, ALIGN);
    s.m_plane = cap * s.m_row + ALIGN;
    float* zero = harness_floats(h, round_up(p->in_c, ALIGN));
    memset(zero, 0, round_up(p->in_c, ALIGN) * sizeof(float));
    const struct cconv_wino_scratch scratch = {
        .v = aligned_floats(h, alpha2 * s.v_plane),
        .m = aligned_floats(h, alpha2 * s.m_plane),
        .a_rows = (const float**)harness_ptrs(h, cap),
        .c_rows = (float**)harness_ptrs(h, cap),
        .zero = zero,
    };
    const size_t total = s.batch * s.tiles_h * s.tiles_w;
    for (size_t tile0 = 0; tile0 < total; tile0 += cap)
        wc.block(&s, &cfg, p->x, packed, padded_bias, y, tile0,
                 total - tile0 < cap ? total - tile0 : cap, cmin, cmax, &scratch);
}

/* dw (3, 3, in_c, out_c) of the weight gradient with `isa`'s kernels, one part, blocks of `cap`
 * tiles accumulated, the input channels in slices of `width`. */
static void weight_grad(struct harness* h, int isa, int m, const struct problem* p, size_t cap,
                        size_t width, float* dw) {
    const struct f32_wino_config wc = f32_wino_select(isa, m);
    const struct f32_igemm_config cfg = f32_igemm_select(isa, p->out_c);
    const size_t alpha2 = wc.alpha * wc.alpha;
    struct cconv_wino_shape s = {
        .batch = p->batch, .in_h = p->in_h, .in_w = p->in_w, .in_c = p->in_c,
        .out_h = p->out_h, .out_w = p->out_w, .out_c = p->out_c,
        .pad_top = p->pad_top, .pad_left = p->pad_left,
        .tiles_h = (p->out_h + wc.m - 1) / wc.m, .tiles_w = (p->out_w + wc.m - 1) / wc.m,
        .co_chunk = p->out_c,
    };
    const size_t yc = round_up(round_up(p->out_c, cfg.nr), ALIGN);
    s.v_row = width;
    s.v_plane = cap * width + ALIGN;
    s.m_row = yc;
    s.m_plane = cap * yc + ALIGN;
    const size_t zn = round_up(p->in_c > p->out_c ? p->in_c : p->out_c, ALIGN);
    float* zero = harness_floats(h, zn);
    memset(zero, 0, zn * sizeof(float));
    float* ydy = aligned_floats(h, alpha2 * s.m_plane);
    memset(ydy, 0, alpha2 * s.m_plane * sizeof(float));  /* pad columns: read, never stored */
    const struct cconv_wino_wgrad_scratch scratch = {
        .v = aligned_floats(h, alpha2 * s.v_plane),
        .ydy = ydy,
        .a_rows = (const float**)harness_ptrs(h, cfg.mr),
        .c_rows = (float**)harness_ptrs(h, cfg.mr),
        .zero = zero,
    };
    const size_t m_floats = alpha2 * p->in_c * p->out_c;
    float* mt = harness_floats(h, m_floats);
    const size_t total = s.batch * s.tiles_h * s.tiles_w;
    for (size_t k0 = 0; k0 < p->in_c; k0 += width) {
        const size_t k1 = k0 + width < p->in_c ? k0 + width : p->in_c;
        int flags = 0;
        for (size_t tile0 = 0; tile0 < total; tile0 += cap) {
            wc.wgrad_block(&s, &cfg, p->x, p->dy, mt, tile0,
                           total - tile0 < cap ? total - tile0 : cap, k0, k1, flags, &scratch);
            flags = FC_IGEMM_ACCUMULATE;
        }
    }
    wc.wgrad_out(p->in_c, p->out_c, mt, 1, m_floats, 0, p->in_c, dw);
}

static const size_t CHANNELS[] = {1, 3, 4, 7, 8, 9, 16, 17, 24, 32, 33, 48, 64};
#define N_CHANNELS (sizeof CHANNELS / sizeof CHANNELS[0])

void family_winograd(struct harness* h, int isa) {
    /* NEON has no Winograd kernels yet: ARM64 runs the scalar ones (no cases reported). */
    if (isa == CCONV_ISA_NEON &&
        f32_wino_select(isa, 4).block == f32_wino_select(CCONV_ISA_SCALAR, 4).block)
        return;
    for (int m = 2; m <= 4; m += 2) {
        const struct f32_wino_config s = f32_wino_select(CCONV_ISA_SCALAR, m);
        const struct f32_wino_config v = f32_wino_select(isa, m);
        harness_case(h, "kernel table F(%dx%d)", m, m);
        harness_expect_own_kernel(h, "block", (const void*)v.block, (const void*)s.block);
        harness_expect_own_kernel(h, "weights", (const void*)v.weights, (const void*)s.weights);
        harness_expect_own_kernel(h, "wgrad_block", (const void*)v.wgrad_block,
                                  (const void*)s.wgrad_block);
        harness_expect_own_kernel(h, "wgrad_out", (const void*)v.wgrad_out,
                                  (const void*)s.wgrad_out);
    }
    for (size_t ci = 0; ci < N_CHANNELS; ci++) {
        for (int rep = 0; rep < 4; rep++) {
            harness_free(h);
            const int m = harness_chance(h, 1, 2) ? 2 : 4;
            struct problem p = {
                .batch = harness_range(h, 1, 2), .in_h = harness_range(h, 1, 11),
                .in_w = harness_range(h, 1, 11), .in_c = CHANNELS[ci],
                .out_c = CHANNELS[harness_range(h, 0, N_CHANNELS - 1)],
                .pad_top = (ptrdiff_t)harness_range(h, 0, 2),
                .pad_left = (ptrdiff_t)harness_range(h, 0, 2),
            };
            if (p.in_h + 2 * (size_t)p.pad_top < 3 || p.in_w + 2 * (size_t)p.pad_left < 3) continue;
            p.out_h = p.in_h + 2 * (size_t)p.pad_top - 2;
            p.out_w = p.in_w + 2 * (size_t)p.pad_left - 2;
            const size_t nx = p.batch * p.in_h * p.in_w * p.in_c;
            const size_t ny = p.batch * p.out_h * p.out_w * p.out_c;
            float* x = harness_floats(h, nx);
            harness_fill(h, x, nx, -1.0f, 1.0f, 0);
            float* w = harness_floats(h, p.out_c * p.in_c * 9);
            harness_fill(h, w, p.out_c * p.in_c * 9, -0.5f, 0.5f, 0);
            float* dy = harness_floats(h, ny);
            harness_fill(h, dy, ny, -1.0f, 1.0f, 0);
            p.x = x, p.w = w, p.dy = dy;

            const int with_bias = harness_chance(h, 1, 2), clamped = harness_chance(h, 1, 3);
            float* bias = NULL;
            if (with_bias) {
                bias = harness_floats(h, p.out_c);
                harness_fill(h, bias, p.out_c, -1.0f, 1.0f, 0);
            }
            const float lo = clamped ? 0.0f : -__builtin_inff(), hi = clamped ? 6.0f : __builtin_inff();
            const size_t cap_mult = harness_range(h, 1, 3), chunk = harness_range(h, 1, 4);
            harness_case(h, "forward F(%dx%d) n=%zu %zux%zux%zu -> %zux%zux%zu pad=%td,%td bias=%d "
                         "clamp=%d block=%zu mr chunk=%zu panels", m, m, p.batch, p.in_h, p.in_w,
                         p.in_c, p.out_h, p.out_w, p.out_c, p.pad_top, p.pad_left, with_bias,
                         clamped, cap_mult, chunk);
            float* y_want = harness_floats(h, ny);
            float* y_got = harness_floats(h, ny);
            forward(h, CCONV_ISA_SCALAR, m, &p, bias, lo, hi, cap_mult, chunk, y_want);
            forward(h, isa, m, &p, bias, lo, hi, cap_mult, chunk, y_got);
            harness_expect_f32_close(h, "y", ny, y_got, y_want, TOL);

            const size_t cap = harness_range(h, 1, 9);
            const size_t width = round_up(p.in_c, ALIGN) / ALIGN > 1 && harness_chance(h, 1, 2)
                ? ALIGN : round_up(p.in_c, ALIGN);
            harness_case(h, "weight_grad F(3x3 from %dx%d) n=%zu %zux%zux%zu -> %zux%zux%zu "
                         "pad=%td,%td block=%zu slice=%zu", m, m, p.batch, p.in_h, p.in_w,
                         p.in_c, p.out_h, p.out_w, p.out_c, p.pad_top, p.pad_left, cap, width);
            float* dw_want = harness_floats(h, 9 * p.in_c * p.out_c);
            float* dw_got = harness_floats(h, 9 * p.in_c * p.out_c);
            weight_grad(h, CCONV_ISA_SCALAR, m, &p, cap, width, dw_want);
            weight_grad(h, isa, m, &p, cap, width, dw_got);
            harness_expect_f32_close(h, "dw", 9 * p.in_c * p.out_c, dw_got, dw_want, TOL);
        }
    }
}
