/* Bodies of the optimizer kernels (optim.h), compiled once per ISA: the including file defines
 * CCONV_ISA_SUFFIX, and that ISA's flags make the compiler vectorise the loops. */
#include <math.h>

#include "optim.h"

#define CCONV_CAT_(a, b) a##__##b
#define CCONV_CAT(a, b) CCONV_CAT_(a, b)

/* The penalties' gradient: l1 sign(p) + 2 l2 p (sign(0) = 0, as numpy's and PyTorch's). */
static inline float penalty(float p, float l1, float l2) {
    const float sign = (float)(p > 0.0f) - (float)(p < 0.0f);
    return l1 * sign + 2.0f * l2 * p;
}

void CCONV_CAT(cconv_f32_sgd_update, CCONV_ISA_SUFFIX)(size_t n, float* p, const float* grad,
                                                       float* buf,
                                                       const struct cconv_sgd_params* h) {
    const float lr = h->lr, mu = h->momentum, damp = 1.0f - h->dampening, wd = h->weight_decay;
    const float l1 = h->l1, l2 = h->l2;
    if (mu == 0.0f) {
        for (size_t i = 0; i < n; i++) {
            const float g = grad[i] + penalty(p[i], l1, l2) + wd * p[i];
            p[i] -= lr * g;
        }
    } else if (h->first_step) {
        for (size_t i = 0; i < n; i++) {
            const float g = grad[i] + penalty(p[i], l1, l2) + wd * p[i];
            buf[i] = g;
            p[i] -= lr * (h->nesterov ? g + mu * g : g);
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            const float g = grad[i] + penalty(p[i], l1, l2) + wd * p[i];
            const float b = mu * buf[i] + damp * g;
            buf[i] = b;
            p[i] -= lr * (h->nesterov ? g + mu * b : b);
        }
    }
}

void CCONV_CAT(cconv_f32_adam_update, CCONV_ISA_SUFFIX)(size_t n, float* p, const float* grad,
                                                        float* m, float* v,
                                                        const struct cconv_adam_params* h) {
    const float b1 = h->beta1, b2 = h->beta2, eps = h->eps, l1 = h->l1, l2 = h->l2;
    const float coupled_wd = h->decoupled ? 0.0f : h->weight_decay;
    const float shrink = h->decoupled ? 1.0f - h->lr * h->weight_decay : 1.0f;
    const float step_size = h->step_size, inv_sqrt_bias2 = h->inv_sqrt_bias2;
    for (size_t i = 0; i < n; i++) {
        const float g = grad[i] + penalty(p[i], l1, l2) + coupled_wd * p[i];
        const float mi = b1 * m[i] + (1.0f - b1) * g;
        const float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        const float pi = p[i] * shrink;
        p[i] = pi - step_size * mi / (sqrtf(vi) * inv_sqrt_bias2 + eps);
    }
}
