/* Batch-norm micro-kernels compiled with the neon flags (bodies in batchnorm_impl.h). */
#define CCONV_ISA_SUFFIX neon
#include "batchnorm_impl.h"
