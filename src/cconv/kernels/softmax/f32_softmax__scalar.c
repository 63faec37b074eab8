/* Softmax micro-kernels compiled with the scalar flags (bodies in softmax_impl.h). */
#define CCONV_ISA_SUFFIX scalar
#include "softmax_impl.h"
