/* igemm micro-kernel, 6x16 register tile: 12 ymm accumulators. Body: igemm_impl.h. */
#define SIMD_ISA_AVX2
#include "core/simd_vec.h"
#include "igemm.h"

#define IGEMM_NAME f32_igemm_ukernel_6x16__avx2
#define IGEMM_MR 6
#define IGEMM_NV 2
#include "igemm_impl.h"
