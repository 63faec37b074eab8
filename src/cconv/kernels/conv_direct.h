/* Direct convolution: the tile-level loops between the micro-kernel and the threads (BLIS's
 * macro-kernel). Each function computes one independent tile, builds its own indirection
 * pointers in caller-provided scratch, and calls the selected igemm micro-kernel; the Cython
 * layer (_conv.pyx) distributes tiles over OpenMP threads. ISA-independent C.
 */
#ifndef CCONV_CONV_DIRECT_H
#define CCONV_CONV_DIRECT_H

#include <stddef.h>
#include "igemm.h"

/* Geometry of a convolution y = conv(x, w), NHWC; the *_c sizes count all groups' channels. */
struct fc_conv_shape {
    size_t batch, in_h, in_w, in_c;
    size_t out_h, out_w, out_c;
    size_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w;
    ptrdiff_t pad_top, pad_left;
    size_t groups;
};

/* Forward: tile = m_tile * groups + group, with m_tile over MR-pixel rows of y.
 * packed_w: [group][panel][kh*kw][in_c/groups][NR]; packed_bias: [group][panel][NR].
 * a_scratch: kh*kw*MR pointers; c_scratch: MR pointers. */
void fc_conv2d_forward_tile(const struct fc_conv_shape* s, const struct f32_igemm_config* cfg,
                            const float* x, const float* packed_w, const float* packed_bias,
                            float* y, const float* zero, size_t tile, float cmin, float cmax,
                            const float** a_scratch, float** c_scratch);

/* Forward for layers with few input channels (first layers), one group: the GEMM turned around,
 * y^T (out_c x pixels) = w (out_c x K) times im2col(x)^T (K x pixels), K = kh*kw*in_c, so that
 * SIMD lanes run over up to NR output pixels of one output row instead of over a handful of
 * channels. tile = (n * out_h + oh) * row_panels + panel. w_rows: w as [out_c][K] with columns
 * (ky, kx, ci). Bias and the clamp are applied in the transposed store.
 * b_scratch: K * NR floats; t_scratch: out_c * NR floats; a_rows, c_rows: MR pointers. */
void fc_conv2d_forward_pixels_tile(const struct fc_conv_shape* s, const struct f32_igemm_config* cfg,
                                   const float* x, const float* w_rows, const float* bias, float* y,
                                   size_t tile, float cmin, float cmax, float* b_scratch,
                                   float* t_scratch, const float** a_rows, float** c_rows);

/* One stride phase of the backward-data pass: the input pixels (ih0 + j*stride_h,
 * iw0 + l*stride_w), j < rows, l < cols, receive dx = sum over the phase's taps of dy * w.
 * tap_kh/tap_kw list the n_taps taps whose dilation*k is congruent to the phase mod the stride.
 * packed_w: [group][panel over in_c/groups][n_taps][out_c/groups][NR].
 * tile = m_tile * groups + group, m_tile over MR pixels of the phase. */
struct fc_conv_phase {
    size_t ih0, iw0, rows, cols, n_taps;
    const size_t* tap_kh;
    const size_t* tap_kw;
};

void fc_conv2d_backward_data_tile(const struct fc_conv_shape* s, const struct f32_igemm_config* cfg,
                                  const struct fc_conv_phase* phase, const float* dy,
                                  const float* packed_w, float* dx, const float* zero, size_t tile,
                                  const float** a_scratch, float** c_scratch);

/* Backward-weight as one GEMM per group: dw_tmp (out_c x K) = dy^T (out_c x pixels) times
 * im2col(x) (pixels x K), K = kh * kw * in_c/groups, column (tap * in_c/groups + ci).
 * dy_t is dy transposed, [out_c][pixels]. tile = group * panels + panel, a panel being NR
 * columns of K; each packed chunk of im2col rows serves every output-channel tile of the group.
 * Pixels are summed in chunks of `chunk` in a fixed order, so the result does not depend on the
 * thread count. NR <= 64.
 * b_scratch: chunk * NR floats; a_rows, c_rows: MR pointers. */
void fc_conv2d_backward_weight_tile(const struct fc_conv_shape* s, const struct f32_igemm_config* cfg,
                                    const float* x, const float* dy_t, float* dw_tmp, size_t tile,
                                    size_t chunk, float* b_scratch, const float** a_rows,
                                    float** c_rows);

/* Backward-data for few input channels per group (col2im): for the output pixels of image
 * `tile / groups`, dcol (MR x K) = dy rows times w (K = kh * kw * in_c/groups columns, packed as
 * [group][panel][out_c/groups][NR]), then each dcol entry is added to the input pixel it came
 * from. One image per call: calls for different images touch disjoint parts of dx.
 * dcol_scratch: MR * panels * NR floats; c_rows, a_scratch: MR pointers. */
void fc_conv2d_backward_data_col2im(const struct fc_conv_shape* s, const struct f32_igemm_config* cfg,
                                    const float* dy, const float* packed_w, float* dx,
                                    size_t tile, float* dcol_scratch, const float** a_scratch,
                                    float** c_rows);

/* Bias gradient: out[c] = sum over rows r of x[r * cols + c], for c in [c0, c1), in float64 and
 * in row order (so the result depends only on the data, not on how columns are split). */
void fc_sum_rows(size_t rows, size_t cols, const float* x, size_t c0, size_t c1, float* out);

#endif
