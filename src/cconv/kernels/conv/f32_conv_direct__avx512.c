/* Direct-convolution tile functions compiled with the avx512 flags (bodies in conv_direct_impl.h). */
#define CCONV_ISA_SUFFIX avx512
#include "conv_direct_impl.h"
