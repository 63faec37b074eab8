/* Elementwise add and dropout (eltwise.h): exact operations, the same bits on every ISA. */
#include <string.h>

#include "eltwise.h"
#include "harness.h"

void family_eltwise(struct harness* h, int isa) {
    const struct cconv_eltwise_kernels s = cconv_eltwise_select(CCONV_ISA_SCALAR);
    const struct cconv_eltwise_kernels v = cconv_eltwise_select(isa);
    harness_case(h, "kernel table");
    harness_expect_own_kernel(h, "add", (const void*)v.add, (const void*)s.add);
    harness_expect_own_kernel(h, "dropout", (const void*)v.dropout, (const void*)s.dropout);
    harness_expect_own_kernel(h, "dropout_backward", (const void*)v.dropout_backward,
                              (const void*)s.dropout_backward);

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
        }
    }
}
