/* Bodies of the direct-convolution tile functions (conv_direct.h), compiled once per ISA: the
 * including file defines CCONV_ISA_SUFFIX, and that ISA's flags vectorise the packing, col2im
 * and store loops around the micro-kernel calls. */
#include "conv_direct.h"
#include "core/transpose.h"

#define CCONV_CAT_(a, b) a##__##b
#define CCONV_CAT(a, b) CCONV_CAT_(a, b)
#define FN(name) CCONV_CAT(name, CCONV_ISA_SUFFIX)

#include <math.h>
#include <stdint.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

/* The pointer set-up loops run a handful of iterations per tile: GCC's vectorised versions of
 * them (masks, peeling, 64-bit multiplies) cost more than the scalar loops. */
#if defined(__GNUC__) && !defined(__clang__)
#define NO_VECTORIZE __attribute__((optimize("no-tree-vectorize")))
#else
#define NO_VECTORIZE
#endif

/* Orders streaming stores before the caller's barrier. */
static inline void store_fence(void) {
#if defined(__SSE__)
    _mm_sfence();
#endif
}

static inline size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

/* Rows mr..MR-1 of a tile past the last pixel: they read the zero row and are never stored. */
static inline void pad_tile_rows(size_t mr, size_t MR, size_t ks, const float* zero,
                                 const float** a_scratch, float** c_scratch) {
    for (size_t i = mr; i < MR; i++) {
        for (size_t t = 0; t < ks; t++) a_scratch[t * MR + i] = zero;
        c_scratch[i] = c_scratch[0];
    }
}

/* Whether every one of a tile's MR pointers of one row is `zero`. */
static inline int row_reads_only_zero(const float* const* row, size_t MR, const float* zero) {
    for (size_t i = 0; i < MR; i++)
        if (row[i] != zero) return 0;
    return 1;
}

/* The pointer rows [first, first + count) of a tile's ks rows of MR pointers that read
 * something besides `zero` (the rows before and after read only padding: kernel rows above or
 * below the image for every pixel of the tile). The micro-kernel runs those only: a row of
 * zeros adds nothing (the weights and the gradients it would meet are finite), and it is an
 * eighth of an 8 x 8 image's FMAs. */
static inline size_t live_pointer_rows(const float* const* a, size_t ks, size_t MR,
                                       const float* zero, size_t* first) {
    size_t begin = 0, end = ks;
    while (begin < end && row_reads_only_zero(a + begin * MR, MR, zero)) begin++;
    while (end > begin && row_reads_only_zero(a + (end - 1) * MR, MR, zero)) end--;
    *first = begin;
    return end - begin;
}

/* Fetches the cache lines of floats [p, p + count) into L1 (a hint: it never faults). */
static inline void prefetch_floats(const float* p, size_t count) {
    const char* line = (const char*)p;
    const char* end = (const char*)(p + count);
    for (; line < end; line += 64) __builtin_prefetch(line, 0, 3);
}

/* Bytes past the furthest float a tile reads of its input that prefetch_stream_ahead asks L2
 * for: a few tiles ahead. The tiles walk the input in order, and where it comes from L3 or
 * memory the hardware prefetchers fall behind: backward-data of pointwise 64 -> 128 runs 25%
 * faster on one core (60-70 -> 76-89 GFLOP/s). Into L1, or only one tile ahead, it gains
 * nothing (it evicts the packed weights, or comes too late). The forward pass loses 3-8% on
 * small layers by it and gains nothing on the pointwise one, so only backward-data asks. */
#define STREAM_PREFETCH_AHEAD_BYTES 32768

/* Asks L2 for `span` floats of [begin, end) starting STREAM_PREFETCH_AHEAD_BYTES past the
 * furthest of the `count` pointers a[] that point into [begin, end) (the others read zeros or
 * an edge copy). A hint: never faults. */
static inline void prefetch_stream_ahead(const float* const* a, size_t count, const float* begin,
                                         const float* end, size_t span) {
    /* as integers: C orders only pointers into one object, and a[i] may point elsewhere */
    const uintptr_t lo = (uintptr_t)begin, hi = (uintptr_t)end;
    uintptr_t furthest = 0;
    for (size_t i = 0; i < count; i++) {
        const uintptr_t p = (uintptr_t)a[i];
        if (p >= lo && p < hi && p > furthest) furthest = p;
    }
    if (!furthest) return;
    uintptr_t line = furthest + STREAM_PREFETCH_AHEAD_BYTES;
    uintptr_t stop = line + span * sizeof(float);
    if (stop > hi) stop = hi;
    for (; line < stop; line += 64) __builtin_prefetch((const void*)line, 0, 2);
}

/* dst = the pixels first .. first + count - 1 of an image row of `width` pixels of `channels`
 * floats, zeros for the pixels outside it (a kernel row that straddles the left or right edge).
 * Out of line: its callers are compiled without vectorisation, and a 3x3 row of 64 channels
 * is 192 floats. */
__attribute__((noinline)) static void copy_run_with_padding(float* dst, const float* row,
                                                            ptrdiff_t first, size_t count,
                                                            size_t width, size_t channels) {
    ptrdiff_t lo = first < 0 ? -first : 0;
    if (lo > (ptrdiff_t)count) lo = (ptrdiff_t)count;
    ptrdiff_t hi = (ptrdiff_t)width - first;
    if (hi > (ptrdiff_t)count) hi = (ptrdiff_t)count;
    if (hi < lo) hi = lo;
    /* Plain loops: a run is a few dozen floats, less than a libc call costs. */
    const size_t zeros_before = (size_t)lo * channels, inside_end = (size_t)hi * channels;
    const float* src = row + (size_t)(first + lo) * channels;
    for (size_t k = 0; k < zeros_before; k++) dst[k] = 0.0f;
    for (size_t k = zeros_before; k < inside_end; k++) dst[k] = src[k - zeros_before];
    for (size_t k = inside_end; k < count * channels; k++) dst[k] = 0.0f;
}

NO_VECTORIZE void FN(cconv_conv2d_forward_tiles)(const struct cconv_conv_shape* s,
                                    const struct f32_igemm_config* cfg, const float* x,
                                    const float* packed_w, const float* packed_bias, float* y,
                                    const float* zero, size_t tile_begin, size_t tile_end,
                                    float cmin, float cmax, int store_flags,
                                    const float** a_scratch, float** c_scratch,
                                    float* edge_scratch) {
    const size_t MR = cfg->mr, NR = cfg->nr;
    const size_t pixels = s->batch * s->out_h * s->out_w;
    const size_t taps = s->kernel_h * s->kernel_w;
    const size_t cin_g = s->in_c / s->groups, cout_g = s->out_c / s->groups;
    const size_t panels = ceil_div(cout_g, NR), panel_size = taps * cin_g * NR;
    /* One group without horizontal dilation: the taps of a kernel row are kernel_w * in_c
     * consecutive floats of x, so the micro-kernel takes one pointer per kernel row (ks =
     * kernel_h, kc = kernel_w * in_c) instead of one per tap; rows that straddle the left or
     * right edge are copied with their padding into edge_scratch. */
    const int merged = s->groups == 1 && s->dilation_w == 1;
    const size_t ks = merged ? s->kernel_h : taps, kc = merged ? s->kernel_w * cin_g : cin_g;

    /* (n, oh, ow) of the next pixel: worked out once, then stepped through the image without
     * divisions, and the input row of each kernel row once per output row (per tile and per
     * pixel, the divisions and multiplications cost as much as the FMAs of a small layer). */
    size_t m0 = tile_begin * MR;
    size_t ow = m0 % s->out_w, oh = (m0 / s->out_w) % s->out_h, n = m0 / (s->out_w * s->out_h);
    ptrdiff_t iw0 = (ptrdiff_t)(ow * s->stride_w) - s->pad_left;
    const float* rows[s->kernel_h];  /* input row of each kernel row; NULL in the padding */
    int rows_valid = 0;
    /* Output columns whose merged kernel rows lie inside the input: [inner_begin, inner_end). */
    const ptrdiff_t sw = (ptrdiff_t)s->stride_w;
    const size_t inner_begin = s->pad_left <= 0 ? 0 : (size_t)((s->pad_left + sw - 1) / sw);
    const ptrdiff_t last = (ptrdiff_t)s->in_w - (ptrdiff_t)s->kernel_w + s->pad_left;
    const size_t inner_end = last < 0 ? 0 : (size_t)(last / sw) + 1;
    const size_t pixel_step = s->stride_w * s->in_c;
    /* Floats of an input row that MR consecutive pixels of one output row read. */
    const size_t next_tile_span =
        ((MR - 1) * s->stride_w + (s->kernel_w - 1) * s->dilation_w + 1) * s->in_c;
    for (size_t tile = tile_begin; tile < tile_end; tile++, m0 += MR) {
        const size_t mr = pixels - m0 < MR ? pixels - m0 : MR;
        /* The tile's pixels in runs along one output row each. */
        for (size_t i = 0; i < mr;) {
            const size_t seg = mr - i < s->out_w - ow ? mr - i : s->out_w - ow;
            if (!rows_valid) {
                for (size_t ky = 0; ky < s->kernel_h; ky++) {
                    const ptrdiff_t ih =
                        (ptrdiff_t)(oh * s->stride_h + ky * s->dilation_h) - s->pad_top;
                    rows[ky] = ih >= 0 && ih < (ptrdiff_t)s->in_h
                        ? x + (n * s->in_h + (size_t)ih) * s->in_w * s->in_c : NULL;
                }
                rows_valid = 1;
            }
            for (size_t q = 0; q < seg; q++) c_scratch[i + q] = y + (m0 + i + q) * s->out_c;
            if (merged) {
                /* columns [qa, qb) of the run are inside; the others straddle an edge */
                const size_t qa = ow >= inner_begin ? 0 : (inner_begin - ow < seg ? inner_begin - ow : seg);
                size_t qb = inner_end <= ow ? 0 : (inner_end - ow < seg ? inner_end - ow : seg);
                if (qb < qa) qb = qa;
                for (size_t ky = 0; ky < s->kernel_h; ky++) {
                    const float** a = a_scratch + ky * MR + i;
                    const float* row = rows[ky];
                    if (!row) {
                        for (size_t q = 0; q < seg; q++) a[q] = zero;
                        continue;
                    }
                    if (qb > qa) {
                        const float* first = row + (size_t)(iw0 + (ptrdiff_t)qa * sw) * s->in_c;
                        for (size_t q = qa; q < qb; q++) a[q] = first + (q - qa) * pixel_step;
                    }
                    for (size_t q = 0; q < seg; q++) {
                        if (q == qa) q = qb;  /* past the inside run */
                        if (q >= seg) break;
                        float* edge = edge_scratch + ((i + q) * s->kernel_h + ky) * kc;
                        copy_run_with_padding(edge, row, iw0 + (ptrdiff_t)q * sw, s->kernel_w,
                                              s->in_w, s->in_c);
                        a[q] = edge;
                    }
                }
            } else {
                for (size_t q = 0; q < seg; q++)
                    for (size_t ky = 0; ky < s->kernel_h; ky++)
                        for (size_t kx = 0; kx < s->kernel_w; kx++) {
                            const ptrdiff_t iw = iw0 + (ptrdiff_t)(q * s->stride_w + kx * s->dilation_w);
                            const int inside = rows[ky] && iw >= 0 && iw < (ptrdiff_t)s->in_w;
                            a_scratch[(ky * s->kernel_w + kx) * MR + i + q] =
                                inside ? rows[ky] + (size_t)iw * s->in_c : zero;
                        }
            }
            i += seg;
            ow += seg;
            iw0 += (ptrdiff_t)seg * sw;
            if (ow == s->out_w) {
                ow = 0;
                iw0 = -s->pad_left;
                rows_valid = 0;
                if (++oh == s->out_h) { oh = 0; n++; }
            }
        }
        pad_tile_rows(mr, MR, ks, zero, a_scratch, c_scratch);
        /* The input the next tile reads, while this one computes, where it starts in the row
         * this one ended in: the hardware prefetcher does not follow a 1x1 layer's run of x
         * ahead of the FMAs (pointwise 64 -> 128, one thread: +5-12%). */
        if (rows_valid && tile + 1 < tile_end)
            for (size_t ky = 0; ky < s->kernel_h; ky++)
                if (rows[ky])
                    prefetch_floats(rows[ky] + (size_t)(iw0 > 0 ? iw0 : 0) * s->in_c,
                                    next_tile_span);
        size_t live_begin;
        const size_t live = live_pointer_rows(a_scratch, ks, MR, zero, &live_begin);
        /* Every group reads the same pointers (the kernel adds the group's channel offset). */
        for (size_t group = 0; group < s->groups; group++)
            for (size_t p = 0; p < panels; p++) {
                const size_t nc = cout_g - p * NR < NR ? cout_g - p * NR : NR;
                const size_t panel = group * panels + p;
                cfg->ukernel(mr, nc, kc, live, a_scratch + live_begin * MR, group * cin_g, 1,
                             zero, packed_w + panel * panel_size + live_begin * kc * NR, NR,
                             packed_bias ? packed_bias + panel * NR : NULL, c_scratch,
                             group * cout_g + p * NR, store_flags, cmin, cmax);
            }
    }
    if (store_flags & FC_IGEMM_STREAM) store_fence();
}

NO_VECTORIZE void FN(cconv_conv2d_backward_data_tiles)(const struct cconv_conv_shape* s,
                                          const struct f32_igemm_config* cfg,
                                          const struct cconv_conv_phase* phase, const float* dy,
                                          const float* packed_w, float* dx, const float* zero,
                                          size_t tile_begin, size_t tile_end, int store_flags,
                                          const float** a_scratch, float** c_scratch,
                                          float* edge_scratch) {
    const size_t MR = cfg->mr, NR = cfg->nr;
    const size_t pixels = s->batch * phase->rows * phase->cols;
    const size_t taps = phase->n_taps;
    const size_t cin_g = s->in_c / s->groups, cout_g = s->out_c / s->groups;
    const size_t panels = ceil_div(cin_g, NR), panel_size = taps * cout_g * NR;
    /* Merged kernel rows (see conv_direct.h): one pointer per row of row_taps taps. */
    const size_t row_taps = phase->row_taps;
    const size_t ks = row_taps ? taps / row_taps : taps, kc = row_taps ? row_taps * cout_g : cout_g;
    const size_t run = row_taps ? row_taps : 1;  /* a pointer reads dy pixels ow .. ow + run - 1 */

    /* ih = oh*stride - pad + kh*dilation  =>  oh = (ih + pad - kh*dilation) / stride, exact
     * (possibly negative) for every tap of this phase. The dy column of pointer r for phase
     * column l is first_ow[r] + l; its dy row is worked out once per phase row. The position
     * (n, j, l) of the next pixel is carried from tile to tile. */
    size_t m0 = tile_begin * MR;
    size_t l = m0 % phase->cols, j = (m0 / phase->cols) % phase->rows;
    size_t n = m0 / (phase->cols * phase->rows);
    ptrdiff_t first_ow[ks];
    const float* rows[ks];  /* dy row of each pointer for the current phase row; NULL outside */
    int rows_valid = 0;
    for (size_t r = 0; r < ks; r++) {
        const size_t t = row_taps ? r * row_taps : r;
        first_ow[r] = ((ptrdiff_t)phase->iw0 + s->pad_left -
                       (ptrdiff_t)(phase->tap_kw[t] * s->dilation_w)) / (ptrdiff_t)s->stride_w;
    }
    /* Phase columns l whose pointer r reads inside dy: [inner_lo[r], inner_hi[r]). */
    ptrdiff_t inner_lo[ks], inner_hi[ks];
    for (size_t r = 0; r < ks; r++) {
        inner_lo[r] = first_ow[r] < 0 ? -first_ow[r] : 0;
        inner_hi[r] = (ptrdiff_t)s->out_w - (ptrdiff_t)run - first_ow[r] + 1;
    }
    const size_t dx_step = s->stride_w * s->in_c;
    const float* dy_end = dy + s->batch * s->out_h * s->out_w * s->out_c;
    for (size_t tile = tile_begin; tile < tile_end; tile++, m0 += MR) {
        const size_t mr = pixels - m0 < MR ? pixels - m0 : MR;
        /* The tile's pixels in runs along one phase row each. */
        for (size_t i = 0; i < mr;) {
            const size_t seg = mr - i < phase->cols - l ? mr - i : phase->cols - l;
            const size_t ih = phase->ih0 + j * s->stride_h;
            if (!rows_valid) {
                const float* image = dy + n * s->out_h * s->out_w * s->out_c;
                for (size_t r = 0; r < ks; r++) {
                    const size_t t = row_taps ? r * row_taps : r;
                    const ptrdiff_t num_h = (ptrdiff_t)ih + s->pad_top -
                                            (ptrdiff_t)(phase->tap_kh[t] * s->dilation_h);
                    const ptrdiff_t oh = num_h / (ptrdiff_t)s->stride_h;
                    rows[r] = num_h >= 0 && oh < (ptrdiff_t)s->out_h
                        ? image + (size_t)oh * s->out_w * s->out_c : NULL;
                }
                rows_valid = 1;
            }
            float* c = dx + ((n * s->in_h + ih) * s->in_w + phase->iw0 + l * s->stride_w) * s->in_c;
            for (size_t q = 0; q < seg; q++, c += dx_step) c_scratch[i + q] = c;
            for (size_t r = 0; r < ks; r++) {
                const float** a = a_scratch + r * MR + i;
                const float* row = rows[r];
                if (!row) {
                    for (size_t q = 0; q < seg; q++) a[q] = zero;
                    continue;
                }
                /* columns [qa, qb) of the run read inside dy; the others zeros or an edge */
                ptrdiff_t qa = inner_lo[r] - (ptrdiff_t)l, qb = inner_hi[r] - (ptrdiff_t)l;
                qa = qa < 0 ? 0 : (qa > (ptrdiff_t)seg ? (ptrdiff_t)seg : qa);
                qb = qb < qa ? qa : (qb > (ptrdiff_t)seg ? (ptrdiff_t)seg : qb);
                if (qb > qa) {
                    const float* first = row + (size_t)(first_ow[r] + (ptrdiff_t)l + qa) * s->out_c;
                    for (ptrdiff_t q = qa; q < qb; q++) a[q] = first + (size_t)(q - qa) * s->out_c;
                }
                for (ptrdiff_t q = 0; q < (ptrdiff_t)seg; q++) {
                    if (q == qa) q = qb;  /* past the inside run */
                    if (q >= (ptrdiff_t)seg) break;
                    const ptrdiff_t ow = first_ow[r] + (ptrdiff_t)l + q;
                    if (ow >= (ptrdiff_t)s->out_w || ow + (ptrdiff_t)run <= 0) {
                        a[q] = zero;
                    } else {  /* a merged row across the left or right edge: copied with zeros */
                        float* edge = edge_scratch + ((i + (size_t)q) * ks + r) * kc;
                        copy_run_with_padding(edge, row, ow, run, s->out_w, s->out_c);
                        a[q] = edge;
                    }
                }
            }
            i += seg;
            l += seg;
            if (l == phase->cols) {
                l = 0;
                rows_valid = 0;
                if (++j == phase->rows) { j = 0; n++; }
            }
        }
        pad_tile_rows(mr, MR, ks, zero, a_scratch, c_scratch);
        size_t live_begin;
        const size_t live = live_pointer_rows(a_scratch, ks, MR, zero, &live_begin);
        prefetch_stream_ahead(a_scratch + live_begin * MR, live * MR, dy, dy_end,
                              (mr + run - 1) * s->out_c);
        /* Every group reads the same pointers (the kernel adds the group's channel offset). */
        for (size_t group = 0; group < s->groups; group++)
            for (size_t p = 0; p < panels; p++) {
                const size_t nc = cin_g - p * NR < NR ? cin_g - p * NR : NR;
                const size_t panel = group * panels + p;
                cfg->ukernel(mr, nc, kc, live, a_scratch + live_begin * MR, group * cout_g, 1,
                             zero, packed_w + panel * panel_size + live_begin * kc * NR, NR,
                             NULL, c_scratch, group * cin_g + p * NR, store_flags,
                             -INFINITY, INFINITY);
            }
    }
    if (store_flags & FC_IGEMM_STREAM) store_fence();
}

/* The slab of backward_weight_part: input rows [ih0, ih0 + rows_in) of image n, every channel,
 * transposed to [channel][row][column phase][column / stride_w] with zeros for the padding. A
 * tap's A row for one output row is then `out_w` consecutive floats of it, whatever the stride
 * and dilation. */
static void fill_weight_grad_slab(const struct cconv_conv_shape* s, const float* x, size_t n,
                                  ptrdiff_t ih0, size_t rows_in, size_t plane, size_t phase_w,
                                  float* slab) {
    const size_t sw = s->stride_w, row_floats = sw * phase_w, C = s->in_c;
    const float* image = x + n * s->in_h * s->in_w * C;
    for (size_t r = 0; r < rows_in; r++) {
        const ptrdiff_t ih = ih0 + (ptrdiff_t)r;
        float* dst_row = slab + r * row_floats;
        if (ih < 0 || ih >= (ptrdiff_t)s->in_h) {
            for (size_t c = 0; c < C; c++)
                for (size_t j = 0; j < row_floats; j++) dst_row[c * plane + j] = 0.0f;
            continue;
        }
        const float* src_row = image + (size_t)ih * s->in_w * C;
        for (size_t ph = 0; ph < sw; ph++) {
            float* dst = dst_row + ph * phase_w;
            /* Columns j whose input column j * sw + ph - pad_left is inside: [j0, j1). */
            const ptrdiff_t first = s->pad_left - (ptrdiff_t)ph;
            const size_t j0 = first <= 0 ? 0 : ((size_t)first + sw - 1) / sw;
            const ptrdiff_t past = (ptrdiff_t)s->in_w + s->pad_left - (ptrdiff_t)ph;
            size_t j1 = past <= 0 ? 0 : ((size_t)past + sw - 1) / sw;
            if (j1 > phase_w) j1 = phase_w;
            for (size_t j = 0; j < phase_w; j++) {
                if (j >= j0 && j < j1) { j = j1 - 1; continue; }
                for (size_t c = 0; c < C; c++) dst[c * plane + j] = 0.0f;
            }
            /* Inside: blocks of 8 pixels, so that each channel gets 8 consecutive floats per store
             * burst (one float per channel row per pixel would touch C lines for every float). */
            const size_t pixel_step = sw * C;
            size_t j = j0;
            for (; j + 8 <= j1; j += 8) {
                const float* src = src_row + (j * sw + ph - (size_t)s->pad_left) * C;
                size_t c = 0;
                for (; c + 8 <= C; c += 8)
                    f32_transpose_8x8(src + c, pixel_step, dst + c * plane + j, plane);
                for (; c < C; c++) {
                    float* out = dst + c * plane + j;
#pragma GCC unroll 8
                    for (size_t q = 0; q < 8; q++) out[q] = src[q * pixel_step + c];
                }
            }
            for (; j < j1; j++) {
                const float* src = src_row + (j * sw + ph - (size_t)s->pad_left) * C;
                for (size_t c = 0; c < C; c++) dst[c * plane + j] = src[c];
            }
        }
    }
}

void FN(cconv_conv2d_backward_weight_part)(const struct cconv_conv_shape* s,
                                           const struct f32_igemm_config* cfg, const float* x,
                                           const float* dy, float* dwt, size_t row0,
                                           size_t row1, size_t m_begin, size_t m_end,
                                           size_t slab_rows, size_t band_rows, float* slab,
                                           float* b_pack, size_t* offsets, const float** a_ptrs,
                                           float** c_rows) {
    const size_t MR = cfg->mr, NR = cfg->nr;
    const size_t cin_g = s->in_c / s->groups, cout_g = s->out_c / s->groups;
    const size_t K = s->kernel_h * s->kernel_w * cin_g;
    const size_t phase_w = cconv_weight_grad_phase_width(s), row_floats = s->stride_w * phase_w;
    const size_t plane = cconv_weight_grad_slab_plane(s, slab_rows);
    const size_t image_floats = cconv_weight_grad_image_floats(s);
    const size_t row_step = s->stride_h * row_floats;  /* one output row down in the slab */
    const size_t max_images = slab_rows > s->out_h ? slab_rows / s->out_h : 1;

    /* Where A row m = (tap, ci) starts in the slab (for the slab's first output row), and how
     * far down output row t of a band is (the next image after out_h rows). */
    size_t* m_offsets = offsets;
    size_t* t_offsets = offsets + (m_end - m_begin);
    for (size_t m = m_begin; m < m_end; m++) {
        const size_t tap = m / cin_g, ci = m % cin_g;
        const size_t kx_off = (tap % s->kernel_w) * s->dilation_w;
        m_offsets[m - m_begin] = ci * plane + (tap / s->kernel_w) * s->dilation_h * row_floats +
                                 (kx_off % s->stride_w) * phase_w + kx_off / s->stride_w;
    }
    for (size_t t = 0; t < band_rows; t++)
        t_offsets[t] = t / s->out_h * image_floats + t % s->out_h * row_step;
    /* Only a group's last panel can reach past the end of dy's rows (with fewer output
     * channels per group than NR, the last panels of several groups): its band is packed, once
     * per group and band (B is otherwise dy's rows read in place). */
    const size_t last_n0 = (cout_g - 1) / NR * NR;
    int flags = 0;  /* the first band of the item initialises dw^T, the others add to it */
    for (size_t r = row0; r < row1;) {
        const size_t n = r / s->out_h, oh0 = r % s->out_h;
        size_t rows, images = 1;
        if (oh0 == 0 && max_images > 1 && row1 - r >= 2 * s->out_h) {
            images = (row1 - r) / s->out_h < max_images ? (row1 - r) / s->out_h : max_images;
            rows = images * s->out_h;
        } else {
            rows = s->out_h - oh0 < slab_rows ? s->out_h - oh0 : slab_rows;
            if (row1 - r < rows) rows = row1 - r;
        }
        for (size_t k = 0; k < images; k++)
            fill_weight_grad_slab(s, x, n + k, (ptrdiff_t)(oh0 * s->stride_h) - s->pad_top,
                                  cconv_weight_grad_slab_rows_in(s, rows / images),
                                  plane, phase_w, slab + k * image_floats);
        for (size_t b0 = 0; b0 < rows; b0 += band_rows) {
            const size_t ks = rows - b0 < band_rows ? rows - b0 : band_rows;
            const size_t pix0 = (r + b0) * s->out_w, band_pixels = ks * s->out_w;
            for (size_t group = 0; group < s->groups; group++) {
                const float* slab_g = slab + group * cin_g * plane + b0 * row_step;
                const size_t last_col = group * cout_g + last_n0;
                const int pack_last = last_col + NR > s->out_c;
                if (pack_last) {
                    const float* src = dy + pix0 * s->out_c + last_col;
                    const size_t nc = cout_g - last_n0;
                    for (size_t q = 0; q < band_pixels; q++)
                        for (size_t j = 0; j < NR; j++)
                            b_pack[q * NR + j] = j < nc ? src[q * s->out_c + j] : 0.0f;
                }
                for (size_t m0 = m_begin; m0 < m_end; m0 += MR) {
                    const size_t mr = m_end - m0 < MR ? m_end - m0 : MR;
                    const float* a_rows[MR];
                    for (size_t i = 0; i < MR; i++) {  /* rows past mr: computed, not stored */
                        const size_t m = m0 + (i < mr ? i : 0);
                        a_rows[i] = slab_g + m_offsets[m - m_begin];
                        c_rows[i] = dwt + (group * K + m) * cout_g;
                    }
                    /* row by row: each pointer row is MR consecutive stores */
                    for (size_t t = 0; t < ks; t++)
                        for (size_t i = 0; i < MR; i++)
                            a_ptrs[t * MR + i] = a_rows[i] + t_offsets[t];
                    for (size_t n0 = 0; n0 < cout_g; n0 += NR) {
                        const size_t nc = cout_g - n0 < NR ? cout_g - n0 : NR;
                        const size_t col = group * cout_g + n0;
                        const int packed = pack_last && n0 == last_n0;
                        cfg->ukernel(mr, nc, s->out_w, ks, a_ptrs, 0, 1, NULL,
                                     packed ? b_pack : dy + pix0 * s->out_c + col,
                                     packed ? NR : s->out_c, NULL, c_rows, n0, flags, -INFINITY,
                                     INFINITY);
                    }
                }
            }
            flags = FC_IGEMM_ACCUMULATE;
        }
        r += rows;
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
            cfg->ukernel(mr, nc, cout_g, 1, a_scratch, group * cout_g, 1, NULL,
                         packed_w + (group * panels + p) * cout_g * NR, NR, NULL, c_rows, p * NR, 0,
                         -INFINITY, INFINITY);
        }
        /* col2im: add each tap's column block to the input pixel the tap read. */
        for (size_t i = 0; i < mr; i++) {
            const size_t m = m0 + i, ow = m % s->out_w, oh = m / s->out_w;
            const float* dcol = dcol_scratch + i * width;
            const ptrdiff_t iw0 = (ptrdiff_t)(ow * s->stride_w) - s->pad_left;
            for (size_t ky = 0; ky < s->kernel_h; ky++) {
                const ptrdiff_t ih = (ptrdiff_t)(oh * s->stride_h + ky * s->dilation_h) - s->pad_top;
                if (ih < 0 || ih >= (ptrdiff_t)s->in_h) continue;
                if (s->groups == 1 && s->dilation_w == 1) {
                    /* the row's taps inside the image are one run of pixels of dx and dcol */
                    const ptrdiff_t kx_lo = iw0 < 0 ? -iw0 : 0;
                    ptrdiff_t kx_hi = (ptrdiff_t)s->in_w - iw0;
                    if (kx_hi > (ptrdiff_t)s->kernel_w) kx_hi = (ptrdiff_t)s->kernel_w;
                    if (kx_hi <= kx_lo) continue;
                    float* dst = dx + ((n * s->in_h + (size_t)ih) * s->in_w +
                                       (size_t)(iw0 + kx_lo)) * s->in_c;
                    const float* src = dcol + (ky * s->kernel_w + (size_t)kx_lo) * cin_g;
                    const size_t count = (size_t)(kx_hi - kx_lo) * cin_g;
                    for (size_t k = 0; k < count; k++) dst[k] += src[k];
                    continue;
                }
                for (size_t kx = 0; kx < s->kernel_w; kx++) {
                    const ptrdiff_t iw = iw0 + (ptrdiff_t)(kx * s->dilation_w);
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
    if (c0 == 0 && c1 == cols && cols <= 16) {
        /* Few columns: sum stripes of m whole rows (m * cols <= 64 consecutive floats), so that
         * the loop runs over full vectors instead of a few lanes per row; the m partial sums of
         * a column are added at the end. The order depends on the shape only. */
        const size_t m = 64 / cols, stripe = m * cols, stripes = rows / m;
        for (size_t j = 0; j < stripe; j++) acc[j] = 0.0;
        for (size_t k = 0; k < stripes; k++) {
            const float* p = x + k * stripe;
            for (size_t j = 0; j < stripe; j++) acc[j] += p[j];
        }
        for (size_t r = stripes * m; r < rows; r++)
            for (size_t c = 0; c < cols; c++) acc[c] += x[r * cols + c];
        for (size_t c = 0; c < cols; c++) {
            double sum = 0.0;
            for (size_t i = 0; i < m; i++) sum += acc[i * cols + c];
            out[c] = (float)sum;
        }
        return;
    }
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
