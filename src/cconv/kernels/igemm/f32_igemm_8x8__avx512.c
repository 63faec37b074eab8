/* igemm micro-kernel, 8x8 register tile: 8 ymm (AVX-512VL masks) accumulators. Body: igemm_impl.h. */
#define SIMD_ISA_AVX512_YMM
#include "core/simd_vec.h"
#include "igemm.h"

#define IGEMM_NAME f32_igemm_ukernel_8x8__avx512
#define IGEMM_MR 8
#define IGEMM_NV 1
#include "igemm_impl.h"
