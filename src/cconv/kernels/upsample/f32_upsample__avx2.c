/* The upsampling gather compiled with the avx2 flags (body in upsample_impl.h). */
#define CCONV_ISA_SUFFIX avx2
#include "upsample_impl.h"
