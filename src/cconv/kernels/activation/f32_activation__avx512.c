/* Activation micro-kernels compiled with the avx512 flags (bodies in activation_impl.h). */
#define CCONV_ISA_SUFFIX avx512
#include "activation_impl.h"
