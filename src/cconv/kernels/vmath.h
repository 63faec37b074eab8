/* Vectorisable float32 elementary functions for the elementwise micro-kernels.
 *
 * Plain C written so that the compiler vectorises each loop that calls them with the flags of the
 * ISA file that includes them (no libm calls, no branches: selects only). Also the name-suffix
 * macro that the portable kernel bodies (`*_impl.h`) use to name one copy per ISA.
 */
#ifndef CCONV_VMATH_H
#define CCONV_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* CCONV_UKERNEL(f32_vrelu) -> cconv_f32_vrelu__avx2 when CCONV_ISA_SUFFIX is avx2. */
#define CCONV_UKERNEL_CAT_(name, isa) cconv_##name##__##isa
#define CCONV_UKERNEL_CAT(name, isa) CCONV_UKERNEL_CAT_(name, isa)
#define CCONV_UKERNEL(name) CCONV_UKERNEL_CAT(name, CCONV_ISA_SUFFIX)

/* a * b + c: one fused instruction where the ISA has FMA, two roundings elsewhere. */
#if defined(__FMA__) || defined(__aarch64__)
#define CCONV_FMADD(a, b, c) fmaf((a), (b), (c))
#else
#define CCONV_FMADD(a, b, c) ((a) * (b) + (c))
#endif

static inline uint32_t cconv_f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float cconv_f32_from_bits(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* c ? a : b through bit masks. Both sides are evaluated anyway; a plain ?: whose sides hold
 * floating-point operations can be turned into a branch that the vectoriser then refuses to
 * if-convert (those operations might trap), which leaves the loop scalar. */
static inline float cconv_selectf(int c, float a, float b) {
    uint32_t m = 0u - (uint32_t)(c != 0);
    return cconv_f32_from_bits((cconv_f32_bits(a) & m) | (cconv_f32_bits(b) & ~m));
}

/* exp(x) for x <= 0 (the only range softmax, sigmoid and tanh need), about 1 ulp.
 *
 * Range reduction x = n ln2 + r, |r| <= ln2/2 (Cody-Waite split of ln2), a degree-7 minimax
 * polynomial for exp(r) (Cephes' expf coefficients), and 2^n built in the exponent field.
 * Results below FLT_MIN (x < ln FLT_MIN, -Inf included) are 0, as they would be once flushed;
 * NaN stays NaN. Positive x is clamped to 0 by the callers' construction, never passed here.
 */
static inline float cconv_expf_nonpos(float x) {
    const float ln_flt_min = -87.33654475f;
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float xc = x < ln_flt_min ? ln_flt_min : x;  /* NaN passes through */
    float t = CCONV_FMADD(xc, 1.44269504088896341f, magic);
    float n = t - magic;                          /* round(x / ln2), in [-126, 0] */
    float r = CCONV_FMADD(n, -0.693359375f, xc);  /* exact: 0.693359375 has 9 bits */
    r = CCONV_FMADD(n, 2.12194440e-4f, r);        /* ln2 = 0.693359375 - 2.12194440e-4 */
    float p = 1.9875691500e-4f;
    p = CCONV_FMADD(p, r, 1.3981999507e-3f);
    p = CCONV_FMADD(p, r, 8.3334519073e-3f);
    p = CCONV_FMADD(p, r, 4.1665795894e-2f);
    p = CCONV_FMADD(p, r, 1.6666665459e-1f);
    p = CCONV_FMADD(p, r, 5.0000001201e-1f);
    p = CCONV_FMADD(p, r * r, r) + 1.0f;
    /* The low bits of t hold n: 2^n = (n + 127) << 23 (unsigned arithmetic: wraps, never UB). */
    uint32_t scale_bits = (cconv_f32_bits(t) + (127u - 0x4B400000u)) << 23;
    float y = p * cconv_f32_from_bits(scale_bits);
    /* Zero below the range with a bit mask, not a select: the compiler keeps it branch-free. */
    uint32_t below = 0u - (uint32_t)(x < ln_flt_min);
    return cconv_f32_from_bits(cconv_f32_bits(y) & ~below);
}

/* 1 / (1 + exp(-x)) without overflow: exp of -|x| only; saturates to exactly 0 or 1. */
static inline float cconv_sigmoidf(float x) {
    float e = cconv_expf_nonpos(-fabsf(x));
    return cconv_selectf(x >= 0.0f, 1.0f, e) / (1.0f + e);
}

/* tanh(x): odd minimax polynomial for |x| < 0.625 (Cephes' tanhf), else (1 - e) / (1 + e) with
 * e = exp(-2|x|), which has no cancellation there and saturates to exactly +-1. */
static inline float cconv_tanhf(float x) {
    float ax = fabsf(x);
    float z = x * x;
    float p = -5.70498872745e-3f;
    p = CCONV_FMADD(p, z, 2.06390887954e-2f);
    p = CCONV_FMADD(p, z, -5.37397155531e-2f);
    p = CCONV_FMADD(p, z, 1.33314422036e-1f);
    p = CCONV_FMADD(p, z, -3.33332819422e-1f);
    float small = CCONV_FMADD(p * z, x, x);
    float e = cconv_expf_nonpos(-2.0f * ax);
    float large = copysignf((1.0f - e) / (1.0f + e), x);
    return cconv_selectf(ax < 0.625f, small, large);
}

#endif
