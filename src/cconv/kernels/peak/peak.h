/* FMA throughput probes: independent FMA chains that keep every FMA pipe busy, one per ISA.
 * Each returns the number of floating-point operations it performed (2 per lane per FMA). */
#ifndef CCONV_PEAK_H
#define CCONV_PEAK_H

#include <stddef.h>
#include "core/isa.h"

typedef double (*f32_fma_peak_fn)(size_t iterations, float* sink);

double f32_fma_peak__scalar(size_t iterations, float* sink);
#if defined(__x86_64__) || defined(_M_X64)
double f32_fma_peak__avx2(size_t iterations, float* sink);
double f32_fma_peak__avx512(size_t iterations, float* sink);
#elif defined(__aarch64__)
double f32_fma_peak__neon(size_t iterations, float* sink);
#endif

static inline f32_fma_peak_fn f32_fma_peak_select(int isa) {
#if defined(__x86_64__) || defined(_M_X64)
    if (isa == CCONV_ISA_AVX512) return f32_fma_peak__avx512;
    if (isa == CCONV_ISA_AVX2) return f32_fma_peak__avx2;
#elif defined(__aarch64__)
    if (isa == CCONV_ISA_NEON) return f32_fma_peak__neon;
#endif
    return f32_fma_peak__scalar;
}

#endif
