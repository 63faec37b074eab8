/* Instruction sets that fastcnn has kernels for, and the CPU detection that picks one. */
#ifndef CCONV_ISA_H
#define CCONV_ISA_H

enum cconv_isa {
    CCONV_ISA_SCALAR = 0,
    CCONV_ISA_AVX2 = 1,    /* AVX2 + FMA */
    CCONV_ISA_AVX512 = 2,  /* AVX-512 F, VL, BW, DQ */
    CCONV_ISA_NEON = 3,    /* ARM64 Advanced SIMD */
};

/* Bit set of the ISAs this CPU and OS can run (1 << enum cconv_isa), scalar always included. */
unsigned cconv_supported_isas(void);

/* Flush denormals to zero for the calling thread; returns the previous state for ..._restore. */
unsigned cconv_ftz_enter(void);
void cconv_ftz_restore(unsigned previous);

#endif
