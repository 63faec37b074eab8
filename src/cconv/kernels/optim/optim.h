/* Optimizer updates, in place over one parameter array, with PyTorch's update rules.
 *
 * SGD:   g = grad + l1 sign(p) + 2 l2 p + weight_decay p
 *        buf = first ? g : momentum buf + (1 - dampening) g     (when momentum != 0)
 *        g = nesterov ? g + momentum buf : buf
 *        p -= lr g
 * Adam:  g = grad + l1 sign(p) + 2 l2 p (+ weight_decay p, when not decoupled)
 *        p *= 1 - lr weight_decay                                  (AdamW: decoupled)
 *        m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
 *        p -= (lr / bias1) m / (sqrt(v) / sqrt(bias2) + eps),  bias_i = 1 - beta_i^step
 * Every element is updated independently, so any split into chunks gives the same result.
 */
#ifndef CCONV_OPTIM_H
#define CCONV_OPTIM_H

#include <stddef.h>

#include "core/isa.h"

struct cconv_sgd_params {
    float lr, momentum, dampening, weight_decay, l1, l2;
    int nesterov, first_step;
};

struct cconv_adam_params {
    float lr, beta1, beta2, eps, weight_decay, l1, l2;
    float step_size;        /* lr / (1 - beta1^step) */
    float inv_sqrt_bias2;   /* 1 / sqrt(1 - beta2^step) */
    int decoupled;          /* AdamW */
};

#define CCONV_OPTIM_DECLARE(isa)                                                                  \
    void cconv_f32_sgd_update__##isa(size_t n, float* p, const float* grad, float* buf,          \
                                     const struct cconv_sgd_params* h);                          \
    void cconv_f32_adam_update__##isa(size_t n, float* p, const float* grad, float* m, float* v, \
                                      const struct cconv_adam_params* h);

#define CCONV_OPTIM_TABLE(isa) \
    (struct cconv_optim_kernels) { cconv_f32_sgd_update__##isa, cconv_f32_adam_update__##isa }

struct cconv_optim_kernels {
    /* buf may be NULL when momentum == 0 */
    void (*sgd)(size_t n, float* p, const float* grad, float* buf, const struct cconv_sgd_params* h);
    void (*adam)(size_t n, float* p, const float* grad, float* m, float* v,
                 const struct cconv_adam_params* h);
};

CCONV_OPTIM_DECLARE(scalar)
#if defined(__x86_64__) || defined(_M_X64)
CCONV_OPTIM_DECLARE(avx2)
CCONV_OPTIM_DECLARE(avx512)
#elif defined(__aarch64__)
CCONV_OPTIM_DECLARE(neon)
#endif

/* The one place where the optimizer kernels are chosen. */
static inline struct cconv_optim_kernels cconv_optim_select(int isa) {
#if defined(__x86_64__) || defined(_M_X64)
    if (isa == CCONV_ISA_AVX512) return CCONV_OPTIM_TABLE(avx512);
    if (isa == CCONV_ISA_AVX2) return CCONV_OPTIM_TABLE(avx2);
#elif defined(__aarch64__)
    if (isa == CCONV_ISA_NEON) return CCONV_OPTIM_TABLE(neon);
#endif
    (void)isa;
    return CCONV_OPTIM_TABLE(scalar);
}

#endif
