/* Softmax micro-kernels compiled with the avx2 flags (bodies in softmax_impl.h). */
#define CCONV_ISA_SUFFIX avx2
#include "softmax_impl.h"
