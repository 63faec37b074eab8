/* Direct convolution: the tile-level loops between the micro-kernel and the threads (BLIS's
 * macro-kernel). Each function computes one independent tile, builds its own indirection
 * pointers or packed panels in caller-provided scratch, and calls the selected igemm
 * micro-kernel; the Cython layer (_conv.pyx) distributes tiles over OpenMP threads. The bodies
 * (conv_direct_impl.h) are compiled once per ISA so that their copy loops use its vectors;
 * cconv_conv_direct_select is the one place that picks a set.
 */
#ifndef CCONV_CONV_DIRECT_H
#define CCONV_CONV_DIRECT_H

#include <stddef.h>
#include "igemm/igemm.h"

/* Geometry of a convolution y = conv(x, w), NHWC; the *_c sizes count all groups' channels. */
struct cconv_conv_shape {
    size_t batch, in_h, in_w, in_c;
    size_t out_h, out_w, out_c;
    size_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w;
    ptrdiff_t pad_top, pad_left;
    size_t groups;
};

/* One stride phase of the backward-data pass: the input pixels (ih0 + j*stride_h,
 * iw0 + l*stride_w), j < rows, l < cols, and the n_taps taps (tap_kh, tap_kw) whose
 * dilation*k lands on them. row_taps > 0 merges kernel rows (one group, dilation_w 1): the taps
 * come in rows of row_taps with descending tap_kw, which read row_taps consecutive dy pixels, so
 * one pointer serves a whole row (kc = row_taps * out_c); 0: one pointer per tap. */
struct cconv_conv_phase {
    size_t ih0, iw0, rows, cols, n_taps, row_taps;
    const size_t* tap_kh;
    const size_t* tap_kw;
};

#define CCONV_SHAPE const struct cconv_conv_shape* s, const struct f32_igemm_config* cfg

/* Geometry of backward_weight_part's slab: each input row of a channel holds stride_w phases of
 * phase_width columns (column j * stride_w + phase at phase * phase_width + j). A slab for
 * slab_rows <= out_h output rows has slab_rows_in such rows per channel; a slab of whole images
 * (slab_rows a multiple of out_h above it: small images, so that a band runs deep) holds them one
 * after the other, image_floats apart, in a plane of slab_plane floats per channel. */
static inline size_t cconv_weight_grad_phase_width(const struct cconv_conv_shape* s) {
    return s->out_w + (s->kernel_w - 1) * s->dilation_w / s->stride_w;
}
static inline size_t cconv_weight_grad_slab_rows_in(const struct cconv_conv_shape* s,
                                                    size_t slab_rows) {
    return (slab_rows - 1) * s->stride_h + (s->kernel_h - 1) * s->dilation_h + 1;
}
static inline size_t cconv_weight_grad_image_floats(const struct cconv_conv_shape* s) {
    return cconv_weight_grad_slab_rows_in(s, s->out_h) * s->stride_w *
           cconv_weight_grad_phase_width(s);
}
static inline size_t cconv_weight_grad_slab_plane(const struct cconv_conv_shape* s,
                                                  size_t slab_rows) {
    if (slab_rows > s->out_h) return slab_rows / s->out_h * cconv_weight_grad_image_floats(s);
    return cconv_weight_grad_slab_rows_in(s, slab_rows) * s->stride_w *
           cconv_weight_grad_phase_width(s);
}
static inline size_t cconv_weight_grad_slab_floats(const struct cconv_conv_shape* s,
                                                   size_t slab_rows) {
    return s->in_c * cconv_weight_grad_slab_plane(s, slab_rows);
}

/* The planar path for first layers (conv_planar_impl.h): one group, stride 1, at most
 * CCONV_PLANAR_MAX_TAPS taps (in_c * kh * kw); SIMD lanes over output pixels. A block of output
 * rows of one image is staged channel-planar in rows of cconv_planar_width floats (the padding
 * included), each channel a plane of cconv_planar_plane_floats (the block's rows, one row and
 * 64 floats of slack for the vectors that run past them). */
#define CCONV_PLANAR_MAX_TAPS 512
/* Output channels per weight-gradient register tile (dy is staged padded to a multiple). */
#define CCONV_PLANAR_WG_CHANNELS 6
static inline size_t cconv_planar_width(const struct cconv_conv_shape* s) {
    return s->out_w + (s->kernel_w - 1) * s->dilation_w;
}
static inline size_t cconv_planar_plane_floats(const struct cconv_conv_shape* s,
                                               size_t block_rows) {
    return (block_rows + (s->kernel_h - 1) * s->dilation_h + 1) * cconv_planar_width(s) + 64;
}
/* One staged channel of dy: the block's virtual pixels, rounded up to whole vectors. */
static inline size_t cconv_planar_grad_plane_floats(const struct cconv_conv_shape* s,
                                                    size_t block_rows) {
    return (block_rows * cconv_planar_width(s) + 15) / 16 * 16;
}
/* Output channels per forward register tile: 2, 4, 6 or 8, the fewest padded channels (ties:
 * the wider tile). */
static inline size_t cconv_planar_forward_channels(size_t out_c) {
    size_t best = 8, best_padded = (out_c + 7) / 8 * 8;
    for (size_t cb = 6; cb >= 2; cb -= 2) {
        const size_t padded = (out_c + cb - 1) / cb * cb;
        if (padded < best_padded) {
            best = cb;
            best_padded = padded;
        }
    }
    return best;
}

struct cconv_conv_direct_kernels {
    /* Forward over the MR-pixel tiles [tile_begin, tile_end) of y, every group and panel of
     * each (one call per thread's share: the tile position is carried from tile to tile).
     * packed_w: [group][panel][kh*kw][in_c/groups][NR]; packed_bias: [group][panel][NR].
     * store_flags: 0 or FC_IGEMM_STREAM (y written with streaming stores, fenced at the end).
     * zero: kw * in_c/groups zeros; a_scratch: kh*kw*MR pointers; c_scratch: MR pointers;
     * edge_scratch: MR * kh * kw * in_c floats. */
    void (*forward_tiles)(CCONV_SHAPE, const float* x, const float* packed_w,
                          const float* packed_bias, float* y, const float* zero,
                          size_t tile_begin, size_t tile_end, float cmin, float cmax,
                          int store_flags, const float** a_scratch, float** c_scratch,
                          float* edge_scratch);

    /* One stride phase of backward-data over its MR-pixel tiles [tile_begin, tile_end), every
     * group and panel of each: dx of the phase's pixels = sum over its taps of dy * w.
     * packed_w: [group][panel over in_c/groups][n_taps][out_c/groups][NR].
     * store_flags: as the forward's (dx written with streaming stores).
     * zero: kw * out_c/groups zeros; a_scratch: n_taps * MR pointers; c_scratch: MR pointers;
     * edge_scratch: MR * n_taps * out_c/groups floats. */
    void (*backward_data_tiles)(CCONV_SHAPE, const struct cconv_conv_phase* phase,
                                const float* dy, const float* packed_w, float* dx,
                                const float* zero, size_t tile_begin, size_t tile_end,
                                int store_flags, const float** a_scratch, float** c_scratch,
                                float* edge_scratch);

    /* Backward-data for few input channels per group (col2im): for the output pixels of image
     * tile / groups, dcol (MR x K) = dy rows times w (K = kh*kw*in_c/groups columns, packed as
     * [group][panel][out_c/groups][NR]), then each dcol entry is added to the input pixel it
     * came from. Calls for different images touch disjoint parts of dx.
     * dcol_scratch: MR * panels * NR floats; a_scratch, c_rows: MR pointers. */
    void (*backward_data_col2im)(CCONV_SHAPE, const float* dy, const float* packed_w,
                                 float* dx, size_t tile, float* dcol_scratch,
                                 const float** a_scratch, float** c_rows);

    /* Backward-weight, one work item: dw^T (K x out_c/groups per group, K = kh*kw*in_c/groups,
     * row m = tap * in_c/groups + ci) over the output rows [row0, row1) of the batch (a row is
     * (n, oh)), for the rows [m_begin, m_end) of K: dw^T = im2col(x)^T times dy, written to
     * dwt as [group][K][out_c/groups]. Each slab of up to slab_rows output rows has its input
     * rows transposed once (fill_weight_grad_slab), so that the A rows of the micro-kernel are
     * runs of out_w floats of it; B is dy itself, read in place with a row stride of out_c (no
     * copy), except an output-channel panel that would read past a row (packed). The kernel
     * runs over bands of band_rows output rows (ks = rows, kc = out_w), so the B band stays in
     * L2 while every A row block passes. Small images: a slab (and its one band) holds
     * slab_rows / out_h whole images, a part's rows permitting; band_rows must then equal
     * slab_rows (bands do not cut a slab of whole images). Items are summed in a fixed
     * order by the caller: the result does not depend on the thread count.
     * slab: cconv_weight_grad_slab_floats(s, slab_rows); b_pack: band_rows * out_w * NR floats;
     * offsets: m_end - m_begin + band_rows; a_ptrs: band_rows * MR pointers; c_rows: MR. */
    void (*backward_weight_part)(CCONV_SHAPE, const float* x, const float* dy, float* dwt,
                                 size_t row0, size_t row1, size_t m_begin, size_t m_end,
                                 size_t slab_rows, size_t band_rows, float* slab, float* b_pack,
                                 size_t* offsets, const float** a_ptrs, float** c_rows);

    /* Planar forward (see above) over the blocks [block_begin, block_end) of block_rows
     * output rows (a block is (n, oh0), blocks_per_image of them per image).
     * packed_w: [out_c / cb padded][in_c * kh * kw][cb], packed_bias: out_c padded to cb
     * (zeros: never NULL), cb from cconv_planar_forward_channels;
     * stage: in_c * cconv_planar_plane_floats(s, block_rows) floats. */
    void (*forward_planar)(const struct cconv_conv_shape* s, size_t cb, const float* x,
                           const float* packed_w, const float* packed_bias, float* y,
                           size_t block_rows, size_t block_begin, size_t block_end, float cmin,
                           float cmax, float* stage);

    /* Planar weight gradient over the same blocks: dw[co][t] (t = (ci, i, j), PyTorch's order)
     * += the blocks' sums of dy * x, in float64 (each block's lanes summed in float32), in
     * block order. stage: as the forward; dstage: CCONV_PLANAR_WG_CHANNELS-padded out_c times
     * cconv_planar_grad_plane_floats(s, block_rows) floats. */
    void (*backward_weight_planar)(const struct cconv_conv_shape* s, const float* x,
                                   const float* dy, double* dw, size_t block_rows,
                                   size_t block_begin, size_t block_end, float* stage,
                                   float* dstage);

    /* Bias gradient: out[c] = sum over rows r of x[r * cols + c], for c in [c0, c1), in float64.
     * The order of the sums depends on the shape and the call only, never on the thread count:
     * row order, except for a call over every column of at most 16 (c0 == 0, c1 == cols), which
     * sums stripes of 64 / cols rows and adds each column's partial sums at the end. */
    void (*sum_rows)(size_t rows, size_t cols, const float* x, size_t c0, size_t c1, float* out);
};

#define CCONV_CONV_DIRECT_DECLARE(isa)                                                            \
    void cconv_conv2d_forward_tiles__##isa(CCONV_SHAPE, const float*, const float*,              \
                                           const float*, float*, const float*, size_t, size_t,    \
                                           float, float, int, const float**, float**, float*);    \
    void cconv_conv2d_backward_data_tiles__##isa(CCONV_SHAPE, const struct cconv_conv_phase*,     \
                                                 const float*, const float*, float*,              \
                                                 const float*, size_t, size_t, int,               \
                                                 const float**, float**, float*);                 \
    void cconv_conv2d_backward_data_col2im__##isa(CCONV_SHAPE, const float*, const float*,        \
                                                  float*, size_t, float*, const float**,          \
                                                  float**);                                       \
    void cconv_conv2d_backward_weight_part__##isa(CCONV_SHAPE, const float*, const float*,        \
                                                  float*, size_t, size_t, size_t, size_t, size_t, \
                                                  size_t, float*, float*, size_t*, const float**, \
                                                  float**);                                       \
    void cconv_conv2d_forward_planar__##isa(const struct cconv_conv_shape*, size_t, const float*, \
                                            const float*, const float*, float*, size_t, size_t,  \
                                            size_t, float, float, float*);                        \
    void cconv_conv2d_backward_weight_planar__##isa(const struct cconv_conv_shape*,               \
                                                    const float*, const float*, double*, size_t,  \
                                                    size_t, size_t, float*, float*);              \
    void cconv_sum_rows__##isa(size_t, size_t, const float*, size_t, size_t, float*);

#define CCONV_CONV_DIRECT_TABLE(isa)                                                          \
    (struct cconv_conv_direct_kernels) {                                                      \
        cconv_conv2d_forward_tiles__##isa,                                                    \
        cconv_conv2d_backward_data_tiles__##isa, cconv_conv2d_backward_data_col2im__##isa,     \
        cconv_conv2d_backward_weight_part__##isa, cconv_conv2d_forward_planar__##isa,          \
        cconv_conv2d_backward_weight_planar__##isa, cconv_sum_rows__##isa                      \
    }

CCONV_CONV_DIRECT_DECLARE(scalar)
#if defined(__x86_64__) || defined(_M_X64)
CCONV_CONV_DIRECT_DECLARE(avx2)
CCONV_CONV_DIRECT_DECLARE(avx512)
#elif defined(__aarch64__)
CCONV_CONV_DIRECT_DECLARE(neon)
#endif

/* The one place where the tile functions are chosen. */
static inline struct cconv_conv_direct_kernels cconv_conv_direct_select(int isa) {
#if defined(__x86_64__) || defined(_M_X64)
    if (isa == CCONV_ISA_AVX512) return CCONV_CONV_DIRECT_TABLE(avx512);
    if (isa == CCONV_ISA_AVX2) return CCONV_CONV_DIRECT_TABLE(avx2);
#elif defined(__aarch64__)
    if (isa == CCONV_ISA_NEON) return CCONV_CONV_DIRECT_TABLE(neon);
#endif
    (void)isa;
    return CCONV_CONV_DIRECT_TABLE(scalar);
}

#endif
