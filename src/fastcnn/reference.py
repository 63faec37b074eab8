"""Plain-numpy implementation of every op of the compiled op set, forward and backward.

Written for clarity, not speed: the oracle the tests compare against and the baseline the
benchmarks measure. Same conventions as ``cconv``: NHWC activations, PyTorch-order parameters.
Every function computes in the dtype it is given (pass float64 for a tight oracle).
"""
import numpy as np


# --- activations ---

def relu(x):
    return np.maximum(x, 0)  # NaN propagates


def relu_backward(dy, y):
    return np.where(y > 0, dy, np.zeros_like(dy))


def leaky_relu(x, negative_slope=0.01):
    return np.where(x > 0, x, x * negative_slope)


def leaky_relu_backward(dy, x, negative_slope=0.01):
    return np.where(x > 0, dy, dy * negative_slope)


def sigmoid(x):
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_backward(dy, y):
    return dy * y * (1 - y)


def tanh(x):
    return np.tanh(x)


def tanh_backward(dy, y):
    return dy * (1 - y * y)


def softmax(x):
    """Softmax over the last axis of a 2-D (N, C) array."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_backward(dy, y):
    return y * (dy - (dy * y).sum(axis=1, keepdims=True))


# --- dropout ---

_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


def _splitmix64_mix(z):
    """splitmix64's output function on uint64 (array or Python int), wrapping modulo 2^64."""
    if isinstance(z, int):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def dropout_mask(shape, p, seed):
    """Keep-mask (uint8, 1 = kept) of a dropout: element i (flat C order) is kept when the top
    32 bits of splitmix64 for counter i of the stream keyed by seed are >= floor(p 2^32)."""
    n = int(np.prod(shape, dtype=np.int64))
    key = _splitmix64_mix((int(seed) + _GOLDEN) & _MASK64)
    counters = np.arange(n, dtype=np.uint64) * np.uint64(_GOLDEN) + np.uint64(key)
    top = _splitmix64_mix(counters) >> np.uint64(32)
    return (top >= np.uint64(int(p * 2.0 ** 32))).astype(np.uint8).reshape(shape)


def dropout(x, p, seed):
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p!r}")
    x = np.asarray(x)
    if p == 0:
        return x.copy(), np.ones(x.shape, dtype=np.uint8)
    mask = dropout_mask(x.shape, p, seed)
    return x * mask / x.dtype.type(1 - p), mask


def dropout_backward(dy, mask, p):
    return dy * (np.asarray(mask) != 0) / dy.dtype.type(1 - p)


# --- add ---

def add(a, b):
    if np.shape(a) != np.shape(b):
        raise ValueError(f"add: a and b must have the same shape, got {np.shape(a)} and "
                         f"{np.shape(b)}")
    return a + b


def add_backward(dy):
    return dy.copy(), dy.copy()


# --- batch norm ---

def batch_norm_forward_train(x, weight, bias, eps=1e-5):
    """Normalise over every axis but the last with the batch statistics: (y, mean, biased var)."""
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    var = ((x - mean) ** 2).mean(axis=axes)
    y = (x - mean) / np.sqrt(var + eps) * weight + bias
    return y, mean, var


def batch_norm_forward_eval(x, weight, bias, running_mean, running_var, eps=1e-5):
    return (x - running_mean) / np.sqrt(running_var + eps) * weight + bias


def batch_norm_backward(dy, x, weight, mean, var, eps=1e-5):
    """Training-mode backward through the batch statistics: (dx, dweight, dbias)."""
    axes = tuple(range(x.ndim - 1))
    rows = x.size // x.shape[-1]
    invstd = 1 / np.sqrt(var + eps)
    xhat = (x - mean) * invstd
    dbias = dy.sum(axis=axes)
    dweight = (dy * xhat).sum(axis=axes)
    dx = weight * invstd * (dy - dbias / rows - xhat * dweight / rows)
    return dx, dweight, dbias


# --- softmax cross-entropy ---

def softmax_cross_entropy(logits, labels, label_smoothing=0.0):
    """Mean over the batch of (1 - s) * -log p[label] + s * mean_j(-log p[j]): (loss, probs)."""
    n, c = logits.shape
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.min() < 0 or labels.max() >= c:
        raise ValueError(f"softmax_cross_entropy: labels must have shape ({n},) and lie in "
                         f"[0, {c})")
    z = logits - logits.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    nll = -log_probs[np.arange(n), labels]
    smooth = -log_probs.mean(axis=1)
    loss = ((1 - label_smoothing) * nll + label_smoothing * smooth).mean()
    return float(loss), np.exp(log_probs)


def softmax_cross_entropy_backward(probs, labels, label_smoothing=0.0):
    n, c = probs.shape
    target = np.full(probs.shape, label_smoothing / c, dtype=probs.dtype)
    target[np.arange(n), labels] += 1 - label_smoothing
    return (probs - target) / n
