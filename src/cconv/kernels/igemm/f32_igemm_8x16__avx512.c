/* igemm micro-kernel, 8x16 register tile: 8 zmm accumulators. Body: igemm_impl.h. */
#define SIMD_ISA_AVX512
#include "core/simd_vec.h"
#include "igemm.h"

#define IGEMM_NAME f32_igemm_ukernel_8x16__avx512
#define IGEMM_MR 8
#define IGEMM_NV 1
#include "igemm_impl.h"
