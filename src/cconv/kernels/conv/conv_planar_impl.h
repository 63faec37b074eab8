/* Bodies of the planar first-layer kernels (contract in conv_direct.h), compiled once per ISA:
 * the including file defines CCONV_ISA_SUFFIX and one SIMD_ISA_* for simd_vec.h.
 *
 * SIMD lanes run over output pixels, so a layer with 1-3 input channels and a few output
 * channels fills every lane (the implicit GEMM puts output channels in the lanes: 6 of 16 for
 * LeNet's first layer). A block of output rows of one image is staged channel-planar with its
 * padding, rows of `width` = out_w + (kw-1)*dw floats; virtual pixel q = r * width + ow of the
 * block then reads tap (ci, i, j) at stage[ci * plane + i * dh * width + j * dw + q], one offset
 * per tap for the whole block. Lanes with ow >= out_w are computed and dropped (forward) or
 * multiply a zero of dy (weight gradient).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "conv_direct.h"
#include "core/simd_vec.h"
#include "core/transpose.h"

#define CCONV_CAT_(a, b) a##__##b
#define CCONV_CAT(a, b) CCONV_CAT_(a, b)
#define FN(name) CCONV_CAT(name, CCONV_ISA_SUFFIX)
#define PLANAR_INLINE static inline __attribute__((always_inline))
/* The register tiles' loops, unrolled in full so that their vectors stay in registers. */
#if defined(__clang__)
#define PLANAR_UNROLL _Pragma("unroll")
#else
#define PLANAR_UNROLL _Pragma("GCC unroll 16")
#endif

/* Accumulator registers of a forward register tile (CB channels x PV pixel vectors) and the
 * weight-gradient tile (PLANAR_WG_CB channels x PLANAR_WG_TB taps): 32-register ISAs keep 24
 * accumulators, AVX2 12 of its 16. */
#if defined(SIMD_ISA_AVX512) || defined(SIMD_ISA_NEON)
#define PLANAR_ACC 24
#else
#define PLANAR_ACC 12
#endif
#define PLANAR_MAX_PV 4
#define PLANAR_MAX_CB 8
#define PLANAR_PV(CB) (PLANAR_ACC / (CB) < PLANAR_MAX_PV ? PLANAR_ACC / (CB) : PLANAR_MAX_PV)

static inline size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

/* Stage the input rows that output rows [oh0, oh0 + rows) of image n read (stride 1), each
 * channel a plane of cconv_planar_plane_floats floats; zeros for padding and past the rows.
 * With check_finite, returns whether every value copied is finite (else 1). */
static int stage_input(const struct cconv_conv_shape* s, const float* x, size_t n, size_t oh0,
                       size_t rows, int check_finite, float* stage) {
    const size_t width = cconv_planar_width(s), plane = cconv_planar_plane_floats(s, rows);
    const size_t in_rows = rows + (s->kernel_h - 1) * s->dilation_h;
    const size_t C = s->in_c;
    /* columns [lo, hi) of a staged row hold image columns lo - pad_left .. hi - 1 - pad_left */
    ptrdiff_t lo = s->pad_left > 0 ? s->pad_left : 0;
    ptrdiff_t hi = s->pad_left + (ptrdiff_t)s->in_w;
    if (hi > (ptrdiff_t)width) hi = (ptrdiff_t)width;
    if (lo > hi) lo = hi;
    uint32_t non_finite = 0;
    for (size_t ci = 0; ci < C; ci++) {
        float* p = stage + ci * plane;
        for (size_t t = 0; t < in_rows; t++) {
            float* dst = p + t * width;
            const ptrdiff_t ih = (ptrdiff_t)(oh0 + t) - s->pad_top;
            if (ih < 0 || ih >= (ptrdiff_t)s->in_h || lo == hi) {
                for (size_t j = 0; j < width; j++) dst[j] = 0.0f;
                continue;
            }
            const float* src = x + ((n * s->in_h + (size_t)ih) * s->in_w) * C + ci
                               - s->pad_left * (ptrdiff_t)C;
            for (ptrdiff_t j = 0; j < lo; j++) dst[j] = 0.0f;
            if (C == 1)
                for (ptrdiff_t j = lo; j < hi; j++) dst[j] = src[j];
            else
                for (ptrdiff_t j = lo; j < hi; j++) dst[j] = src[j * (ptrdiff_t)C];
            for (size_t j = (size_t)hi; j < width; j++) dst[j] = 0.0f;
            for (ptrdiff_t j = lo; check_finite && j < hi; j++) {   /* exponent all ones */
                uint32_t bits;
                memcpy(&bits, dst + j, sizeof bits);
                non_finite |= (bits & 0x7f800000u) == 0x7f800000u;
            }
        }
        for (size_t k = in_rows * width; k < plane; k++) p[k] = 0.0f;
    }
    return !non_finite;
}

/* The tap offsets into the stage, taps in PyTorch's weight order (ci, i, j). */
static void tap_offsets(const struct cconv_conv_shape* s, size_t plane, size_t* offsets) {
    const size_t width = cconv_planar_width(s);
    size_t t = 0;
    for (size_t ci = 0; ci < s->in_c; ci++)
        for (size_t i = 0; i < s->kernel_h; i++)
            for (size_t j = 0; j < s->kernel_w; j++)
                offsets[t++] = ci * plane + i * s->dilation_h * width + j * s->dilation_w;
}

/* ------------------------------------------------------------------------------- forward */

/* Output channels [co0, co0 + CB) of a staged block: register tiles of PV vectors of pixels x
 * CB channels (bias first, then the taps in order, clamped), each tile stored through `tile`
 * into the NHWC rows of y that its valid pixels belong to. */
PLANAR_INLINE void forward_channels(const size_t CB, const size_t PV,
                                    const struct cconv_conv_shape* s, const float* stage,
                                    const size_t* offsets, size_t taps, const float* w,
                                    const float* bias, float cmin, float cmax, size_t rows,
                                    size_t co0, float* y_block) {
    const size_t width = cconv_planar_width(s), Q = rows * width, CH = PV * VLEN;
    const size_t out_w = s->out_w, out_c = s->out_c;
    const size_t nc = min_size(CB, out_c - co0);
    const VEC lo = VSET1(cmin), hi = VSET1(cmax);
    float tile[PLANAR_MAX_CB * PLANAR_MAX_PV * VLEN];
    for (size_t q0 = 0; q0 < Q; q0 += CH) {
        VEC acc[PLANAR_MAX_PV][PLANAR_MAX_CB];   /* fixed sizes: not variable-length arrays */
        PLANAR_UNROLL
        for (size_t c = 0; c < CB; c++) {
            const VEC b = VSET1(bias[c]);
            PLANAR_UNROLL
            for (size_t p = 0; p < PV; p++) acc[p][c] = b;
        }
        const float* src = stage + q0;
        for (size_t t = 0; t < taps; t++) {
            const float* xp = src + offsets[t];
            const float* wt = w + t * CB;
            VEC xv[PLANAR_MAX_PV];
            PLANAR_UNROLL
            for (size_t p = 0; p < PV; p++) xv[p] = VLOADU(xp + p * VLEN);
            PLANAR_UNROLL
            for (size_t c = 0; c < CB; c++) {
                const VEC wv = VSET1(wt[c]);
                PLANAR_UNROLL
                for (size_t p = 0; p < PV; p++) acc[p][c] = VFMA(xv[p], wv, acc[p][c]);
            }
        }
        PLANAR_UNROLL
        for (size_t c = 0; c < CB; c++)
            PLANAR_UNROLL
            for (size_t p = 0; p < PV; p++)
                VSTOREU(tile + c * CH + p * VLEN, VMIN(hi, VMAX(lo, acc[p][c])));
        /* transpose the valid pixels into y: (r, ow) of q0 found once, then stepped; runs of
         * 8 valid pixels of a full 8-channel tile go through 8 x 8 transposes */
        const size_t n_q = min_size(CH, Q - q0);
        size_t r = q0 / width, ow = q0 - r * width;
        for (size_t l = 0; l < n_q; l++) {
            if (CB == 8 && nc == 8 && ow + 8 <= out_w && l + 8 <= n_q) {
                f32_transpose_8x8(tile + l, CH, y_block + (r * out_w + ow) * out_c + co0, out_c);
                l += 7;
                ow += 7;
            } else if (ow < out_w) {
                float* dst = y_block + (r * out_w + ow) * out_c + co0;
                if (nc == CB)
                    PLANAR_UNROLL
                    for (size_t c = 0; c < CB; c++) dst[c] = tile[c * CH + l];
                else
                    for (size_t c = 0; c < nc; c++) dst[c] = tile[c * CH + l];
            }
            if (++ow == width) {
                ow = 0;
                r++;
            }
        }
    }
}

void FN(cconv_conv2d_forward_planar)(const struct cconv_conv_shape* s, size_t cb,
                                      const float* x, const float* packed_w,
                                      const float* packed_bias, float* y, size_t block_rows,
                                      size_t block_begin, size_t block_end, float cmin,
                                      float cmax, float* stage) {
    const size_t taps = s->in_c * s->kernel_h * s->kernel_w;
    const size_t blocks_per_image = (s->out_h + block_rows - 1) / block_rows;
    const size_t plane = cconv_planar_plane_floats(s, block_rows);
    size_t offsets[CCONV_PLANAR_MAX_TAPS];
    tap_offsets(s, plane, offsets);
    for (size_t b = block_begin; b < block_end; b++) {
        const size_t n = b / blocks_per_image, oh0 = (b % blocks_per_image) * block_rows;
        const size_t rows = min_size(block_rows, s->out_h - oh0);
        /* a short last block is staged as a full one, so that the tap offsets hold */
        stage_input(s, x, n, oh0, block_rows, 0, stage);
        float* y_block = y + ((n * s->out_h + oh0) * s->out_w) * s->out_c;
        for (size_t co0 = 0; co0 < s->out_c; co0 += cb) {
            const float* w = packed_w + co0 * taps;
            const float* bias = packed_bias + co0;
            switch (cb) {
#define PLANAR_FORWARD_CASE(CB)                                                                  \
    case CB:                                                                                     \
        forward_channels(CB, PLANAR_PV(CB), s, stage, offsets, taps, w, bias, cmin, cmax, rows, \
                         co0, y_block);                                                         \
        break;
                PLANAR_FORWARD_CASE(2)
                PLANAR_FORWARD_CASE(4)
                PLANAR_FORWARD_CASE(6)
                PLANAR_FORWARD_CASE(8)
#undef PLANAR_FORWARD_CASE
            default:
                return;
            }
        }
    }
}

/* ------------------------------------------------------------------------- weight gradient */

#if defined(SIMD_ISA_AVX512) || defined(SIMD_ISA_NEON)
#define PLANAR_WG_TB 4
#else
#define PLANAR_WG_TB 2
#endif
#define PLANAR_WG_CB CCONV_PLANAR_WG_CHANNELS

/* Stage dy of the block channel-planar on the virtual pixels: plane c holds dy[.., c] at q for
 * the valid pixels, zeros for the dropped lanes, past Q and for the padding channels. */
static void stage_grad(const struct cconv_conv_shape* s, const float* dy, size_t n, size_t oh0,
                       size_t rows, size_t dplane, float* dstage) {
    const size_t width = cconv_planar_width(s), out_w = s->out_w, out_c = s->out_c;
    const size_t co_pad = (out_c + PLANAR_WG_CB - 1) / PLANAR_WG_CB * PLANAR_WG_CB;
    memset(dstage, 0, co_pad * dplane * sizeof(float));
    const float* src = dy + ((n * s->out_h + oh0) * out_w) * out_c;
    /* channel by channel: strided loads from a dy row still in L1, contiguous stores */
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < out_c; c++) {
            const float* g = src + r * out_w * out_c + c;
            float* d = dstage + c * dplane + r * width;
            for (size_t ow = 0; ow < out_w; ow++) d[ow] = g[ow * out_c];
        }
}

/* dw[co][t] += the block's sum over its virtual pixels of dy[co] * x at tap t, for CB channels
 * from co0 and PLANAR_WG_TB taps from t0 (a short last tap block repeats its last tap; the
 * repeats are dropped). Each lane sums its pixels in float32, the lanes go to float64. */
PLANAR_INLINE void weight_grad_taps(const size_t CB, const size_t TB, const float* stage,
                                    const size_t* offsets, size_t taps, size_t t0,
                                    const float* dstage, size_t dplane, size_t Qv, size_t co0,
                                    size_t out_c, double* dw) {
    VEC acc[PLANAR_WG_CB][PLANAR_WG_TB];
    const float* xp[PLANAR_WG_TB];
    PLANAR_UNROLL
    for (size_t t = 0; t < TB; t++) xp[t] = stage + offsets[min_size(t0 + t, taps - 1)];
    PLANAR_UNROLL
    for (size_t c = 0; c < CB; c++)
        PLANAR_UNROLL
        for (size_t t = 0; t < TB; t++) acc[c][t] = VZERO();
    const float* g = dstage + co0 * dplane;
    for (size_t q = 0; q < Qv; q += VLEN) {
        /* dy is loaded again for each tap (from L1, inside the FMA): holding it as well would
         * take more registers than the accumulators leave */
        PLANAR_UNROLL
        for (size_t t = 0; t < TB; t++) {
            const VEC xv = VLOADU(xp[t] + q);
            PLANAR_UNROLL
            for (size_t c = 0; c < CB; c++)
                acc[c][t] = VFMA(VLOADU(g + c * dplane + q), xv, acc[c][t]);
        }
    }
    float lanes[PLANAR_WG_CB][PLANAR_WG_TB][VLEN];
    PLANAR_UNROLL
    for (size_t c = 0; c < CB; c++)
        PLANAR_UNROLL
        for (size_t t = 0; t < TB; t++) VSTOREU(lanes[c][t], acc[c][t]);
    for (size_t c = 0; c < CB && co0 + c < out_c; c++)
        for (size_t t = 0; t < TB && t0 + t < taps; t++) {
            double sum = 0.0;
            for (size_t l = 0; l < VLEN; l++) sum += lanes[c][t][l];
            dw[(co0 + c) * taps + t0 + t] += sum;
        }
}

/* The exact sum (valid pixels only, float64) of a block with a non-finite input value. */
static void weight_grad_exact(const struct cconv_conv_shape* s, const float* stage,
                              const size_t* offsets, size_t taps, const float* dstage,
                              size_t dplane, size_t rows, double* dw) {
    const size_t width = cconv_planar_width(s);
    for (size_t co = 0; co < s->out_c; co++)
        for (size_t t = 0; t < taps; t++) {
            double sum = 0.0;
            for (size_t r = 0; r < rows; r++)
                for (size_t ow = 0; ow < s->out_w; ow++) {
                    const size_t q = r * width + ow;
                    sum += (double)dstage[co * dplane + q] * stage[offsets[t] + q];
                }
            dw[co * taps + t] += sum;
        }
}

void FN(cconv_conv2d_backward_weight_planar)(const struct cconv_conv_shape* s, const float* x,
                                              const float* dy, double* dw, size_t block_rows,
                                              size_t block_begin, size_t block_end,
                                              float* stage, float* dstage) {
    const size_t taps = s->in_c * s->kernel_h * s->kernel_w;
    const size_t blocks_per_image = (s->out_h + block_rows - 1) / block_rows;
    const size_t plane = cconv_planar_plane_floats(s, block_rows);
    const size_t dplane = cconv_planar_grad_plane_floats(s, block_rows);
    const size_t width = cconv_planar_width(s);
    size_t offsets[CCONV_PLANAR_MAX_TAPS];
    tap_offsets(s, plane, offsets);
    for (size_t b = block_begin; b < block_end; b++) {
        const size_t n = b / blocks_per_image, oh0 = (b % blocks_per_image) * block_rows;
        const size_t rows = min_size(block_rows, s->out_h - oh0);
        const int finite = stage_input(s, x, n, oh0, block_rows, 1, stage);
        stage_grad(s, dy, n, oh0, rows, dplane, dstage);
        /* A dropped lane multiplies a zero of dy by a real x value: harmless unless that value
         * is infinite or NaN (0 * inf = NaN, where the true sum has no such term). */
        if (!finite) {
            weight_grad_exact(s, stage, offsets, taps, dstage, dplane, rows, dw);
            continue;
        }
        const size_t Qv = (rows * width + VLEN - 1) / VLEN * VLEN;
        for (size_t co0 = 0; co0 < s->out_c; co0 += PLANAR_WG_CB)
            for (size_t t0 = 0; t0 < taps; t0 += PLANAR_WG_TB)
                weight_grad_taps(PLANAR_WG_CB, PLANAR_WG_TB, stage, offsets, taps, t0, dstage,
                                 dplane, Qv, co0, s->out_c, dw);
    }
}
