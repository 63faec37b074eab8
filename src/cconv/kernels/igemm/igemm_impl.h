/* Body of an igemm micro-kernel (contract in igemm.h), shared by the x86 variants.
 *
 * The including file defines IGEMM_NAME (the function name), IGEMM_MR (rows) and IGEMM_NV
 * (vectors per row), and picks an ISA for simd_vec.h (VEC, VLEN, VLOADU, VFMA, ...).
 * NR = IGEMM_NV * VLEN. The accumulators (rows * NV vectors) stay in registers when the
 * unrolled loops of igemm_rows.h are compiled with -O3; rows past mr up to the height that runs
 * are computed from the zero row and not stored.
 */
#define IGEMM_NR (IGEMM_NV * VLEN)

/* Tiles of few rows (the last tile of a pixel range, a small batch's Winograd GEMMs, a linear
 * layer's rows at batch 1) run a shorter body: FMAs for rows that are not stored are skipped.
 * Heights MR, MR/2 and MR/4 (at least 1). */
#define IGEMM_ROWS IGEMM_MR
#define IGEMM_ROWS_NAME igemm_rows_full
#include "igemm_rows.h"
#undef IGEMM_ROWS
#undef IGEMM_ROWS_NAME
#define IGEMM_ROWS (IGEMM_MR / 2)
#define IGEMM_ROWS_NAME igemm_rows_half
#include "igemm_rows.h"
#undef IGEMM_ROWS
#undef IGEMM_ROWS_NAME
#define IGEMM_ROWS (IGEMM_MR / 4 > 0 ? IGEMM_MR / 4 : 1)
#define IGEMM_ROWS_NAME igemm_rows_quarter
#include "igemm_rows.h"
#undef IGEMM_ROWS
#undef IGEMM_ROWS_NAME

void IGEMM_NAME(size_t mr, size_t nc, size_t kc, size_t ks, const float* const* a,
                size_t a_offset, size_t a_stride, const float* zero, const float* w,
                size_t w_stride, const float* bias, float* const* c, size_t c_offset, int flags,
                float cmin, float cmax) {
    void (*body)(size_t, size_t, size_t, size_t, const float* const*, size_t, size_t,
                 const float*, const float*, size_t, const float*, float* const*, size_t, int,
                 float, float) = igemm_rows_full;
    if (mr <= (IGEMM_MR / 4 > 0 ? IGEMM_MR / 4 : 1)) body = igemm_rows_quarter;
    else if (mr <= IGEMM_MR / 2) body = igemm_rows_half;
    body(mr, nc, kc, ks, a, a_offset, a_stride, zero, w, w_stride, bias, c, c_offset, flags,
         cmin, cmax);
}

#undef IGEMM_NR
