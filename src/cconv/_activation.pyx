"""Elementwise ops of the compiled op set: activations (relu, leaky relu, sigmoid, tanh, relu6,
hard sigmoid, hard swish, silu, gelu), softmax, dropout, add; forward and backward.

Elementwise ops take any shape and return float32 arrays of that shape. Large arrays are split
into fixed chunks of ``CHUNK`` elements (softmax: whole rows, about ``CHUNK`` elements a chunk)
that OpenMP threads share; an array of one chunk runs on the calling thread. Every element is
computed the same way whatever the split, so results are bitwise identical for any thread count.
"""
import numbers

import numpy as np

from cython.parallel cimport parallel, prange
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from cconv._runtime cimport (ELEMENT_WORK, current_isa, data_ptr, resolve_threads,
                             run_chunks, threads_for)
from cconv._kernels cimport cconv_ftz_enter, cconv_ftz_restore
from cconv._validation import as_float32, as_nhwc, check_workspace, get_memory_limit, nbytes_of

cdef object _FLOAT32 = np.dtype(np.float32)

cdef extern from "activation/activation.h" nogil:
    ctypedef void (*cconv_f32_vunary_fn)(size_t n, const float* x, float* y)
    ctypedef void (*cconv_f32_vbinary_fn)(size_t n, const float* a, const float* b, float* y)
    ctypedef void (*cconv_f32_vunary_param_fn)(size_t n, const float* x, float* y, float param)
    ctypedef void (*cconv_f32_vbinary_param_fn)(size_t n, const float* a, const float* b,
                                                float* y, float param)
    cdef struct cconv_activation_kernels:
        cconv_f32_vunary_fn relu
        cconv_f32_vbinary_fn relu_backward
        cconv_f32_vunary_param_fn lrelu
        cconv_f32_vbinary_param_fn lrelu_backward
        cconv_f32_vunary_fn sigmoid
        cconv_f32_vbinary_fn sigmoid_backward
        cconv_f32_vunary_fn tanh
        cconv_f32_vbinary_fn tanh_backward
        cconv_f32_vunary_fn relu6
        cconv_f32_vbinary_fn relu6_backward
        cconv_f32_vunary_fn hardsigmoid
        cconv_f32_vbinary_fn hardsigmoid_backward
        cconv_f32_vunary_fn hardswish
        cconv_f32_vbinary_fn hardswish_backward
        cconv_f32_vunary_fn silu
        cconv_f32_vbinary_fn silu_backward
        cconv_f32_vunary_fn gelu
        cconv_f32_vbinary_fn gelu_backward
        cconv_f32_vunary_fn gelu_tanh
        cconv_f32_vbinary_fn gelu_tanh_backward
    cconv_activation_kernels cconv_activation_select(int isa)

ctypedef void (*dropout_fn)(size_t n, const float* x, float* y, uint8_t* mask, uint64_t key,
                            uint64_t first, uint32_t threshold, float scale) noexcept nogil
ctypedef void (*dropout_backward_fn)(size_t n, const float* dy, const uint8_t* mask, float* dx,
                                     float scale) noexcept nogil
ctypedef void (*gate_mul_fn)(size_t pixels, size_t channels, const float* x, const float* g,
                             float* y) noexcept nogil
ctypedef void (*gate_backward_fn)(size_t pixels, size_t channels, size_t stride, const float* dy,
                                  const float* x, const float* g, float* dx,
                                  float* dg) noexcept nogil
ctypedef void (*rows_fn)(size_t rows, size_t c, const float* x, float* y) noexcept nogil
ctypedef void (*rows_binary_fn)(size_t rows, size_t c, const float* a, const float* b,
                                float* y) noexcept nogil

cdef extern from "eltwise/eltwise.h" nogil:
    cdef struct cconv_eltwise_kernels:
        cconv_f32_vbinary_fn add
        dropout_fn dropout
        dropout_backward_fn dropout_backward
        gate_mul_fn gate_mul
        gate_backward_fn gate_backward
    cconv_eltwise_kernels cconv_eltwise_select(int isa)
    enum: CCONV_GATE_BLOCK

cdef extern from "softmax/softmax.h" nogil:
    cdef struct cconv_softmax_kernels:
        rows_fn softmax
        rows_binary_fn softmax_backward
    cconv_softmax_kernels cconv_softmax_select(int isa)

# Elements per chunk: 64 KiB of float32, enough to amortise a thread's start, small enough to
# spread a layer's activations over the cores.
cdef enum:
    CHUNK = 16384

cdef enum JobKind:
    UNARY, BINARY, BINARY_UNARY, BINARY_BINARY, UNARY_PARAM, BINARY_PARAM, DROPOUT, \
        DROPOUT_BACKWARD, COPY, SOFTMAX, SOFTMAX_BACKWARD

cdef struct Job:
    JobKind kind
    const float* a
    const float* b
    const float* c2                    # third operand (BINARY_BINARY)
    float* y
    uint8_t* mask
    const uint8_t* cmask
    float param
    uint64_t key
    uint32_t threshold
    Py_ssize_t c                       # row length (softmax)
    cconv_f32_vunary_fn unary
    cconv_f32_vbinary_fn binary
    cconv_f32_vbinary_fn binary2
    cconv_f32_vunary_param_fn unary_param
    cconv_f32_vbinary_param_fn binary_param
    dropout_fn dropout
    dropout_backward_fn dropout_backward
    rows_fn rows
    rows_binary_fn rows_binary


cdef inline Job new_job(JobKind kind) noexcept:
    cdef Job job
    memset(&job, 0, sizeof(Job))
    job.kind = kind
    return job


cdef void run_one(const void* job, Py_ssize_t i, Py_ssize_t s, Py_ssize_t n) noexcept nogil:
    """Elements [s, s + n) of the job (rows [s, s + n) for the row-wise kinds): a chunk_fn of
    _runtime.run_chunks."""
    cdef const Job* j = <const Job*>job
    cdef Py_ssize_t o = s * j.c
    if j.kind == UNARY:
        j.unary(n, j.a + s, j.y + s)
    elif j.kind == BINARY:
        j.binary(n, j.a + s, j.b + s, j.y + s)
    elif j.kind == BINARY_UNARY:  # a unary op applied to a binary op's result, chunk by chunk
        j.binary(n, j.a + s, j.b + s, j.y + s)
        j.unary(n, j.y + s, j.y + s)
    elif j.kind == BINARY_BINARY:  # binary2(binary(a, b), c2), chunk by chunk
        j.binary(n, j.a + s, j.b + s, j.y + s)
        j.binary2(n, j.y + s, j.c2 + s, j.y + s)
    elif j.kind == UNARY_PARAM:
        j.unary_param(n, j.a + s, j.y + s, j.param)
    elif j.kind == BINARY_PARAM:
        j.binary_param(n, j.a + s, j.b + s, j.y + s, j.param)
    elif j.kind == DROPOUT:
        j.dropout(n, j.a + s, j.y + s, j.mask + s, j.key, <uint64_t>s, j.threshold, j.param)
    elif j.kind == DROPOUT_BACKWARD:
        j.dropout_backward(n, j.a + s, j.cmask + s, j.y + s, j.param)
    elif j.kind == COPY:
        memcpy(j.y + s, j.a + s, n * sizeof(float))
    elif j.kind == SOFTMAX:
        j.rows(n, j.c, j.a + o, j.y + o)
    elif j.kind == SOFTMAX_BACKWARD:
        j.rows_binary(n, j.c, j.a + o, j.b + o, j.y + o)


cdef _go(const Job* job, Py_ssize_t n, Py_ssize_t chunk, n_threads):
    cdef int nt = threads_for(resolve_threads(n_threads), <double>n * ELEMENT_WORK)
    with nogil:
        run_chunks(run_one, job, n, chunk, nt)


cdef inline float* fptr(arr) except? NULL:
    """Data pointer of a contiguous float32 array (NULL when empty); read-only arrays too."""
    return <float*>data_ptr(arr)


cdef inline uint8_t* bptr(arr) except? NULL:
    return <uint8_t*>data_ptr(arr)


cdef inline bint _ready(x):
    """Already a C-contiguous float32 ndarray (the common case, checked without a call)."""
    return type(x) is np.ndarray and x.dtype is _FLOAT32 and x.flags.c_contiguous


cdef tuple _input(op, name, x):
    """``x`` as contiguous float32 and its shape (kept also for 0-d arrays)."""
    out = x if _ready(x) else as_float32(op, name, x)
    return out, out.shape


cdef _output(op, shape, copies=1, extra=0):
    """Check ``copies`` float32 arrays of ``shape`` (and ``extra`` bytes) against the memory
    limit before they are allocated."""
    nbytes = nbytes_of(shape) * copies + extra
    if nbytes > get_memory_limit():   # the message and the exact check: check_workspace
        check_workspace(op, nbytes)


cdef tuple _pair(op, name_a, a, name_b, b):
    fa, shape_a = _input(op, name_a, a)
    fb, shape_b = _input(op, name_b, b)
    if shape_a != shape_b:
        raise ValueError(f"{op}: {name_a} and {name_b} must have the same shape, got "
                         f"{shape_a} and {shape_b}")
    return fa, fb, shape_a


def _param(op, name, value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: {name} must be a real number, got {value!r}") from None
    if not np.isfinite(v):
        raise ValueError(f"{op}: {name} must be finite, got {value!r}")
    return v


cdef _run_unary(cconv_f32_vunary_fn fn, op, x, n_threads):
    a, shape = _input(op, "x", x)
    _output(op, shape)
    y = np.empty(shape, dtype=np.float32)
    cdef Job job = new_job(UNARY)
    job.unary = fn
    job.a = fptr(a)
    job.y = fptr(y)
    _go(&job, a.size, CHUNK, n_threads)
    return y


cdef _run_binary(cconv_f32_vbinary_fn fn, op, name_a, a, name_b, b, n_threads):
    fa, fb, shape = _pair(op, name_a, a, name_b, b)
    _output(op, shape)
    y = np.empty(shape, dtype=np.float32)
    cdef Job job = new_job(BINARY)
    job.binary = fn
    job.a = fptr(fa)
    job.b = fptr(fb)
    job.y = fptr(y)
    _go(&job, fa.size, CHUNK, n_threads)
    return y


# --- activations -----------------------------------------------------------------------------

def relu(x, n_threads=None):
    """y = max(x, 0), any shape."""
    return _run_unary(cconv_activation_select(current_isa()).relu, "relu", x, n_threads)


def relu_backward(dy, y, n_threads=None):
    """dx = dy where the forward output y > 0, else 0."""
    return _run_binary(cconv_activation_select(current_isa()).relu_backward, "relu_backward",
                       "dy", dy, "y", y, n_threads)


def leaky_relu(x, negative_slope=0.01, n_threads=None):
    """y = x where x > 0, else negative_slope * x."""
    slope = _param("leaky_relu", "negative_slope", negative_slope)
    a, shape = _input("leaky_relu", "x", x)
    _output("leaky_relu", shape)
    y = np.empty(shape, dtype=np.float32)
    cdef Job job = new_job(UNARY_PARAM)
    job.unary_param = cconv_activation_select(current_isa()).lrelu
    job.a = fptr(a)
    job.y = fptr(y)
    job.param = slope
    _go(&job, a.size, CHUNK, n_threads)
    return y


def leaky_relu_backward(dy, x, negative_slope=0.01, n_threads=None):
    """dx = dy where the forward input x > 0, else negative_slope * dy."""
    op = "leaky_relu_backward"
    slope = _param(op, "negative_slope", negative_slope)
    fdy, fx, shape = _pair(op, "dy", dy, "x", x)
    _output(op, shape)
    dx = np.empty(shape, dtype=np.float32)
    cdef Job job = new_job(BINARY_PARAM)
    job.binary_param = cconv_activation_select(current_isa()).lrelu_backward
    job.a = fptr(fdy)
    job.b = fptr(fx)
    job.y = fptr(dx)
    job.param = slope
    _go(&job, fdy.size, CHUNK, n_threads)
    return dx


def sigmoid(x, n_threads=None):
    """y = 1 / (1 + exp(-x)), saturating to exactly 0 and 1 (no overflow)."""
    return _run_unary(cconv_activation_select(current_isa()).sigmoid, "sigmoid", x, n_threads)


def sigmoid_backward(dy, y, n_threads=None):
    """dx = dy * y * (1 - y), y the forward output."""
    return _run_binary(cconv_activation_select(current_isa()).sigmoid_backward,
                       "sigmoid_backward", "dy", dy, "y", y, n_threads)


def tanh(x, n_threads=None):
    """y = tanh(x), saturating to exactly -1 and 1."""
    return _run_unary(cconv_activation_select(current_isa()).tanh, "tanh", x, n_threads)


def tanh_backward(dy, y, n_threads=None):
    """dx = dy * (1 - y^2), y the forward output."""
    return _run_binary(cconv_activation_select(current_isa()).tanh_backward, "tanh_backward",
                       "dy", dy, "y", y, n_threads)


def relu6(x, n_threads=None):
    """y = min(max(x, 0), 6), any shape; NaN propagates."""
    return _run_unary(cconv_activation_select(current_isa()).relu6, "relu6", x, n_threads)


def relu6_backward(dy, y, n_threads=None):
    """dx = dy where the forward output 0 < y < 6, else 0 (PyTorch's gradient)."""
    return _run_binary(cconv_activation_select(current_isa()).relu6_backward, "relu6_backward",
                       "dy", dy, "y", y, n_threads)


def hardsigmoid(x, n_threads=None):
    """y = relu6(x + 3) / 6 (PyTorch's hardsigmoid); NaN propagates."""
    return _run_unary(cconv_activation_select(current_isa()).hardsigmoid, "hardsigmoid", x,
                      n_threads)


def hardsigmoid_backward(dy, x, n_threads=None):
    """dx = dy / 6 where the forward input -3 < x < 3, else 0 (PyTorch's gradient)."""
    return _run_binary(cconv_activation_select(current_isa()).hardsigmoid_backward,
                       "hardsigmoid_backward", "dy", dy, "x", x, n_threads)


def hardswish(x, n_threads=None):
    """y = x * relu6(x + 3) / 6 (PyTorch's hardswish); NaN propagates."""
    return _run_unary(cconv_activation_select(current_isa()).hardswish, "hardswish", x,
                      n_threads)


def hardswish_backward(dy, x, n_threads=None):
    """PyTorch's gradient from the forward input x, its values at the kinks included: 0 for
    x <= -3, dy * (x / 3 + 1/2) for -3 < x < 3, dy for x >= 3; NaN in x gives NaN."""
    return _run_binary(cconv_activation_select(current_isa()).hardswish_backward,
                       "hardswish_backward", "dy", dy, "x", x, n_threads)


def silu(x, n_threads=None):
    """y = x * sigmoid(x) (swish); 0 at -inf, inf at inf; NaN propagates."""
    return _run_unary(cconv_activation_select(current_isa()).silu, "silu", x, n_threads)


def silu_backward(dy, x, n_threads=None):
    """dx = dy * s * (1 + x * (1 - s)), s = sigmoid(x) of the forward input x."""
    return _run_binary(cconv_activation_select(current_isa()).silu_backward, "silu_backward",
                       "dy", dy, "x", x, n_threads)


def _gelu_kind(op, approximate):
    if isinstance(approximate, str) and approximate in ("none", "tanh"):
        return approximate == "tanh"
    raise ValueError(f"{op}: approximate must be 'none' or 'tanh', got {approximate!r}")


def gelu(x, approximate="none", n_threads=None):
    """y = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2))) (``approximate='none'``, PyTorch's
    default), or 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) (``'tanh'``).
    Accurate in the negative tail too (erfc / sigmoid forms, no 1 + erf cancellation)."""
    cdef cconv_activation_kernels k = cconv_activation_select(current_isa())
    if _gelu_kind("gelu", approximate):
        return _run_unary(k.gelu_tanh, "gelu", x, n_threads)
    return _run_unary(k.gelu, "gelu", x, n_threads)


def gelu_backward(dy, x, approximate="none", n_threads=None):
    """Gradient of :func:`gelu` from the forward input x: dy * (Phi(x) + x * phi(x)) for
    ``approximate='none'``, the derivative of the tanh form for ``'tanh'``."""
    cdef cconv_activation_kernels k = cconv_activation_select(current_isa())
    if _gelu_kind("gelu_backward", approximate):
        return _run_binary(k.gelu_tanh_backward, "gelu_backward", "dy", dy, "x", x, n_threads)
    return _run_binary(k.gelu_backward, "gelu_backward", "dy", dy, "x", x, n_threads)


# --- softmax ---------------------------------------------------------------------------------

def _rows(op, name, x):
    a = as_float32(op, name, x)
    if a.ndim != 2:
        raise ValueError(f"{op}: {name} must be 2-D (batch, classes), got shape {a.shape}")
    if 0 in a.shape:
        raise ValueError(f"{op}: {name} has an empty dimension, shape {a.shape}")
    return a


cdef _run_rows(Job* job, Py_ssize_t rows, Py_ssize_t c, n_threads):
    job.c = c
    _go(job, rows, max(1, CHUNK // c), n_threads)


def softmax(x, n_threads=None):
    """Softmax over the last axis of a 2-D (N, C) array, numerically stable (max subtracted)."""
    a = _rows("softmax", "x", x)
    _output("softmax", a.shape)
    y = np.empty(a.shape, dtype=np.float32)
    cdef Job job = new_job(SOFTMAX)
    job.rows = cconv_softmax_select(current_isa()).softmax
    job.a = fptr(a)
    job.y = fptr(y)
    _run_rows(&job, a.shape[0], a.shape[1], n_threads)
    return y


def softmax_backward(dy, y, n_threads=None):
    """dx = y * (dy - sum(dy * y, axis=1)), y the forward output."""
    op = "softmax_backward"
    fdy = _rows(op, "dy", dy)
    fy = _rows(op, "y", y)
    if fdy.shape != fy.shape:
        raise ValueError(f"{op}: dy and y must have the same shape, got {fdy.shape} and "
                         f"{fy.shape}")
    _output(op, fy.shape)
    dx = np.empty(fy.shape, dtype=np.float32)
    cdef Job job = new_job(SOFTMAX_BACKWARD)
    job.rows_binary = cconv_softmax_select(current_isa()).softmax_backward
    job.a = fptr(fdy)
    job.b = fptr(fy)
    job.y = fptr(dx)
    _run_rows(&job, fy.shape[0], fy.shape[1], n_threads)
    return dx


# --- dropout ---------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _dropout_p(op, p):
    try:
        value = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: p must be a number in [0, 1), got {p!r}") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{op}: p must be in [0, 1), got {p!r}")
    return value


def dropout(x, p, seed, n_threads=None):
    """Inverted dropout: returns (y, mask), mask uint8 (1 = kept), y = x * mask / (1 - p).

    Element i (flat C order) is dropped when the top 32 bits of splitmix64's output for counter i
    of the stream keyed by ``seed`` fall below p * 2^32: the mask depends on (seed, i) only, so it
    is the same for any thread count. p == 0 returns a copy of x and an all-ones mask.
    """
    op = "dropout"
    rate = _dropout_p(op, p)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (numbers.Integral, np.integer)):
        raise ValueError(f"{op}: seed must be an integer, got {seed!r}")
    a, shape = _input(op, "x", x)
    _output(op, shape, 1, nbytes_of(shape, 1))     # y and the uint8 mask
    if rate == 0.0:
        return a.reshape(shape).copy(), np.ones(shape, dtype=np.uint8)
    y = np.empty(shape, dtype=np.float32)
    mask = np.empty(shape, dtype=np.uint8)
    cdef Job job = new_job(DROPOUT)
    job.dropout = cconv_eltwise_select(current_isa()).dropout
    job.a = fptr(a)
    job.y = fptr(y)
    job.mask = bptr(mask)
    job.key = _mix64((int(seed) + _GOLDEN) & _MASK64)
    job.threshold = <uint32_t>int(rate * 4294967296.0)
    job.param = 1.0 / (1.0 - rate)
    _go(&job, a.size, CHUNK, n_threads)
    return y, mask


def dropout_backward(dy, mask, p, n_threads=None):
    """dx = dy * mask / (1 - p), mask from :func:`dropout` (nonzero = kept)."""
    op = "dropout_backward"
    rate = _dropout_p(op, p)
    fdy, shape = _input(op, "dy", dy)
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"{op}: dy and mask must have the same shape, got {shape} and {m.shape}")
    if m.dtype != np.uint8:
        if m.dtype.kind not in "biuf":
            raise ValueError(f"{op}: mask must be boolean or numeric, got dtype {m.dtype}")
        check_workspace(op, nbytes_of(shape, 1), f"converting mask {m.shape} to uint8")
        m = (m != 0).view(np.uint8)
    elif not m.flags.c_contiguous:
        check_workspace(op, nbytes_of(shape, 1), f"copying mask {m.shape}")
    m = np.ascontiguousarray(m)
    _output(op, shape)
    dx = np.empty(shape, dtype=np.float32)
    cdef Job job = new_job(DROPOUT_BACKWARD)
    job.dropout_backward = cconv_eltwise_select(current_isa()).dropout_backward
    job.a = fptr(fdy)
    job.cmask = bptr(m)
    job.y = fptr(dx)
    job.param = 1.0 / (1.0 - rate)
    _go(&job, fdy.size, CHUNK, n_threads)
    return dx


# --- add -------------------------------------------------------------------------------------

def add(a, b, activation=None, n_threads=None):
    """y = a + b for arrays of the same shape (a residual connection's join); activation:
    None or 'relu' (y = max(a + b, 0) in the same pass)."""
    if activation is None:
        return _run_binary(cconv_eltwise_select(current_isa()).add, "add", "a", a, "b", b,
                           n_threads)
    if activation != "relu":
        raise ValueError(f"add: activation must be None or 'relu', got {activation!r}")
    fa, fb, shape = _pair("add", "a", a, "b", b)
    _output("add", shape)
    y = np.empty(shape, dtype=np.float32)
    cdef Job job = new_job(BINARY_UNARY)
    job.binary = cconv_eltwise_select(current_isa()).add
    job.unary = cconv_activation_select(current_isa()).relu
    job.a = fptr(fa)
    job.b = fptr(fb)
    job.y = fptr(y)
    _go(&job, fa.size, CHUNK, n_threads)
    return y


def add_relu_backward(a, b, y, n_threads=None):
    """dx = a + b where y > 0, else 0: the gradient through a ReLU (output y) of a value that
    two branches read, as a residual block's input, in one pass (relu_backward(add(a, b), y))."""
    fa, fb, shape = _pair("add_relu_backward", "a", a, "b", b)
    fy, _, _ = _pair("add_relu_backward", "y", y, "a", fa)
    _output("add_relu_backward", shape)
    dx = np.empty(shape, dtype=np.float32)
    cdef Job job = new_job(BINARY_BINARY)
    job.binary = cconv_eltwise_select(current_isa()).add
    job.binary2 = cconv_activation_select(current_isa()).relu_backward
    job.a = fptr(fa)
    job.b = fptr(fb)
    job.c2 = fptr(fy)
    job.y = fptr(dx)
    _go(&job, fa.size, CHUNK, n_threads)
    return dx


def add_backward(dy, n_threads=None):
    """(da, db): two independent float32 copies of dy."""
    fdy, shape = _input("add_backward", "dy", dy)
    _output("add_backward", shape, copies=2)
    da = np.empty(shape, dtype=np.float32)
    db = np.empty(shape, dtype=np.float32)
    cdef Job job = new_job(COPY)
    job.a = fptr(fdy)
    for out in (da, db):
        job.y = fptr(out)
        _go(&job, fdy.size, CHUNK, n_threads)
    return da, db


# --- channel gate (squeeze-excitation) ----------------------------------------------------------

cdef int _nhwc_threads(op, n_threads, double elements) except -1:
    try:
        return threads_for(resolve_threads(n_threads), elements * ELEMENT_WORK)
    except ValueError as exc:
        raise ValueError(f"{op}: {exc}") from None


cdef _gate_args(op, x, g, dy=None):
    """x (N, H, W, C) and g (N, C) or (N, 1, 1, C), as contiguous float32 ((N, C) for g)."""
    fx = as_nhwc(op, "x", x)
    N, H, W, C = fx.shape
    fg = as_float32(op, "g", g)
    if fg.shape not in ((N, C), (N, 1, 1, C)):
        raise ValueError(f"{op}: g must have shape {(N, C)} or {(N, 1, 1, C)} for x of shape "
                         f"{fx.shape}, got {fg.shape}")
    fdy = None
    if dy is not None:
        fdy = as_nhwc(op, "dy", dy)
        if fdy.shape != fx.shape:
            raise ValueError(f"{op}: dy and x must have the same shape, got {fdy.shape} and "
                             f"{fx.shape}")
    return fx, fg, fdy


def mul_channel_gate(x, g, n_threads=None):
    """y = x * g broadcast over height and width: x NHWC (N, H, W, C), g (N, C) or
    (N, 1, 1, C) (a squeeze-excitation gate). Returns y (N, H, W, C)."""
    op = "mul_channel_gate"
    fx, fg, _ = _gate_args(op, x, g)
    N, H, W, C = fx.shape
    cdef int nt = _nhwc_threads(op, n_threads, 2.0 * fx.size)
    _output(op, fx.shape)
    y = np.empty(fx.shape, dtype=np.float32)
    cdef gate_mul_fn fn = cconv_eltwise_select(current_isa()).gate_mul
    cdef const float* xp = fptr(fx)
    cdef const float* gp = fptr(fg)
    cdef float* yp = fptr(y)
    cdef Py_ssize_t H_ = H, W_ = W, C_ = C, row = W * C
    cdef Py_ssize_t t, total = N * H
    cdef unsigned ftz = 0
    with nogil, parallel(num_threads=nt):
        ftz = cconv_ftz_enter()
        for t in prange(total, schedule="static"):
            fn(<size_t>W_, <size_t>C_, xp + t * row, gp + (t // H_) * C_, yp + t * row)
        cconv_ftz_restore(ftz)
    return y


def mul_channel_gate_backward(dy, x, g, n_threads=None):
    """Gradient of :func:`mul_channel_gate`: returns (dx, dg), dx = dy * g (N, H, W, C) and
    dg[n, c] = sum over h, w of dy * x, in the shape g was given ((N, C) or (N, 1, 1, C)).
    dg is summed in double, pixel after pixel, by one thread per (image, channel block): the
    same bits for any thread count."""
    op = "mul_channel_gate_backward"
    fx, fg, fdy = _gate_args(op, x, g, dy)
    N, H, W, C = fx.shape
    cdef int nt = _nhwc_threads(op, n_threads, 3.0 * fx.size)
    _output(op, fx.shape, 1, nbytes_of((N, C)))
    dx = np.empty(fx.shape, dtype=np.float32)
    dg = np.empty(fg.shape, dtype=np.float32)
    cdef gate_backward_fn fn = cconv_eltwise_select(current_isa()).gate_backward
    cdef const float* dyp = fptr(fdy)
    cdef const float* xp = fptr(fx)
    cdef const float* gp = fptr(fg)
    cdef float* dxp = fptr(dx)
    cdef float* dgp = fptr(dg)
    cdef Py_ssize_t C_ = C, pixels = H * W, image = H * W * C
    cdef Py_ssize_t blocks = (C + CCONV_GATE_BLOCK - 1) // CCONV_GATE_BLOCK
    cdef Py_ssize_t t, n, c, total = N * blocks
    cdef unsigned ftz = 0
    with nogil, parallel(num_threads=nt):
        ftz = cconv_ftz_enter()
        for t in prange(total, schedule="static"):
            n = t // blocks
            c = (t % blocks) * CCONV_GATE_BLOCK
            fn(<size_t>pixels, <size_t>min(<Py_ssize_t>CCONV_GATE_BLOCK, C_ - c), <size_t>C_,
               dyp + n * image + c, xp + n * image + c, gp + n * C_ + c, dxp + n * image + c,
               dgp + n * C_ + c)
        cconv_ftz_restore(ftz)
    return dx, dg
