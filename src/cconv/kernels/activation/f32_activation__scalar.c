/* Activation micro-kernels compiled with the scalar flags (bodies in activation_impl.h). */
#define CCONV_ISA_SUFFIX scalar
#include "activation_impl.h"
