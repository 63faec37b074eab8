"""Upsampling (resizing) of NHWC images: nearest and bilinear, forward and backward.

Semantics are PyTorch's (``torch.nn.functional.interpolate`` with ``mode='nearest'`` or
``mode='bilinear'``, given an output size), its coordinate arithmetic included: the source
index and weights are computed in float32 as PyTorch computes them, so that the nearest
neighbour picked is the one PyTorch picks also where float32 rounding moves it off
floor(dst * in / out).

- nearest: src = min(floor(dst * s), in - 1), s = float32(in) / float32(out) (dst itself when
  out == in, dst // 2 when out == 2 in);
- bilinear, ``align_corners=False``: src = max((dst + 0.5) * in / out - 0.5, 0);
  ``align_corners=True``: src = dst * (in - 1) / (out - 1) (0 when out == 1); the two neighbours
  floor(src) and the next one (clamped to the image) weighted 1 - l and l, l = src - floor(src).

Both are separable: the tables map each output row (column) to at most two weighted input rows
(columns). The forward passes gather per output row (a weighted sum of input rows, then of
pixels of that row), the backward passes per input row with the transposed tables, so every
element is summed by one thread in a fixed order: no scatter, no atomics, the same bits for any
thread count. The kernel (``kernels/upsample/upsample.h``) is a plain C loop over the contiguous axis
compiled per ISA and auto-vectorised; the passes are bound by memory, not arithmetic.
"""
import functools

import numpy as np

from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int32_t

from cconv._runtime cimport ELEMENT_WORK, current_isa, data_ptr, resolve_threads, threads_for
from cconv._kernels cimport cconv_ftz_enter, cconv_ftz_restore

from ._validation import as_nhwc, check_index_range, check_workspace, nbytes_of, pair

ctypedef void (*gather_fn)(size_t count, size_t len, const int32_t* offsets,
                           const int32_t* index, const float* weight, const float* src,
                           size_t stride, float* dst) noexcept nogil

cdef extern from "upsample/upsample.h" nogil:
    cdef struct cconv_upsample_kernels:
        gather_fn gather
    cconv_upsample_kernels cconv_upsample_select(int isa)


# ------------------------------------------------------------------------------------- tables

def _read_only(*arrays):
    for a in arrays:
        a.flags.writeable = False
    return arrays


def _csr(n_dst, dst, src, weight):
    """(offsets, index, weight) of the sparse map dst <- sum weight * src, entries of a row in
    the order given (stable sort by dst); zero weights left out (0 * Inf would make NaN)."""
    dst = np.asarray(dst, dtype=np.int64)
    src = np.asarray(src, dtype=np.int64)
    weight = np.asarray(weight, dtype=np.float32)
    keep = weight != 0
    dst, src, weight = dst[keep], src[keep], weight[keep]
    order = np.argsort(dst, kind="stable")
    dst, src, weight = dst[order], src[order], weight[order]
    offsets = np.zeros(n_dst + 1, dtype=np.int32)
    np.cumsum(np.bincount(dst, minlength=n_dst), out=offsets[1:])
    return _read_only(offsets, np.ascontiguousarray(src, dtype=np.int32),
                      np.ascontiguousarray(weight, dtype=np.float32))


def nearest_source_index(in_size, out_size):
    """PyTorch's nearest-neighbour source index of every output position along one axis
    (``nearest_idx``), in float32 as PyTorch computes it."""
    dst = np.arange(out_size, dtype=np.int64)
    if out_size == in_size:
        return dst
    if out_size == 2 * in_size:
        return dst >> 1
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.floor(dst.astype(np.float32) * scale).astype(np.int64)
    return np.minimum(src, in_size - 1)


def linear_source_weights(in_size, out_size, align_corners):
    """PyTorch's linear-interpolation (i0, i1, l0, l1) of every output position along one axis
    (``compute_source_index_and_lambda``), in float32 as PyTorch computes them."""
    dst = np.arange(out_size, dtype=np.int64)
    if out_size == in_size:
        return dst, dst.copy(), np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
    f = np.float32
    d = dst.astype(np.float32)
    if align_corners:
        scale = f(in_size - 1) / f(out_size - 1) if out_size > 1 else f(0)
        real = scale * d
    else:
        scale = f(in_size) / f(out_size)
        real = np.maximum(scale * (d + f(0.5)) - f(0.5), f(0))
    i0 = np.minimum(np.floor(real).astype(np.int64), in_size - 1)
    l1 = np.minimum(np.maximum(real - i0.astype(np.float32), f(0)), f(1)).astype(np.float32)
    i1 = i0 + (i0 < in_size - 1)
    l0 = (f(1) - l1).astype(np.float32)
    return i0, i1, l0, l1


@functools.lru_cache(maxsize=256)
def _tables(in_size, out_size, mode, align_corners):
    """Forward (per output position) and backward (per input position) gather tables of one
    axis, read-only and kept: the same few geometries come back call after call."""
    if mode == "nearest":
        src = nearest_source_index(in_size, out_size)
        dst = np.arange(out_size)
        weight = np.ones(out_size, dtype=np.float32)
    else:
        i0, i1, l0, l1 = linear_source_weights(in_size, out_size, align_corners)
        dst = np.concatenate([np.arange(out_size), np.arange(out_size)])
        # entries interleaved per output position: (i0, l0) before (i1, l1), PyTorch's order
        order = np.argsort(dst, kind="stable")
        dst = dst[order]
        src = np.concatenate([i0, i1])[order]
        weight = np.concatenate([l0, l1])[order]
    forward = _csr(out_size, dst, src, weight)
    backward = _csr(in_size, src, dst, weight)   # transposed: per input position, by output
    return forward, backward


# --------------------------------------------------------------------------- argument handling

cdef int _threads(op, n_threads, double elements) except -1:
    try:
        return threads_for(resolve_threads(n_threads), elements * ELEMENT_WORK)
    except ValueError as exc:
        raise ValueError(f"{op}: {exc}") from None


def _out_size(op, out_size):
    return pair(op, "out_size", out_size, minimum=1)


def _in_size(op, in_size, dy_shape):
    """in_size as (H, W); a 4-tuple (N, H, W, C) is accepted too when N and C match dy."""
    try:
        size = tuple(int(s) for s in in_size)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: in_size must be (H, W) or (N, H, W, C), got {in_size!r}") from None
    if len(size) == 4:
        if (size[0], size[3]) != (dy_shape[0], dy_shape[3]):
            raise ValueError(f"{op}: in_size {size} does not match dy of shape {dy_shape} "
                             f"(batch and channels must agree)")
        size = size[1:3]
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{op}: in_size must be 2 positive ints (H, W) or (N, H, W, C), "
                         f"got {in_size!r}")
    return pair(op, "in_size", size, minimum=1)


cdef inline float* fptr(arr) except? NULL:
    return <float*>data_ptr(arr)


cdef inline int32_t* iptr(arr) except? NULL:
    return <int32_t*>data_ptr(arr)


# ----------------------------------------------------------------------------------- the passes

cdef _resample(op, src, Py_ssize_t OH, Py_ssize_t OW, tuple rows, tuple cols, n_threads):
    """dst[n, i] = sum_k rows.w[k] * (sum_q cols.w[q] * src[n, rows.idx[k], cols.idx[q]]):
    per destination row (n, i): the weighted sum of source rows into a per-thread row buffer
    (skipped when it is one source row of weight 1), then the weighted sums of its pixels."""
    N, H, W, C = src.shape
    check_index_range(op, "the source height, width or channels", max(H, W, OH, OW) * 2)
    cdef int nt = _threads(op, n_threads, N * OH * (W * C * 2.0 + OW * C * 3.0))
    check_workspace(op, nbytes_of((N, OH, OW, C)) + nbytes_of((nt, W, C))
                    + 12 * (OH + OW + H + W + 2) * 2)
    dst = np.empty((N, OH, OW, C), dtype=np.float32)
    buf = np.empty((nt, W * C), dtype=np.float32)
    r_off, r_idx, r_w = rows
    c_off, c_idx, c_w = cols
    cdef gather_fn gather = cconv_upsample_select(current_isa()).gather
    cdef const float* sp = fptr(src)
    cdef float* dp = fptr(dst)
    cdef float* bp = fptr(buf)
    cdef const int32_t* ro = iptr(r_off)
    cdef const int32_t* ri = iptr(r_idx)
    cdef const float* rw = fptr(r_w)
    cdef const int32_t* co = iptr(c_off)
    cdef const int32_t* ci = iptr(c_idx)
    cdef const float* cw = fptr(c_w)
    cdef Py_ssize_t H_ = H, W_ = W, C_ = C, OH_ = OH, OW_ = OW
    cdef Py_ssize_t src_row = W * C, dst_row = OW * C, image = H * W * C
    cdef Py_ssize_t t, n, i, k0
    cdef const float* row
    cdef float* mine
    cdef Py_ssize_t total = N * OH
    cdef unsigned ftz = 0
    with nogil, parallel(num_threads=nt):
        ftz = cconv_ftz_enter()
        mine = bp + threadid() * src_row
        for t in prange(total, schedule="static"):
            n = t // OH_
            i = t % OH_
            k0 = ro[i]
            if ro[i + 1] - k0 == 1 and rw[k0] == 1.0:
                row = sp + n * image + ri[k0] * src_row
            else:
                gather(1, <size_t>src_row, ro + i, ri, rw, sp + n * image, <size_t>src_row, mine)
                row = mine
            gather(<size_t>OW_, <size_t>C_, co, ci, cw, row, <size_t>C_, dp + t * dst_row)
        cconv_ftz_restore(ftz)
    return dst


def _forward(op, x, out_size, mode, align_corners, n_threads):
    x = as_nhwc(op, "x", x)
    OH, OW = _out_size(op, out_size)
    N, H, W, C = x.shape
    rows = _tables(H, OH, mode, align_corners)[0]
    cols = _tables(W, OW, mode, align_corners)[0]
    return _resample(op, x, OH, OW, rows, cols, n_threads)


def _backward(op, dy, in_size, mode, align_corners, n_threads):
    dy = as_nhwc(op, "dy", dy)
    H, W = _in_size(op, in_size, dy.shape)
    N, OH, OW, C = dy.shape
    rows = _tables(H, OH, mode, align_corners)[1]
    cols = _tables(W, OW, mode, align_corners)[1]
    return _resample(op, dy, H, W, rows, cols, n_threads)


def upsample_nearest2d(x, out_size, n_threads=None):
    """Nearest-neighbour resize of NHWC ``x`` (N, H, W, C) to ``out_size`` (Ho, Wo) (an int for
    both), PyTorch's ``mode='nearest'`` index rule; any sizes >= 1 (shrinking too). Returns
    (N, Ho, Wo, C)."""
    return _forward("upsample_nearest2d", x, out_size, "nearest", False, n_threads)


def upsample_nearest2d_backward(dy, in_size, n_threads=None):
    """Gradient of :func:`upsample_nearest2d`: ``dy`` (N, Ho, Wo, C) summed back onto the input
    pixels each output pixel copied. ``in_size``: the input's (H, W) (or its (N, H, W, C)).
    Returns dx (N, H, W, C)."""
    return _backward("upsample_nearest2d_backward", dy, in_size, "nearest", False, n_threads)


def upsample_bilinear2d(x, out_size, align_corners=False, n_threads=None):
    """Bilinear resize of NHWC ``x`` (N, H, W, C) to ``out_size`` (Ho, Wo) (an int for both),
    PyTorch's ``mode='bilinear'`` coordinates for either ``align_corners``. Returns
    (N, Ho, Wo, C)."""
    return _forward("upsample_bilinear2d", x, out_size, "bilinear", bool(align_corners),
                    n_threads)


def upsample_bilinear2d_backward(dy, in_size, align_corners=False, n_threads=None):
    """Gradient of :func:`upsample_bilinear2d`; ``in_size`` the input's (H, W) (or its
    (N, H, W, C)). Returns dx (N, H, W, C)."""
    return _backward("upsample_bilinear2d_backward", dy, in_size, "bilinear",
                     bool(align_corners), n_threads)
