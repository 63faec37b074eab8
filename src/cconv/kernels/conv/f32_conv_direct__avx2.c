/* Direct-convolution tile functions compiled with the avx2 flags (bodies in conv_direct_impl.h). */
#define CCONV_ISA_SUFFIX avx2
#include "conv_direct_impl.h"
