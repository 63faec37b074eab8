/* Batch-norm kernels (batchnorm.h) over (rows, c) chunks. The float64 reductions sum every
 * channel in row order on every ISA (vectors run across channels), so they match exactly. */
#include <math.h>
#include "batchnorm/batchnorm.h"
#include "harness.h"

#define TOL 1e-5

void family_batchnorm(struct harness* h, int isa) {
    const struct cconv_batchnorm_kernels s = cconv_batchnorm_select(CCONV_ISA_SCALAR);
    const struct cconv_batchnorm_kernels v = cconv_batchnorm_select(isa);
    harness_case(h, "kernel table");
    harness_expect_own_kernel(h, "stats", (const void*)v.stats, (const void*)s.stats);
    harness_expect_own_kernel(h, "apply", (const void*)v.apply, (const void*)s.apply);
    harness_expect_own_kernel(h, "backward_reduce", (const void*)v.backward_reduce,
                              (const void*)s.backward_reduce);
    harness_expect_own_kernel(h, "backward_dx", (const void*)v.backward_dx,
                              (const void*)s.backward_dx);

    static const size_t ROWS[] = {1, 2, 3, 5, 8, 17, 40};
    for (size_t li = 0; li < HARNESS_N_LENGTHS; li++) {
        const size_t c = HARNESS_LENGTHS[li];
        if (c == 0) continue;
        for (size_t ri = 0; ri < 2; ri++) {
            harness_free(h);
            const size_t rows = harness_pick(h, ROWS, sizeof ROWS / sizeof ROWS[0]), n = rows * c;
            const float centre = harness_chance(h, 1, 3) ? harness_uniform(h, -100.0f, 100.0f) : 0.0f;
            float* x = harness_floats(h, n);
            float* dy = harness_floats(h, n);

            harness_case(h, "stats rows=%zu c=%zu centre=%g", rows, c, centre);
            for (size_t i = 0; i < n; i++) x[i] = centre + harness_normal(h);
            double* mean_got = harness_doubles(h, c);
            double* mean_want = harness_doubles(h, c);
            double* m2_got = harness_doubles(h, c);
            double* m2_want = harness_doubles(h, c);
            s.stats(rows, c, x, mean_want, m2_want);
            v.stats(rows, c, x, mean_got, m2_got);
            harness_expect_f64(h, "mean", c, mean_got, mean_want, 0, 0);
            harness_expect_f64(h, "m2", c, m2_got, m2_want, 0, 0);

            /* Parameters of the next kernels, from these statistics as the Cython layer makes
             * them: the mean as a float pair, scale and shift from random gamma and beta. */
            float* mean_hi = harness_floats(h, c);
            float* mean_lo = harness_floats(h, c);
            float* scale = harness_floats(h, c);
            float* shift = harness_floats(h, c);
            double* a = harness_doubles(h, c);
            double* b = harness_doubles(h, c);
            double* k = harness_doubles(h, c);
            for (size_t ch = 0; ch < c; ch++) {
                mean_hi[ch] = (float)mean_want[ch];
                mean_lo[ch] = (float)(mean_want[ch] - (double)mean_hi[ch]);
                scale[ch] = harness_uniform(h, -2.0f, 2.0f);
                shift[ch] = harness_uniform(h, -1.0f, 1.0f);
                a[ch] = harness_uniform(h, -2.0f, 2.0f);
                b[ch] = harness_uniform(h, -0.5f, 0.5f);
                k[ch] = harness_uniform(h, -0.1f, 0.1f);
            }

            /* Half of the cases with the fused ReLU: clamp in apply, dy masked by its output;
             * a third with a residual added before the clamp. */
            const int relu = harness_chance(h, 1, 2);
            const float lo = relu ? 0.0f : -INFINITY;
            float* residual = NULL;
            if (harness_chance(h, 1, 3)) {
                residual = harness_floats(h, n);
                harness_fill(h, residual, n, -1.0f, 1.0f, 0);
            }
            harness_case(h, "apply rows=%zu c=%zu centre=%g relu=%d residual=%d", rows, c, centre,
                         relu, residual != NULL);
            float* y_got = harness_floats(h, n);
            float* y_want = harness_floats(h, n);
            s.apply(rows, c, x, mean_hi, mean_lo, scale, shift, residual, lo, y_want);
            v.apply(rows, c, x, mean_hi, mean_lo, scale, shift, residual, lo, y_got);
            harness_expect_f32_close(h, "y", n, y_got, y_want, TOL);

            const float* mask = relu ? y_want : NULL;
            harness_case(h, "backward_reduce rows=%zu c=%zu centre=%g relu=%d", rows, c, centre,
                         relu);
            harness_fill(h, dy, n, -1.0f, 1.0f, 0);
            double* sdy_got = harness_doubles(h, c);
            double* sdy_want = harness_doubles(h, c);
            double* sdx_got = harness_doubles(h, c);
            double* sdx_want = harness_doubles(h, c);
            s.backward_reduce(rows, c, dy, x, mask, mean_hi, sdy_want, sdx_want);
            v.backward_reduce(rows, c, dy, x, mask, mean_hi, sdy_got, sdx_got);
            harness_expect_f64(h, "sum_dy", c, sdy_got, sdy_want, 0, 0);
            harness_expect_f64(h, "sum_dy_xmu", c, sdx_got, sdx_want, 0, 0);

            harness_case(h, "backward_dx rows=%zu c=%zu centre=%g relu=%d", rows, c, centre, relu);
            float* dx_got = harness_floats(h, n);
            float* dx_want = harness_floats(h, n);
            s.backward_dx(rows, c, dy, x, mask, mean_hi, a, b, k, dx_want);
            v.backward_dx(rows, c, dy, x, mask, mean_hi, a, b, k, dx_got);
            harness_expect_f32(h, "dx", n, dx_got, dx_want, 0, 0);

            harness_case(h, "backward_dx_f32 rows=%zu c=%zu centre=%g relu=%d", rows, c, centre,
                         relu);
            float* fa = harness_floats(h, c);
            float* fb = harness_floats(h, c);
            float* fk = harness_floats(h, c);
            for (size_t ch = 0; ch < c; ch++) {
                fa[ch] = (float)a[ch];
                fb[ch] = (float)b[ch];
                fk[ch] = (float)k[ch];
            }
            s.backward_dx_f32(rows, c, dy, x, mask, mean_hi, fa, fb, fk, dx_want);
            v.backward_dx_f32(rows, c, dy, x, mask, mean_hi, fa, fb, fk, dx_got);
            harness_expect_f32_close(h, "dx_f32", n, dx_got, dx_want, TOL);
        }
    }
}
