"""Argument checks shared by every op: one place that turns bad input into a clear ValueError."""
import numbers

import numpy as np


def as_float32(op, name, array, ndim=None):
    """``array`` as a C-contiguous float32 ndarray (converted once if needed), rank checked."""
    try:
        out = np.ascontiguousarray(array, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{op}: {name} cannot be converted to float32: {exc}") from None
    if ndim is not None and out.ndim != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {out.shape}")
    return out


def as_nhwc(op, name, array):
    """A 4-D NHWC activation as contiguous float32, with a non-empty batch and image."""
    out = as_float32(op, name, array)
    if out.ndim != 4:
        raise ValueError(f"{op}: {name} must be NHWC (batch, height, width, channels), "
                         f"got shape {out.shape}")
    if 0 in out.shape:
        raise ValueError(f"{op}: {name} has an empty dimension, shape {out.shape}")
    return out


def check_finite(op, name, array):
    """Parameters must be finite: NaN or Inf in a weight would silently poison every output."""
    if array is not None and not np.isfinite(array).all():
        raise ValueError(f"{op}: {name} contains NaN or Inf (shape {array.shape})")


def check_shape(op, name, array, expected):
    if tuple(array.shape) != tuple(expected):
        raise ValueError(f"{op}: {name} must have shape {tuple(expected)}, got {tuple(array.shape)}")


def pair(op, name, value, minimum=0):
    """An int or a pair of ints -> (int, int), each >= minimum."""
    if isinstance(value, numbers.Integral):
        value = (int(value), int(value))
    try:
        a, b = value
        a, b = int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}") from None
    if a < minimum or b < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return a, b


def labels_int64(op, labels, n):
    """Integer class labels of length n as contiguous int64."""
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise ValueError(f"{op}: labels must have shape ({n},), got {lab.shape}")
    if lab.dtype.kind not in "iu":
        if lab.dtype.kind == "f" and np.all(np.mod(lab, 1) == 0):
            lab = lab.astype(np.int64)
        else:
            raise ValueError(f"{op}: labels must be integers, got dtype {lab.dtype}")
    return np.ascontiguousarray(lab, dtype=np.int64)


def conv_padding(op, padding, kernel, stride, dilation, in_size):
    """Resolve conv padding to ((top, bottom), (left, right)).

    Accepts an int, a pair (symmetric per axis), a pair of pairs (asymmetric), 'valid', or 'same'
    (output size ceil(in / stride), the extra row/column at the bottom/right as in PyTorch and TF).
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0), (0, 0)
        if mode != "same":
            raise ValueError(f"{op}: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        result = []
        for size, k, s, d in zip(in_size, kernel, stride, dilation):
            out = -(-size // s)
            total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
            result.append((total // 2, total - total // 2))
        return tuple(result)
    if isinstance(padding, numbers.Integral):
        padding = (padding, padding)
    try:
        rows, cols = padding
    except (TypeError, ValueError):
        raise ValueError(f"{op}: padding must be an int, a pair, a pair of pairs, 'same' or "
                         f"'valid', got {padding!r}") from None
    result = []
    for p in (rows, cols):
        lo, hi = pair(op, "padding", p, minimum=0)
        result.append((lo, hi))
    return tuple(result)


def conv_output_size(op, in_size, kernel, stride, padding, dilation, x_shape):
    """Output (height, width) of a convolution; ValueError if the kernel exceeds the padded input."""
    out = []
    for size, k, s, (lo, hi), d in zip(in_size, kernel, stride, padding, dilation):
        span = d * (k - 1) + 1
        if size + lo + hi < span:
            raise ValueError(f"{op}: kernel {tuple(kernel)} (dilation {tuple(dilation)}) is larger "
                             f"than the padded input: input shape {tuple(x_shape)}, padding {padding}")
        out.append((size + lo + hi - span) // s + 1)
    return tuple(out)


def pool_output_size(op, in_size, kernel, stride, padding, dilation, ceil_mode, x_shape):
    """Output (height, width) of a pooling window, PyTorch's rule (``pooling_output_shape``).

    ``padding`` is symmetric per axis and at most ``kernel // 2``; with ``ceil_mode`` the
    last window may run past the input but must start inside the input or the left padding.
    ValueError if the padding is too large or no window fits.
    """
    out = []
    for size, k, s, p, d in zip(in_size, kernel, stride, padding, dilation):
        span = d * (k - 1) + 1
        if p > k // 2:
            raise ValueError(f"{op}: padding {tuple(padding)} must be at most half the kernel "
                             f"size {tuple(kernel)}; input shape {tuple(x_shape)}")
        n = (size + 2 * p - span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (n - 1) * s >= size + p:
            n -= 1
        if n < 1:
            raise ValueError(f"{op}: kernel {tuple(kernel)} (dilation {tuple(dilation)}) is larger "
                             f"than the padded input: input shape {tuple(x_shape)}, "
                             f"padding {tuple(padding)}")
        out.append(n)
    return tuple(out)
