/* Add and dropout micro-kernels compiled with the scalar flags (bodies in eltwise_impl.h). */
#define CCONV_ISA_SUFFIX scalar
#include "eltwise_impl.h"
