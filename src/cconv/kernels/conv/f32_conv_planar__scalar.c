/* Planar first-layer kernels compiled with the scalar flags (bodies in conv_planar_impl.h). */
#define CCONV_ISA_SUFFIX scalar
#define SIMD_ISA_SCALAR
#include "conv_planar_impl.h"
