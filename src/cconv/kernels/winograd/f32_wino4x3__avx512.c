/* Winograd F(4x4, 3x3), avx512 path. Body: winograd_impl.h; contract: winograd.h. */
#define SIMD_ISA_AVX512
#define WINO_M 4
#define WINO_BLOCK f32_wino4x3_block__avx512
#define WINO_WEIGHTS f32_wino4x3_weights__avx512
#define WINO_WGRAD_BLOCK f32_wino4x3_wgrad_block__avx512
#define WINO_WGRAD_OUT f32_wino4x3_wgrad_out__avx512
#include "core/simd_vec.h"
#include "winograd_impl.h"
