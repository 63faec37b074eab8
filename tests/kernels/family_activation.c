/* Activations (activation.h): relu, leaky relu, sigmoid, tanh and their gradients. */
#include "activation.h"
#include "harness.h"

/* sigmoid and tanh are polynomials with FMAs where the ISA has them: a few ulp apart. */
#define TRANSCENDENTAL_RTOL 1e-5
#define TRANSCENDENTAL_ATOL 1e-30

void family_activation(struct harness* h, int isa) {
    const struct cconv_activation_kernels s = cconv_activation_select(CCONV_ISA_SCALAR);
    const struct cconv_activation_kernels v = cconv_activation_select(isa);
    harness_case(h, "kernel table");
    harness_expect_own_kernel(h, "relu", (const void*)v.relu, (const void*)s.relu);
    harness_expect_own_kernel(h, "relu_backward", (const void*)v.relu_backward, (const void*)s.relu_backward);
    harness_expect_own_kernel(h, "lrelu", (const void*)v.lrelu, (const void*)s.lrelu);
    harness_expect_own_kernel(h, "lrelu_backward", (const void*)v.lrelu_backward, (const void*)s.lrelu_backward);
    harness_expect_own_kernel(h, "sigmoid", (const void*)v.sigmoid, (const void*)s.sigmoid);
    harness_expect_own_kernel(h, "sigmoid_backward", (const void*)v.sigmoid_backward, (const void*)s.sigmoid_backward);
    harness_expect_own_kernel(h, "tanh", (const void*)v.tanh, (const void*)s.tanh);
    harness_expect_own_kernel(h, "tanh_backward", (const void*)v.tanh_backward, (const void*)s.tanh_backward);

    for (int specials = 0; specials <= 1; specials++) {
        for (size_t li = 0; li < HARNESS_N_LENGTHS; li++) {
            const size_t n = HARNESS_LENGTHS[li];
            harness_free(h);
            const float slope = harness_uniform(h, 0.0f, 0.3f);
            float *x, *dy, *got, *want;
#define SETUP(lo, hi)                                                      \
    x = harness_floats(h, n);                                              \
    dy = harness_floats(h, n);                                             \
    harness_fill(h, x, n, lo, hi, specials);                               \
    harness_fill(h, dy, n, -2.0f, 2.0f, specials);                         \
    got = harness_floats(h, n);                                            \
    want = harness_floats(h, n);

            harness_case(h, "relu n=%zu specials=%d", n, specials);
            SETUP(-4.0f, 4.0f);
            s.relu(n, x, want);
            v.relu(n, x, got);
            harness_expect_f32(h, "y", n, got, want, 0, 0);

            harness_case(h, "relu_backward n=%zu specials=%d", n, specials);
            SETUP(-4.0f, 4.0f);
            s.relu_backward(n, dy, x, want);
            v.relu_backward(n, dy, x, got);
            harness_expect_f32(h, "dx", n, got, want, 0, 0);

            harness_case(h, "lrelu n=%zu slope=%g specials=%d", n, slope, specials);
            SETUP(-4.0f, 4.0f);
            s.lrelu(n, x, want, slope);
            v.lrelu(n, x, got, slope);
            harness_expect_f32(h, "y", n, got, want, 0, 0);

            harness_case(h, "lrelu_backward n=%zu slope=%g specials=%d", n, slope, specials);
            SETUP(-4.0f, 4.0f);
            s.lrelu_backward(n, dy, x, want, slope);
            v.lrelu_backward(n, dy, x, got, slope);
            harness_expect_f32(h, "dx", n, got, want, 0, 0);

            harness_case(h, "sigmoid n=%zu specials=%d", n, specials);
            SETUP(-90.0f, 90.0f);
            s.sigmoid(n, x, want);
            v.sigmoid(n, x, got);
            harness_expect_f32(h, "y", n, got, want, TRANSCENDENTAL_RTOL, TRANSCENDENTAL_ATOL);

            harness_case(h, "sigmoid_backward n=%zu specials=%d", n, specials);
            SETUP(0.0f, 1.0f);
            s.sigmoid_backward(n, dy, x, want);
            v.sigmoid_backward(n, dy, x, got);
            harness_expect_f32(h, "dx", n, got, want, 0, 0);

            harness_case(h, "tanh n=%zu specials=%d", n, specials);
            SETUP(-6.0f, 6.0f);
            s.tanh(n, x, want);
            v.tanh(n, x, got);
            harness_expect_f32(h, "y", n, got, want, TRANSCENDENTAL_RTOL, TRANSCENDENTAL_ATOL);

            harness_case(h, "tanh_backward n=%zu specials=%d", n, specials);
            SETUP(-1.0f, 1.0f);
            s.tanh_backward(n, dy, x, want);
            v.tanh_backward(n, dy, x, got);
            harness_expect_f32(h, "dx", n, got, want, 0, 0);
#undef SETUP
        }
    }
}
