# Shared runtime state of the compiled op set: the active ISA and the thread count.
# Every op module cimports these so that there is one dispatch state for the whole package.

cdef int current_isa() noexcept nogil
cdef int threads_for(int n_threads, double work) noexcept nogil
cpdef int resolve_threads(n_threads) except -1
