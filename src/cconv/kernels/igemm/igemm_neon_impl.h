/* Body of the AArch64 NEON igemm micro-kernels (contract in igemm.h), written with intrinsics.
 *
 * The including file defines IGEMM_NAME, IGEMM_MR (rows) and IGEMM_NV (float32x4_t vectors per
 * row); NR = 4 * IGEMM_NV. Each row of A is loaded four k-steps at a time into one register, and
 * every lane multiplies a row of W with vfmaq_laneq_f32 (FMLA by element: no broadcasts), as in
 * XNNPACK's ld128 kernels; a k remainder below 4 takes one float at a time. A is never read past
 * k < kc. Accumulators: MR * NV registers (of 32), plus MR for A and NV for W.
 */
#include <arm_neon.h>
#include <string.h>

#define IGEMM_NR (IGEMM_NV * 4)

static inline float32x4_t igemm_load_part(const float* p, size_t n) {
    float tmp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    memcpy(tmp, p, n * sizeof(float));
    return vld1q_f32(tmp);
}

static inline void igemm_store_part(float* p, float32x4_t v, size_t n) {
    float32x2_t lo = vget_low_f32(v);
    if (n & 2) {
        vst1_f32(p, lo);
        p += 2;
        lo = vget_high_f32(v);
    }
    if (n & 1) vst1_lane_f32(p, lo, 0);
}

/* x < lo ? lo : x, then x > hi ? hi : x: a comparison and a select, exactly like the scalar
 * kernel (NaN passes through, -0 stays -0; FMAX/FMIN would turn max(+0, -0) into +0). */
static inline float32x4_t igemm_clamp(float32x4_t x, float32x4_t lo, float32x4_t hi) {
    x = vbslq_f32(vcltq_f32(x, lo), lo, x);
    return vbslq_f32(vcgtq_f32(x, hi), hi, x);
}

void IGEMM_NAME(size_t mr, size_t nc, size_t kc, size_t ks, const float* const* a,
                size_t a_offset, size_t a_stride, const float* zero, const float* w,
                size_t w_stride, const float* bias, float* const* c, size_t c_offset, int flags,
                float cmin, float cmax) {
    float32x4_t acc[IGEMM_MR][IGEMM_NV];
    if (flags & FC_IGEMM_ACCUMULATE) {
#pragma GCC unroll 16
        for (size_t i = 0; i < IGEMM_MR; i++)
#pragma GCC unroll 8
            for (size_t v = 0; v < IGEMM_NV; v++) {
                const size_t col = v * 4;
                acc[i][v] = vdupq_n_f32(0.0f);
                if (i < mr && col < nc) {
                    const float* p = c[i] + c_offset + col;
                    acc[i][v] = nc - col >= 4 ? vld1q_f32(p) : igemm_load_part(p, nc - col);
                }
            }
    } else {
#pragma GCC unroll 8
        for (size_t v = 0; v < IGEMM_NV; v++) {
            const float32x4_t b = bias ? vld1q_f32(bias + v * 4) : vdupq_n_f32(0.0f);
#pragma GCC unroll 16
            for (size_t i = 0; i < IGEMM_MR; i++) acc[i][v] = b;
        }
    }
    for (size_t t = 0; t < ks; t++) {
        const float* ap[IGEMM_MR];
#pragma GCC unroll 16
        for (size_t i = 0; i < IGEMM_MR; i++) {
            ap[i] = a[t * IGEMM_MR + i];
            if (ap[i] != zero) ap[i] += a_offset;
        }
        size_t k = 0;
        for (; a_stride == 1 && k + 4 <= kc; k += 4) {
            float32x4_t av[IGEMM_MR];
#pragma GCC unroll 16
            for (size_t i = 0; i < IGEMM_MR; i++) av[i] = vld1q_f32(ap[i] + k);
#define IGEMM_NEON_STEP(lane)                                                                    \
    for (size_t v = 0; v < IGEMM_NV; v++) {                                                      \
        const float32x4_t wv = vld1q_f32(w + (lane) * w_stride + v * 4);                         \
        for (size_t i = 0; i < IGEMM_MR; i++)                                                    \
            acc[i][v] = vfmaq_laneq_f32(acc[i][v], wv, av[i], (lane));                           \
    }
#pragma GCC unroll 8
            IGEMM_NEON_STEP(0)
#pragma GCC unroll 8
            IGEMM_NEON_STEP(1)
#pragma GCC unroll 8
            IGEMM_NEON_STEP(2)
#pragma GCC unroll 8
            IGEMM_NEON_STEP(3)
#undef IGEMM_NEON_STEP
            w += 4 * w_stride;
        }
        for (; k < kc; k++) {
#pragma GCC unroll 8
            for (size_t v = 0; v < IGEMM_NV; v++) {
                const float32x4_t wv = vld1q_f32(w + v * 4);
#pragma GCC unroll 16
                for (size_t i = 0; i < IGEMM_MR; i++)
                    acc[i][v] = vfmaq_n_f32(acc[i][v], wv, ap[i][k * a_stride]);
            }
            w += w_stride;
        }
    }
    const float32x4_t lo = vdupq_n_f32(cmin), hi = vdupq_n_f32(cmax);
#pragma GCC unroll 16
    for (size_t i = 0; i < IGEMM_MR; i++) {
        if (i >= mr) break;
        float* out = c[i] + c_offset;
#pragma GCC unroll 8
        for (size_t v = 0; v < IGEMM_NV; v++) {
            const size_t col = v * 4;
            if (col >= nc) break;
            const float32x4_t r = igemm_clamp(acc[i][v], lo, hi);
            if (nc - col >= 4) vst1q_f32(out + col, r);
            else igemm_store_part(out + col, r, nc - col);
        }
    }
}

#undef IGEMM_NR
