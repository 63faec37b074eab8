/* Pooling kernels, AArch64 NEON path: 4 channels per vector. See pool.h. */
#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define POOL_FN(name) name##__neon
#define POOL_VLEN 4
#define POOL_UNROLL 4

typedef float32x4_t vf_t;
typedef int32x4_t vi_t;

static inline vf_t vf_load(const float* p) { return vld1q_f32(p); }
static inline void vf_store(float* p, vf_t v) { vst1q_f32(p, v); }
/* First n < 4 lanes: through a small buffer (the other lanes read as 0, never stored). */
static inline vf_t vf_loadn(const float* p, size_t n) {
    float tmp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    memcpy(tmp, p, n * sizeof(float));
    return vld1q_f32(tmp);
}
static inline void vf_storen(float* p, vf_t v, size_t n) {
    float tmp[4];
    vst1q_f32(tmp, v);
    memcpy(p, tmp, n * sizeof(float));
}
static inline vf_t vf_zero(void) { return vdupq_n_f32(0.0f); }
static inline vf_t vf_set1(float x) { return vdupq_n_f32(x); }
static inline vf_t vf_add(vf_t a, vf_t b) { return vaddq_f32(a, b); }
static inline vf_t vf_div(vf_t a, vf_t b) { return vdivq_f32(a, b); }
static inline vi_t vi_set1(int32_t i) { return vdupq_n_s32(i); }
static inline void vi_store(int32_t* p, vi_t v) { vst1q_s32(p, v); }
static inline void vi_storen(int32_t* p, vi_t v, size_t n) {
    int32_t tmp[4];
    vst1q_s32(tmp, v);
    memcpy(p, tmp, n * sizeof(int32_t));
}

/* Take v where v > m or v is NaN (v != v): FCMGT, and FCMEQ negated. */
static inline void vmax_update(vf_t* m, vi_t* i, vf_t v, vi_t iv) {
    const uint32x4_t k = vorrq_u32(vcgtq_f32(v, *m), vmvnq_u32(vceqq_f32(v, v)));
    *m = vbslq_f32(k, v, *m);
    *i = vbslq_s32(k, iv, *i);
}

#include "pool_impl.h"
