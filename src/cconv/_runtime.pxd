# Shared runtime state of the compiled op set: the active ISA and the thread count.
# Every op module cimports these so that there is one dispatch state for the whole package.

cdef int current_isa() noexcept nogil
cdef int threads_for(int n_threads, double work) noexcept nogil

# The work (threads_for) of one element that a memory-bound op (elementwise, pooling, batch
# norm) reads or writes: about the time a convolution takes for this many floating-point
# operations (measured: relu ~0.15 ns an element, a small conv ~0.007 ns a flop on one core).
cdef enum:
    ELEMENT_WORK = 20
cpdef int resolve_threads(n_threads) except -1
