/* Depthwise convolution kernels, portable scalar path (one channel per "vector"), register
 * tiles of 4 pixels. See dwconv.h. */
#include <stddef.h>

#define DW_FN(name) name##__scalar
#define DW_VLEN 1
#define DW_TILE 4

typedef float vf_t;

static inline vf_t vf_load(const float* p) { return *p; }
static inline void vf_store(float* p, vf_t v) { *p = v; }
/* n < DW_VLEN == 1: never called. */
static inline vf_t vf_loadn(const float* p, size_t n) { (void)p; (void)n; return 0.0f; }
static inline void vf_storen(float* p, vf_t v, size_t n) { (void)p; (void)v; (void)n; }
static inline vf_t vf_zero(void) { return 0.0f; }
static inline vf_t vf_set1(float x) { return x; }
/* Without FMA hardware: a product rounded, then a sum rounded (no contraction in ISO C). */
static inline vf_t vf_fma(vf_t a, vf_t b, vf_t c) { return a * b + c; }
/* b when either is NaN, like MAXPS/MINPS. */
static inline vf_t vf_max(vf_t a, vf_t b) { return a > b ? a : b; }
static inline vf_t vf_min(vf_t a, vf_t b) { return a < b ? a : b; }
static inline void vf_acc64(double* a, vf_t v, size_t n) { (void)n; *a += (double)v; }

#include "dwconv_impl.h"
