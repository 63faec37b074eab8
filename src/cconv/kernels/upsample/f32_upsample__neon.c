/* The upsampling gather compiled with the neon flags (body in upsample_impl.h). */
#define CCONV_ISA_SUFFIX neon
#include "upsample_impl.h"
