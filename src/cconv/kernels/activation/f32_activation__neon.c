/* Activation micro-kernels compiled with the neon flags (bodies in activation_impl.h). */
#define CCONV_ISA_SUFFIX neon
#include "activation_impl.h"
