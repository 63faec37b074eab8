/* Add and dropout micro-kernels compiled with the neon flags (bodies in eltwise_impl.h). */
#define CCONV_ISA_SUFFIX neon
#include "eltwise_impl.h"
