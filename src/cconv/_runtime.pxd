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

# The one chunked runner of the memory-bound ops: items [0, n) in chunks of `chunk` items, chunk
# i being items [i * chunk, min(n, (i + 1) * chunk)); `run(job, i, start, length)` does one.
# The chunks depend on n and chunk only, never on the thread count, so results do not either.
ctypedef void (*chunk_fn)(const void* job, Py_ssize_t index, Py_ssize_t start,
                          Py_ssize_t length) noexcept nogil
cdef void run_chunks(chunk_fn run, const void* job, Py_ssize_t n, Py_ssize_t chunk,
                     int n_threads) noexcept nogil

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer


cdef inline void* data_ptr(arr) except? NULL:
    """Data pointer of a C-contiguous array (NULL when it is empty), read-only ones too; the
    caller checked its dtype and keeps it alive while the pointer is in use. (A plain buffer
    request: a typed memoryview would parse the format and shape, ~0.2 us a call.)"""
    cdef Py_buffer buf
    PyObject_GetBuffer(arr, &buf, PyBUF_SIMPLE)
    cdef void* p = buf.buf if buf.len else NULL
    PyBuffer_Release(&buf)
    return p
