/* Body of the Winograd kernels F(m x m, 3 x 3) (contract in winograd.h), shared by every ISA.
 *
 * The including file defines:
 *   WINO_M           2 or 4                WINO_BLOCK, WINO_WEIGHTS   the two function names
 *   VEC, VLEN        vector type, floats per vector (a plain float and 1 for the scalar path)
 *   VZERO() VSET1(x) VLOADU(p) VSTOREU(p, v) VADD VSUB VMUL VMAX(a, b) VMIN(a, b)
 *   VFMA(a, b, c) = a * b + c     VFNMA(a, b, c) = c - a * b
 *   VLOAD_PART(p, n) / VSTORE_PART(p, v, n)   the first n (< VLEN) floats (zeros past them)
 * Every transform works on VLEN channels at once: NHWC makes each of them a vector operation.
 */
#include <math.h>
#include <stddef.h>

#include "winograd.h"

#define WINO_ALPHA (WINO_M + 2)
/* Column 1 of A^T is all ones (for m = 2 and 4): a constant added to M[1][1] reaches every
 * output of the tile once, so the bias rides in as the GEMM's initial value at this point. */
#define WINO_BIAS_POINT (WINO_ALPHA + 1)
#define WINO_INLINE static inline __attribute__((always_inline))

/* ------------------------------------------------------------------ 1-D transforms, VLEN lanes */

#if WINO_M == 4
/* B^T, rows: [4 0 -5 0 1 0] [0 -4 -4 1 1 0] [0 4 -4 -1 1 0] [0 -2 -1 2 1 0] [0 2 -1 -2 1 0]
 * [0 4 0 -5 0 1]. */
WINO_INLINE void wino_bt(const VEC d[6], VEC t[6]) {
    const VEC c2 = VSET1(2.0f), c4 = VSET1(4.0f), c5 = VSET1(5.0f);
    const VEC a = VFNMA(c4, d[2], d[4]);  /* d4 - 4 d2 */
    const VEC b = VFNMA(c4, d[1], d[3]);  /* d3 - 4 d1 */
    const VEC c = VSUB(d[4], d[2]);
    const VEC e = VSUB(d[3], d[1]);
    t[0] = VFMA(c4, d[0], VFNMA(c5, d[2], d[4]));
    t[1] = VADD(a, b);
    t[2] = VSUB(a, b);
    t[3] = VFMA(c2, e, c);
    t[4] = VFNMA(c2, e, c);
    t[5] = VFMA(c4, d[1], VFNMA(c5, d[3], d[5]));
}

/* Rows 3h .. 3h+2 of B^T d (the two halves share no work). */
WINO_INLINE void wino_bt_half(const VEC d[6], VEC t[3], int h) {
    const VEC c4 = VSET1(4.0f), c5 = VSET1(5.0f);
    if (h == 0) {
        const VEC a = VFNMA(c4, d[2], d[4]);  /* d4 - 4 d2 */
        const VEC b = VFNMA(c4, d[1], d[3]);  /* d3 - 4 d1 */
        t[0] = VFMA(c4, d[0], VFNMA(c5, d[2], d[4]));
        t[1] = VADD(a, b);
        t[2] = VSUB(a, b);
    } else {
        const VEC c = VSUB(d[4], d[2]);
        const VEC e = VSUB(d[3], d[1]);
        t[0] = VFMA(VSET1(2.0f), e, c);
        t[1] = VFNMA(VSET1(2.0f), e, c);
        t[2] = VFMA(c4, d[1], VFNMA(c5, d[3], d[5]));
    }
}

/* A^T, rows: [1 1 1 1 1 0] [0 1 -1 2 -2 0] [0 1 1 4 4 0] [0 1 -1 8 -8 1]. */
WINO_INLINE void wino_at(const VEC m[6], VEC y[4]) {
    const VEC s12 = VADD(m[1], m[2]), d12 = VSUB(m[1], m[2]);
    const VEC s34 = VADD(m[3], m[4]), d34 = VSUB(m[3], m[4]);
    y[0] = VADD(VADD(m[0], s12), s34);
    y[1] = VFMA(VSET1(2.0f), d34, d12);
    y[2] = VFMA(VSET1(4.0f), s34, s12);
    y[3] = VADD(VFMA(VSET1(8.0f), d34, d12), m[5]);
}

/* G, rows: [1/4 0 0] [-1/6 -1/6 -1/6] [-1/6 1/6 -1/6] [1/24 1/12 1/6] [1/24 -1/12 1/6] [0 0 1]. */
WINO_INLINE void wino_g(const VEC g[3], VEC u[6]) {
    const VEC even = VADD(g[0], g[2]);
    const VEC a = VFMA(VSET1(1.0f / 24.0f), g[0], VMUL(VSET1(1.0f / 6.0f), g[2]));
    const VEC b = VMUL(VSET1(1.0f / 12.0f), g[1]);
    u[0] = VMUL(VSET1(0.25f), g[0]);
    u[1] = VMUL(VSET1(-1.0f / 6.0f), VADD(even, g[1]));
    u[2] = VMUL(VSET1(-1.0f / 6.0f), VSUB(even, g[1]));
    u[3] = VADD(a, b);
    u[4] = VSUB(a, b);
    u[5] = g[2];
}

/* Weight gradient F(3x3, 4x4) (the transposition principle: dg = G^T [(A dy) . (B^T d)]):
 * A = (A^T)^T, rows: [1 0 0 0] [1 1 1 1] [1 -1 1 -1] [1 2 4 8] [1 -2 4 -8] [0 0 0 1]. */
WINO_INLINE void wino_a(const VEC d[4], VEC u[6]) {
    const VEC even = VADD(d[0], d[2]), odd = VADD(d[1], d[3]);
    const VEC even4 = VFMA(VSET1(4.0f), d[2], d[0]), odd4 = VFMA(VSET1(4.0f), d[3], d[1]);
    u[0] = d[0];
    u[1] = VADD(even, odd);
    u[2] = VSUB(even, odd);
    u[3] = VFMA(VSET1(2.0f), odd4, even4);
    u[4] = VFNMA(VSET1(2.0f), odd4, even4);
    u[5] = d[3];
}

/* G^T, rows: [1/4 -1/6 -1/6 1/24 1/24 0] [0 -1/6 1/6 1/12 -1/12 0] [0 -1/6 -1/6 1/6 1/6 1]. */
WINO_INLINE void wino_gt(const VEC m[6], VEC g[3]) {
    const VEC s12 = VADD(m[1], m[2]), d12 = VSUB(m[2], m[1]);
    const VEC s34 = VADD(m[3], m[4]), d34 = VSUB(m[3], m[4]);
    const VEC sixth = VSET1(1.0f / 6.0f);
    g[0] = VFMA(VSET1(0.25f), m[0], VFMA(VSET1(1.0f / 24.0f), s34, VMUL(VSET1(-1.0f / 6.0f), s12)));
    g[1] = VFMA(VSET1(1.0f / 12.0f), d34, VMUL(sixth, d12));
    g[2] = VADD(VMUL(sixth, VSUB(s34, s12)), m[5]);
}

#elif WINO_M == 2
/* B^T, rows: [1 0 -1 0] [0 1 1 0] [0 -1 1 0] [0 1 0 -1]. */
WINO_INLINE void wino_bt(const VEC d[4], VEC t[4]) {
    t[0] = VSUB(d[0], d[2]);
    t[1] = VADD(d[1], d[2]);
    t[2] = VSUB(d[2], d[1]);
    t[3] = VSUB(d[1], d[3]);
}

/* Rows 2h, 2h+1 of B^T d. */
WINO_INLINE void wino_bt_half(const VEC d[4], VEC t[2], int h) {
    if (h == 0) {
        t[0] = VSUB(d[0], d[2]);
        t[1] = VADD(d[1], d[2]);
    } else {
        t[0] = VSUB(d[2], d[1]);
        t[1] = VSUB(d[1], d[3]);
    }
}

/* A^T, rows: [1 1 1 0] [0 1 -1 -1]. */
WINO_INLINE void wino_at(const VEC m[4], VEC y[2]) {
    y[0] = VADD(VADD(m[0], m[1]), m[2]);
    y[1] = VSUB(VSUB(m[1], m[2]), m[3]);
}

/* G, rows: [1 0 0] [1/2 1/2 1/2] [1/2 -1/2 1/2] [0 0 1]. */
WINO_INLINE void wino_g(const VEC g[3], VEC u[4]) {
    const VEC even = VADD(g[0], g[2]), half = VSET1(0.5f);
    u[0] = g[0];
    u[1] = VMUL(half, VADD(even, g[1]));
    u[2] = VMUL(half, VSUB(even, g[1]));
    u[3] = g[2];
}
/* Weight gradient F(3x3, 2x2): A = (A^T)^T, rows: [1 0] [1 1] [1 -1] [0 -1]. */
WINO_INLINE void wino_a(const VEC d[2], VEC u[4]) {
    u[0] = d[0];
    u[1] = VADD(d[0], d[1]);
    u[2] = VSUB(d[0], d[1]);
    u[3] = VSUB(VZERO(), d[1]);
}

/* G^T, rows: [1 1/2 1/2 0] [0 1/2 -1/2 0] [0 1/2 1/2 1]. */
WINO_INLINE void wino_gt(const VEC m[4], VEC g[3]) {
    const VEC half = VSET1(0.5f), s12 = VMUL(half, VADD(m[1], m[2]));
    g[0] = VADD(m[0], s12);
    g[1] = VMUL(half, VSUB(m[1], m[2]));
    g[2] = VADD(s12, m[3]);
}
#else
#error "WINO_M must be 2 or 4"
#endif

/* ------------------------------------------------------------------ tile transforms */

/* V[xi] = (B^T d B)[xi] for channels [c, c + n), n = VLEN unless `part`. p: alpha^2 pointers to
 * the patch's pixels (row-major), the zero row for points outside the image. */
WINO_INLINE void input_tile_vec(const float* const* p, size_t c, size_t n, int part, float* v,
                                size_t plane) {
    /* In two halves of alpha/2 rows of B^T d each, so that one half (3 x 6 vectors for F(4x4))
     * stays in registers: the input is read twice (from L1) instead of spilling. */
    enum { H = WINO_ALPHA / 2 };
    for (int h = 0; h < 2; h++) {
        VEC t[H][WINO_ALPHA];
        for (size_t j = 0; j < WINO_ALPHA; j++) {
            VEC d[WINO_ALPHA], r[H];
            for (size_t i = 0; i < WINO_ALPHA; i++)
                d[i] = part ? VLOAD_PART(p[i * WINO_ALPHA + j] + c, n) : VLOADU(p[i * WINO_ALPHA + j] + c);
            wino_bt_half(d, r, h);
            for (size_t i = 0; i < H; i++) t[i][j] = r[i];
        }
        for (size_t i = 0; i < H; i++) {
            VEC r[WINO_ALPHA];
            wino_bt(t[i], r);
            for (size_t j = 0; j < WINO_ALPHA; j++) {
                float* out = v + ((h * H + i) * WINO_ALPHA + j) * plane + c;
                if (part) VSTORE_PART(out, r[j], n);
                else VSTOREU(out, r[j]);
            }
        }
    }
}

static void input_tile(const float* const* p, size_t channels, float* v, size_t plane) {
    size_t c = 0;
    for (; c + VLEN <= channels; c += VLEN) input_tile_vec(p, c, VLEN, 0, v, plane);
    if (c < channels) input_tile_vec(p, c, channels - c, 1, v, plane);
}

/* y = A^T M A, clamped, for channels [c, c + n) of one tile (the bias is already in M, see
 * WINO_BIAS_POINT); out: m*m pointers (NULL where the tile runs past the output).
 * clamp: 0 none, 1 max(lo, y), 2 min(hi, max(lo, y)); this operand order keeps NaN. */
WINO_INLINE void output_tile_vec(const float* mt, size_t plane, size_t c, size_t n, int part,
                                 int clamp, VEC lo, VEC hi, float* const* out) {
    VEC t[WINO_M][WINO_ALPHA];
    for (size_t j = 0; j < WINO_ALPHA; j++) {
        VEC m[WINO_ALPHA], r[WINO_M];
        for (size_t i = 0; i < WINO_ALPHA; i++) {
            const float* src = mt + (i * WINO_ALPHA + j) * plane + c;
            m[i] = part ? VLOAD_PART(src, n) : VLOADU(src);
        }
        wino_at(m, r);
        for (size_t i = 0; i < WINO_M; i++) t[i][j] = r[i];
    }
    for (size_t i = 0; i < WINO_M; i++) {
        VEC r[WINO_M];
        wino_at(t[i], r);
        for (size_t j = 0; j < WINO_M; j++) {
            float* dst = out[i * WINO_M + j];
            if (!dst) continue;
            VEC value = r[j];
            if (clamp >= 1) value = VMAX(lo, value);
            if (clamp >= 2) value = VMIN(hi, value);
            if (part) VSTORE_PART(dst + c, value, n);
            else VSTOREU(dst + c, value);
        }
    }
}

WINO_INLINE void output_tile_clamp(const float* mt, size_t plane, size_t channels, int clamp,
                                   VEC lo, VEC hi, float* const* out) {
    size_t c = 0;
    for (; c + VLEN <= channels; c += VLEN) output_tile_vec(mt, plane, c, VLEN, 0, clamp, lo, hi, out);
    if (c < channels) output_tile_vec(mt, plane, c, channels - c, 1, clamp, lo, hi, out);
}

static void output_tile(const float* mt, size_t plane, size_t channels, float cmin, float cmax,
                        float* const* out) {
    const VEC lo = VSET1(cmin), hi = VSET1(cmax);
    if (cmax < INFINITY) output_tile_clamp(mt, plane, channels, 2, lo, hi, out);
    else if (cmin > -INFINITY) output_tile_clamp(mt, plane, channels, 1, lo, hi, out);
    else output_tile_clamp(mt, plane, channels, 0, lo, hi, out);
}

/* ------------------------------------------------------------------ one block of tiles */

/* Pointers to the alpha x alpha input pixels of tile (n, th, tw), the zero row outside. */
static inline void patch_pointers(const struct cconv_wino_shape* s, const float* x, const float* zero,
                                  size_t n, size_t th, size_t tw, const float** p) {
    const float* image = x + n * s->in_h * s->in_w * s->in_c;
    const ptrdiff_t ih0 = (ptrdiff_t)(th * WINO_M) - s->pad_top;
    const ptrdiff_t iw0 = (ptrdiff_t)(tw * WINO_M) - s->pad_left;
    for (size_t i = 0; i < WINO_ALPHA; i++) {
        const ptrdiff_t ih = ih0 + (ptrdiff_t)i;
        const int row_in = ih >= 0 && ih < (ptrdiff_t)s->in_h;
        for (size_t j = 0; j < WINO_ALPHA; j++) {
            const ptrdiff_t iw = iw0 + (ptrdiff_t)j;
            p[i * WINO_ALPHA + j] = row_in && iw >= 0 && iw < (ptrdiff_t)s->in_w
                ? image + ((size_t)ih * s->in_w + (size_t)iw) * s->in_c : zero;
        }
    }
}

void WINO_BLOCK(const struct cconv_wino_shape* s, const struct f32_igemm_config* cfg,
                const float* x, const float* packed_u, const float* bias, float* y,
                size_t tile0, size_t ntiles, float cmin, float cmax,
                const struct cconv_wino_scratch* ws) {
    const size_t MR = cfg->mr, NR = cfg->nr, K = s->in_c, N = s->out_c;
    const size_t panels = (N + NR - 1) / NR;
    const size_t per_image = s->tiles_h * s->tiles_w;
    float* const v = ws->v;
    float* const m = ws->m;
    const float* const zero = ws->zero;

    /* 1. Input transform of every tile of the block. */
    size_t n = tile0 / per_image, th = (tile0 % per_image) / s->tiles_w, tw = tile0 % s->tiles_w;
    const size_t tile_n = n, tile_th = th, tile_tw = tw;
    for (size_t t = 0; t < ntiles; t++) {
        const float* patch[WINO_ALPHA * WINO_ALPHA];
        patch_pointers(s, x, zero, n, th, tw, patch);
        input_tile(patch, K, v + t * s->v_row, s->v_plane);
        if (++tw == s->tiles_w) { tw = 0; if (++th == s->tiles_h) { th = 0; n++; } }
    }

    /* Row pointers of the GEMMs: one per tile, relative to plane 0 (a_offset and c_offset pick
     * the plane); rows past the block read the zero row and are never stored. */
    const size_t rows = (ntiles + MR - 1) / MR * MR;
    for (size_t t = 0; t < rows; t++) {
        ws->a_rows[t] = t < ntiles ? v + t * s->v_row : zero;
        ws->c_rows[t] = m + (t < ntiles ? t : 0) * s->m_row;
    }

    for (size_t co0 = 0; co0 < N; co0 += s->co_chunk) {
        const size_t cc = N - co0 < s->co_chunk ? N - co0 : s->co_chunk;
        const size_t p0 = co0 / NR, p1 = (co0 + cc + NR - 1) / NR;

        /* 2. alpha^2 GEMMs over this chunk of output channels. */
        for (size_t xi = 0; xi < WINO_ALPHA * WINO_ALPHA; xi++) {
            for (size_t p = p0; p < p1; p++) {
                const size_t nc = N - p * NR < NR ? N - p * NR : NR;
                const float* u = packed_u + (xi * panels + p) * K * NR;
                const float* b = bias && xi == WINO_BIAS_POINT ? bias + p * NR : NULL;
                for (size_t m0 = 0; m0 < ntiles; m0 += MR) {
                    const size_t mr = ntiles - m0 < MR ? ntiles - m0 : MR;
                    cfg->ukernel(mr, nc, K, 1, ws->a_rows + m0, xi * s->v_plane, 1, zero, u, NR, b,
                                 ws->c_rows + m0, xi * s->m_plane + (p - p0) * NR, 0,
                                 -INFINITY, INFINITY);
                }
            }
        }

        /* 3. Output transform of the chunk, clamp fused. */
        n = tile_n; th = tile_th; tw = tile_tw;
        for (size_t t = 0; t < ntiles; t++) {
            float* out[WINO_M * WINO_M];
            float* image = y + n * s->out_h * s->out_w * N + co0;
            for (size_t i = 0; i < WINO_M; i++) {
                const size_t oh = th * WINO_M + i;
                for (size_t j = 0; j < WINO_M; j++) {
                    const size_t ow = tw * WINO_M + j;
                    out[i * WINO_M + j] = oh < s->out_h && ow < s->out_w
                        ? image + (oh * s->out_w + ow) * N : NULL;
                }
            }
            output_tile(m + t * s->m_row, s->m_plane, cc, cmin, cmax, out);
            if (++tw == s->tiles_w) { tw = 0; if (++th == s->tiles_h) { th = 0; n++; } }
        }
    }
}

/* ------------------------------------------------------------------ weight transform */

/* u[xi] = (G g G^T)[xi] for VLEN output channels at once (n = VLEN unless `part`): g9 holds the
 * 3x3 kernels tap-major, g9[tap * stride + lane]; the result goes to out[xi * out_stride]. */
WINO_INLINE void weights_vec(const float* g9, size_t stride, size_t n, int part, float* out,
                             size_t out_stride) {
    VEC t[WINO_ALPHA][3];  /* t = G g */
    for (size_t c = 0; c < 3; c++) {
        VEC col[3], r[WINO_ALPHA];
        for (size_t i = 0; i < 3; i++) {
            const float* src = g9 + (i * 3 + c) * stride;
            col[i] = part ? VLOAD_PART(src, n) : VLOADU(src);
        }
        wino_g(col, r);
        for (size_t i = 0; i < WINO_ALPHA; i++) t[i][c] = r[i];
    }
    for (size_t i = 0; i < WINO_ALPHA; i++) {
        VEC r[WINO_ALPHA];
        wino_g(t[i], r);  /* u = t G^T */
        for (size_t l = 0; l < WINO_ALPHA; l++) {
            float* dst = out + (i * WINO_ALPHA + l) * out_stride;
            if (part) VSTORE_PART(dst, r[l], n);
            else VSTOREU(dst, r[l]);
        }
    }
}

void WINO_WEIGHTS(size_t n_out, size_t k, const float* w, ptrdiff_t s_n, ptrdiff_t s_k,
                  ptrdiff_t s_i, ptrdiff_t s_j, size_t nr, size_t panel, float* packed) {
    enum { MAX_NR = 64 };
    const size_t panels = (n_out + nr - 1) / nr;
    const size_t plane = panels * k * nr;  /* floats between the packed U[xi] */
    float g9[9 * MAX_NR];
    for (size_t kk = 0; kk < k; kk++) {
        /* The panel's nr kernels for this input channel, tap-major (zeros past n_out). */
        for (size_t j = 0; j < nr; j++) {
            const size_t nn = panel * nr + j;
            const float* g = w + (ptrdiff_t)nn * s_n + (ptrdiff_t)kk * s_k;
            for (size_t i = 0; i < 3; i++)
                for (size_t c = 0; c < 3; c++)
                    g9[(i * 3 + c) * MAX_NR + j] = nn < n_out ? g[(ptrdiff_t)i * s_i + (ptrdiff_t)c * s_j] : 0.0f;
        }
        float* out = packed + (panel * k + kk) * nr;
        size_t j = 0;
        for (; j + VLEN <= nr; j += VLEN) weights_vec(g9 + j, MAX_NR, VLEN, 0, out + j, plane);
        if (j < nr) weights_vec(g9 + j, MAX_NR, nr - j, 1, out + j, plane);
    }
}

/* ------------------------------------------------------------------ weight gradient */

/* Ydy[xi] = (A dy_t A^T)[xi] for channels [c, c + n): q holds the m x m pointers of the tile's
 * dy pixels (the zero row past the output). */
WINO_INLINE void grad_tile_vec(const float* const* q, size_t c, size_t n, int part, float* out,
                               size_t plane) {
    VEC t[WINO_ALPHA][WINO_M];  /* t = A dy */
    for (size_t j = 0; j < WINO_M; j++) {
        VEC d[WINO_M], r[WINO_ALPHA];
        for (size_t i = 0; i < WINO_M; i++)
            d[i] = part ? VLOAD_PART(q[i * WINO_M + j] + c, n) : VLOADU(q[i * WINO_M + j] + c);
        wino_a(d, r);
        for (size_t i = 0; i < WINO_ALPHA; i++) t[i][j] = r[i];
    }
    for (size_t i = 0; i < WINO_ALPHA; i++) {
        VEC r[WINO_ALPHA];
        wino_a(t[i], r);  /* (A dy) A^T, row i */
        for (size_t l = 0; l < WINO_ALPHA; l++) {
            float* dst = out + (i * WINO_ALPHA + l) * plane + c;
            if (part) VSTORE_PART(dst, r[l], n);
            else VSTOREU(dst, r[l]);
        }
    }
}

void WINO_WGRAD_BLOCK(const struct cconv_wino_shape* s, const struct f32_igemm_config* cfg,
                      const float* x, const float* dy, float* mt, size_t tile0, size_t ntiles,
                      size_t k0, size_t k1, int flags, const struct cconv_wino_wgrad_scratch* ws) {
    const size_t MR = cfg->mr, NR = cfg->nr, K = k1 - k0, N = s->out_c;
    const size_t per_image = s->tiles_h * s->tiles_w;

    /* 1. Transforms of the block's tiles: V = B^T d B of x's patch, Ydy = A dy A^T. */
    size_t n = tile0 / per_image, th = (tile0 % per_image) / s->tiles_w, tw = tile0 % s->tiles_w;
    for (size_t t = 0; t < ntiles; t++) {
        const float* patch[WINO_ALPHA * WINO_ALPHA];
        const float* q[WINO_M * WINO_M];
        patch_pointers(s, x, ws->zero, n, th, tw, patch);
        for (size_t i = 0; i < WINO_ALPHA * WINO_ALPHA; i++) patch[i] += k0;  /* the zero row too */
        const float* image = dy + n * s->out_h * s->out_w * N;
        for (size_t i = 0; i < WINO_M; i++)
            for (size_t j = 0; j < WINO_M; j++) {
                const size_t oh = th * WINO_M + i, ow = tw * WINO_M + j;
                q[i * WINO_M + j] = oh < s->out_h && ow < s->out_w ? image + (oh * s->out_w + ow) * N
                                                                   : ws->zero;
            }
        input_tile(patch, K, ws->v + t * s->v_row, s->v_plane);
        size_t c = 0;
        for (; c + VLEN <= N; c += VLEN) grad_tile_vec(q, c, VLEN, 0, ws->ydy + t * s->m_row, s->m_plane);
        if (c < N) grad_tile_vec(q, c, N - c, 1, ws->ydy + t * s->m_row, s->m_plane);
        if (++tw == s->tiles_w) { tw = 0; if (++th == s->tiles_h) { th = 0; n++; } }
    }

    /* 2. alpha^2 GEMMs, rows [k0, k1) of M[xi] (in_c x N) += V[xi]^T (K x tiles) Ydy[xi]
     * (tiles x N): V is read in place as the transposed A (a_stride = v_row), Ydy in place as B
     * (w_stride = m_row, which holds whole NR-wide panels). */
    for (size_t xi = 0; xi < WINO_ALPHA * WINO_ALPHA; xi++) {
        const float* v = ws->v + xi * s->v_plane;
        float* m = mt + (xi * s->in_c + k0) * N;
        for (size_t r0 = 0; r0 < K; r0 += MR) {
            const size_t mr = K - r0 < MR ? K - r0 : MR;
            for (size_t i = 0; i < MR; i++) {
                const size_t k = r0 + (i < mr ? i : 0);  /* rows past mr: computed, not stored */
                ws->a_rows[i] = v + k;
                ws->c_rows[i] = m + k * N;
            }
            for (size_t n0 = 0; n0 < N; n0 += NR) {
                const size_t nc = N - n0 < NR ? N - n0 : NR;
                cfg->ukernel(mr, nc, ntiles, 1, ws->a_rows, 0, s->v_row, NULL,
                             ws->ydy + xi * s->m_plane + n0, s->m_row, NULL, ws->c_rows, n0,
                             flags, -INFINITY, INFINITY);
            }
        }
    }
}

/* dw[tap][k][n] = (G^T M[.][k][n] G)[tap] for VLEN columns n at once, M being the sum of the
 * n_parts partial M (part_stride floats apart), added in part order. */
WINO_INLINE void wgrad_out_vec(const float* m, size_t plane, size_t n_parts, size_t part_stride,
                               size_t n, int part, float* out, size_t out_plane) {
    VEC t[3][WINO_ALPHA];  /* t = G^T M */
    for (size_t j = 0; j < WINO_ALPHA; j++) {
        VEC col[WINO_ALPHA], r[3];
        for (size_t i = 0; i < WINO_ALPHA; i++) {
            const float* src = m + (i * WINO_ALPHA + j) * plane;
            col[i] = part ? VLOAD_PART(src, n) : VLOADU(src);
            for (size_t q = 1; q < n_parts; q++)
                col[i] = VADD(col[i], part ? VLOAD_PART(src + q * part_stride, n)
                                           : VLOADU(src + q * part_stride));
        }
        wino_gt(col, r);
        for (size_t i = 0; i < 3; i++) t[i][j] = r[i];
    }
    for (size_t i = 0; i < 3; i++) {
        VEC r[3];
        wino_gt(t[i], r);  /* (G^T M) G, row i */
        for (size_t l = 0; l < 3; l++) {
            float* dst = out + (i * 3 + l) * out_plane;
            if (part) VSTORE_PART(dst, r[l], n);
            else VSTOREU(dst, r[l]);
        }
    }
}

void WINO_WGRAD_OUT(size_t k, size_t n, const float* mt, size_t n_parts, size_t part_stride,
                    size_t k0, size_t k1, float* dw) {
    for (size_t kk = k0; kk < k1; kk++) {
        size_t c = 0;
        for (; c + VLEN <= n; c += VLEN)
            wgrad_out_vec(mt + kk * n + c, k * n, n_parts, part_stride, VLEN, 0, dw + kk * n + c,
                          k * n);
        if (c < n)
            wgrad_out_vec(mt + kk * n + c, k * n, n_parts, part_stride, n - c, 1, dw + kk * n + c,
                          k * n);
    }
}

#undef WINO_ALPHA
#undef WINO_BIAS_POINT
#undef WINO_INLINE
