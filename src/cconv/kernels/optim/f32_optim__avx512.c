/* Optimizer kernels compiled with the avx512 flags (bodies in optim_impl.h). */
#define CCONV_ISA_SUFFIX avx512
#include "optim_impl.h"
