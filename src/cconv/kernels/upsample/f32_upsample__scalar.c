/* The upsampling gather compiled with the scalar flags (body in upsample_impl.h). */
#define CCONV_ISA_SUFFIX scalar
#include "upsample_impl.h"
