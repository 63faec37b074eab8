/* Planar first-layer kernels compiled with the avx2 flags (bodies in conv_planar_impl.h). */
#define CCONV_ISA_SUFFIX avx2
#define SIMD_ISA_AVX2
#include "conv_planar_impl.h"
