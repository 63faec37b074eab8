/* Direct-convolution tile functions compiled with the neon flags (bodies in conv_direct_impl.h). */
#define CCONV_ISA_SUFFIX neon
#include "conv_direct_impl.h"
