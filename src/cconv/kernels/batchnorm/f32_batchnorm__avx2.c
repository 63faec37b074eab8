/* Batch-norm micro-kernels compiled with the avx2 flags (bodies in batchnorm_impl.h). */
#define CCONV_ISA_SUFFIX avx2
#include "batchnorm_impl.h"
