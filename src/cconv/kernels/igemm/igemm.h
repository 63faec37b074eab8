/* The indirect-GEMM micro-kernel contract (XNNPACK's igemm, BLIS's register level).
 *
 * Computes an mr x nc tile of C += A * W where each of the mr rows of A is read through ks
 * pointers (one per kernel tap), each to kc contiguous floats:
 *
 *   c[i][j] = init[i][j] + sum_{t < ks} sum_{k < kc}
 *             a[t*MR + i][k*a_stride (+ a_offset)] * w[(t*kc + k)*w_stride + j]
 *
 * init is the bias row (zeros if bias is NULL), or the current c when flags has
 * FC_IGEMM_ACCUMULATE. The result is clamped to [cmin, cmax] (a fused ReLU is cmin = 0) and
 * stored to c[i] + c_offset for i < mr, j < nc. A row is contiguous (a_stride = 1) or read with a
 * stride (a_stride > 1: A stored transposed, k-major). Pointers equal to `zero` stand for padding:
 * a_offset (the channel offset of a group) is not added to them, and `zero` holds at least
 * (kc - 1) * a_stride + 1 zeros. w is one NR-wide panel whose rows are w_stride floats apart: a packed panel
 * (w_stride = NR, zero-padded past nc) or rows of a larger matrix read in place (w_stride = its
 * row length; the NR floats of every row must be readable, columns past nc are ignored). Rows mr..MR-1 of a must still be
 * readable (callers point them at `zero`). The kernel knows registers, nothing else.
 */
#ifndef CCONV_IGEMM_H
#define CCONV_IGEMM_H

#include <stddef.h>
#include <stdint.h>
#include "core/isa.h"

#define FC_IGEMM_ACCUMULATE 1
#define FC_IGEMM_STREAM 2

typedef void (*f32_igemm_ukernel_fn)(
    size_t mr, size_t nc, size_t kc, size_t ks,
    const float* const* a, size_t a_offset, size_t a_stride, const float* zero,
    const float* w, size_t w_stride, const float* bias,
    float* const* c, size_t c_offset, int flags, float cmin, float cmax);

struct f32_igemm_config {
    f32_igemm_ukernel_fn ukernel;
    size_t mr; /* rows of the register tile */
    size_t nr; /* columns of the register tile = width of a packed weight panel */
};

#define FC_IGEMM_UKERNEL(name)                                                                   \
    void name(size_t mr, size_t nc, size_t kc, size_t ks, const float* const* a, size_t a_offset, \
              size_t a_stride, const float* zero, const float* w, size_t w_stride,               \
              const float* bias, float* const* c, size_t c_offset, int flags, float cmin,        \
              float cmax)

FC_IGEMM_UKERNEL(f32_igemm_ukernel_4x8__scalar);
#if defined(__x86_64__) || defined(_M_X64)
FC_IGEMM_UKERNEL(f32_igemm_ukernel_6x8__avx2);
FC_IGEMM_UKERNEL(f32_igemm_ukernel_6x16__avx2);
FC_IGEMM_UKERNEL(f32_igemm_ukernel_8x8__avx512);
FC_IGEMM_UKERNEL(f32_igemm_ukernel_8x16__avx512);
FC_IGEMM_UKERNEL(f32_igemm_ukernel_8x32__avx512);
#elif defined(__aarch64__)
FC_IGEMM_UKERNEL(f32_igemm_ukernel_8x8__neon);
#endif

/* The one place where the convolution micro-kernel is chosen: for a GEMM with n columns (output
 * channels of one group), the tile that needs the fewest vector FMAs per row and k step for the
 * padded columns (a tile narrower than the ISA's vectors runs shorter ones: on AVX-512, 120
 * columns take 4 panels of 8x32 = 8 FMAs, not 15 panels of 8x8 = 15 half-width FMAs); on a tie
 * the one that pads n the least, then the widest. */
static inline struct f32_igemm_config f32_igemm_select(int isa, size_t n) {
    static const struct f32_igemm_config scalar[] = {{f32_igemm_ukernel_4x8__scalar, 4, 8}};
#if defined(__x86_64__) || defined(_M_X64)
    static const struct f32_igemm_config avx2[] = {
        {f32_igemm_ukernel_6x16__avx2, 6, 16}, {f32_igemm_ukernel_6x8__avx2, 6, 8}};
    static const struct f32_igemm_config avx512[] = {
        {f32_igemm_ukernel_8x32__avx512, 8, 32}, {f32_igemm_ukernel_8x16__avx512, 8, 16},
        {f32_igemm_ukernel_8x8__avx512, 8, 8}};
    const struct f32_igemm_config* table = scalar;
    size_t count = 1;
    if (isa == CCONV_ISA_AVX512) { table = avx512; count = 3; }
    else if (isa == CCONV_ISA_AVX2) { table = avx2; count = 2; }
#elif defined(__aarch64__)
    /* 16 accumulators + 8 registers of A + 2 of W fit the 32 NEON registers; a wider tile
     * (6x16: 24 accumulators) spills in GCC's register allocation. */
    static const struct f32_igemm_config neon[] = {{f32_igemm_ukernel_8x8__neon, 8, 8}};
    const struct f32_igemm_config* table = scalar;
    size_t count = 1;
    if (isa == CCONV_ISA_NEON) table = neon;
#else
    const struct f32_igemm_config* table = scalar;
    size_t count = 1;
#endif
    size_t vector = 1;  /* floats per vector register of the ISA's tiles */
    if (isa == CCONV_ISA_AVX512) vector = 16;
    else if (isa == CCONV_ISA_AVX2) vector = 8;
    else if (isa == CCONV_ISA_NEON) vector = 4;
    struct f32_igemm_config best = table[0];
    size_t best_padded = 0, best_fmas = 0;
    for (size_t i = 0; i < count; i++) {  /* widest first */
        const size_t padded = (n + table[i].nr - 1) / table[i].nr * table[i].nr;
        const size_t fmas = padded / (table[i].nr < vector ? table[i].nr : vector);
        if (i == 0 || fmas < best_fmas || (fmas == best_fmas && padded < best_padded)) {
            best = table[i]; best_padded = padded; best_fmas = fmas;
        }
    }
    return best;
}

#endif
