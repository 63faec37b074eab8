/* Planar first-layer kernels compiled with the neon flags (bodies in conv_planar_impl.h). */
#define CCONV_ISA_SUFFIX neon
#define SIMD_ISA_NEON
#include "conv_planar_impl.h"
