/* Pooling kernels (pool.h): every ISA runs the same operations in the same order per channel
 * (pool_impl.h), so every result, argmax indices included, must match the scalar bits. */
#include <math.h>

#include "harness.h"
#include "pool/pool.h"

/* Window values: small integers half of the time, so that ties (first one wins) are common. */
static void fill_window(struct harness* h, float* x, size_t n, int specials) {
    const int ties = harness_chance(h, 1, 2);
    for (size_t i = 0; i < n; i++) {
        x[i] = ties ? (float)((int)harness_range(h, 0, 6) - 3) : harness_uniform(h, -5.0f, 5.0f);
        if (specials && harness_chance(h, 1, 12)) {
            static const float special[] = {NAN, -NAN, INFINITY, -INFINITY, -0.0f};
            x[i] = special[harness_range(h, 0, 4)];
        }
    }
}

void family_pool(struct harness* h, int isa) {
    const cconv_pool_kernels s = cconv_pool_select(CCONV_ISA_SCALAR);
    const cconv_pool_kernels v = cconv_pool_select(isa);
    harness_case(h, "kernel table");
    harness_expect_own_kernel(h, "maxpool_window", (const void*)v.maxpool_window,
                              (const void*)s.maxpool_window);
    harness_expect_own_kernel(h, "maxpool_backward", (const void*)v.maxpool_backward,
                              (const void*)s.maxpool_backward);
    harness_expect_own_kernel(h, "sumpool_window", (const void*)v.sumpool_window,
                              (const void*)s.sumpool_window);
    harness_expect_own_kernel(h, "sumpool_backward", (const void*)v.sumpool_backward,
                              (const void*)s.sumpool_backward);
    harness_expect_own_kernel(h, "gavgpool_backward", (const void*)v.gavgpool_backward,
                              (const void*)s.gavgpool_backward);

    for (size_t li = 0; li < HARNESS_N_LENGTHS; li++) {
        const size_t channels = HARNESS_LENGTHS[li];
        for (size_t rep = 0; rep < 3; rep++) {
            harness_free(h);
            const int specials = rep == 2;
            /* A window of rows x cols taps (0 allowed: an empty window) inside an image whose
             * pixels are col_stride floats apart, rows row_stride apart (gaps of 0 to 3). */
            const size_t rows = harness_range(h, rep == 0 ? 0 : 1, 4);
            const size_t cols = harness_range(h, rep == 0 ? 0 : 1, 4);
            const size_t col_stride = channels + harness_range(h, 0, 3);
            const size_t row_stride = (cols ? cols : 1) * col_stride + harness_range(h, 0, 3);
            const size_t span = (rows && cols) ? (rows - 1) * row_stride + (cols - 1) * col_stride + channels : 0;
            const int32_t index = (int32_t)harness_range(h, 0, 1000);
            const int32_t col_step = (int32_t)harness_range(h, 1, 3);
            const int32_t row_step = (int32_t)harness_range(h, 5, 40);

            harness_case(h, "maxpool_window %zux%zu channels=%zu specials=%d", rows, cols,
                         channels, specials);
            float* x = harness_floats(h, span);
            fill_window(h, x, span, specials);
            float* y_got = harness_floats(h, channels);
            float* y_want = harness_floats(h, channels);
            int32_t* i_got = harness_i32(h, channels);
            int32_t* i_want = harness_i32(h, channels);
            s.maxpool_window(rows, cols, x, row_stride, col_stride, index, row_step, col_step,
                             channels, y_want, i_want);
            v.maxpool_window(rows, cols, x, row_stride, col_stride, index, row_step, col_step,
                             channels, y_got, i_got);
            harness_expect_f32(h, "y", channels, y_got, y_want, 0, 0);
            harness_expect_i32(h, "argmax", channels, i_got, i_want);

            const float divisor = harness_chance(h, 1, 2) ? (float)(rows && cols ? rows * cols : 1)
                                                          : harness_uniform(h, 0.5f, 20.0f);
            harness_case(h, "sumpool_window %zux%zu channels=%zu divisor=%g specials=%d", rows,
                         cols, channels, divisor, specials);
            s.sumpool_window(rows, cols, x, row_stride, col_stride, channels, divisor, y_want);
            v.sumpool_window(rows, cols, x, row_stride, col_stride, channels, divisor, y_got);
            harness_expect_f32(h, "y", channels, y_got, y_want, 0, 0);

            /* Gradient gather: dy laid out like x; divisors per tap, or none (sum pooling). */
            const int with_div = harness_chance(h, 2, 3);
            const size_t div_row_stride = cols + harness_range(h, 0, 2);
            harness_case(h, "sumpool_backward %zux%zu channels=%zu div=%d specials=%d", rows, cols,
                         channels, with_div, specials);
            float* div = NULL;
            if (with_div) {
                div = harness_floats(h, rows * div_row_stride);
                for (size_t i = 0; i < rows * div_row_stride; i++)
                    div[i] = (float)harness_range(h, 1, 9);
            }
            float* dx_got = harness_floats(h, channels);
            float* dx_want = harness_floats(h, channels);
            s.sumpool_backward(rows, cols, x, row_stride, col_stride, div, div_row_stride,
                               channels, dx_want);
            v.sumpool_backward(rows, cols, x, row_stride, col_stride, div, div_row_stride,
                               channels, dx_got);
            harness_expect_f32(h, "dx", channels, dx_got, dx_want, 0, 0);

            /* Max-pooling scatter: `pixels` output pixels of a block of `channels` channels in
             * an image of `stride` channels, indices into `in_pixels` input pixels (-1: none);
             * several outputs hit the same input (overlapping windows). */
            const size_t pixels = harness_range(h, 1, 9), in_pixels = harness_range(h, 1, 12);
            const size_t stride = channels + harness_range(h, 0, 3);
            harness_case(h, "maxpool_backward pixels=%zu channels=%zu stride=%zu specials=%d",
                         pixels, channels, stride, specials);
            float* dy = harness_floats(h, pixels * stride);
            harness_fill(h, dy, pixels * stride, -2.0f, 2.0f, specials);
            int32_t* idx = harness_i32(h, pixels * stride);
            for (size_t i = 0; i < pixels * stride; i++)
                idx[i] = (int32_t)harness_range(h, 0, in_pixels) - 1;
            float* g_want = harness_floats(h, in_pixels * stride);
            harness_fill(h, g_want, in_pixels * stride, -1.0f, 1.0f, 0);
            float* g_got = harness_copy_floats(h, g_want, in_pixels * stride);
            s.maxpool_backward(pixels, channels, stride, dy, idx, g_want);
            v.maxpool_backward(pixels, channels, stride, dy, idx, g_got);
            harness_expect_f32(h, "dx", in_pixels * stride, g_got, g_want, 0, 0);

            const float gdiv = (float)harness_range(h, 1, 64);
            harness_case(h, "gavgpool_backward pixels=%zu channels=%zu specials=%d", pixels,
                         channels, specials);
            float* gdx_got = harness_floats(h, pixels * channels);
            float* gdx_want = harness_floats(h, pixels * channels);
            s.gavgpool_backward(pixels, channels, dy, gdiv, gdx_want);
            v.gavgpool_backward(pixels, channels, dy, gdiv, gdx_got);
            harness_expect_f32(h, "dx", pixels * channels, gdx_got, gdx_want, 0, 0);
        }
    }
}
