/* 8 x 8 float transposes for the loops that turn NHWC pixels into channel rows (the weight
 * gradient's slab): dst[c * dst_stride + q] = src[q * src_stride + c] for q, c < 8. With AVX2
 * (also on in the AVX-512 build) it is 8 loads, 24 shuffles and 8 stores instead of 64 scalar
 * loads and stores; elsewhere the scalar loop. */
#ifndef CCONV_TRANSPOSE_H
#define CCONV_TRANSPOSE_H

#include <stddef.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

static inline void f32_transpose_8x8(const float* src, size_t src_stride, float* dst,
                                     size_t dst_stride) {
#if defined(__AVX2__)
    const __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + src_stride);
    const __m256 r2 = _mm256_loadu_ps(src + 2 * src_stride);
    const __m256 r3 = _mm256_loadu_ps(src + 3 * src_stride);
    const __m256 r4 = _mm256_loadu_ps(src + 4 * src_stride);
    const __m256 r5 = _mm256_loadu_ps(src + 5 * src_stride);
    const __m256 r6 = _mm256_loadu_ps(src + 6 * src_stride);
    const __m256 r7 = _mm256_loadu_ps(src + 7 * src_stride);
    /* pairs of rows interleaved: t0 = r0c0 r1c0 r0c1 r1c1 | r0c4 r1c4 r0c5 r1c5, ... */
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    /* columns of rows 0-3 (s0..s3) and 4-7 (s4..s7): s0 = c0 of r0-r3 | c4 of r0-r3, ... */
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(dst + dst_stride, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(dst + 2 * dst_stride, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(dst + 3 * dst_stride, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(dst + 4 * dst_stride, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(dst + 5 * dst_stride, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(dst + 6 * dst_stride, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(dst + 7 * dst_stride, _mm256_permute2f128_ps(s3, s7, 0x31));
#else
    for (size_t c = 0; c < 8; c++)
        for (size_t q = 0; q < 8; q++) dst[c * dst_stride + q] = src[q * src_stride + c];
#endif
}

#endif
