/* Optimizer updates (optim.h): SGD (momentum, dampening, Nesterov, first step, weight decay,
 * L1/L2) and Adam / AdamW, in place. Each element's update is the same sequence of IEEE
 * operations on every ISA (the loops are vectorised by the compiler, and ISO C keeps it from
 * contracting them into FMAs), so every ISA must give the scalar kernel's bits. */
#include "harness.h"
#include "optim/optim.h"

static void fill_params(struct harness* h, float* p, size_t n) {
    harness_fill(h, p, n, -2.0f, 2.0f, 0);
    for (size_t i = 0; i < n; i += 7) p[i] = 0.0f;  /* sign(0) = 0 in the L1 penalty */
}

void family_optim(struct harness* h, int isa) {
    const struct cconv_optim_kernels s = cconv_optim_select(CCONV_ISA_SCALAR);
    const struct cconv_optim_kernels v = cconv_optim_select(isa);
    harness_case(h, "kernel table");
    harness_expect_own_kernel(h, "sgd", (const void*)v.sgd, (const void*)s.sgd);
    harness_expect_own_kernel(h, "adam", (const void*)v.adam, (const void*)s.adam);

    for (size_t li = 0; li < HARNESS_N_LENGTHS; li++) {
        const size_t n = HARNESS_LENGTHS[li];
        for (int variant = 0; variant < 4; variant++) {
            harness_free(h);
            struct cconv_sgd_params sp = {
                .lr = harness_uniform(h, 1e-3f, 0.5f),
                .momentum = variant == 0 ? 0.0f : harness_uniform(h, 0.5f, 0.99f),
                .dampening = harness_chance(h, 1, 2) ? 0.0f : harness_uniform(h, 0.0f, 0.5f),
                .weight_decay = harness_chance(h, 1, 2) ? 0.0f : harness_uniform(h, 0.0f, 0.1f),
                .l1 = harness_chance(h, 1, 3) ? harness_uniform(h, 0.0f, 0.01f) : 0.0f,
                .l2 = harness_chance(h, 1, 3) ? harness_uniform(h, 0.0f, 0.01f) : 0.0f,
                .nesterov = variant == 3,
                .first_step = variant == 1,
            };
            harness_case(h, "sgd n=%zu momentum=%g nesterov=%d first=%d", n, sp.momentum,
                         sp.nesterov, sp.first_step);
            float* p = harness_floats(h, n);
            fill_params(h, p, n);
            float* grad = harness_floats(h, n);
            harness_fill(h, grad, n, -1.0f, 1.0f, 0);
            float* buf = harness_floats(h, n);
            harness_fill(h, buf, n, -1.0f, 1.0f, 0);
            float* p_got = harness_copy_floats(h, p, n);
            float* buf_got = harness_copy_floats(h, buf, n);
            const int with_buf = sp.momentum != 0.0f;
            s.sgd(n, p, grad, with_buf ? buf : NULL, &sp);
            v.sgd(n, p_got, grad, with_buf ? buf_got : NULL, &sp);
            harness_expect_f32(h, "p", n, p_got, p, 0, 0);
            if (with_buf) harness_expect_f32(h, "momentum buffer", n, buf_got, buf, 0, 0);

            const int step = (int)harness_range(h, 1, 1000);
            struct cconv_adam_params ap = {
                .lr = harness_uniform(h, 1e-4f, 1e-2f), .beta1 = 0.9f, .beta2 = 0.999f,
                .eps = variant == 2 ? 1e-3f : 1e-8f,
                .weight_decay = harness_chance(h, 1, 2) ? 0.0f : harness_uniform(h, 0.0f, 0.1f),
                .l1 = sp.l1, .l2 = sp.l2, .decoupled = variant & 1,
            };
            double bias1 = 1.0, bias2 = 1.0;
            for (int t = 0; t < step; t++) { bias1 *= ap.beta1; bias2 *= ap.beta2; }
            ap.step_size = (float)(ap.lr / (1.0 - bias1));
            ap.inv_sqrt_bias2 = (float)(1.0 / __builtin_sqrt(1.0 - bias2));
            harness_case(h, "adam n=%zu step=%d decoupled=%d eps=%g", n, step, ap.decoupled,
                         ap.eps);
            float* m = harness_floats(h, n);
            harness_fill(h, m, n, -0.1f, 0.1f, 0);
            float* var = harness_floats(h, n);
            harness_fill(h, var, n, 0.0f, 0.01f, 0);
            float* p2_got = harness_copy_floats(h, p, n);
            float* m_got = harness_copy_floats(h, m, n);
            float* var_got = harness_copy_floats(h, var, n);
            s.adam(n, p, grad, m, var, &ap);
            v.adam(n, p2_got, grad, m_got, var_got, &ap);
            harness_expect_f32(h, "p", n, p2_got, p, 0, 0);
            harness_expect_f32(h, "m", n, m_got, m, 0, 0);
            harness_expect_f32(h, "v", n, var_got, var, 0, 0);
        }
    }
}
