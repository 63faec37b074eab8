/* Pooling kernels, portable scalar path (one channel per "vector"). See pool.h. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define POOL_FN(name) name##__scalar
#define POOL_VLEN 1
#define POOL_UNROLL 4

typedef float vf_t;
typedef int32_t vi_t;

static inline vf_t vf_load(const float* p) { return *p; }
static inline void vf_store(float* p, vf_t v) { *p = v; }
/* n < POOL_VLEN == 1: nothing to load or store. */
static inline vf_t vf_loadn(const float* p, size_t n) { (void)p; (void)n; return 0.0f; }
static inline void vf_storen(float* p, vf_t v, size_t n) { (void)p; (void)v; (void)n; }
static inline vf_t vf_zero(void) { return 0.0f; }
static inline vf_t vf_set1(float x) { return x; }
static inline vf_t vf_add(vf_t a, vf_t b) { return a + b; }
static inline vf_t vf_div(vf_t a, vf_t b) { return a / b; }
static inline vi_t vi_set1(int32_t i) { return i; }
static inline void vi_store(int32_t* p, vi_t v) { *p = v; }
static inline void vi_storen(int32_t* p, vi_t v, size_t n) { (void)p; (void)v; (void)n; }

/* Branch-free (a bit select): on random data the comparison is unpredictable. */
static inline void vmax_update(vf_t* m, vi_t* i, vf_t v, vi_t iv) {
    const uint32_t take = 0u - (uint32_t)((v > *m) | (v != v));
    uint32_t vb, mb;
    memcpy(&vb, &v, sizeof vb);
    memcpy(&mb, m, sizeof mb);
    mb = (vb & take) | (mb & ~take);
    memcpy(m, &mb, sizeof mb);
    *i = (vi_t)(((uint32_t)iv & take) | ((uint32_t)*i & ~take));
}

#include "pool_impl.h"
