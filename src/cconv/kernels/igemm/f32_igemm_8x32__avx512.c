/* igemm micro-kernel, 8x32 register tile: 16 zmm accumulators. Body: igemm_impl.h. */
#define SIMD_ISA_AVX512
#include "core/simd_vec.h"
#include "igemm.h"

#define IGEMM_NAME f32_igemm_ukernel_8x32__avx512
#define IGEMM_MR 8
#define IGEMM_NV 2
#include "igemm_impl.h"
