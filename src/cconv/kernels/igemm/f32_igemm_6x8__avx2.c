/* igemm micro-kernel, 6x8 register tile: 6 ymm accumulators. Body: igemm_impl.h. */
#define SIMD_ISA_AVX2
#include "core/simd_vec.h"
#include "igemm.h"

#define IGEMM_NAME f32_igemm_ukernel_6x8__avx2
#define IGEMM_MR 6
#define IGEMM_NV 1
#include "igemm_impl.h"
