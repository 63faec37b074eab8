/* Batch-norm micro-kernels compiled with the scalar flags (bodies in batchnorm_impl.h). */
#define CCONV_ISA_SUFFIX scalar
#include "batchnorm_impl.h"
