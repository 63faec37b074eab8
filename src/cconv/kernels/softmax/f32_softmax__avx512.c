/* Softmax micro-kernels compiled with the avx512 flags (bodies in softmax_impl.h). */
#define CCONV_ISA_SUFFIX avx512
#include "softmax_impl.h"
