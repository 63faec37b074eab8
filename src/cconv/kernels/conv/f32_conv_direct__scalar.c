/* Direct-convolution tile functions compiled with the scalar flags (bodies in conv_direct_impl.h). */
#define CCONV_ISA_SUFFIX scalar
#include "conv_direct_impl.h"
