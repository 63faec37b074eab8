/* The upsampling gather compiled with the avx512 flags (body in upsample_impl.h). */
#define CCONV_ISA_SUFFIX avx512
#include "upsample_impl.h"
