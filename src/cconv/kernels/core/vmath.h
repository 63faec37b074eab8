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

/* c ? 0 : x for the products that meet 0 * Inf at the ends of a smooth activation's range. */
static inline float cconv_zero_iff(int c, float x) {
    uint32_t m = 0u - (uint32_t)(c != 0);
    return cconv_f32_from_bits(cconv_f32_bits(x) & ~m);
}

/* The pair (sigmoid(x), sigmoid(-x)) = (s, 1 - s), each with its own relative accuracy (1 - s is
 * not computed as a difference): e = exp(-|x|), s = (x >= 0 ? 1 : e) / (1 + e). */
static inline void cconv_sigmoid_pairf(float x, float* s, float* one_minus_s) {
    float e = cconv_expf_nonpos(-fabsf(x));
    float d = 1.0f + e;
    int pos = x >= 0.0f;
    *s = cconv_selectf(pos, 1.0f, e) / d;
    *one_minus_s = cconv_selectf(pos, e, 1.0f) / d;
}

/* exp(-s a^2) * exp(extra) for a >= 0, s = 1 or 0.5, extra <= 0, without the error of rounding
 * a^2 (fdlibm's erf does the same): hi = a with its low 12 significand bits cleared, so s hi^2 is
 * exact, and a^2 = hi^2 - (hi - a)(hi + a), the second term small and accurate to its own ulp.
 * 0 where exp(-s hi^2) underflows (a = +Inf included); NaN stays NaN. */
static inline float cconv_exp_neg_sqf(float a, float s, float extra) {
    float hi = cconv_f32_from_bits(cconv_f32_bits(a) & 0xFFFFF000u);
    float big = cconv_expf_nonpos(-s * (hi * hi));
    float lo = CCONV_FMADD(s * (hi - a), hi + a, extra);
    lo = cconv_selectf(lo > 0.0f, 0.0f, lo);            /* rounding only; NaN passes */
    return cconv_zero_iff(big == 0.0f, big * cconv_expf_nonpos(lo));
}

/* erfc(z) for z >= 0 where exp(-z^2) is written exp(-s a^2) (z = a, s = 1 for erfc itself;
 * z = a / sqrt2, s = 0.5 for the normal distribution, so that a^2 / 2 is exact and the rounding of
 * z does not enter the exponent). Numerical Recipes' erfcc: t = 1 / (1 + z/2),
 * erfc(z) = t exp(-z^2 + P(t)), P of degree 9, relative error below 1.1e-7 for every z >= 0. */
static inline float cconv_erfc_nonneg_(float z, float a, float s) {
    float t = 1.0f / CCONV_FMADD(0.5f, z, 1.0f);
    float p = 0.17087277f;
    p = CCONV_FMADD(p, t, -0.82215223f);
    p = CCONV_FMADD(p, t, 1.48851587f);
    p = CCONV_FMADD(p, t, -1.13520398f);
    p = CCONV_FMADD(p, t, 0.27886807f);
    p = CCONV_FMADD(p, t, -0.18628806f);
    p = CCONV_FMADD(p, t, 0.09678418f);
    p = CCONV_FMADD(p, t, 0.37409196f);
    p = CCONV_FMADD(p, t, 1.00002368f);
    p = CCONV_FMADD(p, t, -1.26551223f);
    return t * cconv_exp_neg_sqf(a, s, p);
}

/* erf(x) near 0: 2/sqrt(pi) (x - x^3/3 + x^5/10 - x^7/42 + x^9/216 - x^11/1320 + x^13/9360),
 * the Taylor series, within 3e-8 relative for |x| <= 0.5. */
static inline float cconv_erf_smallf(float x) {
    float z = x * x;
    float p = 1.0f / 9360.0f;
    p = CCONV_FMADD(p, z, -1.0f / 1320.0f);
    p = CCONV_FMADD(p, z, 1.0f / 216.0f);
    p = CCONV_FMADD(p, z, -1.0f / 42.0f);
    p = CCONV_FMADD(p, z, 1.0f / 10.0f);
    p = CCONV_FMADD(p, z, -1.0f / 3.0f);
    p = CCONV_FMADD(p, z, 1.0f);
    return (1.12837916709551257f * x) * p;
}

/* erf(x), a few ulp: the Taylor polynomial for |x| < 0.5, else 1 - erfc(|x|) with the sign of x
 * (erfc(0.5) = 0.48: no cancellation to speak of); saturates to exactly +-1; NaN stays NaN. */
static inline float cconv_erff(float x) {
    float a = fabsf(x);
    float large = copysignf(1.0f - cconv_erfc_nonneg_(a, a, 1.0f), x);
    return cconv_selectf(a < 0.5f, cconv_erf_smallf(x), large);
}

/* The standard normal distribution Phi(x) = (1 + erf(x / sqrt2)) / 2, accurate relative to
 * itself also in the lower tail (erfc, not 1 + erf): 0.5 erfc(|x| / sqrt2) for x < 0, its
 * complement for x >= 0, and 0.5 + 0.5 erf(x / sqrt2) near 0. */
static inline float cconv_normcdff(float x) {
    float a = fabsf(x);
    float z = a * 0.707106781186547524f;
    float half_erfc = 0.5f * cconv_erfc_nonneg_(z, a, 0.5f);
    float tails = cconv_selectf(x < 0.0f, half_erfc, 1.0f - half_erfc);
    float centre = CCONV_FMADD(0.5f, cconv_erf_smallf(x * 0.707106781186547524f), 0.5f);
    return cconv_selectf(z < 0.5f, centre, tails);
}

/* The standard normal density exp(-x^2 / 2) / sqrt(2 pi). */
static inline float cconv_normpdff(float x) {
    return 0.398942280401432678f * cconv_exp_neg_sqf(fabsf(x), 0.5f, 0.0f);
}

#endif
