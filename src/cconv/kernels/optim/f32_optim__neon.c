/* Optimizer kernels compiled with the neon flags (bodies in optim_impl.h). */
#define CCONV_ISA_SUFFIX neon
#include "optim_impl.h"
