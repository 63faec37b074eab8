"""Optimizer updates in compiled code, in place: SGD (momentum, dampening, Nesterov, weight decay)
and Adam / AdamW, plus the L1/L2 penalties, with PyTorch's update rules (kernels/optim/optim.h).

The arrays are updated in place, so they must already be C-contiguous float32 of one shape.
Large arrays are split into fixed chunks over OpenMP threads; every element is updated on its
own, so the result is bitwise the same for any thread count.
"""
import math
import numbers

import numpy as np

from cython.parallel cimport prange

from cconv._runtime cimport ELEMENT_WORK, current_isa, resolve_threads, threads_for
from cconv._validation import as_float32

cdef extern from "optim/optim.h" nogil:
    cdef struct cconv_sgd_params:
        float lr, momentum, dampening, weight_decay, l1, l2
        int nesterov, first_step
    cdef struct cconv_adam_params:
        float lr, beta1, beta2, eps, weight_decay, l1, l2, step_size, inv_sqrt_bias2
        int decoupled
    ctypedef void (*sgd_fn)(size_t, float*, const float*, float*, const cconv_sgd_params*)
    ctypedef void (*adam_fn)(size_t, float*, const float*, float*, float*, const cconv_adam_params*)
    cdef struct cconv_optim_kernels:
        sgd_fn sgd
        adam_fn adam
    cconv_optim_kernels cconv_optim_select(int isa)

DEF CHUNK = 32768


def _in_place(op, name, array, shape=None):
    if not isinstance(array, np.ndarray) or array.dtype != np.float32 or not array.flags.c_contiguous \
            or not array.flags.writeable:
        raise ValueError(f"{op}: {name} must be a writeable C-contiguous float32 array "
                         f"(it is updated in place), got {type(array).__name__} "
                         f"{getattr(array, 'dtype', '')} {getattr(array, 'shape', '')}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"{op}: {name} has shape {array.shape}, parameter has shape {shape}")
    return array


def _grad(op, grad, shape):
    g = as_float32(op, "gradient", grad)
    if g.shape != shape:
        raise ValueError(f"{op}: gradient has shape {g.shape}, parameter has shape {shape}")
    return g


def _hyper(op, name, value, lo=0.0, hi=None, hi_open=False):
    """A finite real hyperparameter in [lo, hi] (or [lo, hi) with ``hi_open``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating,
                                                                     np.integer)):
        raise ValueError(f"{op}: {name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < lo or (hi is not None and (v >= hi if hi_open else v > hi)):
        bound = "" if hi is None else (f", < {hi}" if hi_open else f", <= {hi}")
        raise ValueError(f"{op}: {name} must be finite and >= {lo}{bound}, got {value!r}")
    return v


def sgd_update(param, grad, momentum_buffer=None, *, lr, momentum=0.0, dampening=0.0,
               weight_decay=0.0, nesterov=False, l1=0.0, l2=0.0, first_step=False,
               n_threads=None):
    """One SGD step on ``param`` in place (and on ``momentum_buffer`` when momentum != 0).

    ``first_step``: the buffer is initialised with the gradient, as PyTorch does on its first step.
    """
    op = "sgd_update"
    _in_place(op, "param", param)
    g = _grad(op, grad, param.shape)
    lr, momentum = _hyper(op, "lr", lr), _hyper(op, "momentum", momentum)
    dampening = _hyper(op, "dampening", dampening, hi=1.0)
    weight_decay = _hyper(op, "weight_decay", weight_decay)
    l1, l2 = _hyper(op, "l1", l1), _hyper(op, "l2", l2)
    cdef cconv_sgd_params h
    h.lr, h.momentum, h.dampening, h.weight_decay = lr, momentum, dampening, weight_decay
    h.l1, h.l2, h.nesterov, h.first_step = l1, l2, bool(nesterov), bool(first_step)
    cdef float[::1] buf_view
    cdef float* buf = NULL
    if momentum != 0.0:
        if momentum_buffer is None:
            raise ValueError(f"{op}: momentum {momentum} needs a momentum_buffer")
        _in_place(op, "momentum_buffer", momentum_buffer, param.shape)
        buf_view = momentum_buffer.reshape(-1)
        buf = &buf_view[0] if param.size else NULL
    cdef float[::1] p = param.reshape(-1)
    cdef const float[::1] gv = g.reshape(-1)
    cdef Py_ssize_t n = param.size, chunks = (n + CHUNK - 1) // CHUNK, c, start, length
    cdef cconv_optim_kernels k = cconv_optim_select(current_isa())
    cdef int threads = threads_for(min(resolve_threads(n_threads), chunks), <double>n * ELEMENT_WORK)
    for c in prange(chunks, nogil=True, num_threads=threads, schedule="static"):
        start = c * CHUNK
        length = min(CHUNK, n - start)
        k.sgd(length, &p[start], &gv[start], buf + start if buf != NULL else NULL, &h)
    return param


def adam_update(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1=0.9, beta2=0.999,
                eps=1e-8, weight_decay=0.0, decoupled=False, l1=0.0, l2=0.0, n_threads=None):
    """One Adam (``decoupled=False``) or AdamW step on ``param`` and its moments, in place.

    ``step`` counts from 1 (the bias corrections use it).
    """
    op = "adam_update"
    _in_place(op, "param", param)
    g = _grad(op, grad, param.shape)
    _in_place(op, "exp_avg", exp_avg, param.shape)
    _in_place(op, "exp_avg_sq", exp_avg_sq, param.shape)
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (numbers.Integral, np.integer)) \
            or step < 1:
        raise ValueError(f"{op}: step counts from 1 (an integer), got {step!r}")
    lr, eps = _hyper(op, "lr", lr), _hyper(op, "eps", eps)
    beta1 = _hyper(op, "beta1", beta1, hi=1.0, hi_open=True)
    beta2 = _hyper(op, "beta2", beta2, hi=1.0, hi_open=True)
    weight_decay = _hyper(op, "weight_decay", weight_decay)
    l1, l2 = _hyper(op, "l1", l1), _hyper(op, "l2", l2)
    cdef cconv_adam_params h
    h.lr, h.beta1, h.beta2, h.eps = lr, beta1, beta2, eps
    h.weight_decay, h.l1, h.l2, h.decoupled = weight_decay, l1, l2, bool(decoupled)
    h.step_size = lr / (1.0 - beta1 ** step)
    h.inv_sqrt_bias2 = 1.0 / math.sqrt(1.0 - beta2 ** step)
    cdef float[::1] p = param.reshape(-1)
    cdef const float[::1] gv = g.reshape(-1)
    cdef float[::1] m = exp_avg.reshape(-1)
    cdef float[::1] v = exp_avg_sq.reshape(-1)
    cdef Py_ssize_t n = param.size, chunks = (n + CHUNK - 1) // CHUNK, c, start, length
    cdef cconv_optim_kernels k = cconv_optim_select(current_isa())
    cdef int threads = threads_for(min(resolve_threads(n_threads), chunks), <double>n * ELEMENT_WORK)
    for c in prange(chunks, nogil=True, num_threads=threads, schedule="static"):
        start = c * CHUNK
        length = min(CHUNK, n - start)
        k.adam(length, &p[start], &gv[start], &m[start], &v[start], &h)
    return param
