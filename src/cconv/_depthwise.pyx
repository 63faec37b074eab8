"""Depthwise convolution (groups == in_channels == out_channels): forward and both gradients.

Private module: ``cconv.conv2d`` and its backward functions dispatch here for depthwise layers.
NHWC float32; the kernels (``kernels/dwconv/dwconv.h``) vectorise across channels and handle one row
of pixels at a time; this module packs the weights tap-major, points each row at the input rows
it reads (a row of zeros for vertical padding) and runs OpenMP over rows:

  forward          rows of y (batch x out_h), each computed by one thread;
  backward-data    rows of dx (batch x in_h), each gathered from the rows of dy that read it, so
                   no scatter and no atomics; horizontal stride phases inside the kernel;
  backward-weight  fixed chunks of output rows (their number depends on the shape only), each
                   summed by one thread into its own float64 partial (float sums per row
                   segment, rows in order); the partials are added in chunk order.

Every element's arithmetic depends on the shapes only, so results are bitwise identical for any
number of threads.
"""
import numpy as np

from cython.parallel cimport parallel, prange, threadid

from cconv._runtime cimport current_isa, resolve_threads
from cconv._kernels cimport cconv_ftz_enter, cconv_ftz_restore

from ._validation import as_float32, pair

cdef extern from "dwconv/dwconv.h" nogil:
    struct cconv_dw_geom:
        size_t channels
        size_t in_w, out_w
        size_t kernel_h, kernel_w
        size_t stride_w, dilation_w
        ptrdiff_t pad_left
    struct cconv_dw_next:
        const float* in_ "in"
        size_t n_in
        float* out
        const float* dy
    ctypedef void (*cconv_dwconv_forward_row_fn)(const cconv_dw_geom*, const float* const*,
                                              const float*, const float*, float*, float, float,
                                              const cconv_dw_next*, const float**) noexcept nogil
    ctypedef void (*cconv_dwconv_backward_data_row_fn)(const cconv_dw_geom*, const float* const*,
                                                    const float*, float*, const cconv_dw_next*,
                                                    const float**) noexcept nogil
    ctypedef void (*cconv_dwconv_backward_weight_row_fn)(const cconv_dw_geom*, const float* const*,
                                                      const float*, size_t, size_t, size_t,
                                                      size_t, double*, const cconv_dw_next*,
                                                      const float**) noexcept nogil
    ctypedef struct cconv_dwconv_kernels:
        cconv_dwconv_forward_row_fn forward_row
        cconv_dwconv_backward_data_row_fn backward_data_row
        cconv_dwconv_backward_weight_row_fn backward_weight_row
    cconv_dwconv_kernels cconv_dwconv_select(int isa)

# Row chunks of the weight gradient: each sums its rows into its own float64 partial, and the
# partials are added in chunk order. Their number depends on the shape only (at most this many).
DEF WEIGHT_CHUNKS = 32
DEF WEIGHT_PARTS_BYTES = 8 << 20


# ------------------------------------------------------------------------- argument handling

def _nhwc(op, name, a):
    a = as_float32(op, name, a)
    if a.ndim != 4 or 0 in a.shape:
        raise ValueError(f"{op}: {name} must be a non-empty NHWC array, got shape {a.shape}")
    return a


def _weight(op, w, channels):
    """(C, 1, kh, kw) -> packed tap-major (kh*kw, C), and (kh, kw)."""
    w = as_float32(op, "weight", w)
    if w.ndim != 4 or w.shape[0] != channels or w.shape[1] != 1 or 0 in w.shape:
        raise ValueError(f"{op}: weight must be ({channels}, 1, kh, kw) for {channels} channels, "
                         f"got shape {w.shape}")
    kh, kw = int(w.shape[2]), int(w.shape[3])
    return np.ascontiguousarray(w.reshape(channels, kh * kw).T), kh, kw


def _positive(op, name, value):
    value = int(value)
    if value < 1:
        raise ValueError(f"{op}: {name} must be >= 1, got {value}")
    return value


def _weight_chunks(rows, part_floats):
    """The output rows of the weight gradient in WEIGHT_CHUNKS (or fewer, to keep the float64
    partials within WEIGHT_PARTS_BYTES) consecutive chunks, as (r_begin, r_end): a split that
    depends on the shape only, never on the threads."""
    n = max(1, min(rows, WEIGHT_CHUNKS, WEIGHT_PARTS_BYTES // (8 * part_floats)))
    return [(q * rows // n, (q + 1) * rows // n) for q in range(n)]


cdef inline Py_ssize_t _new_rows_first(Py_ssize_t oh, Py_ssize_t SH, Py_ssize_t DH,
                                        Py_ssize_t KH, Py_ssize_t pt) noexcept nogil:
    """The first input row that output row oh + 1 reads and output row oh does not."""
    return max(oh * SH - pt + (KH - 1) * DH + 1, (oh + 1) * SH - pt, 0)


cdef inline Py_ssize_t _new_rows_count(Py_ssize_t oh, Py_ssize_t OH, Py_ssize_t H, Py_ssize_t SH,
                                       Py_ssize_t DH, Py_ssize_t KH, Py_ssize_t pt) noexcept nogil:
    """How many consecutive input rows from _new_rows_first output row oh + 1 reads first (for
    the prefetch of the next row): 0 when there is no next row in this image."""
    if oh + 1 >= OH:
        return 0
    cdef Py_ssize_t a = _new_rows_first(oh, SH, DH, KH, pt)
    cdef Py_ssize_t b = min((oh + 1) * SH - pt + (KH - 1) * DH, H - 1)
    return b - a + 1 if b >= a else 0


cdef inline Py_ssize_t _last_dy_row(Py_ssize_t ih, Py_ssize_t OH, Py_ssize_t SH, Py_ssize_t DH,
                                    Py_ssize_t KH, Py_ssize_t pt) noexcept nogil:
    """The last row of dy that input row ih gathers from (-1 for none)."""
    cdef Py_ssize_t i, t, best = -1
    for i in range(KH):
        t = ih + pt - i * DH
        if t >= 0 and t % SH == 0 and t // SH < OH and t // SH > best:
            best = t // SH
    return best


cdef cconv_dw_geom _geom(size_t channels, size_t in_w, size_t out_w, size_t kh, size_t kw,
                      size_t stride_w, size_t dilation_w, ptrdiff_t pad_left):
    cdef cconv_dw_geom g
    g.channels = channels
    g.in_w = in_w
    g.out_w = out_w
    g.kernel_h = kh
    g.kernel_w = kw
    g.stride_w = stride_w
    g.dilation_w = dilation_w
    g.pad_left = pad_left
    return g


# ----------------------------------------------------------------------------- forward

def depthwise_forward(x, w, b, stride, dilation, pad_top, pad_left, out_h, out_w, cmin, cmax,
                      n_threads=None):
    """y[n, oh, ow, c] = clamp(b[c] + sum_{i,j} x[n, oh*sh - pad_top + i*dh,
    ow*sw - pad_left + j*dw, c] * w[c, 0, i, j]), taps in the padding left out.

    x: (N, H, W, C); w: (C, 1, kh, kw); b: (C,) or None; clamp to [cmin, cmax] (NaN kept).
    Returns y (N, out_h, out_w, C).
    """
    op = "depthwise_forward"
    x = _nhwc(op, "input", x)
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    packed, kh, kw = _weight(op, w, C)
    (sh, sw), (dh, dw) = pair(op, "stride", stride, 1), pair(op, "dilation", dilation, 1)
    cdef Py_ssize_t OH = _positive(op, "out_h", out_h), OW = _positive(op, "out_w", out_w)
    cdef Py_ssize_t pt = int(pad_top), KH = kh, SH = sh, DH = dh
    cdef const float* bias_ptr = NULL
    cdef const float[::1] bv
    if b is not None:
        b = as_float32(op, "bias", b)
        if b.shape != (C,):
            raise ValueError(f"{op}: bias must have shape ({C},), got {b.shape}")
        bv = b
        bias_ptr = &bv[0]
    cdef int nt = resolve_threads(n_threads)
    cdef cconv_dwconv_kernels k = cconv_dwconv_select(current_isa())
    cdef cconv_dw_geom g = _geom(C, W, OW, kh, kw, sw, dw, int(pad_left))
    cdef float lo = cmin, hi = cmax

    y = np.empty((N, OH, OW, C), np.float32)
    cdef const float[::1] xv = x.reshape(-1)
    cdef float[::1] yv = y.reshape(-1)
    cdef const float[::1] wv = packed.reshape(-1)
    cdef const float[::1] zero = np.zeros(W * C, np.float32)
    cdef Py_ssize_t per_thread = KH + 2 * KH * kw
    cdef size_t[::1] scratch = np.empty(nt * per_thread, np.uintp)
    cdef Py_ssize_t r, n, oh, i, ih, first
    cdef int tid
    cdef unsigned ftz
    cdef const float** rows
    cdef size_t[::1] next_buf = np.zeros(nt * 4, np.uintp)
    cdef cconv_dw_next* nx
    with nogil, parallel(num_threads=nt):
        tid = threadid()
        ftz = cconv_ftz_enter()
        rows = <const float**>&scratch[tid * per_thread]
        nx = <cconv_dw_next*>&next_buf[tid * 4]
        for r in prange(N * OH, schedule="static"):
            n = r // OH
            oh = r - n * OH
            for i in range(KH):
                ih = oh * SH - pt + i * DH
                if ih >= 0 and ih < H:
                    rows[i] = &xv[(n * H + ih) * W * C]
                else:
                    rows[i] = &zero[0]
            # prefetched while this row runs: the next row's new input rows and its output row
            nx.n_in = _new_rows_count(oh, OH, H, SH, DH, KH, pt)
            first = _new_rows_first(oh, SH, DH, KH, pt)
            nx.in_ = &xv[(n * H + first) * W * C] if nx.n_in > 0 else NULL
            nx.out = &yv[(r + 1) * OW * C] if r + 1 < N * OH else NULL
            nx.dy = NULL
            k.forward_row(&g, rows, &wv[0], bias_ptr, &yv[r * OW * C], lo, hi, nx, rows + KH)
        cconv_ftz_restore(ftz)
    return y


# ----------------------------------------------------------------------- backward data

def depthwise_backward_data(dy, w, input_shape, stride, dilation, pad_top, pad_left,
                            n_threads=None):
    """dx (``input_shape``, NHWC) of depthwise_forward, gathered per input row from dy."""
    op = "depthwise_backward_data"
    dy = _nhwc(op, "grad_output", dy)
    try:
        shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: input_shape must be 4 ints, got {input_shape!r}") from None
    if len(shape) != 4 or min(shape) < 1 or shape[0] != dy.shape[0] or shape[3] != dy.shape[3]:
        raise ValueError(f"{op}: input_shape {input_shape!r} does not match grad_output "
                         f"{dy.shape}")
    cdef Py_ssize_t N = shape[0], H = shape[1], W = shape[2], C = shape[3]
    cdef Py_ssize_t OH = dy.shape[1], OW = dy.shape[2]
    packed, kh, kw = _weight(op, w, C)
    (sh, sw), (dh, dw) = pair(op, "stride", stride, 1), pair(op, "dilation", dilation, 1)
    cdef Py_ssize_t pt = int(pad_top), KH = kh, SH = sh, DH = dh
    cdef int nt = resolve_threads(n_threads)
    cdef cconv_dwconv_kernels k = cconv_dwconv_select(current_isa())
    cdef cconv_dw_geom g = _geom(C, W, OW, kh, kw, sw, dw, int(pad_left))

    dx = np.empty((N, H, W, C), np.float32)
    cdef const float[::1] dyv = dy.reshape(-1)
    cdef float[::1] dxv = dx.reshape(-1)
    cdef const float[::1] wv = packed.reshape(-1)
    cdef const float[::1] zero = np.zeros(OW * C, np.float32)
    cdef Py_ssize_t per_thread = KH + 2 * KH * kw
    cdef size_t[::1] scratch = np.empty(nt * per_thread, np.uintp)
    cdef Py_ssize_t r, n, ih, i, t, oh, last
    cdef int tid
    cdef unsigned ftz
    cdef const float** rows
    cdef size_t[::1] next_buf = np.zeros(nt * 4, np.uintp)
    cdef cconv_dw_next* nx
    with nogil, parallel(num_threads=nt):
        tid = threadid()
        ftz = cconv_ftz_enter()
        rows = <const float**>&scratch[tid * per_thread]
        nx = <cconv_dw_next*>&next_buf[tid * 4]
        for r in prange(N * H, schedule="static"):
            n = r // H
            ih = r - n * H
            # Tap row i reads input row ih from output row oh = (ih + pad - i*dh) / sh, when
            # that division is exact (else it never does: NULL).
            for i in range(KH):
                t = ih + pt - i * DH
                if t % SH != 0:
                    rows[i] = NULL
                else:
                    oh = t // SH
                    if oh >= 0 and oh < OH:
                        rows[i] = &dyv[(n * OH + oh) * OW * C]
                    else:
                        rows[i] = &zero[0]
            # prefetched while this row runs: the next row's new row of dy and its output row
            nx.in_ = NULL
            nx.n_in = 0
            if ih + 1 < H:
                last = _last_dy_row(ih + 1, OH, SH, DH, KH, pt)
                if last >= 0 and last > _last_dy_row(ih, OH, SH, DH, KH, pt):
                    nx.in_ = &dyv[(n * OH + last) * OW * C]
                    nx.n_in = 1
            nx.out = &dxv[(r + 1) * W * C] if r + 1 < N * H else NULL
            nx.dy = NULL
            k.backward_data_row(&g, rows, &wv[0], &dxv[r * W * C], nx, rows + KH)
        cconv_ftz_restore(ftz)
    return dx


# --------------------------------------------------------------------- backward weight

def depthwise_backward_weight(x, dy, kernel_size, stride, dilation, pad_top, pad_left,
                              n_threads=None):
    """dw (C, 1, kh, kw): dw[c, 0, i, j] = sum over batch and output pixels of x(tap i, j) * dy."""
    op = "depthwise_backward_weight"
    x = _nhwc(op, "input", x)
    dy = _nhwc(op, "grad_output", dy)
    if dy.shape[0] != x.shape[0] or dy.shape[3] != x.shape[3]:
        raise ValueError(f"{op}: grad_output {dy.shape} does not match input {x.shape}")
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t OH = dy.shape[1], OW = dy.shape[2]
    kh, kw = pair(op, "kernel_size", kernel_size, 1)
    (sh, sw), (dh, dw) = pair(op, "stride", stride, 1), pair(op, "dilation", dilation, 1)
    cdef Py_ssize_t pt = int(pad_top), KH = kh, SH = sh, DH = dh
    cdef int nt = resolve_threads(n_threads)
    cdef cconv_dwconv_kernels k = cconv_dwconv_select(current_isa())
    cdef cconv_dw_geom g = _geom(C, W, OW, kh, kw, sw, dw, int(pad_left))

    cdef Py_ssize_t[:, ::1] chunks = np.array(_weight_chunks(N * OH, KH * kw * C), np.intp)
    cdef Py_ssize_t n_parts = chunks.shape[0]

    parts = np.zeros((n_parts, KH * kw, C), np.float64)
    cdef double[::1] pv = parts.reshape(-1)
    cdef Py_ssize_t part_size = KH * kw * C
    cdef const float[::1] xv = x.reshape(-1)
    cdef const float[::1] dyv = dy.reshape(-1)
    cdef const float[::1] zero = np.zeros(W * C, np.float32)
    cdef Py_ssize_t per_thread = KH + 2 * KH * kw
    cdef size_t[::1] scratch = np.empty(nt * per_thread, np.uintp)
    cdef size_t[::1] next_buf = np.zeros(nt * 4, np.uintp)
    cdef Py_ssize_t q, r, n, oh, i, ih, first
    cdef int tid
    cdef unsigned ftz
    cdef const float** rows
    cdef cconv_dw_next* nx
    with nogil, parallel(num_threads=nt):
        tid = threadid()
        ftz = cconv_ftz_enter()
        rows = <const float**>&scratch[tid * per_thread]
        nx = <cconv_dw_next*>&next_buf[tid * 4]
        for q in prange(n_parts, schedule="static"):
            for r in range(chunks[q, 0], chunks[q, 1]):
                n = r // OH
                oh = r - n * OH
                for i in range(KH):
                    ih = oh * SH - pt + i * DH
                    if ih >= 0 and ih < H:
                        rows[i] = &xv[(n * H + ih) * W * C]
                    else:
                        rows[i] = &zero[0]
                # prefetched while this row runs: the next row's new input rows and its dy
                nx.n_in = _new_rows_count(oh, OH, H, SH, DH, KH, pt)
                first = _new_rows_first(oh, SH, DH, KH, pt)
                nx.in_ = &xv[(n * H + first) * W * C] if nx.n_in > 0 else NULL
                nx.out = NULL
                nx.dy = &dyv[(r + 1) * OW * C] if r + 1 < chunks[q, 1] else NULL
                k.backward_weight_row(&g, rows, &dyv[r * OW * C], 0, C, 0, KH,
                                      &pv[q * part_size], nx, rows + KH)
        cconv_ftz_restore(ftz)
    # the chunks' partial sums, added in chunk order
    acc = parts[0]
    for part in parts[1:]:
        acc += part
    return np.ascontiguousarray(acc.T.reshape(C, 1, KH, kw).astype(np.float32))
