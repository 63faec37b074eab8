/* Portable body of the upsampling gather (upsample.h), included once per ISA by
 * f32_upsample__ISA.c with CCONV_ISA_SUFFIX defined; the compiler vectorises the loops over j. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "upsample.h"
#include "core/vmath.h"

void CCONV_UKERNEL(f32_upsample_gather)(size_t count, size_t len, const int32_t* restrict offsets,
                                        const int32_t* restrict index,
                                        const float* restrict weight, const float* restrict src,
                                        size_t stride, float* restrict dst) {
    for (size_t i = 0; i < count; i++) {
        float* restrict d = dst + i * len;
        const int32_t k0 = offsets[i], k1 = offsets[i + 1];
        if (k0 >= k1) {
            memset(d, 0, len * sizeof(float));
            continue;
        }
        const float* restrict s = src + (size_t)index[k0] * stride;
        const float w = weight[k0];
        if (w == 1.0f) memcpy(d, s, len * sizeof(float));
        else for (size_t j = 0; j < len; j++) d[j] = w * s[j];
        for (int32_t k = k0 + 1; k < k1; k++) {
            const float* restrict t = src + (size_t)index[k] * stride;
            const float wk = weight[k];
            for (size_t j = 0; j < len; j++) d[j] = CCONV_FMADD(wk, t[j], d[j]);
        }
    }
}
