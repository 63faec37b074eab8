/* Elementwise micro-kernels that are not activations: add (residual connections), dropout, and
 * the channel gate of squeeze-excitation (y = x * g, g one value per image and channel).
 *
 * Dropout draws its mask from a counter-based generator: element i of a call is kept when the top
 * 32 bits of splitmix64(key + i * golden) are >= threshold, so the mask depends on (seed, index)
 * only and is the same for any split of the array into chunks or threads.
 */
#ifndef CCONV_ELTWISE_H
#define CCONV_ELTWISE_H

#include <stddef.h>
#include <stdint.h>

#include "core/isa.h"

#define CCONV_DROPOUT_GOLDEN 0x9E3779B97F4A7C15ull

/* The most channels one gate_backward call takes (its double accumulators live on the stack). */
#define CCONV_GATE_BLOCK 64

/* splitmix64's output function (Steele, Lea, Flood 2014): a bijective 64-bit mixer. */
static inline uint64_t cconv_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#define CCONV_ELTWISE_DECLARE(isa)                                                                \
    void cconv_f32_vadd__##isa(size_t n, const float* a, const float* b, float* y);               \
    void cconv_f32_dropout__##isa(size_t n, const float* x, float* y, uint8_t* mask, uint64_t key, \
                                  uint64_t first, uint32_t threshold, float scale);               \
    void cconv_f32_dropout_backward__##isa(size_t n, const float* dy, const uint8_t* mask,         \
                                           float* dx, float scale);                          \
    void cconv_f32_gate_mul__##isa(size_t pixels, size_t channels, const float* x,                \
                                   const float* g, float* y);                                     \
    void cconv_f32_gate_backward__##isa(size_t pixels, size_t channels, size_t stride,            \
                                        const float* dy, const float* x, const float* g,          \
                                        float* dx, float* dg);

#define CCONV_ELTWISE_TABLE(isa)                                                                  \
    (struct cconv_eltwise_kernels) {                                                              \
        cconv_f32_vadd__##isa, cconv_f32_dropout__##isa, cconv_f32_dropout_backward__##isa,        \
        cconv_f32_gate_mul__##isa, cconv_f32_gate_backward__##isa                                 \
    }

struct cconv_eltwise_kernels {
    /* y = a + b */
    void (*add)(size_t n, const float* a, const float* b, float* y);
    /* Elements first .. first+n-1 of a dropout: mask = keep, y = x * (keep ? scale : 0). */
    void (*dropout)(size_t n, const float* x, float* y, uint8_t* mask, uint64_t key,
                    uint64_t first, uint32_t threshold, float scale);
    /* dx = dy * (mask ? scale : 0) */
    void (*dropout_backward)(size_t n, const float* dy, const uint8_t* mask, float* dx,
                             float scale);
    /* y[p*channels + j] = x[p*channels + j] * g[j], p < pixels, j < channels. */
    void (*gate_mul)(size_t pixels, size_t channels, const float* x, const float* g, float* y);
    /* One channel block (channels <= CCONV_GATE_BLOCK) of one image whose pixels are `stride`
     * floats apart: dx[p*stride + j] = dy[p*stride + j] * g[j], and
     * dg[j] = sum over p < pixels of dy[p*stride + j] * x[p*stride + j], summed in double in
     * pixel order (the same result for any split of the channels). */
    void (*gate_backward)(size_t pixels, size_t channels, size_t stride, const float* dy,
                          const float* x, const float* g, float* dx, float* dg);
};

CCONV_ELTWISE_DECLARE(scalar)
#if defined(__x86_64__) || defined(_M_X64)
CCONV_ELTWISE_DECLARE(avx2)
CCONV_ELTWISE_DECLARE(avx512)
#elif defined(__aarch64__)
CCONV_ELTWISE_DECLARE(neon)
#endif

/* The one place where the add and dropout kernels are chosen. */
static inline struct cconv_eltwise_kernels cconv_eltwise_select(int isa) {
#if defined(__x86_64__) || defined(_M_X64)
    if (isa == CCONV_ISA_AVX512) return CCONV_ELTWISE_TABLE(avx512);
    if (isa == CCONV_ISA_AVX2) return CCONV_ELTWISE_TABLE(avx2);
#elif defined(__aarch64__)
    if (isa == CCONV_ISA_NEON) return CCONV_ELTWISE_TABLE(neon);
#endif
    (void)isa;
    return CCONV_ELTWISE_TABLE(scalar);
}

#endif
