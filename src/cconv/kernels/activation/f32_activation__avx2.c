/* Activation micro-kernels compiled with the avx2 flags (bodies in activation_impl.h). */
#define CCONV_ISA_SUFFIX avx2
#include "activation_impl.h"
