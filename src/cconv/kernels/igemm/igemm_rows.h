/* One height of an igemm micro-kernel body (included by igemm_impl.h once per height).
 *
 * Defines the static function IGEMM_ROWS_NAME: the contract of igemm.h for mr <= IGEMM_ROWS,
 * with IGEMM_ROWS rows of accumulators; the pointer array `a` keeps IGEMM_MR rows per tap.
 * Every row is computed by the same FMAs in the same order whatever the height, so a row's
 * result does not depend on which height ran it.
 */
static void IGEMM_ROWS_NAME(size_t mr, size_t nc, size_t kc, size_t ks, const float* const* a,
                size_t a_offset, size_t a_stride, const float* zero, const float* w,
                size_t w_stride, const float* bias, float* const* c, size_t c_offset, int flags,
                float cmin, float cmax) {
    VEC acc[IGEMM_ROWS][IGEMM_NV];
    if (flags & FC_IGEMM_ACCUMULATE) {
        for (size_t i = 0; i < IGEMM_ROWS; i++)
            for (size_t v = 0; v < IGEMM_NV; v++) {
                const size_t col = v * VLEN;
                acc[i][v] = (i < mr && col < nc)
                    ? VLOAD_PART(c[i] + c_offset + col, nc - col < VLEN ? nc - col : VLEN) : VZERO();
            }
    } else {
        for (size_t v = 0; v < IGEMM_NV; v++) {
            const VEC b = bias ? VLOADU(bias + v * VLEN) : VZERO();
            for (size_t i = 0; i < IGEMM_ROWS; i++) acc[i][v] = b;
        }
    }
    for (size_t t = 0; t < ks; t++) {
        const float* ap[IGEMM_ROWS];
        for (size_t i = 0; i < IGEMM_ROWS; i++) {
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
                for (size_t i = 0; i < IGEMM_ROWS; i++) {
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
                for (size_t i = 0; i < IGEMM_ROWS; i++) {
                    const VEC av = VSET1(ap[i][k * a_stride]);
                    for (size_t v = 0; v < IGEMM_NV; v++) acc[i][v] = VFMA(av, wv[v], acc[i][v]);
                }
            }
        }
    }
    /* max(lo, x) / min(hi, x) return x when x is NaN: NaN propagates like PyTorch's. */
    const VEC lo = VSET1(cmin), hi = VSET1(cmax);
    /* Streaming stores (no read of the line first, not kept in cache) for rows whose vectors
     * are aligned; the others store normally. */
    const int stream = flags & FC_IGEMM_STREAM;
    for (size_t i = 0; i < mr; i++) {
        float* out = c[i] + c_offset;
        const int aligned = stream && ((uintptr_t)out % (VLEN * sizeof(float))) == 0;
        for (size_t v = 0; v < IGEMM_NV; v++) {
            const size_t col = v * VLEN;
            if (col >= nc) break;
            const VEC r = VMIN(hi, VMAX(lo, acc[i][v]));
            if (nc - col >= VLEN) {
                if (aligned) VSTREAM(out + col, r);
                else VSTOREU(out + col, r);
            } else {
                VSTORE_PART(out + col, r, nc - col);
            }
        }
    }
}

