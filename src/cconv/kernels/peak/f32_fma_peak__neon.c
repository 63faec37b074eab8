/* 16 independent FMA chains of 4 lanes: covers 4-cycle latency x 4 pipes (the widest ARM64
 * cores), twice over on cores with 2 pipes. */
#include <arm_neon.h>
#include "peak.h"

double f32_fma_peak__neon(size_t iterations, float* sink) {
    enum { CHAINS = 16, LANES = 4 };
    float32x4_t acc[CHAINS];
    const float32x4_t a = vdupq_n_f32(0.999999f), b = vdupq_n_f32(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = vdupq_n_f32((float)i);
    for (size_t it = 0; it < iterations; it++) {
#pragma GCC unroll 16
        for (int i = 0; i < CHAINS; i++) acc[i] = vfmaq_f32(b, acc[i], a);
    }
    float32x4_t total = acc[0];
    for (int i = 1; i < CHAINS; i++) total = vaddq_f32(total, acc[i]);
    *sink = vaddvq_f32(total);
    return 2.0 * CHAINS * LANES * (double)iterations;
}
