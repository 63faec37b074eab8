/* The upsampling gather (upsample.h): weighted sums of rows, with FMAs where the ISA has them. */
#include "harness.h"
#include "upsample/upsample.h"

void family_upsample(struct harness* h, int isa) {
    const struct cconv_upsample_kernels s = cconv_upsample_select(CCONV_ISA_SCALAR);
    const struct cconv_upsample_kernels v = cconv_upsample_select(isa);
    harness_case(h, "kernel table");
    harness_expect_own_kernel(h, "gather", (const void*)v.gather, (const void*)s.gather);

    for (int specials = 0; specials <= 1; specials++) {
        for (size_t li = 0; li < HARNESS_N_LENGTHS; li++) {
            const size_t len = HARNESS_LENGTHS[li];
            harness_free(h);
            /* count destinations, each the sum of 0 to 4 of `rows` source rows (weights 1,
             * bilinear-like fractions, or random), a source stride of len or more. */
            const size_t count = harness_range(h, 1, 6), rows = harness_range(h, 1, 5);
            const size_t stride = len + harness_range(h, 0, 3);
            int32_t* offsets = harness_i32(h, count + 1);
            int32_t* index = harness_i32(h, 4 * count);
            float* weight = harness_floats(h, 4 * count);
            const int kind = (int)harness_range(h, 0, 2);
            offsets[0] = 0;
            for (size_t i = 0; i < count; i++) {
                const int32_t terms = (int32_t)harness_range(h, 0, 4);
                for (int32_t k = 0; k < terms; k++) {
                    index[offsets[i] + k] = (int32_t)harness_range(h, 0, rows - 1);
                    weight[offsets[i] + k] = kind == 0 ? 1.0f
                                             : kind == 1 ? harness_uniform(h, 0.0f, 1.0f)
                                                         : harness_uniform(h, -2.0f, 2.0f);
                }
                offsets[i + 1] = offsets[i] + terms;
            }
            harness_case(h, "gather count=%zu len=%zu rows=%zu kind=%d specials=%d", count, len,
                         rows, kind, specials);
            float* src = harness_floats(h, rows * stride);
            harness_fill(h, src, rows * stride, -4.0f, 4.0f, specials);
            float* got = harness_floats(h, count * len);
            float* want = harness_floats(h, count * len);
            s.gather(count, len, offsets, index, weight, src, stride, want);
            v.gather(count, len, offsets, index, weight, src, stride, got);
            if (kind == 0)   /* sums of unweighted rows: one rounding per add on every ISA */
                harness_expect_f32(h, "dst", count * len, got, want, 0, 0);
            else
                harness_expect_f32_close(h, "dst", count * len, got, want, 1e-6);
        }
    }
}
