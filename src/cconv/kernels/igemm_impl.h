/* Body of an igemm micro-kernel (contract in igemm.h), shared by the x86 variants.
 *
 * The including file defines IGEMM_NAME (the function name), IGEMM_MR (rows) and IGEMM_NV
 * (vectors per row), and picks an ISA for simd_vec.h (VEC, VLEN, VLOADU, VFMA, ...).
 * NR = IGEMM_NV * VLEN. The accumulators (MR * NV vectors) stay in registers when the unrolled
 * loops below are compiled with -O3; rows past mr are computed from the zero row and not stored.
 */
#define IGEMM_NR (IGEMM_NV * VLEN)

void IGEMM_NAME(size_t mr, size_t nc, size_t kc, size_t ks, const float* const* a,
                size_t a_offset, size_t a_stride, const float* zero, const float* w,
                size_t w_stride, const float* bias, float* const* c, size_t c_offset, int flags,
                float cmin, float cmax) {
    VEC acc[IGEMM_MR][IGEMM_NV];
    if (flags & FC_IGEMM_ACCUMULATE) {
        for (size_t i = 0; i < IGEMM_MR; i++)
            for (size_t v = 0; v < IGEMM_NV; v++) {
                const size_t col = v * VLEN;
                acc[i][v] = (i < mr && col < nc)
                    ? VLOAD_PART(c[i] + c_offset + col, nc - col < VLEN ? nc - col : VLEN) : VZERO();
            }
    } else {
        for (size_t v = 0; v < IGEMM_NV; v++) {
            const VEC b = bias ? VLOADU(bias + v * VLEN) : VZERO();
            for (size_t i = 0; i < IGEMM_MR; i++) acc[i][v] = b;
        }
    }
    for (size_t t = 0; t < ks; t++) {
        const float* ap[IGEMM_MR];
        for (size_t i = 0; i < IGEMM_MR; i++) {
            ap[i] = a[t * IGEMM_MR + i];
            if (ap[i] != zero) ap[i] += a_offset;
        }
        /* The contiguous case separately: its loads then need no stride multiplication. */
        if (a_stride == 1) {
            for (size_t k = 0; k < kc; k++) {
                VEC wv[IGEMM_NV];
                for (size_t v = 0; v < IGEMM_NV; v++) wv[v] = VLOADU(w + v * VLEN);
                w += w_stride;
#pragma GCC unroll 16
                for (size_t i = 0; i < IGEMM_MR; i++) {
                    const VEC av = VSET1(ap[i][k]);
                    for (size_t v = 0; v < IGEMM_NV; v++) acc[i][v] = VFMA(av, wv[v], acc[i][v]);
                }
            }
        } else {
            for (size_t k = 0; k < kc; k++) {
                VEC wv[IGEMM_NV];
                for (size_t v = 0; v < IGEMM_NV; v++) wv[v] = VLOADU(w + v * VLEN);
                w += w_stride;
#pragma GCC unroll 16
                for (size_t i = 0; i < IGEMM_MR; i++) {
                    const VEC av = VSET1(ap[i][k * a_stride]);
                    for (size_t v = 0; v < IGEMM_NV; v++) acc[i][v] = VFMA(av, wv[v], acc[i][v]);
                }
            }
        }
    }
    /* max(lo, x) / min(hi, x) return x when x is NaN: NaN propagates like PyTorch's. */
    const VEC lo = VSET1(cmin), hi = VSET1(cmax);
    for (size_t i = 0; i < mr; i++) {
        float* out = c[i] + c_offset;
        for (size_t v = 0; v < IGEMM_NV; v++) {
            const size_t col = v * VLEN;
            if (col >= nc) break;
            const VEC r = VMIN(hi, VMAX(lo, acc[i][v]));
            if (nc - col >= VLEN) VSTOREU(out + col, r);
            else VSTORE_PART(out + col, r, nc - col);
        }
    }
}

#undef IGEMM_NR
