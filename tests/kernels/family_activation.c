/* Activations (activation.h): relu, leaky relu, sigmoid, tanh, relu6, hard sigmoid, hard swish,
 * silu, gelu (erf and tanh forms) and their gradients. */
#include "activation/activation.h"
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
#define OWN(name) harness_expect_own_kernel(h, #name, (const void*)v.name, (const void*)s.name)
    OWN(relu6); OWN(relu6_backward); OWN(hardsigmoid); OWN(hardsigmoid_backward);
    OWN(hardswish); OWN(hardswish_backward); OWN(silu); OWN(silu_backward);
    OWN(gelu); OWN(gelu_backward); OWN(gelu_tanh); OWN(gelu_tanh_backward);
#undef OWN

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

            /* Piecewise-linear ones: exact operations (no FMA contraction: -std=c11), the same
             * bits on every ISA. The kinks -3, 0, 3 and 6 turn up among the inputs. */
#define EXACT_UNARY(name, lo, hi)                                           \
    harness_case(h, #name " n=%zu specials=%d", n, specials);              \
    SETUP(lo, hi);                                                          \
    for (size_t i = 0; i < n; i += 7) x[i] = (float)((int)(i / 7 % 5) * 3 - 6); \
    s.name(n, x, want);                                                     \
    v.name(n, x, got);                                                      \
    harness_expect_f32(h, "y", n, got, want, 0, 0);
#define EXACT_BINARY(name, lo, hi)                                          \
    harness_case(h, #name " n=%zu specials=%d", n, specials);              \
    SETUP(lo, hi);                                                          \
    for (size_t i = 0; i < n; i += 7) x[i] = (float)((int)(i / 7 % 5) * 3 - 6); \
    s.name(n, dy, x, want);                                                 \
    v.name(n, dy, x, got);                                                  \
    harness_expect_f32(h, "dx", n, got, want, 0, 0);
            EXACT_UNARY(relu6, -8.0f, 8.0f);
            EXACT_BINARY(relu6_backward, -1.0f, 7.0f);
            EXACT_UNARY(hardsigmoid, -5.0f, 5.0f);
            EXACT_BINARY(hardsigmoid_backward, -5.0f, 5.0f);
            EXACT_UNARY(hardswish, -5.0f, 5.0f);
            EXACT_BINARY(hardswish_backward, -5.0f, 5.0f);
#undef EXACT_UNARY
#undef EXACT_BINARY

            /* Smooth ones: polynomials and exp with FMAs where the ISA has them. Forward values
             * a few ulp apart element by element; gradients (which cross zero: silu at -1.28,
             * gelu at -0.75) relative to the output's magnitude. */
            harness_case(h, "silu n=%zu specials=%d", n, specials);
            SETUP(-90.0f, 90.0f);
            s.silu(n, x, want);
            v.silu(n, x, got);
            harness_expect_f32(h, "y", n, got, want, TRANSCENDENTAL_RTOL, TRANSCENDENTAL_ATOL);

            harness_case(h, "gelu n=%zu specials=%d", n, specials);
            SETUP(-12.0f, 12.0f);
            s.gelu(n, x, want);
            v.gelu(n, x, got);
            harness_expect_f32(h, "y", n, got, want, TRANSCENDENTAL_RTOL, TRANSCENDENTAL_ATOL);

            harness_case(h, "gelu_tanh n=%zu specials=%d", n, specials);
            SETUP(-12.0f, 12.0f);
            s.gelu_tanh(n, x, want);
            v.gelu_tanh(n, x, got);
            harness_expect_f32_close(h, "y", n, got, want, TRANSCENDENTAL_RTOL);

#define SMOOTH_BACKWARD(name, lo, hi)                                       \
    harness_case(h, #name " n=%zu specials=%d", n, specials);              \
    SETUP(lo, hi);                                                          \
    s.name(n, dy, x, want);                                                 \
    v.name(n, dy, x, got);                                                  \
    harness_expect_f32_close(h, "dx", n, got, want, TRANSCENDENTAL_RTOL);
            SMOOTH_BACKWARD(silu_backward, -20.0f, 20.0f);
            SMOOTH_BACKWARD(gelu_backward, -12.0f, 12.0f);
            SMOOTH_BACKWARD(gelu_tanh_backward, -12.0f, 12.0f);
#undef SMOOTH_BACKWARD
#undef SETUP
        }
    }
}
