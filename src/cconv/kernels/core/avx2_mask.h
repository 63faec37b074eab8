/* AVX2 lane masks: the first n of 8 lanes (n = 0..8), for the maskload / maskstore of a
 * vector's tail. AVX2 has no mask registers, so a mask is a vector loaded from this one table,
 * which every AVX2 kernel shares (AVX-512 kernels use __mmask registers instead). */
#ifndef CCONV_AVX2_MASK_H
#define CCONV_AVX2_MASK_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

/* The 8 entries starting at 8 - n are n times -1, then zeros. */
static const int32_t cconv_avx2_mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                  0,  0,  0,  0,  0,  0,  0,  0};

static inline __m256i cconv_avx2_tail_mask(size_t n) {
    return _mm256_loadu_si256((const __m256i*)(cconv_avx2_mask_table + 8 - n));
}

#endif
