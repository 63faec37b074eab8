/* Optimizer kernels compiled with the avx2 flags (bodies in optim_impl.h). */
#define CCONV_ISA_SUFFIX avx2
#include "optim_impl.h"
