/* Row-wise softmax and the fused softmax cross-entropy (softmax.h). */
#include <math.h>

#include "harness.h"
#include "softmax/softmax.h"

#define TOL 1e-5

void family_softmax(struct harness* h, int isa) {
    const struct cconv_softmax_kernels s = cconv_softmax_select(CCONV_ISA_SCALAR);
    const struct cconv_softmax_kernels v = cconv_softmax_select(isa);
    harness_case(h, "kernel table");
    harness_expect_own_kernel(h, "softmax", (const void*)v.softmax, (const void*)s.softmax);
    harness_expect_own_kernel(h, "softmax_backward", (const void*)v.softmax_backward,
                              (const void*)s.softmax_backward);
    harness_expect_own_kernel(h, "xent", (const void*)v.xent, (const void*)s.xent);
    harness_expect_own_kernel(h, "xent_backward", (const void*)v.xent_backward,
                              (const void*)s.xent_backward);

    static const size_t ROWS[] = {1, 2, 3, 5};
    static const float SCALES[] = {1.0f, 10.0f, 100.0f};
    for (size_t li = 0; li < HARNESS_N_LENGTHS; li++) {
        const size_t c = HARNESS_LENGTHS[li];
        if (c == 0) continue;
        for (size_t si = 0; si < 3; si++) {
            harness_free(h);
            const size_t rows = harness_pick(h, ROWS, 4), n = rows * c;
            const float scale = SCALES[si];
            const float offset = harness_uniform(h, -50.0f, 50.0f);

            harness_case(h, "softmax rows=%zu c=%zu scale=%g", rows, c, scale);
            float* x = harness_floats(h, n);
            for (size_t i = 0; i < n; i++) x[i] = offset + scale * harness_normal(h);
            float* got = harness_floats(h, n);
            float* want = harness_floats(h, n);
            s.softmax(rows, c, x, want);
            v.softmax(rows, c, x, got);
            harness_expect_f32_close(h, "y", n, got, want, TOL);

            harness_case(h, "softmax_backward rows=%zu c=%zu scale=%g", rows, c, scale);
            float* y = harness_floats(h, n);
            for (size_t i = 0; i < n; i++) x[i] = offset + scale * harness_normal(h);
            s.softmax(rows, c, x, y);
            float* dy = harness_floats(h, n);
            harness_fill(h, dy, n, -1.0f, 1.0f, 0);
            float* dx_got = harness_floats(h, n);
            float* dx_want = harness_floats(h, n);
            s.softmax_backward(rows, c, dy, y, dx_want);
            v.softmax_backward(rows, c, dy, y, dx_got);
            harness_expect_f32_close(h, "dx", n, dx_got, dx_want, TOL);

            const float smoothing = harness_chance(h, 1, 2) ? 0.0f : harness_uniform(h, 0.0f, 0.3f);
            harness_case(h, "xent rows=%zu c=%zu scale=%g smoothing=%g", rows, c, scale, smoothing);
            int64_t* labels = harness_i64(h, rows);
            for (size_t r = 0; r < rows; r++) labels[r] = (int64_t)harness_range(h, 0, c - 1);
            float* p_got = harness_floats(h, n);
            float* p_want = harness_floats(h, n);
            double* l_got = harness_doubles(h, rows);
            double* l_want = harness_doubles(h, rows);
            s.xent(rows, c, x, labels, smoothing, p_want, l_want);
            v.xent(rows, c, x, labels, smoothing, p_got, l_got);
            harness_expect_f32_close(h, "probs", n, p_got, p_want, TOL);
            double lmax = 0.0;
            for (size_t r = 0; r < rows; r++) lmax = fmax(lmax, fabs(l_want[r]));
            harness_expect_f64(h, "loss", rows, l_got, l_want, TOL, TOL * lmax + 1e-30);

            harness_case(h, "xent_backward rows=%zu c=%zu smoothing=%g", rows, c, smoothing);
            const float loss_scale = 1.0f / (float)rows;
            float* d_got = harness_floats(h, n);
            float* d_want = harness_floats(h, n);
            s.xent_backward(rows, c, p_want, labels, smoothing, loss_scale, d_want);
            v.xent_backward(rows, c, p_want, labels, smoothing, loss_scale, d_got);
            harness_expect_f32(h, "dlogits", n, d_got, d_want, 0, 0);
        }
    }
}
