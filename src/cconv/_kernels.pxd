# C declarations that several Cython modules share: cimport them from here rather than declaring
# them again. Every op module flushes denormals around its kernels with cconv_ftz_enter/restore
# (kernels/core/isa.h); the convolutions drive the GEMM micro-kernel (kernels/igemm/igemm.h).

cdef extern from "core/isa.h":
    unsigned cconv_ftz_enter() nogil
    void cconv_ftz_restore(unsigned) nogil

cdef extern from "igemm/igemm.h":
    enum: FC_IGEMM_ACCUMULATE
    enum: FC_IGEMM_STREAM
    ctypedef void (*f32_igemm_ukernel_fn)(size_t, size_t, size_t, size_t, const float* const*,
                                          size_t, size_t, const float*, const float*, size_t,
                                          const float*, float* const*, size_t, int, float,
                                          float) noexcept nogil
    struct f32_igemm_config:
        f32_igemm_ukernel_fn ukernel
        size_t mr
        size_t nr
    f32_igemm_config f32_igemm_select(int isa, size_t n) nogil
