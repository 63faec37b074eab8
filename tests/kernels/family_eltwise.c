/* Elementwise add, dropout and the channel gate (eltwise.h): exact operations (the gate's sums in
 * double, per channel in pixel order), the same bits on every ISA. */
#include <string.h>

#include "eltwise/eltwise.h"
#include "harness.h"

void family_eltwise(struct harness* h, int isa) {
    const struct cconv_eltwise_kernels s = cconv_eltwise_select(CCONV_ISA_SCALAR);
    const struct cconv_eltwise_kernels v = cconv_eltwise_select(isa);
    harness_case(h, "kernel table");
    harness_expect_own_kernel(h, "add", (const void*)v.add, (const void*)s.add);
    harness_expect_own_kernel(h, "dropout", (const void*)v.dropout, (const void*)s.dropout);
    harness_expect_own_kernel(h, "dropout_backward", (const void*)v.dropout_backward,
                              (const void*)s.dropout_backward);
    harness_expect_own_kernel(h, "gate_mul", (const void*)v.gate_mul, (const void*)s.gate_mul);
    harness_expect_own_kernel(h, "gate_backward", (const void*)v.gate_backward,
                              (const void*)s.gate_backward);

    for (int specials = 0; specials <= 1; specials++) {
        for (size_t li = 0; li < HARNESS_N_LENGTHS; li++) {
            const size_t n = HARNESS_LENGTHS[li];
            harness_free(h);

            harness_case(h, "add n=%zu specials=%d", n, specials);
            float* a = harness_floats(h, n);
            float* b = harness_floats(h, n);
            harness_fill(h, a, n, -10.0f, 10.0f, specials);
            harness_fill(h, b, n, -10.0f, 10.0f, specials);
            float* got = harness_floats(h, n);
            float* want = harness_floats(h, n);
            s.add(n, a, b, want);
            v.add(n, a, b, got);
            harness_expect_f32(h, "y", n, got, want, 0, 0);

            /* Dropout probabilities 0, 1/2, random, and "drop everything but 2^-32". */
            static const uint32_t thresholds[] = {0u, 0x80000000u, 0u, 0xFFFFFFFFu};
            const size_t ti = harness_range(h, 0, 3);
            const uint32_t threshold = ti == 2 ? (uint32_t)harness_u64(h) : thresholds[ti];
            const float scale = threshold == 0xFFFFFFFFu ? 1.0f
                                : (float)(4294967296.0 / (4294967296.0 - (double)threshold));
            const uint64_t key = harness_u64(h), first = harness_range(h, 0, 1u << 20);

            harness_case(h, "dropout n=%zu threshold=%u first=%llu specials=%d", n, threshold,
                         (unsigned long long)first, specials);
            float* x = harness_floats(h, n);
            harness_fill(h, x, n, -3.0f, 3.0f, specials);
            float* y_got = harness_floats(h, n);
            float* y_want = harness_floats(h, n);
            uint8_t* m_got = harness_u8(h, n);
            uint8_t* m_want = harness_u8(h, n);
            s.dropout(n, x, y_want, m_want, key, first, threshold, scale);
            v.dropout(n, x, y_got, m_got, key, first, threshold, scale);
            harness_expect_u8(h, "mask", n, m_got, m_want);
            harness_expect_f32(h, "y", n, y_got, y_want, 0, 0);

            harness_case(h, "dropout_backward n=%zu specials=%d", n, specials);
            float* dy = harness_floats(h, n);
            harness_fill(h, dy, n, -3.0f, 3.0f, specials);
            uint8_t* mask = harness_u8(h, n);
            for (size_t i = 0; i < n; i++) mask[i] = (uint8_t)harness_chance(h, 1, 2);
            float* dx_got = harness_floats(h, n);
            float* dx_want = harness_floats(h, n);
            s.dropout_backward(n, dy, mask, dx_want, scale);
            v.dropout_backward(n, dy, mask, dx_got, scale);
            harness_expect_f32(h, "dx", n, dx_got, dx_want, 0, 0);

            /* The gate: n channels, a few pixels, a pixel stride of n or more (a channel block
             * of a wider image); at most CCONV_GATE_BLOCK channels per backward call. */
            const size_t pixels = harness_range(h, 1, 5);
            const size_t stride = n + harness_range(h, 0, 3);
            const size_t total = pixels * stride;
            harness_case(h, "gate_mul pixels=%zu channels=%zu specials=%d", pixels, n, specials);
            float* gx = harness_floats(h, pixels * n);
            float* gg = harness_floats(h, n);
            harness_fill(h, gx, pixels * n, -3.0f, 3.0f, specials);
            harness_fill(h, gg, n, 0.0f, 1.0f, specials);
            float* gy_got = harness_floats(h, pixels * n);
            float* gy_want = harness_floats(h, pixels * n);
            s.gate_mul(pixels, n, gx, gg, gy_want);
            v.gate_mul(pixels, n, gx, gg, gy_got);
            harness_expect_f32(h, "y", pixels * n, gy_got, gy_want, 0, 0);

            const size_t nc = n < CCONV_GATE_BLOCK ? n : CCONV_GATE_BLOCK;
            harness_case(h, "gate_backward pixels=%zu channels=%zu stride=%zu specials=%d",
                         pixels, nc, stride, specials);
            float* bdy = harness_floats(h, total);
            float* bx = harness_floats(h, total);
            harness_fill(h, bdy, total, -3.0f, 3.0f, specials);
            harness_fill(h, bx, total, -3.0f, 3.0f, specials);
            float* bdx_got = harness_copy_floats(h, bx, total);   /* untouched lanes compared too */
            float* bdx_want = harness_copy_floats(h, bx, total);
            float* bdg_got = harness_floats(h, nc);
            float* bdg_want = harness_floats(h, nc);
            s.gate_backward(pixels, nc, stride, bdy, bx, gg, bdx_want, bdg_want);
            v.gate_backward(pixels, nc, stride, bdy, bx, gg, bdx_got, bdg_got);
            harness_expect_f32(h, "dx", total, bdx_got, bdx_want, 0, 0);
            harness_expect_f32(h, "dg", nc, bdg_got, bdg_want, 0, 0);
        }
    }
}
