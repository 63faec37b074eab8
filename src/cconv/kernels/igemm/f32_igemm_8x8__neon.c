/* 8 rows x 8 columns: 16 NEON accumulators, 8 registers of A, 2 of W. Body: igemm_neon_impl.h. */
#include "igemm.h"

#define IGEMM_NAME f32_igemm_ukernel_8x8__neon
#define IGEMM_MR 8
#define IGEMM_NV 2

#include "igemm_neon_impl.h"
