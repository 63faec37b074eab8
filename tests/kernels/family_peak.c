/* The FMA throughput probe (peak.h): the ISA's probe exists, counts more floating-point
 * operations per iteration than the scalar one (it is wider), and leaves a finite sum. */
#include <math.h>

#include "harness.h"
#include "peak/peak.h"

void family_peak(struct harness* h, int isa) {
    const f32_fma_peak_fn s = f32_fma_peak_select(CCONV_ISA_SCALAR);
    const f32_fma_peak_fn v = f32_fma_peak_select(isa);
    harness_case(h, "kernel table");
    harness_expect_own_kernel(h, "fma_peak", (const void*)v, (const void*)s);
    static const size_t ITERATIONS[] = {1, 7, 1000};
    for (size_t i = 0; i < 3; i++) {
        const size_t it = ITERATIONS[i];
        harness_case(h, "fma_peak iterations=%zu", it);
        float sink_s = NAN, sink_v = NAN;
        const double flops_s = s(it, &sink_s), flops_v = v(it, &sink_v);
        harness_expect(h, isfinite(sink_v), "sum not finite: %g", sink_v);
        harness_expect(h, flops_v > flops_s && fmod(flops_v, 2.0 * (double)it) == 0.0,
                       "%g flops (scalar %g)", flops_v, flops_s);
    }
}
