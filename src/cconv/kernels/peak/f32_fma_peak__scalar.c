#include "peak.h"

double f32_fma_peak__scalar(size_t iterations, float* sink) {
    enum { CHAINS = 8 };
    float acc[CHAINS];
    for (int i = 0; i < CHAINS; i++) acc[i] = (float)i;
    for (size_t it = 0; it < iterations; it++)
        for (int i = 0; i < CHAINS; i++) acc[i] = acc[i] * 0.999999f + 1e-7f;
    float total = 0.0f;
    for (int i = 0; i < CHAINS; i++) total += acc[i];
    *sink = total;
    return 2.0 * CHAINS * (double)iterations;
}
