/* The indirect-GEMM micro-kernel contract (XNNPACK's igemm, BLIS's register level).
 *
 * Computes an mr x nc tile of C += A * W where each of the mr rows of A is read through ks
 * pointers (one per kernel tap), each to kc contiguous floats:
 *
 *   c[i][j] = init[i][j] + sum_{t < ks} sum_{k < kc} a[t*MR + i][k (+ a_offset)] * w[(t*kc + k)*NR + j]
 *
 * init is the bias row (zeros if bias is NULL), or the current c when flags has
 * FC_IGEMM_ACCUMULATE. The result is clamped to [cmin, cmax] (a fused ReLU is cmin = 0) and
 * stored to c[i] + c_offset for i < mr, j < nc. Pointers equal to `zero` stand for padding:
 * a_offset (the channel offset of a group) is not added to them, and `zero` holds at least kc
 * zeros. w is one packed NR-wide panel, zero-padded past nc. Rows mr..MR-1 of a must still be
 * readable (callers point them at `zero`). The kernel knows registers, nothing else.
 */
#ifndef CCONV_IGEMM_H
#define CCONV_IGEMM_H

#include <stddef.h>
#include "isa.h"

#define FC_IGEMM_ACCUMULATE 1

typedef void (*f32_igemm_ukernel_fn)(
    size_t mr, size_t nc, size_t kc, size_t ks,
    const float* const* a, size_t a_offset, const float* zero,
    const float* w, const float* bias,
    float* const* c, size_t c_offset, int flags, float cmin, float cmax);

struct f32_igemm_config {
    f32_igemm_ukernel_fn ukernel;
    size_t mr; /* rows of the register tile */
    size_t nr; /* columns of the register tile = width of a packed weight panel */
};

void f32_igemm_ukernel_4x8__scalar(size_t, size_t, size_t, size_t, const float* const*, size_t,
                                   const float*, const float*, const float*, float* const*,
                                   size_t, int, float, float);
#if defined(__x86_64__) || defined(_M_X64)
void f32_igemm_ukernel_6x16__avx2(size_t, size_t, size_t, size_t, const float* const*, size_t,
                                  const float*, const float*, const float*, float* const*,
                                  size_t, int, float, float);
void f32_igemm_ukernel_8x32__avx512(size_t, size_t, size_t, size_t, const float* const*, size_t,
                                    const float*, const float*, const float*, float* const*,
                                    size_t, int, float, float);
#endif

/* The one place where the convolution micro-kernel is chosen. */
static inline struct f32_igemm_config f32_igemm_select(int isa) {
    struct f32_igemm_config cfg = {f32_igemm_ukernel_4x8__scalar, 4, 8};
#if defined(__x86_64__) || defined(_M_X64)
    if (isa == CCONV_ISA_AVX512) {
        cfg.ukernel = f32_igemm_ukernel_8x32__avx512; cfg.mr = 8; cfg.nr = 32;
    } else if (isa == CCONV_ISA_AVX2) {
        cfg.ukernel = f32_igemm_ukernel_6x16__avx2; cfg.mr = 6; cfg.nr = 16;
    }
#endif
    return cfg;
}

#endif
