/* Batch-norm micro-kernels compiled with the avx512 flags (bodies in batchnorm_impl.h). */
#define CCONV_ISA_SUFFIX avx512
#include "batchnorm_impl.h"
