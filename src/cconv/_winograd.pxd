# Winograd F(m x m, 3x3) internals that the direct convolution module's conv2d and Conv2dPlan
# call without going through the public functions' argument checks again.

cdef class WinogradWeights:
    cdef readonly int tile
    cdef readonly bint backward_data
    cdef readonly tuple weight_shape
    cdef readonly int isa
    cdef readonly size_t nr, k, n
    cdef readonly object packed
    cdef object _w
    cdef bint _ready  # packed holds the transform (else packed is None)

cdef WinogradWeights _prepare(w, int tile, bint backward, int isa)
cdef WinogradWeights _transform(w, int tile, bint backward, int isa, int n_threads)
cdef _padded_bias(b, size_t n, size_t nr)
cdef _run(x, WinogradWeights u, b, ptrdiff_t pad_top, ptrdiff_t pad_left, size_t out_h,
          size_t out_w, float cmin, float cmax, int n_threads)
