"""Fused softmax cross-entropy: numerically stable, label smoothing, mean over the batch.

Rows are independent and computed the same way whatever the split into chunks and threads; the
per-row losses are kept in float64 and summed on the calling thread in a fixed order, so the loss
is bitwise identical for any thread count.
"""
import math

import numpy as np

from libc.stdint cimport int64_t
from libc.string cimport memset

from cconv._runtime cimport (ELEMENT_WORK, current_isa, resolve_threads, run_chunks,
                             threads_for)
from cconv._validation import as_float32, check_workspace, labels_int64, nbytes_of

ctypedef void (*xent_fn)(size_t rows, size_t c, const float* logits, const int64_t* labels,
                         float smoothing, float* probs, double* loss) noexcept nogil
ctypedef void (*xent_backward_fn)(size_t rows, size_t c, const float* probs,
                                  const int64_t* labels, float smoothing, float scale,
                                  float* dlogits) noexcept nogil

cdef extern from "softmax/softmax.h" nogil:
    cdef struct cconv_softmax_kernels:
        xent_fn xent
        xent_backward_fn xent_backward
    cconv_softmax_kernels cconv_softmax_select(int isa)

# Rows per chunk: about CHUNK elements (64 KiB of float32), at least one row.
cdef enum:
    CHUNK = 16384

cdef struct Job:
    bint backward
    Py_ssize_t rows, c, rpc
    const float* x
    const int64_t* labels
    float smoothing, scale
    float* out
    double* loss
    cconv_softmax_kernels k


cdef void run_one(const void* job, Py_ssize_t i, Py_ssize_t r0, Py_ssize_t n) noexcept nogil:
    """Chunk i: rows [r0, r0 + n) (a chunk_fn of _runtime.run_chunks)."""
    cdef const Job* j = <const Job*>job
    cdef Py_ssize_t o = r0 * j.c
    if j.backward:
        j.k.xent_backward(n, j.c, j.x + o, j.labels + r0, j.smoothing, j.scale, j.out + o)
    else:
        j.k.xent(n, j.c, j.x + o, j.labels + r0, j.smoothing, j.out + o, j.loss + r0)


cdef _go(Job* job, n_threads):
    cdef int nt = threads_for(resolve_threads(n_threads), <double>job.rows * job.c * ELEMENT_WORK)
    with nogil:
        run_chunks(run_one, job, job.rows, job.rpc, nt)


def _check(op, name, x, labels, label_smoothing):
    a = as_float32(op, name, x)
    if a.ndim != 2:
        raise ValueError(f"{op}: {name} must be 2-D (batch, classes), got shape {a.shape}")
    if 0 in a.shape:
        raise ValueError(f"{op}: {name} has an empty dimension, shape {a.shape}")
    n, c = a.shape
    lab = labels_int64(op, labels, n)
    lo, hi = int(lab.min()), int(lab.max())
    if lo < 0 or hi >= c:
        raise ValueError(f"{op}: labels must lie in [0, {c}) for {name} of shape {a.shape}, "
                         f"got values in [{lo}, {hi}]")
    try:
        s = float(label_smoothing)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: label_smoothing must be a number in [0, 1], "
                         f"got {label_smoothing!r}") from None
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return a, lab, s


cdef Job _job(a, lab, double smoothing):
    cdef Job job
    memset(&job, 0, sizeof(Job))
    cdef const float[:, ::1] xv = a
    cdef const int64_t[::1] lv = lab
    job.rows = a.shape[0]
    job.c = a.shape[1]
    job.rpc = max(1, CHUNK // job.c)
    job.x = &xv[0, 0]
    job.labels = &lv[0]
    job.smoothing = <float>smoothing
    job.k = cconv_softmax_select(current_isa())
    return job


def softmax_cross_entropy(logits, labels, label_smoothing=0.0, n_threads=None):
    """Cross-entropy of softmax(logits) against integer labels: returns (loss, probs).

    logits (N, C), labels (N,) in [0, C). loss is a Python float, the mean over the batch of
    (1 - s) * -log p[label] + s * mean_j(-log p[j]) with s = label_smoothing (PyTorch's
    definition); probs (N, C) float32 is the softmax, kept for the backward.
    """
    op = "softmax_cross_entropy"
    a, lab, s = _check(op, "logits", logits, labels, label_smoothing)
    check_workspace(op, nbytes_of(a.shape) + nbytes_of(a.shape[:1], 8))
    probs = np.empty(a.shape, dtype=np.float32)
    row_loss = np.empty(a.shape[0], dtype=np.float64)
    cdef float[:, ::1] pv = probs
    cdef double[::1] lv = row_loss
    cdef Job job = _job(a, lab, s)
    job.backward = False
    job.out = &pv[0, 0]
    job.loss = &lv[0]
    _go(&job, n_threads)
    return float(math.fsum(row_loss.tolist()) / a.shape[0]), probs


def softmax_cross_entropy_backward(probs, labels, label_smoothing=0.0, n_threads=None):
    """dlogits = (probs - ((1 - s) onehot(labels) + s / C)) / N, float32 (N, C)."""
    op = "softmax_cross_entropy_backward"
    a, lab, s = _check(op, "probs", probs, labels, label_smoothing)
    check_workspace(op, nbytes_of(a.shape))
    dlogits = np.empty(a.shape, dtype=np.float32)
    cdef float[:, ::1] dv = dlogits
    cdef Job job = _job(a, lab, s)
    job.backward = True
    job.scale = <float>(1.0 / a.shape[0])
    job.out = &dv[0, 0]
    _go(&job, n_threads)
    return dlogits
