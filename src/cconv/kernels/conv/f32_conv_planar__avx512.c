/* Planar first-layer kernels compiled with the avx512 flags (bodies in conv_planar_impl.h). */
#define CCONV_ISA_SUFFIX avx512
#define SIMD_ISA_AVX512
#include "conv_planar_impl.h"
