/* Vector operations for the kernel bodies written once for every ISA (igemm_impl.h,
 * winograd_impl.h, conv_planar_impl.h), picked by the including file's SIMD_ISA_SCALAR,
 * SIMD_ISA_AVX2, SIMD_ISA_AVX512 (zmm, 16 lanes), SIMD_ISA_AVX512_YMM (ymm, 8 lanes, AVX-512VL
 * masks: on CPUs that split 512-bit FMAs, two ymm FMAs per cycle match one zmm, for narrow
 * register tiles) or SIMD_ISA_NEON (4 lanes; full vectors only: no VLOAD_PART/VSTORE_PART).
 * VMAX(a, b) and VMIN(a, b) return b when b is NaN, like the x86 instructions. */
#ifndef CCONV_SIMD_VEC_H
#define CCONV_SIMD_VEC_H

#if defined(SIMD_ISA_AVX512)
#include <immintrin.h>
#define VEC __m512
#define VLEN 16
#define VZERO() _mm512_setzero_ps()
#define VSET1(x) _mm512_set1_ps(x)
#define VLOADU(p) _mm512_loadu_ps(p)
#define VSTOREU(p, v) _mm512_storeu_ps((p), (v))
#define VSTREAM(p, v) _mm512_stream_ps((p), (v))
#define VADD(a, b) _mm512_add_ps((a), (b))
#define VSUB(a, b) _mm512_sub_ps((a), (b))
#define VMUL(a, b) _mm512_mul_ps((a), (b))
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VFNMA(a, b, c) _mm512_fnmadd_ps((a), (b), (c))
#define VMAX(a, b) _mm512_max_ps((a), (b))
#define VMIN(a, b) _mm512_min_ps((a), (b))
#define VMASK(n) ((__mmask16)((1u << (n)) - 1u))
#define VLOAD_PART(p, n) _mm512_maskz_loadu_ps(VMASK(n), (p))
#define VSTORE_PART(p, v, n) _mm512_mask_storeu_ps((p), VMASK(n), (v))

#elif defined(SIMD_ISA_AVX512_YMM)
#include <immintrin.h>
#define VEC __m256
#define VLEN 8
#define VZERO() _mm256_setzero_ps()
#define VSET1(x) _mm256_set1_ps(x)
#define VLOADU(p) _mm256_loadu_ps(p)
#define VSTOREU(p, v) _mm256_storeu_ps((p), (v))
#define VSTREAM(p, v) _mm256_stream_ps((p), (v))
#define VADD(a, b) _mm256_add_ps((a), (b))
#define VSUB(a, b) _mm256_sub_ps((a), (b))
#define VMUL(a, b) _mm256_mul_ps((a), (b))
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VFNMA(a, b, c) _mm256_fnmadd_ps((a), (b), (c))
#define VMAX(a, b) _mm256_max_ps((a), (b))
#define VMIN(a, b) _mm256_min_ps((a), (b))
#define VMASK(n) ((__mmask8)((1u << (n)) - 1u))
#define VLOAD_PART(p, n) _mm256_maskz_loadu_ps(VMASK(n), (p))
#define VSTORE_PART(p, v, n) _mm256_mask_storeu_ps((p), VMASK(n), (v))

#elif defined(SIMD_ISA_AVX2)
#include "avx2_mask.h"
#define VEC __m256
#define VLEN 8
#define VZERO() _mm256_setzero_ps()
#define VSET1(x) _mm256_set1_ps(x)
#define VLOADU(p) _mm256_loadu_ps(p)
#define VSTOREU(p, v) _mm256_storeu_ps((p), (v))
#define VSTREAM(p, v) _mm256_stream_ps((p), (v))
#define VADD(a, b) _mm256_add_ps((a), (b))
#define VSUB(a, b) _mm256_sub_ps((a), (b))
#define VMUL(a, b) _mm256_mul_ps((a), (b))
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VFNMA(a, b, c) _mm256_fnmadd_ps((a), (b), (c))
#define VMAX(a, b) _mm256_max_ps((a), (b))
#define VMIN(a, b) _mm256_min_ps((a), (b))
#define VMASK(n) cconv_avx2_tail_mask(n)
#define VLOAD_PART(p, n) _mm256_maskload_ps((p), VMASK(n))
#define VSTORE_PART(p, v, n) _mm256_maskstore_ps((p), VMASK(n), (v))

#elif defined(SIMD_ISA_SCALAR)
#define VEC float
#define VLEN 1
#define VZERO() 0.0f
#define VSET1(x) (x)
#define VLOADU(p) (*(p))
#define VSTOREU(p, v) (*(p) = (v))
#define VSTREAM(p, v) (*(p) = (v))
#define VADD(a, b) ((a) + (b))
#define VSUB(a, b) ((a) - (b))
#define VMUL(a, b) ((a) * (b))
#define VFMA(a, b, c) ((a) * (b) + (c))
#define VFNMA(a, b, c) ((c) - (a) * (b))
/* max(lo, x) / min(hi, x) keep x when it is NaN, like the x86 instructions. */
#define VMAX(a, b) ((b) < (a) ? (a) : (b))
#define VMIN(a, b) ((b) > (a) ? (a) : (b))
#define VLOAD_PART(p, n) (*(p))
#define VSTORE_PART(p, v, n) (*(p) = (v))

#elif defined(SIMD_ISA_NEON)
#include <arm_neon.h>
#define VEC float32x4_t
#define VLEN 4
#define VZERO() vdupq_n_f32(0.0f)
#define VSET1(x) vdupq_n_f32(x)
#define VLOADU(p) vld1q_f32(p)
#define VSTOREU(p, v) vst1q_f32((p), (v))
#define VSTREAM(p, v) vst1q_f32((p), (v))
#define VADD(a, b) vaddq_f32((a), (b))
#define VSUB(a, b) vsubq_f32((a), (b))
#define VMUL(a, b) vmulq_f32((a), (b))
#define VFMA(a, b, c) vfmaq_f32((c), (a), (b))
#define VFNMA(a, b, c) vfmsq_f32((c), (a), (b))
#define VMAX(a, b) vbslq_f32(vcltq_f32((b), (a)), (a), (b))
#define VMIN(a, b) vbslq_f32(vcgtq_f32((b), (a)), (a), (b))

#else
#error "define SIMD_ISA_SCALAR, SIMD_ISA_AVX2, SIMD_ISA_AVX512, SIMD_ISA_AVX512_YMM or SIMD_ISA_NEON"
#endif

#endif
