/* Add and dropout micro-kernels compiled with the avx2 flags (bodies in eltwise_impl.h). */
#define CCONV_ISA_SUFFIX avx2
#include "eltwise_impl.h"
