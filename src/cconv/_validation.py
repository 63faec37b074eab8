"""Argument checks shared by every op: one place that turns bad input into a clear ValueError.

Besides shapes and values, two limits keep a bad size from corrupting memory or taking the
process down:

- the memory limit (:func:`set_memory_limit`, environment variable ``FASTCNN_MAX_WORKSPACE``):
  the most bytes one op call may allocate for its output and scratch buffers
  (:func:`check_workspace`), and for converting an input to contiguous float32. The default
  is worked out once, at the first check; ``set_memory_limit(None)`` works it out again (so a
  changed ``FASTCNN_MAX_WORKSPACE`` takes effect then);
- 32-bit indices (:func:`check_index_range`): a count that a kernel indexes with int32 must fit.
"""
import numbers
import os
import re
import threading
import warnings

import numpy as np

INT32_MAX = 2**31 - 1
_FLOAT32 = np.dtype(np.float32)

# --- memory limit ------------------------------------------------------------------------------
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_limit_lock = threading.Lock()
_memory_limit = None          # the limit in bytes; None until the first check reads the default


def parse_bytes(text):
    """'1073741824', '512M', '1.5G', '2GiB', '64 KB' -> bytes (units are powers of 1024)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(text))
    if not m:
        raise ValueError(f"not a size in bytes: {text!r} (examples: 1000000, 512M, 2G)")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value < 1:
        raise ValueError(f"a memory limit must be at least 1 byte, got {text!r}")
    return value


def physical_memory():
    """Bytes of RAM of this machine (None when unknown)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def default_memory_limit():
    """``FASTCNN_MAX_WORKSPACE`` when set, else half the machine's RAM (1 TiB when unknown)."""
    env = os.environ.get("FASTCNN_MAX_WORKSPACE", "").strip()
    if env:
        try:
            return parse_bytes(env)
        except ValueError as exc:
            warnings.warn(f"FASTCNN_MAX_WORKSPACE ignored: {exc}", RuntimeWarning, stacklevel=3)
    ram = physical_memory()
    return ram // 2 if ram else 2**40


def get_memory_limit():
    """The most bytes one op call may allocate (output and scratch buffers together)."""
    global _memory_limit
    limit = _memory_limit
    if limit is None:   # the first check: read the default once (environment, sysconf)
        with _limit_lock:
            if _memory_limit is None:
                _memory_limit = default_memory_limit()
            limit = _memory_limit
    return limit


def set_memory_limit(nbytes):
    """Set the memory limit of one op call, in bytes (an int, or a string such as '512M');
    ``None`` restores the default (``FASTCNN_MAX_WORKSPACE``, read again now, else half the
    RAM). Returns the
    previous limit. An op that would need more raises a ValueError before allocating."""
    global _memory_limit
    if nbytes is None:
        value = None
    elif isinstance(nbytes, str):
        try:
            value = parse_bytes(nbytes)
        except ValueError as exc:
            raise ValueError(f"set_memory_limit: {exc}") from None
    elif isinstance(nbytes, numbers.Real) and not isinstance(nbytes, bool) and nbytes >= 1 \
            and np.isfinite(nbytes):
        value = int(nbytes)
    else:
        raise ValueError(f"set_memory_limit: expected a number of bytes >= 1, a size such as "
                         f"'512M', or None, got {nbytes!r}")
    previous = get_memory_limit()
    if value is None:
        value = default_memory_limit()
    with _limit_lock:
        _memory_limit = value
    return previous


def format_bytes(n):
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:,} bytes"


def check_workspace(op, nbytes, what="its output and scratch buffers"):
    """Refuse, with a ValueError naming ``op``, an allocation of ``nbytes`` over the limit.

    Call it with the total bytes an op call is about to allocate, before allocating them.
    """
    nbytes = int(nbytes)
    limit = get_memory_limit()
    if nbytes > limit:
        raise ValueError(f"{op}: {what} would take {format_bytes(nbytes)}, more than the memory "
                         f"limit of {format_bytes(limit)} (set it with cconv.set_memory_limit() "
                         f"or FASTCNN_MAX_WORKSPACE)")
    return nbytes


def nbytes_of(shape, itemsize=4):
    """Bytes of an array of ``shape`` (Python ints: no overflow)."""
    n = int(itemsize)
    for s in shape:
        n *= int(s)
    return n


def conv_workspace_bytes(pass_, x_shape, y_shape, w_shape, groups, n_threads, mr=8, nr=32):
    """An upper bound of the bytes a direct convolution pass allocates: its result, its packed
    (NR-padded) weights with their temporaries, and the per-thread scratch (register tile at
    most ``mr`` x ``nr``). ``pass_``: 'forward', 'backward_data' or 'backward_weight'; shapes in
    the forward direction: x (N, H, W, Cin), y (N, Ho, Wo, Cout), w (Cout, Cin/groups, kh, kw).
    For ``check_workspace(op, conv_workspace_bytes(...))`` before the pass allocates."""
    n, h, w, cin = (int(v) for v in x_shape)
    _, oh, ow, cout = (int(v) for v in y_shape)
    taps = int(w_shape[2]) * int(w_shape[3])
    cin_g, cout_g = cin // groups, cout // groups
    threads = int(n_threads)
    if pass_ == "forward":
        result = 4 * n * oh * ow * cout
        weights = 4 * taps * cin_g * (cout + groups * (nr - 1))
        scratch = threads * (8 * mr * (taps + 1) + 4 * nr * (taps * cin + cout))
    elif pass_ == "backward_data":
        result = 4 * n * h * w * cin
        weights = 4 * taps * cout_g * (cin + groups * (nr - 1)) + 4 * taps * cin_g * cout
        scratch = threads * (8 * mr * (taps + 1) + 4 * mr * (taps * cin_g + nr))
    elif pass_ == "backward_weight":
        result = 4 * 18 * cout * taps * cin_g            # 16 partial sums, their sum, the copy
        weights = 0
        scratch = threads * (4 * 512 * (taps * cin_g + nr + cout_g) + 16 * mr)
    else:
        raise ValueError(f"conv_workspace_bytes: unknown pass {pass_!r}")
    return result + 2 * weights + scratch + 4 * (cin + cout) + 4096


def check_index_range(op, what, value, shape=None, limit=INT32_MAX):
    """Refuse a count a kernel indexes with 32-bit integers when it would not fit."""
    if int(value) > limit:
        where = f" (shape {tuple(shape)})" if shape is not None else ""
        raise ValueError(f"{op}: {what} is {int(value):,}, more than the kernels' 32-bit "
                         f"indices hold ({limit:,}){where}")


def as_float32(op, name, array, ndim=None):
    """``array`` as a C-contiguous float32 ndarray (converted once if needed), rank checked.

    A conversion that would allocate more than the memory limit (a broadcast view of a huge
    shape, say) is refused before it allocates.
    """
    if type(array) is np.ndarray and array.dtype is _FLOAT32 and array.flags.c_contiguous:
        if ndim is not None and array.ndim != ndim:   # the common case, without conversion
            raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {array.shape}")
        return array
    if isinstance(array, np.ndarray) and not (array.dtype == np.float32
                                              and array.flags.c_contiguous):
        check_workspace(op, nbytes_of(array.shape), f"converting {name} {array.shape} "
                                                    f"to contiguous float32")
    try:
        out = np.ascontiguousarray(array, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{op}: {name} cannot be converted to float32: {exc}") from None
    if out.shape == (1,) and np.ndim(array) == 0:
        out = out.reshape(())   # ascontiguousarray makes a 0-d input 1-d: keep its shape
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


def pair(op, name, value, minimum=0, maximum=INT32_MAX):
    """An int or a pair of ints -> (int, int), each in [minimum, maximum] (kernel sizes,
    strides, paddings and dilations beyond 2^31 - 1 are refused: no real layer has them, and
    they would overflow the kernels' index arithmetic)."""
    if type(value) is int and minimum <= value <= maximum:   # the common cases, quickly
        return value, value
    if type(value) is tuple and len(value) == 2:
        a, b = value
        if type(a) is int and type(b) is int and minimum <= a <= maximum \
                and minimum <= b <= maximum:
            return value
    if isinstance(value, numbers.Integral):
        value = (value, value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}") from None
    if not (isinstance(a, numbers.Integral) and isinstance(b, numbers.Integral)) \
            or isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    a, b = int(a), int(b)
    if a < minimum or b < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    if a > maximum or b > maximum:
        raise ValueError(f"{op}: {name} must be <= {maximum}, got {value!r}")
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
    if type(padding) is int and padding >= 0:   # the common case, quickly
        return (padding, padding), (padding, padding)
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
