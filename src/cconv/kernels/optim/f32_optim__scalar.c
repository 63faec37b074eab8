/* Optimizer kernels compiled with the scalar flags (bodies in optim_impl.h). */
#define CCONV_ISA_SUFFIX scalar
#include "optim_impl.h"
