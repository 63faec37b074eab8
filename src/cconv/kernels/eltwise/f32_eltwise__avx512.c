/* Add and dropout micro-kernels compiled with the avx512 flags (bodies in eltwise_impl.h). */
#define CCONV_ISA_SUFFIX avx512
#include "eltwise_impl.h"
