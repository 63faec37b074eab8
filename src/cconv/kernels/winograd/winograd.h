/* Winograd convolution F(m x m, 3 x 3), m = 2 or 4 (Lavin & Gray 2016), NHWC float32.
 *
 * y = conv(x, w) for 3x3 kernels, stride 1, dilation 1, one group. The output is cut into
 * m x m tiles, each read from an alpha x alpha input patch (alpha = m + 2). For a block of tiles:
 *
 *   1. input transform   V[xi][t][ci] = (B^T d_t B)[xi] for every channel, SIMD across channels;
 *                        patch points outside the image read a row of zeros (no padded copy).
 *   2. alpha^2 GEMMs     M[xi] (tiles x N) = V[xi] (tiles x K) * U[xi] (K x N), through the
 *                        igemm micro-kernel (ks = 1, one row pointer per tile).
 *   3. output transform  y_t = A^T M_t A, clamped to [cmin, cmax], stored where the tile lies
 *                        inside the output. The bias is the initial value of the GEMM at the
 *                        point (1, 1): column 1 of A^T is all ones, so it reaches every output
 *                        of the tile exactly once, at no cost.
 *
 * Output channels are processed in chunks of `co_chunk` (a multiple of the micro-kernel's NR):
 * steps 2 and 3 run once per chunk, so that the block's M stays small next to V.
 *
 * Points: F(2x2): 0, 1, -1, inf; F(4x4): 0, 1, -1, 2, -2, inf (Lavin & Gray's matrices).
 * Transforms are float32. Each tile's result depends only on its own patch, the weights and the
 * micro-kernel's fixed summation order over K, never on which block it lands in: the results
 * are bitwise identical for any block size and any number of threads.
 */
#ifndef CCONV_WINOGRAD_H
#define CCONV_WINOGRAD_H

#include <stddef.h>
#include "igemm/igemm.h"

/* Geometry of one Winograd convolution and of its block workspace (sizes in floats). */
struct cconv_wino_shape {
    size_t batch, in_h, in_w, in_c;     /* x: NHWC, in_c = K of the GEMMs */
    size_t out_h, out_w, out_c;         /* y: NHWC, out_c = N of the GEMMs */
    ptrdiff_t pad_top, pad_left;        /* may be negative (backward-data of padding > 2) */
    size_t tiles_h, tiles_w;            /* ceil(out / m) */
    size_t v_row, v_plane;              /* V: [alpha^2][block tiles][v_row], planes v_plane apart */
    size_t m_row, m_plane;              /* M: [alpha^2][block tiles][m_row], m_row >= co_chunk */
    size_t co_chunk;                    /* output channels per GEMM + output-transform pass */
};

/* Per-thread workspace of one block of up to `capacity` tiles (capacity a multiple of MR):
 * v: alpha^2 * v_plane floats, m: alpha^2 * m_plane floats, a_rows and c_rows: capacity
 * pointers, zero: at least in_c zeros. */
struct cconv_wino_scratch {
    float* v;
    float* m;
    const float** a_rows;
    float** c_rows;
    const float* zero;
};

/* Tiles [tile0, tile0 + ntiles) of the convolution, tiles numbered (n, tile row, tile column)
 * row-major. packed_u: [alpha^2][panel][K][NR] as written by the weights function of the same m
 * and the same NR; bias: NULL or panels * NR floats (out_c values, zero-padded). */
typedef void (*f32_wino_block_fn)(const struct cconv_wino_shape* s, const struct f32_igemm_config* cfg,
                                  const float* x, const float* packed_u, const float* bias, float* y,
                                  size_t tile0, size_t ntiles, float cmin, float cmax,
                                  const struct cconv_wino_scratch* scratch);

/* Weight transform U = G g G^T of one NR-wide panel of output channels, packed for the igemm
 * micro-kernel: packed[((xi * panels + panel) * k + kk) * nr + j] = U[xi] of the 3x3 kernel
 * g(n = panel * nr + j, kk), zero for n >= n_out. The kernel is read through strides,
 * g(n, kk)[i][j] = w[n * s_n + kk * s_k + i * s_i + j * s_j], so that the backward-data pass can
 * read w rotated by 180 degrees with its channels swapped. */
typedef void (*f32_wino_weights_fn)(size_t n_out, size_t k, const float* w, ptrdiff_t s_n,
                                    ptrdiff_t s_k, ptrdiff_t s_i, ptrdiff_t s_j, size_t nr,
                                    size_t panel, float* packed);

/* Weight gradient, F(3 x 3, m x m) by the transposition principle (dw = G^T [(A dy A^T) .
 * (B^T d B)] G per tile, summed over the tiles before the last transform):
 *
 *   wgrad_block  for tiles [tile0, tile0 + ntiles) of dy's m x m grid and input channels
 *                [k0, k1): V = B^T d B of each x patch (as the forward pass), Ydy = A dy_t A^T,
 *                and the alpha^2 GEMMs M[xi][k0:k1] (of in_c x out_c) += V[xi]^T Ydy[xi]
 *                (flags: 0 to start M, or FC_IGEMM_ACCUMULATE), both operands read in place by
 *                the micro-kernel. Each row of M gets the same sums whatever slice it is in, so
 *                threads may split the channels without changing a bit.
 *   wgrad_out    dw[tap][k][n] = (G^T M[.][k][n] G)[tap], tap = ky * 3 + kx, for k in
 *                [k0, k1), M being the sum of n_parts partial M (part_stride floats apart)
 *                taken in part order.
 *
 * mt: alpha^2 * in_c * out_c floats. The shape's m_row/m_plane describe Ydy (m_row >= out_c
 * rounded up to NR), v_row/v_plane V, as in the forward pass. */
struct cconv_wino_wgrad_scratch {
    float* v;
    float* ydy;
    const float** a_rows;  /* MR pointers */
    float** c_rows;        /* MR pointers */
    const float* zero;     /* at least max(in_c, out_c) zeros */
};

typedef void (*f32_wino_wgrad_block_fn)(const struct cconv_wino_shape* s,
                                        const struct f32_igemm_config* cfg, const float* x,
                                        const float* dy, float* mt, size_t tile0, size_t ntiles,
                                        size_t k0, size_t k1, int flags,
                                        const struct cconv_wino_wgrad_scratch* scratch);
typedef void (*f32_wino_wgrad_out_fn)(size_t k, size_t n, const float* mt, size_t n_parts,
                                      size_t part_stride, size_t k0, size_t k1, float* dw);

struct f32_wino_config {
    f32_wino_block_fn block;
    f32_wino_weights_fn weights;
    f32_wino_wgrad_block_fn wgrad_block;
    f32_wino_wgrad_out_fn wgrad_out;
    size_t m;      /* output tile side */
    size_t alpha;  /* input tile side, m + 2 */
};

#define CCONV_WINO_DECLARE(m, isa)                                                                  \
    void f32_wino##m##x3_block__##isa(const struct cconv_wino_shape*, const struct f32_igemm_config*, \
                                      const float*, const float*, const float*, float*, size_t,  \
                                      size_t, float, float, const struct cconv_wino_scratch*);     \
    void f32_wino##m##x3_weights__##isa(size_t, size_t, const float*, ptrdiff_t, ptrdiff_t,      \
                                        ptrdiff_t, ptrdiff_t, size_t, size_t, float*);            \
    void f32_wino##m##x3_wgrad_block__##isa(const struct cconv_wino_shape*,                      \
                                            const struct f32_igemm_config*, const float*,         \
                                            const float*, float*, size_t, size_t, size_t,         \
                                            size_t, int,                                          \
                                            const struct cconv_wino_wgrad_scratch*);              \
    void f32_wino##m##x3_wgrad_out__##isa(size_t, size_t, const float*, size_t, size_t, size_t, \
                                          size_t, float*);

CCONV_WINO_DECLARE(2, scalar)
CCONV_WINO_DECLARE(4, scalar)
#if defined(__x86_64__) || defined(_M_X64)
CCONV_WINO_DECLARE(2, avx2)
CCONV_WINO_DECLARE(4, avx2)
CCONV_WINO_DECLARE(2, avx512)
CCONV_WINO_DECLARE(4, avx512)
#endif

#define CCONV_WINO_CONFIG(m, isa)                                                             \
    ((struct f32_wino_config){f32_wino##m##x3_block__##isa, f32_wino##m##x3_weights__##isa,    \
                              f32_wino##m##x3_wgrad_block__##isa,                              \
                              f32_wino##m##x3_wgrad_out__##isa, m, m + 2})

/* The one place where the Winograd kernels are chosen: m = 2 or 4 (anything else gives 4). */
static inline struct f32_wino_config f32_wino_select(int isa, int m) {
#if defined(__x86_64__) || defined(_M_X64)
    if (isa == CCONV_ISA_AVX512) return m == 2 ? CCONV_WINO_CONFIG(2, avx512) : CCONV_WINO_CONFIG(4, avx512);
    if (isa == CCONV_ISA_AVX2) return m == 2 ? CCONV_WINO_CONFIG(2, avx2) : CCONV_WINO_CONFIG(4, avx2);
#endif
    (void)isa;
    return m == 2 ? CCONV_WINO_CONFIG(2, scalar) : CCONV_WINO_CONFIG(4, scalar);
}

#endif
