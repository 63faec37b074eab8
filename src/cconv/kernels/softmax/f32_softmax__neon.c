/* Softmax micro-kernels compiled with the neon flags (bodies in softmax_impl.h). */
#define CCONV_ISA_SUFFIX neon
#include "softmax_impl.h"
