/* The indirect-GEMM micro-kernels (igemm.h): every register tile that f32_igemm_select hands
 * out for this ISA, on every tile shape (mr < MR, nc < NR), against the scalar 4x8 kernel.
 *
 * A case is one logical problem: m <= MR rows of A read through ks pointers each (some equal to
 * `zero`, standing for padding), weights W [ks][kc][n], bias, output rows C with c_offset,
 * optionally accumulating into C, clamped. The ISA's kernel computes it as one tile; the scalar
 * kernel as 4x8 tiles with W repacked into 8-wide panels; both against a float64 reference.
 * Half of the cases read W in place instead of packed (w_stride > NR, NaN past column n, which
 * the kernels must ignore).
 * Sums of products differ by rounding only: |got - want| <= TOL (|init| + sum |a w|).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "igemm/igemm.h"

#define TOL 1e-5
#define SENTINEL 12345.0f

struct problem {
    size_t m, n, kc, ks;
    const float** rows;     /* [ks][m] row pointers, each to a_offset + kc floats, or `zero` */
    size_t a_offset;
    size_t a_step;          /* floats between consecutive k of a row (the kernels' a_stride) */
    const float* zero;      /* (kc - 1) * a_step + 1 zeros, or NULL (no row is padding) */
    const float* w;         /* [ks][kc][n] */
    const float* bias;      /* [n] or NULL */
    float** c;              /* [m] output rows, c_offset + n floats used */
    size_t c_offset;
    int flags;
    float cmin, cmax;
    float* forbidden;       /* row pointer for tile rows >= mr: must never be written */
    int in_place;           /* W read in place with a row stride, not packed */
};

static const float* row_data(const struct problem* p, size_t t, size_t i) {
    const float* r = p->rows[t * p->m + i];
    return r == p->zero ? r : r + p->a_offset;
}

/* The problem through `cfg`: row blocks of MR, column panels of NR, W packed per panel or read
 * in place from a copy whose rows are `wide_stride` floats (NaN past column n). */
static void run_tiled(const struct f32_igemm_config* cfg, const struct problem* p) {
    const size_t MR = cfg->mr, NR = cfg->nr, rows = p->ks * p->kc;
    const size_t wide_stride = (p->n + NR - 1) / NR * NR + 3;
    const float** a = malloc(p->ks * MR * sizeof *a);
    float** c = malloc(MR * sizeof *c);
    float* wp = malloc((rows * NR + 1) * sizeof *wp);
    float* wide = malloc((rows * wide_stride + 1) * sizeof *wide);
    float* bias = malloc(NR * sizeof *bias);
    for (size_t tk = 0; tk < rows; tk++)
        for (size_t j = 0; j < wide_stride; j++)
            wide[tk * wide_stride + j] = j < p->n ? p->w[tk * p->n + j] : NAN;
    for (size_t j0 = 0; j0 < p->n; j0 += NR) {
        const size_t nc = p->n - j0 < NR ? p->n - j0 : NR;
        for (size_t tk = 0; tk < rows; tk++)
            for (size_t j = 0; j < NR; j++) wp[tk * NR + j] = j < nc ? p->w[tk * p->n + j0 + j] : 0.0f;
        for (size_t j = 0; j < NR; j++) bias[j] = p->bias && j < nc ? p->bias[j0 + j] : 0.0f;
        for (size_t r0 = 0; r0 < p->m; r0 += MR) {
            const size_t mr = p->m - r0 < MR ? p->m - r0 : MR;
            for (size_t t = 0; t < p->ks; t++)
                for (size_t i = 0; i < MR; i++)
                    /* Rows past mr: the zero row, or (no zero row) a real row, as callers do. */
                    a[t * MR + i] = i < mr ? p->rows[t * p->m + r0 + i]
                                           : (p->zero ? p->zero : p->rows[t * p->m + r0]);
            for (size_t i = 0; i < MR; i++) c[i] = i < mr ? p->c[r0 + i] + j0 : p->forbidden;
            if (p->in_place)
                cfg->ukernel(mr, nc, p->kc, p->ks, a, p->a_offset, p->a_step, p->zero, wide + j0,
                             wide_stride,
                             p->bias ? bias : NULL, c, p->c_offset, p->flags, p->cmin, p->cmax);
            else
                cfg->ukernel(mr, nc, p->kc, p->ks, a, p->a_offset, p->a_step, p->zero, wp, NR,
                             p->bias ? bias : NULL, c, p->c_offset, p->flags, p->cmin, p->cmax);
        }
    }
    free(a);
    free(c);
    free(wp);
    free(wide);
    free(bias);
}

static int contains(const struct f32_igemm_config* list, size_t count, f32_igemm_ukernel_fn fn) {
    for (size_t i = 0; i < count; i++)
        if (list[i].ukernel == fn) return 1;
    return 0;
}

/* One case: returns nothing, records failures in h. */
static void igemm_case(struct harness* h, const struct f32_igemm_config* cfg,
                       const struct f32_igemm_config* scalar, size_t m, size_t n, size_t kc,
                       size_t ks, int nan_case) {
    struct problem p;
    memset(&p, 0, sizeof p);
    p.m = m, p.n = n, p.kc = kc, p.ks = ks;
    p.a_offset = harness_chance(h, 1, 2) ? 0 : harness_range(h, 1, 5);
    p.a_step = harness_chance(h, 1, 2) ? 1 : harness_range(h, 2, 5);
    const int with_zero = harness_chance(h, 3, 4);
    p.flags = harness_chance(h, 1, 3) ? FC_IGEMM_ACCUMULATE : 0;
    const int with_bias = harness_chance(h, 3, 4);
    const size_t clamp = harness_range(h, 0, 2);
    p.cmin = clamp == 0 ? -INFINITY : clamp == 1 ? 0.0f : -harness_uniform(h, 0.0f, 1.0f);
    p.cmax = clamp == 2 ? harness_uniform(h, 0.0f, 1.0f) : INFINITY;
    p.c_offset = harness_range(h, 0, 5);
    p.in_place = harness_chance(h, 1, 2);

    harness_case(h, "%zux%zu tile: m=%zu n=%zu kc=%zu ks=%zu a_offset=%zu a_stride=%zu zero=%s "
                    "bias=%s accumulate=%d clamp=[%g,%g] c_offset=%zu w=%s%s",
                 cfg->mr, cfg->nr, m, n, kc, ks, p.a_offset, p.a_step, with_zero ? "yes" : "NULL",
                 with_bias ? "yes" : "NULL", p.flags, p.cmin, p.cmax, p.c_offset,
                 p.in_place ? "in place" : "packed", nan_case ? " NaN" : "");

    /* A: one buffer, row (t, i) at its own place; about one pointer in five is the zero row. */
    const size_t row_span = kc ? (kc - 1) * p.a_step + 1 : 0;
    const size_t a_stride = p.a_offset + row_span + harness_range(h, 0, 3);  /* between rows */
    float* a = harness_floats(h, ks * m * a_stride);
    harness_fill(h, a, ks * m * a_stride, -1.0f, 1.0f, 0);
    float* zero = harness_floats(h, row_span);
    for (size_t k = 0; k < row_span; k++) zero[k] = 0.0f;
    p.zero = with_zero ? zero : NULL;
    p.rows = (const float**)harness_ptrs(h, ks * m);
    for (size_t ti = 0; ti < ks * m; ti++)
        p.rows[ti] = with_zero && harness_chance(h, 1, 5) ? zero : a + ti * a_stride;
    if (nan_case) a[harness_range(h, 0, ks * m * a_stride - 1)] = NAN;

    float* w = harness_floats(h, ks * kc * n);
    harness_fill(h, w, ks * kc * n, -1.0f, 1.0f, 0);
    p.w = w;
    float* bias = harness_floats(h, n);
    harness_fill(h, bias, n, -1.0f, 1.0f, 0);
    p.bias = with_bias ? bias : NULL;

    /* C: m rows of c_stride floats; the initial values (read when accumulating) everywhere. */
    const size_t c_stride = p.c_offset + n + harness_range(h, 0, 3);
    float* c0 = harness_floats(h, m * c_stride);
    harness_fill(h, c0, m * c_stride, -2.0f, 2.0f, 0);
    float* c_isa = harness_copy_floats(h, c0, m * c_stride);
    float* c_scalar = harness_copy_floats(h, c0, m * c_stride);
    const size_t nr_max = cfg->nr > scalar->nr ? cfg->nr : scalar->nr;
    p.forbidden = harness_floats(h, p.c_offset + nr_max);
    for (size_t j = 0; j < p.c_offset + nr_max; j++) p.forbidden[j] = SENTINEL;
    p.c = (float**)harness_ptrs(h, m);

    for (size_t i = 0; i < m; i++) p.c[i] = c_isa + i * c_stride;
    run_tiled(cfg, &p);
    for (size_t i = 0; i < m; i++) p.c[i] = c_scalar + i * c_stride;
    run_tiled(scalar, &p);

    /* float64 reference and the error scale |init| + sum |a w| of every output. */
    double* ref = harness_doubles(h, m * n);
    double* mag = harness_doubles(h, m * n);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double s = p.flags ? c0[i * c_stride + p.c_offset + j] : (p.bias ? p.bias[j] : 0.0);
            double g = fabs(s);
            for (size_t t = 0; t < ks; t++) {
                const float* r = row_data(&p, t, i);
                for (size_t k = 0; k < kc; k++) {
                    const double prod = (double)r[k * p.a_step] * (double)w[(t * kc + k) * n + j];
                    s += prod;
                    g += fabs(prod);
                }
            }
            s = s < p.cmin ? p.cmin : s;  /* NaN passes through, as in the kernels */
            s = s > p.cmax ? p.cmax : s;
            ref[i * n + j] = s;
            mag[i * n + j] = g;
        }

    size_t bad_scalar = 0, bad_isa = 0, bad_outside = 0, where_s = 0, where_v = 0, where_o = 0;
    for (size_t i = 0; i < m; i++)
        for (size_t q = 0; q < c_stride; q++) {
            const size_t at = i * c_stride + q;
            if (q < p.c_offset || q >= p.c_offset + n) {  /* never written */
                if (memcmp(&c_isa[at], &c0[at], sizeof(float)) && bad_outside++ == 0) where_o = at;
                continue;
            }
            const size_t j = q - p.c_offset;
            const double want = ref[i * n + j], scale = TOL * mag[i * n + j] + 1e-30;
            const float s = c_scalar[at], v = c_isa[at];
            const int s_ok = isnan(want) ? isnan(s) : fabs((double)s - want) <= scale;
            const int v_ok = isnan(s) ? isnan(v) : fabs((double)v - (double)s) <= scale;
            if (!s_ok && bad_scalar++ == 0) where_s = i * n + j;
            if (!v_ok && bad_isa++ == 0) where_v = at;
        }
    harness_expect(h, bad_scalar == 0,
                   "scalar kernel against the float64 reference: %zu outputs differ, first "
                   "(%zu, %zu): %.9g, reference %.9g",
                   bad_scalar, where_s / (n ? n : 1), where_s % (n ? n : 1),
                   c_scalar[(where_s / (n ? n : 1)) * c_stride + p.c_offset + where_s % (n ? n : 1)],
                   ref[where_s]);
    harness_expect(h, bad_isa == 0, "%zu outputs differ from the scalar kernel, first at row %zu "
                   "column %zu: got %.9g, scalar %.9g", bad_isa, where_v / c_stride,
                   where_v % c_stride, c_isa[where_v], c_scalar[where_v]);
    harness_expect(h, bad_outside == 0, "%zu floats outside the tile's columns written, first at "
                   "row %zu column %zu", bad_outside, where_o / c_stride, where_o % c_stride);
    size_t touched = 0;
    for (size_t j = 0; j < p.c_offset + nr_max; j++) touched += p.forbidden[j] != SENTINEL;
    harness_expect(h, touched == 0, "rows past mr written (%zu floats)", touched);
}

void family_igemm(struct harness* h, int isa) {
    const struct f32_igemm_config scalar = f32_igemm_select(CCONV_ISA_SCALAR, 8);
    /* Every tile the select function hands out for this ISA, over output widths 1..256. */
    struct f32_igemm_config tiles[16];
    size_t n_tiles = 0;
    for (size_t n = 1; n <= 256 && n_tiles < 16; n++) {
        const struct f32_igemm_config cfg = f32_igemm_select(isa, n);
        if (!contains(tiles, n_tiles, cfg.ukernel)) tiles[n_tiles++] = cfg;
    }
    harness_case(h, "kernel table");
    for (size_t t = 0; t < n_tiles; t++)
        harness_expect_own_kernel(h, "igemm", (const void*)tiles[t].ukernel,
                                  (const void*)scalar.ukernel);

    static const size_t KC[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 16, 17, 31, 32, 33, 40};
    for (size_t t = 0; t < n_tiles; t++) {
        const struct f32_igemm_config* cfg = &tiles[t];
        if (h->verbose) printf("  igemm tile %zux%zu\n", cfg->mr, cfg->nr);
        /* Every tile shape: rows 1..MR, columns 1..NR. */
        for (size_t m = 1; m <= cfg->mr; m++)
            for (size_t n = 1; n <= cfg->nr; n++) {
                harness_free(h);
                igemm_case(h, cfg, &scalar, m, n, harness_pick(h, KC, sizeof KC / sizeof KC[0]),
                           harness_range(h, 1, 4), harness_chance(h, 1, 32));
            }
        /* Long reductions (kc, ks as in real layers) on full and partial tiles. */
        static const size_t LONG_KC[] = {64, 127, 256, 577};
        for (size_t i = 0; i < 8; i++) {
            harness_free(h);
            const size_t m = i % 2 ? cfg->mr : harness_range(h, 1, cfg->mr);
            const size_t n = i % 2 ? cfg->nr : harness_range(h, 1, cfg->nr);
            igemm_case(h, cfg, &scalar, m, n, LONG_KC[i % 4], harness_range(h, 1, 9), 0);
        }
    }
}
