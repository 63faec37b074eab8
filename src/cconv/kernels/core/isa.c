/* CPU feature detection. Compiled without ISA flags so that it runs on every machine. */
#include "isa.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

unsigned cconv_supported_isas(void) {
    unsigned set = 1u << CCONV_ISA_SCALAR;
    __builtin_cpu_init();
    /* __builtin_cpu_supports also checks that the OS saves the wide registers (XCR0). */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        set |= 1u << CCONV_ISA_AVX2;
    if ((set & (1u << CCONV_ISA_AVX2)) && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq"))
        set |= 1u << CCONV_ISA_AVX512;
    return set;
}

unsigned cconv_ftz_enter(void) {
    unsigned previous = _mm_getcsr();
    _mm_setcsr(previous | 0x8040u); /* FTZ (bit 15) and DAZ (bit 6) */
    return previous;
}

void cconv_ftz_restore(unsigned previous) { _mm_setcsr(previous); }

#elif defined(__aarch64__)

unsigned cconv_supported_isas(void) {
    return (1u << CCONV_ISA_SCALAR) | (1u << CCONV_ISA_NEON); /* NEON is mandatory on ARMv8-A */
}

unsigned cconv_ftz_enter(void) {
    unsigned long fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    __asm__ volatile("msr fpcr, %0" ::"r"(fpcr | (1ul << 24))); /* FZ */
    return (unsigned)fpcr;
}

void cconv_ftz_restore(unsigned previous) {
    unsigned long fpcr = previous;
    __asm__ volatile("msr fpcr, %0" ::"r"(fpcr));
}

#else

unsigned cconv_supported_isas(void) { return 1u << CCONV_ISA_SCALAR; }
unsigned cconv_ftz_enter(void) { return 0; }
void cconv_ftz_restore(unsigned previous) { (void)previous; }

#endif
