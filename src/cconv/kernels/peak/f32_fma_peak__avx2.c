/* 12 independent FMA chains: covers 4-cycle latency x 2 pipes with room to spare. */
#include <immintrin.h>
#include "peak.h"

static inline float hsum8(__m256 v) {
    float t[8];
    _mm256_storeu_ps(t, v);
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}

double f32_fma_peak__avx2(size_t iterations, float* sink) {
    enum { CHAINS = 12, LANES = 8 };
    __m256 acc[CHAINS];
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
    for (size_t it = 0; it < iterations; it++) {
#pragma GCC unroll 12
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    }
    __m256 total = acc[0];
    for (int i = 1; i < CHAINS; i++) total = _mm256_add_ps(total, acc[i]);
    *sink = hsum8(total);
    return 2.0 * CHAINS * LANES * (double)iterations;
}
