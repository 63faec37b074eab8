"""Pooling: max (with argmax indices), average, sum and global average, forward and backward.

NHWC float32. The kernels (``kernels/pool/pool.h``) vectorise across the channels of a pixel; this
module checks the arguments, lays out the window geometry once per call and runs OpenMP loops:
over (batch x output rows) for the forward passes, over (batch x input rows) for the gathered
average/sum gradients, and over (batch x channel blocks) for the max-pooling gradient, which
scatters by index. Every output element is computed by one thread in a fixed order, so the
results are bitwise identical for any number of threads.

Semantics follow PyTorch (``torch.nn.functional.max_pool2d`` etc. on channels-last tensors):
output size and ``ceil_mode``, padding at most ``kernel_size // 2``, -inf padding for max
pooling (first maximum on ties, NaN propagates), the average's divisor with
``count_include_pad``. ``stride=None`` means ``stride = kernel_size``.
"""
import functools

import numpy as np

from cython.parallel cimport parallel, prange
from libc.stdint cimport int32_t

from cconv._runtime cimport ELEMENT_WORK, current_isa, resolve_threads, threads_for
from cconv._kernels cimport cconv_ftz_enter, cconv_ftz_restore

from ._validation import (as_float32, as_nhwc, check_index_range, check_workspace, nbytes_of,
                          pair, pool_output_size)

cdef extern from "pool/pool.h" nogil:
    ctypedef void (*maxpool_window_fn)(size_t, size_t, const float*, size_t, size_t, int32_t,
                                       int32_t, int32_t, size_t, float*, int32_t*) noexcept nogil
    ctypedef void (*maxpool_backward_fn)(size_t, size_t, size_t, const float*, const int32_t*,
                                         float*) noexcept nogil
    ctypedef void (*sumpool_window_fn)(size_t, size_t, const float*, size_t, size_t, size_t,
                                       float, float*) noexcept nogil
    ctypedef void (*sumpool_backward_fn)(size_t, size_t, const float*, size_t, size_t,
                                         const float*, size_t, size_t, float*) noexcept nogil
    ctypedef void (*gavgpool_backward_fn)(size_t, size_t, const float*, float,
                                          float*) noexcept nogil
    ctypedef struct cconv_pool_kernels:
        maxpool_window_fn maxpool_window
        maxpool_backward_fn maxpool_backward
        sumpool_window_fn sumpool_window
        sumpool_backward_fn sumpool_backward
        gavgpool_backward_fn gavgpool_backward
    cconv_pool_kernels cconv_pool_select(int isa)

# Channel block of one task in the max-pooling gradient and the global average: a multiple of
# every SIMD width, fixed so that the work split never depends on the thread count.
cdef enum:
    MAXPOOL_BACKWARD_BLOCK = 16
    GAVG_BLOCK = 64


# ------------------------------------------------------------------------- argument handling

cdef int _threads(op, n_threads, double elements) except -1:
    """``resolve_threads`` with the op's name in its error, and threads_for the op's work: the
    ``elements`` it reads (windows) and writes."""
    try:
        return threads_for(resolve_threads(n_threads), elements * ELEMENT_WORK)
    except ValueError as exc:
        raise ValueError(f"{op}: {exc}") from None


def _input_shape(op, input_shape):
    """``input_shape`` as a tuple of 4 positive ints (N, H, W, C)."""
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: input_shape must be 4 ints (N, H, W, C), "
                         f"got {input_shape!r}") from None
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"{op}: input_shape must be 4 positive ints (N, H, W, C), "
                         f"got {input_shape!r}")
    return shape


def _geometry(op, shape, kernel_size, stride, padding, dilation, ceil_mode):
    """kernel, stride, padding, dilation as pairs, and the output (height, width)."""
    kernel = pair(op, "kernel_size", kernel_size, minimum=1)
    stride = kernel if stride is None else pair(op, "stride", stride, minimum=1)
    padding = pair(op, "padding", padding, minimum=0)
    dilation = pair(op, "dilation", dilation, minimum=1)
    out = pool_output_size(op, shape[1:3], kernel, stride, padding, dilation, bool(ceil_mode),
                           shape)
    return kernel, stride, padding, dilation, out


def _read_only(*arrays):
    for a in arrays:
        a.flags.writeable = False
    return arrays


@functools.lru_cache(maxsize=256)   # the same few geometries over and over: kept, read-only
def _taps(size, out, k, s, p, d):
    """Along one axis, for each output position: the first valid input position of its window
    and the number of valid taps (taps that fall in the padding are left out)."""
    start = np.arange(out, dtype=np.intp) * s - p
    j_lo = np.where(start >= 0, 0, (-start + d - 1) // d)
    j_hi = np.minimum(k, (size - 1 - start) // d + 1)
    count = np.maximum(j_hi - j_lo, 0)
    first = np.where(count > 0, start + j_lo * d, 0)
    return _read_only(np.array(first, dtype=np.intp), np.array(count, dtype=np.intp))


@functools.lru_cache(maxsize=256)
def _sources(size, out, k, s, p):
    """Along one axis, for each input position: the first output position whose window holds it
    and how many consecutive ones do (dilation 1)."""
    i = np.arange(size, dtype=np.intp)
    lo = np.maximum(-((k - 1 - i - p) // s), 0)
    hi = np.minimum((i + p) // s, out - 1)
    count = np.maximum(hi - lo + 1, 0)
    lo = np.where(count > 0, lo, 0)
    return _read_only(np.array(lo, dtype=np.intp), np.array(count, dtype=np.intp))


def _divisors(size, out, k, s, p, count_include_pad):
    """Along one axis, the average's divisor factor per output position (PyTorch's rule: the
    window clipped to the padded input, or to the input without ``count_include_pad``)."""
    start = np.arange(out, dtype=np.int64) * s - p
    if count_include_pad:
        n = np.minimum(start + k, size + p) - start
    else:
        n = np.minimum(start + k, size) - np.maximum(start, 0)
    return np.maximum(n, 1)


# ---------------------------------------------------------------------------- row helpers

cdef inline void _max_row(const cconv_pool_kernels* kern, const float* x, float* y, int32_t* idx,
                          Py_ssize_t n, Py_ssize_t oh, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C,
                          Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t dh, Py_ssize_t dw,
                          const Py_ssize_t* r0, const Py_ssize_t* rc, const Py_ssize_t* c0,
                          const Py_ssize_t* cc) noexcept nogil:
    cdef Py_ssize_t ow, ih = r0[oh]
    cdef const float* xn = x + n * H * W * C
    cdef Py_ssize_t out = (n * OH + oh) * OW * C
    for ow in range(OW):
        kern.maxpool_window(<size_t>rc[oh], <size_t>cc[ow], xn + (ih * W + c0[ow]) * C,
                            <size_t>(dh * W * C), <size_t>(dw * C), <int32_t>(ih * W + c0[ow]),
                            <int32_t>(dh * W), <int32_t>dw, <size_t>C,
                            y + out + ow * C, idx + out + ow * C)


cdef inline void _sum_row(const cconv_pool_kernels* kern, const float* x, float* y,
                          const float* div, Py_ssize_t n, Py_ssize_t oh, Py_ssize_t H,
                          Py_ssize_t W, Py_ssize_t C, Py_ssize_t OH, Py_ssize_t OW,
                          const Py_ssize_t* r0, const Py_ssize_t* rc, const Py_ssize_t* c0,
                          const Py_ssize_t* cc) noexcept nogil:
    cdef Py_ssize_t ow, ih = r0[oh]
    cdef const float* xn = x + n * H * W * C
    cdef Py_ssize_t out = (n * OH + oh) * OW * C
    cdef float d = 1.0
    for ow in range(OW):
        if div != NULL:
            d = div[oh * OW + ow]
        kern.sumpool_window(<size_t>rc[oh], <size_t>cc[ow], xn + (ih * W + c0[ow]) * C,
                            <size_t>(W * C), <size_t>C, <size_t>C, d, y + out + ow * C)


cdef inline void _sum_backward_row(const cconv_pool_kernels* kern, const float* dy, float* dx,
                                   const float* div, Py_ssize_t n, Py_ssize_t ih, Py_ssize_t H,
                                   Py_ssize_t W, Py_ssize_t C, Py_ssize_t OH, Py_ssize_t OW,
                                   const Py_ssize_t* r0, const Py_ssize_t* rc,
                                   const Py_ssize_t* c0, const Py_ssize_t* cc) noexcept nogil:
    cdef Py_ssize_t iw, oh = r0[ih]
    cdef const float* dyn = dy + n * OH * OW * C
    cdef const float* dv = NULL
    cdef Py_ssize_t out = (n * H + ih) * W * C
    for iw in range(W):
        if div != NULL:
            dv = div + oh * OW + c0[iw]
        kern.sumpool_backward(<size_t>rc[ih], <size_t>cc[iw], dyn + (oh * OW + c0[iw]) * C,
                              <size_t>(OW * C), <size_t>C, dv, <size_t>OW, <size_t>C,
                              dx + out + iw * C)


# ---------------------------------------------------------------------------- max pooling

def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               n_threads=None):
    """Max pooling of NHWC ``x``; returns ``(y, indices)``.

    ``indices`` (int32, NHWC like ``y``) holds for each output element the flat index
    ``ih * W + iw`` of the chosen input pixel; -1 where a (dilated) window holds no input pixel
    at all (then y is -inf). Padding acts as -inf; ties take the first maximum in row-major
    window order; NaN propagates (the last NaN of a window, as in PyTorch).
    """
    op = "max_pool2d"
    x = as_nhwc(op, "x", x)
    N, H, W, C = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (OH, OW) = _geometry(
        op, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    # Indices are int32: the pixel index ih * W + iw and the window's row step dh * W.
    check_index_range(op, "height x width (+ width)", (H + 1) * W, x.shape)
    cdef int nt = _threads(op, n_threads, N * OH * OW * C * (kh * kw + 2.0))
    check_workspace(op, nbytes_of((N, OH, OW, C), 8) + nbytes_of((2, OH + OW), 16))
    r0, rc = _taps(H, OH, kh, sh, ph, dh)
    c0, cc = _taps(W, OW, kw, sw, pw, dw)
    y = np.empty((N, OH, OW, C), dtype=np.float32)
    indices = np.empty((N, OH, OW, C), dtype=np.int32)

    cdef const float[:, :, :, ::1] xv = x
    cdef float[:, :, :, ::1] yv = y
    cdef int32_t[:, :, :, ::1] iv = indices
    cdef const Py_ssize_t[::1] r0v = r0, rcv = rc, c0v = c0, ccv = cc
    cdef cconv_pool_kernels kern = cconv_pool_select(current_isa())
    cdef Py_ssize_t t, total = N * OH
    # A window of one tap reads one pixel whatever its dilation: pass 1 so that the step the
    # kernel never takes cannot overflow either.
    cdef Py_ssize_t H_ = H, W_ = W, C_ = C, OH_ = OH, OW_ = OW
    cdef Py_ssize_t dh_ = dh if kh > 1 else 1, dw_ = dw if kw > 1 else 1
    # A pure selection: no arithmetic, so no denormal flushing either (values are copied as is).
    for t in prange(total, nogil=True, num_threads=nt, schedule="static"):
        _max_row(&kern, &xv[0, 0, 0, 0], &yv[0, 0, 0, 0], &iv[0, 0, 0, 0], t // OH_, t % OH_,
                 H_, W_, C_, OH_, OW_, dh_, dw_, &r0v[0], &rcv[0], &c0v[0], &ccv[0])
    return y, indices


def max_pool2d_backward(dy, indices, input_shape, n_threads=None):
    """Gradient of :func:`max_pool2d`: each ``dy`` element goes to the input pixel its index names
    (overlapping windows accumulate; index -1 contributes nothing). Returns ``dx`` of
    ``input_shape`` (N, H, W, C)."""
    op = "max_pool2d_backward"
    shape = _input_shape(op, input_shape)
    N, H, W, C = shape
    check_index_range(op, "height x width of input_shape", H * W, shape)
    dy = as_nhwc(op, "dy", dy)
    idx = np.asarray(indices)
    if idx.shape != dy.shape:
        raise ValueError(f"{op}: indices must have the shape of dy {dy.shape}, got {idx.shape}")
    if idx.dtype.kind not in "iu":
        raise ValueError(f"{op}: indices must be integers, got dtype {idx.dtype}")
    if dy.shape[0] != N or dy.shape[3] != C:
        raise ValueError(f"{op}: dy shape {dy.shape} does not match input_shape {shape} "
                         f"(batch and channels must agree)")
    lo, hi = int(idx.min()), int(idx.max())
    if lo < -1 or hi >= H * W:
        raise ValueError(f"{op}: indices must lie in [-1, {H * W}) for input_shape {shape}, "
                         f"got values in [{lo}, {hi}]")
    if idx.dtype != np.int32 or not idx.flags.c_contiguous:
        check_workspace(op, nbytes_of(idx.shape), f"converting indices {idx.shape} to int32")
    idx = np.ascontiguousarray(idx, dtype=np.int32)
    cdef int nt = _threads(op, n_threads, 2.0 * dy.size + N * H * W * C)
    check_workspace(op, nbytes_of(shape))
    dx = np.zeros(shape, dtype=np.float32)

    cdef const float[:, :, :, ::1] gv = dy
    cdef const int32_t[:, :, :, ::1] iv = idx
    cdef float[:, :, :, ::1] dxv = dx
    cdef cconv_pool_kernels kern = cconv_pool_select(current_isa())
    cdef Py_ssize_t C_ = C, pixels = dy.shape[1] * dy.shape[2], image = H * W * C
    cdef Py_ssize_t blocks = (C + MAXPOOL_BACKWARD_BLOCK - 1) // MAXPOOL_BACKWARD_BLOCK
    cdef Py_ssize_t t, n, c, total = N * blocks
    cdef unsigned ftz = 0
    with nogil, parallel(num_threads=nt):
        ftz = cconv_ftz_enter()
        for t in prange(total, schedule="static"):
            n = t // blocks
            c = (t % blocks) * MAXPOOL_BACKWARD_BLOCK
            kern.maxpool_backward(<size_t>pixels, <size_t>min(MAXPOOL_BACKWARD_BLOCK, C_ - c),
                                  <size_t>C_, &gv[n, 0, 0, c], &iv[n, 0, 0, c],
                                  &dxv[0, 0, 0, 0] + n * image + c)
        cconv_ftz_restore(ftz)
    return dx


# -------------------------------------------------------------------- sum / average pooling

def _sum_pool_forward(op, x, kernel_size, stride, padding, ceil_mode, average, count_include_pad,
                      n_threads):
    x = as_nhwc(op, "x", x)
    N, H, W, C = x.shape
    (kh, kw), (sh, sw), (ph, pw), _, (OH, OW) = _geometry(
        op, x.shape, kernel_size, stride, padding, 1, ceil_mode)
    cdef int nt = _threads(op, n_threads, N * OH * OW * C * (kh * kw + 1.0))
    check_workspace(op, nbytes_of((N, OH, OW, C)) + nbytes_of((OH, OW), 4 if average else 0)
                    + nbytes_of((2, OH + OW), 16))
    r0, rc = _taps(H, OH, kh, sh, ph, 1)
    c0, cc = _taps(W, OW, kw, sw, pw, 1)
    div = None
    if average:
        div = np.ascontiguousarray(np.multiply.outer(
            _divisors(H, OH, kh, sh, ph, count_include_pad),
            _divisors(W, OW, kw, sw, pw, count_include_pad)), dtype=np.float32)
    y = np.empty((N, OH, OW, C), dtype=np.float32)

    cdef const float[:, :, :, ::1] xv = x
    cdef float[:, :, :, ::1] yv = y
    cdef const float[:, ::1] divv
    cdef const float* divp = NULL
    if div is not None:
        divv = div
        divp = &divv[0, 0]
    cdef const Py_ssize_t[::1] r0v = r0, rcv = rc, c0v = c0, ccv = cc
    cdef cconv_pool_kernels kern = cconv_pool_select(current_isa())
    cdef Py_ssize_t t, total = N * OH
    cdef Py_ssize_t H_ = H, W_ = W, C_ = C, OH_ = OH, OW_ = OW
    cdef unsigned ftz = 0
    with nogil, parallel(num_threads=nt):
        ftz = cconv_ftz_enter()
        for t in prange(total, schedule="static"):
            _sum_row(&kern, &xv[0, 0, 0, 0], &yv[0, 0, 0, 0], divp, t // OH_, t % OH_, H_, W_,
                     C_, OH_, OW_, &r0v[0], &rcv[0], &c0v[0], &ccv[0])
        cconv_ftz_restore(ftz)
    return y


def _sum_pool_backward(op, dy, input_shape, kernel_size, stride, padding, ceil_mode, average,
                       count_include_pad, n_threads):
    shape = _input_shape(op, input_shape)
    N, H, W, C = shape
    (kh, kw), (sh, sw), (ph, pw), _, (OH, OW) = _geometry(
        op, shape, kernel_size, stride, padding, 1, ceil_mode)
    dy = as_nhwc(op, "dy", dy)
    if dy.shape != (N, OH, OW, C):
        raise ValueError(f"{op}: dy must have shape {(N, OH, OW, C)} for input_shape {shape}, "
                         f"got {dy.shape}")
    cdef int nt = _threads(op, n_threads, N * H * W * C * (kh * kw + 1.0))
    check_workspace(op, nbytes_of(shape) + nbytes_of((OH, OW), 4 if average else 0)
                    + nbytes_of((2, H + W), 16))
    r0, rc = _sources(H, OH, kh, sh, ph)
    c0, cc = _sources(W, OW, kw, sw, pw)
    div = None
    if average:
        div = np.ascontiguousarray(np.multiply.outer(
            _divisors(H, OH, kh, sh, ph, count_include_pad),
            _divisors(W, OW, kw, sw, pw, count_include_pad)), dtype=np.float32)
    dx = np.empty(shape, dtype=np.float32)

    cdef const float[:, :, :, ::1] gv = dy
    cdef float[:, :, :, ::1] dxv = dx
    cdef const float[:, ::1] divv
    cdef const float* divp = NULL
    if div is not None:
        divv = div
        divp = &divv[0, 0]
    cdef const Py_ssize_t[::1] r0v = r0, rcv = rc, c0v = c0, ccv = cc
    cdef cconv_pool_kernels kern = cconv_pool_select(current_isa())
    cdef Py_ssize_t t, total = N * H
    cdef Py_ssize_t H_ = H, W_ = W, C_ = C, OH_ = OH, OW_ = OW
    cdef unsigned ftz = 0
    with nogil, parallel(num_threads=nt):
        ftz = cconv_ftz_enter()
        for t in prange(total, schedule="static"):
            _sum_backward_row(&kern, &gv[0, 0, 0, 0], &dxv[0, 0, 0, 0], divp, t // H_, t % H_,
                              H_, W_, C_, OH_, OW_, &r0v[0], &rcv[0], &c0v[0], &ccv[0])
        cconv_ftz_restore(ftz)
    return dx


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               n_threads=None):
    """Average pooling of NHWC ``x`` (zero padding). The divisor is PyTorch's: the window clipped
    to the padded input (``count_include_pad=True``) or to the input itself."""
    return _sum_pool_forward("avg_pool2d", x, kernel_size, stride, padding, ceil_mode, True,
                             bool(count_include_pad), n_threads)


def avg_pool2d_backward(dy, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, n_threads=None):
    """Gradient of :func:`avg_pool2d`; returns ``dx`` of ``input_shape`` (N, H, W, C)."""
    return _sum_pool_backward("avg_pool2d_backward", dy, input_shape, kernel_size, stride,
                              padding, ceil_mode, True, bool(count_include_pad), n_threads)


def sum_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, n_threads=None):
    """Sum pooling of NHWC ``x`` (zero padding): the window's sum, no divisor."""
    return _sum_pool_forward("sum_pool2d", x, kernel_size, stride, padding, ceil_mode, False,
                             True, n_threads)


def sum_pool2d_backward(dy, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        n_threads=None):
    """Gradient of :func:`sum_pool2d`; returns ``dx`` of ``input_shape`` (N, H, W, C)."""
    return _sum_pool_backward("sum_pool2d_backward", dy, input_shape, kernel_size, stride,
                              padding, ceil_mode, False, True, n_threads)


# ------------------------------------------------------------------- global average pooling

def global_avg_pool2d(x, n_threads=None):
    """Mean over height and width of NHWC ``x``: returns (N, C)."""
    op = "global_avg_pool2d"
    x = as_nhwc(op, "x", x)
    N, H, W, C = x.shape
    cdef int nt = _threads(op, n_threads, x.size)
    check_workspace(op, nbytes_of((N, C)))
    y = np.empty((N, C), dtype=np.float32)

    cdef const float[:, :, :, ::1] xv = x
    cdef float[:, ::1] yv = y
    cdef cconv_pool_kernels kern = cconv_pool_select(current_isa())
    cdef Py_ssize_t H_ = H, W_ = W, C_ = C
    cdef Py_ssize_t blocks = (C + GAVG_BLOCK - 1) // GAVG_BLOCK
    cdef Py_ssize_t t, n, c, total = N * blocks
    cdef float d = <float>(H * W)
    cdef unsigned ftz = 0
    with nogil, parallel(num_threads=nt):
        ftz = cconv_ftz_enter()
        for t in prange(total, schedule="static"):
            n = t // blocks
            c = (t % blocks) * GAVG_BLOCK
            # One window covering the image: each row summed, the row sums added in order.
            kern.sumpool_window(<size_t>H_, <size_t>W_, &xv[n, 0, 0, c], <size_t>(W_ * C_),
                                <size_t>C_, <size_t>min(GAVG_BLOCK, C_ - c), d, &yv[n, c])
        cconv_ftz_restore(ftz)
    return y


def global_avg_pool2d_backward(dy, input_shape, n_threads=None):
    """Gradient of :func:`global_avg_pool2d`: ``dy`` (N, C) spread evenly over every pixel of
    ``input_shape`` (N, H, W, C)."""
    op = "global_avg_pool2d_backward"
    shape = _input_shape(op, input_shape)
    N, H, W, C = shape
    dy = as_float32(op, "dy", dy, ndim=2)
    if dy.shape != (N, C):
        raise ValueError(f"{op}: dy must have shape {(N, C)} for input_shape {shape}, "
                         f"got {dy.shape}")
    cdef int nt = _threads(op, n_threads, N * H * W * C)
    check_workspace(op, nbytes_of(shape))
    dx = np.empty(shape, dtype=np.float32)

    cdef const float[:, ::1] gv = dy
    cdef float[:, :, :, ::1] dxv = dx
    cdef cconv_pool_kernels kern = cconv_pool_select(current_isa())
    cdef Py_ssize_t H_ = H, W_ = W, C_ = C
    cdef Py_ssize_t t, n, total = N * H
    cdef float d = <float>(H * W)
    cdef unsigned ftz = 0
    with nogil, parallel(num_threads=nt):
        ftz = cconv_ftz_enter()
        for t in prange(total, schedule="static"):
            n = t // H_
            kern.gavgpool_backward(<size_t>W_, <size_t>C_, &gv[n, 0], d,
                                   &dxv[n, t % H_, 0, 0])
        cconv_ftz_restore(ftz)
    return dx
