# C declarations shared by the Cython modules that drive the GEMM micro-kernels
# (kernels/isa.h, kernels/igemm.h): cimport them from here rather than declaring them again.

cdef extern from "isa.h":
    unsigned cconv_ftz_enter() nogil
    void cconv_ftz_restore(unsigned) nogil

cdef extern from "igemm.h":
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
