"""Batch normalisation over every axis but the last (NHWC, or (N, C)): forward (training and
evaluation) and the training-mode backward through the batch statistics.

The rows (all leading axes flattened) are split into chunks of ``rows_per_chunk(C)`` rows, a
number that depends on the channel count only. Each chunk's sums are taken in float64 by one
thread; the chunks are then combined in chunk order, so the statistics and the parameter
gradients are bitwise identical for any thread count. The variance is taken in two passes within
a chunk and the chunks are merged with Chan et al.'s pairwise update, never as E[x^2] - E[x]^2.
"""
import math

import numpy as np

from libc.math cimport INFINITY
from libc.string cimport memset

from cconv._runtime cimport (ELEMENT_WORK, current_isa, data_ptr, resolve_threads,
                             run_chunks, threads_for)
from cconv._validation import as_float32, check_finite, check_shape, check_workspace, nbytes_of

ctypedef void (*stats_fn)(size_t rows, size_t c, const float* x, double* mean,
                          double* m2) noexcept nogil
ctypedef void (*apply_fn)(size_t rows, size_t c, const float* x, const float* mean_hi,
                          const float* mean_lo, const float* scale, const float* shift,
                          const float* residual, float lo, float* y) noexcept nogil
ctypedef void (*reduce_fn)(size_t rows, size_t c, const float* dy, const float* x,
                           const float* y, const float* mean, double* sum_dy,
                           double* sum_dy_xmu) noexcept nogil
ctypedef void (*dx_fn)(size_t rows, size_t c, const float* dy, const float* x, const float* y,
                       const float* mean, const double* a, const double* b, const double* k,
                       float* dx) noexcept nogil
ctypedef void (*dx_f32_fn)(size_t rows, size_t c, const float* dy, const float* x, const float* y,
                           const float* mean, const float* a, const float* b, const float* k,
                           float* dx) noexcept nogil

cdef extern from "batchnorm/batchnorm.h" nogil:
    cdef struct cconv_batchnorm_kernels:
        stats_fn stats
        apply_fn apply
        reduce_fn backward_reduce
        dx_fn backward_dx
        dx_f32_fn backward_dx_f32
    cconv_batchnorm_kernels cconv_batchnorm_select(int isa)

# Elements per chunk (64 KiB of float32); at least MIN_ROWS rows so that the per-chunk float64
# partials stay small next to the data when there are many channels.
cdef enum:
    CHUNK = 16384
    MIN_ROWS = 8
# The backward's dx in float32 from this many rows per channel on. With few rows its three terms
# can be far larger than their sum (two rows: dx vanishes), which float64 keeps exact enough;
# with many, the means in the last two terms are small next to dy, and float32 is as accurate.
cdef enum:
    DX_F32_MIN_ROWS = 1024

cdef enum Kind:
    STATS, APPLY, REDUCE, DX, DX_F32

cdef struct Job:
    Kind kind
    Py_ssize_t rows, c, rpc
    const float* x
    const float* dy
    const float* relu_y  # output of a fused ReLU (backward: dy is masked by relu_y > 0) or NULL
    float lo             # apply's clamp: -inf, or 0 for a fused ReLU
    const float* res     # apply: a residual added before the clamp, or NULL
    float* y
    double* part0      # (chunks, c) float64 partials
    double* part1
    const float* p0    # (c,) float32 per-channel parameters
    const float* p1
    const float* p2
    const float* p3
    const double* d0   # (c,) float64 per-channel coefficients
    const double* d1
    const double* d2
    const float* f0    # (c,) the same in float32 (DX_F32)
    const float* f1
    const float* f2
    cconv_batchnorm_kernels k


def rows_per_chunk(Py_ssize_t c):
    """Rows in one chunk for ``c`` channels (a function of the channel count only)."""
    return max(MIN_ROWS, CHUNK // c)


cdef void run_one(const void* job, Py_ssize_t i, Py_ssize_t r0, Py_ssize_t n) noexcept nogil:
    """Chunk i: rows [r0, r0 + n) (a chunk_fn of _runtime.run_chunks)."""
    cdef const Job* j = <const Job*>job
    cdef Py_ssize_t o = r0 * j.c
    if j.kind == STATS:
        j.k.stats(n, j.c, j.x + o, j.part0 + i * j.c, j.part1 + i * j.c)
    elif j.kind == APPLY:
        j.k.apply(n, j.c, j.x + o, j.p0, j.p1, j.p2, j.p3, j.res + o if j.res else NULL, j.lo,
                  j.y + o)
    elif j.kind == REDUCE:
        j.k.backward_reduce(n, j.c, j.dy + o, j.x + o, j.relu_y + o if j.relu_y else NULL,
                            j.p0, j.part0 + i * j.c, j.part1 + i * j.c)
    elif j.kind == DX:
        j.k.backward_dx(n, j.c, j.dy + o, j.x + o, j.relu_y + o if j.relu_y else NULL, j.p0,
                        j.d0, j.d1, j.d2, j.y + o)
    elif j.kind == DX_F32:
        j.k.backward_dx_f32(n, j.c, j.dy + o, j.x + o, j.relu_y + o if j.relu_y else NULL, j.p0,
                            j.f0, j.f1, j.f2, j.y + o)


cdef _go(Job* job, n_threads):
    cdef int nt = threads_for(resolve_threads(n_threads), <double>job.rows * job.c * ELEMENT_WORK)
    with nogil:
        run_chunks(run_one, job, job.rows, job.rpc, nt)


cdef inline const float* fptr(arr) except? NULL:
    return <const float*>data_ptr(arr)


cdef inline double* dptr(arr) except? NULL:
    return <double*>data_ptr(arr)


def _activation(op, name, x):
    """x as contiguous float32 with at least 2 dimensions (rows..., channels), none empty."""
    a = as_float32(op, name, x)
    if a.ndim < 2:
        raise ValueError(f"{op}: {name} must have at least 2 dimensions (batch, ..., channels), "
                         f"got shape {a.shape}")
    if 0 in a.shape:
        raise ValueError(f"{op}: {name} has an empty dimension, shape {a.shape}")
    return a


def _channel(op, name, value, c, nonnegative=False):
    v = as_float32(op, name, value)
    check_shape(op, name, v, (c,))
    check_finite(op, name, v)
    if nonnegative and (v < 0).any():
        raise ValueError(f"{op}: {name} must be >= 0 (shape {v.shape})")
    return v


def _residual(op, residual, a):
    """None, or the residual as contiguous float32 of x's shape."""
    if residual is None:
        return None
    r = as_float32(op, "residual", residual)
    if r.shape != a.shape:
        raise ValueError(f"{op}: residual {r.shape} and x {a.shape} must have the same shape")
    return r


def _eps(op, eps):
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: eps must be a positive number, got {eps!r}") from None
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{op}: eps must be a positive finite number, got {eps!r}")
    return value


_ACTIVATIONS = {None: -INFINITY, "relu": 0.0}


def _clamp(op, activation):
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{op}: activation must be None or 'relu', got {activation!r}")
    return _ACTIVATIONS[activation]


cdef Job _job(Kind kind, a):
    cdef Job job
    memset(&job, 0, sizeof(Job))
    job.kind = kind
    job.lo = -INFINITY
    job.c = a.shape[a.ndim - 1]
    job.rows = a.size // job.c
    job.rpc = rows_per_chunk(job.c)
    job.k = cconv_batchnorm_select(current_isa())
    job.x = fptr(a)
    return job


def batch_norm_forward_train(x, weight, bias, eps=1e-5, activation=None, residual=None,
                             n_threads=None):
    """Normalise with the batch statistics: returns (y, mean, var), float32.

    mean and var are per channel over every axis but the last; var is the biased batch variance
    (the layer derives its running variance, the unbiased one, from it). activation='relu'
    fuses a ReLU into the store (pass y to batch_norm_backward for its backward). residual: an
    array of x's shape added to the result before the activation, in the same pass (a residual
    block's join: y = relu(bn(x) + residual); the ReLU's backward is then the caller's).
    """
    op = "batch_norm_forward_train"
    lo = _clamp(op, activation)
    a = _activation(op, "x", x)
    r = _residual(op, residual, a)
    cdef Py_ssize_t c = a.shape[a.ndim - 1]
    w = _channel(op, "weight", weight, c)
    b = _channel(op, "bias", bias, c)
    e = _eps(op, eps)
    cdef Job job = _job(STATS, a)
    if job.rows < 2:
        raise ValueError(f"{op}: expected more than 1 value per channel when training, got "
                         f"input shape {a.shape}")
    cdef Py_ssize_t nchunks = (job.rows + job.rpc - 1) // job.rpc
    check_workspace(op, nbytes_of(a.shape) + nbytes_of((2, nchunks, c), 8))
    part_mean = np.empty((nchunks, c), dtype=np.float64)
    part_m2 = np.empty((nchunks, c), dtype=np.float64)
    job.part0 = dptr(part_mean)
    job.part1 = dptr(part_m2)
    _go(&job, n_threads)

    # Chan, Golub, LeVeque: merge (count, mean, M2) of the chunks one after the other.
    mean = np.empty(c, dtype=np.float64)
    m2 = np.empty(c, dtype=np.float64)
    cdef double[:, ::1] pm = part_mean
    cdef double[:, ::1] pv = part_m2
    cdef double[::1] vm = mean
    cdef double[::1] vv = m2
    cdef Py_ssize_t i, ch, rpc = job.rpc, rows = job.rows
    cdef double na, nb, n, delta
    with nogil:
        for ch in range(c):
            vm[ch] = pm[0, ch]
            vv[ch] = pv[0, ch]
        na = <double>min(rpc, rows)
        for i in range(1, nchunks):
            nb = <double>min(rpc, rows - i * rpc)
            n = na + nb
            for ch in range(c):
                delta = pm[i, ch] - vm[ch]
                vm[ch] = vm[ch] + delta * (nb / n)
                vv[ch] = vv[ch] + pv[i, ch] + delta * delta * (na * nb / n)
            na = n
    # A chunk holding Inf or NaN has a non-finite mean, and the pairwise update would turn an
    # infinite mean into NaN (inf - inf): take the plain weighted mean of the chunks there.
    bad = ~np.isfinite(part_mean).all(axis=0)
    if bad.any():
        counts = np.minimum(rpc, rows - np.arange(nchunks) * rpc).astype(np.float64)
        with np.errstate(invalid="ignore"):
            mean[bad] = (part_mean[:, bad] * counts[:, None]).sum(axis=0) / rows
        m2[bad] = np.nan
    with np.errstate(all="ignore"):   # NaN or Inf in x: NaN statistics, quietly
        var = m2 / rows
        invstd = 1.0 / np.sqrt(var + e)
        mean_hi = mean.astype(np.float32)
        mean_lo = (mean - mean_hi).astype(np.float32)
        scale = (w * invstd).astype(np.float32)

    y = np.empty(a.shape, dtype=np.float32)
    job.kind = APPLY
    job.lo = lo
    job.res = fptr(r) if r is not None else NULL
    job.y = <float*>fptr(y)
    job.p0 = fptr(mean_hi)
    job.p1 = fptr(mean_lo)
    job.p2 = fptr(scale)
    job.p3 = fptr(b)
    _go(&job, n_threads)
    return y, mean_hi, var.astype(np.float32)


def batch_norm_forward_eval(x, weight, bias, running_mean, running_var, eps=1e-5,
                            activation=None, residual=None, n_threads=None):
    """y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, per channel, plus the
    residual (None, or an array of x's shape), then the fused activation (None or 'relu')."""
    op = "batch_norm_forward_eval"
    lo = _clamp(op, activation)
    a = _activation(op, "x", x)
    r = _residual(op, residual, a)
    cdef Py_ssize_t c = a.shape[a.ndim - 1]
    w = _channel(op, "weight", weight, c)
    b = _channel(op, "bias", bias, c)
    rm = _channel(op, "running_mean", running_mean, c)
    rv = _channel(op, "running_var", running_var, c, nonnegative=True)
    e = _eps(op, eps)
    check_workspace(op, nbytes_of(a.shape))
    scale = (w / np.sqrt(rv.astype(np.float64) + e)).astype(np.float32)
    zero = np.zeros(c, dtype=np.float32)
    y = np.empty(a.shape, dtype=np.float32)
    cdef Job job = _job(APPLY, a)
    job.lo = lo
    job.res = fptr(r) if r is not None else NULL
    job.y = <float*>fptr(y)
    job.p0 = fptr(rm)
    job.p1 = fptr(zero)
    job.p2 = fptr(scale)
    job.p3 = fptr(b)
    _go(&job, n_threads)
    return y


def batch_norm_backward(dy, x, weight, mean, var, eps=1e-5, y=None, n_threads=None):
    """Training-mode backward: returns (dx, dweight, dbias), float32.

    mean and var are the batch statistics :func:`batch_norm_forward_train` returned; dx includes
    the gradient through them: dx = w / sigma * (dy - mean(dy) - xhat * mean(dy * xhat)).
    y: the output of a forward pass with activation='relu', whose backward is fused: dy is the
    gradient of that output and counts only where y > 0.
    """
    op = "batch_norm_backward"
    a = _activation(op, "x", x)
    g = _activation(op, "dy", dy)
    if g.shape != a.shape:
        raise ValueError(f"{op}: dy and x must have the same shape, got {g.shape} and {a.shape}")
    if y is not None:
        y = _activation(op, "y", y)
        if y.shape != a.shape:
            raise ValueError(f"{op}: y and x must have the same shape, got {y.shape} and "
                             f"{a.shape}")
    cdef Py_ssize_t c = a.shape[a.ndim - 1]
    w = _channel(op, "weight", weight, c)
    m = _channel(op, "mean", mean, c)
    v = _channel(op, "var", var, c, nonnegative=True)
    e = _eps(op, eps)
    cdef Job job = _job(REDUCE, a)
    cdef Py_ssize_t nchunks = (job.rows + job.rpc - 1) // job.rpc
    check_workspace(op, nbytes_of(a.shape) + nbytes_of((2, nchunks, c), 8))
    part_dy = np.empty((nchunks, c), dtype=np.float64)
    part_dyx = np.empty((nchunks, c), dtype=np.float64)
    job.dy = fptr(g)
    job.relu_y = fptr(y) if y is not None else NULL
    job.p0 = fptr(m)
    job.part0 = dptr(part_dy)
    job.part1 = dptr(part_dyx)
    _go(&job, n_threads)

    sum_dy = np.zeros(c, dtype=np.float64)
    sum_dyx = np.zeros(c, dtype=np.float64)
    cdef double[:, ::1] p_dy = part_dy
    cdef double[:, ::1] p_dyx = part_dyx
    cdef double[::1] s_dy = sum_dy
    cdef double[::1] s_dyx = sum_dyx
    cdef Py_ssize_t i, ch
    with nogil:
        for i in range(nchunks):            # fixed order: chunk 0, 1, 2, ...
            for ch in range(c):
                s_dy[ch] += p_dy[i, ch]
                s_dyx[ch] += p_dyx[i, ch]
    rows = job.rows
    with np.errstate(all="ignore"):   # NaN or Inf in dy or x: NaN gradients, quietly
        invstd = 1.0 / np.sqrt(v.astype(np.float64) + e)
        dweight = sum_dyx * invstd
        dbias = sum_dy
        coef_a = w * invstd
        coef_b = -coef_a * invstd * dweight / rows
        coef_k = -coef_a * dbias / rows

    dx = np.empty(a.shape, dtype=np.float32)
    job.y = <float*>fptr(dx)
    if rows >= DX_F32_MIN_ROWS:
        job.kind = DX_F32
        fa, fb, fk = coef_a.astype(np.float32), coef_b.astype(np.float32), coef_k.astype(np.float32)
        job.f0 = fptr(fa)
        job.f1 = fptr(fb)
        job.f2 = fptr(fk)
    else:
        job.kind = DX
        job.d0 = dptr(coef_a)
        job.d1 = dptr(coef_b)
        job.d2 = dptr(coef_k)
    _go(&job, n_threads)
    return dx, dweight.astype(np.float32), dbias.astype(np.float32)
