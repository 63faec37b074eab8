/* 12 independent FMA chains: covers 4-cycle latency x 2 pipes with room to spare. */
#include <immintrin.h>
#include "peak.h"


double f32_fma_peak__avx512(size_t iterations, float* sink) {
    enum { CHAINS = 12, LANES = 16 };
    __m512 acc[CHAINS];
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (size_t it = 0; it < iterations; it++) {
#pragma GCC unroll 12
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    }
    __m512 total = acc[0];
    for (int i = 1; i < CHAINS; i++) total = _mm512_add_ps(total, acc[i]);
    *sink = _mm512_reduce_add_ps(total);
    return 2.0 * CHAINS * LANES * (double)iterations;
}
