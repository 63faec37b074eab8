"""Plain-numpy implementation of every op of the compiled op set, forward and backward.

Written for clarity, not speed: the oracle the tests compare against and the baseline the
benchmarks measure. Same conventions as ``cconv``: NHWC activations, PyTorch-order parameters.
Every function computes in the dtype it is given (pass float64 for a tight oracle).
"""
import math

import numpy as np

from cconv._validation import conv_padding


# --- convolution ---

def _conv_setup(x_shape, w_shape, stride, padding, dilation):
    stride = (stride, stride) if np.isscalar(stride) else tuple(stride)
    dilation = (dilation, dilation) if np.isscalar(dilation) else tuple(dilation)
    kernel = tuple(w_shape[2:4])
    pads = conv_padding("reference.conv2d", padding, kernel, stride, dilation, x_shape[1:3])
    padded = (x_shape[1] + sum(pads[0]), x_shape[2] + sum(pads[1]))
    out = tuple((p - d * (k - 1) - 1) // s + 1 for p, k, s, d in zip(padded, kernel, stride, dilation))
    return stride, dilation, pads, out


def _tap_window(i, j, stride, dilation, out):
    """Slices of the padded input that tap (i, j) reads for every output pixel."""
    return (slice(None),
            slice(i * dilation[0], i * dilation[0] + stride[0] * (out[0] - 1) + 1, stride[0]),
            slice(j * dilation[1], j * dilation[1] + stride[1] * (out[1] - 1) + 1, stride[1]))


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, activation=None, algo="auto"):
    """y[n, oh, ow, co] = b[co] + sum_{ci, i, j} x_padded[n, oh*s + i*d, ow*s + j*d, ci] w[co, ci, i, j]."""
    stride, dilation, pads, out = _conv_setup(x.shape, w.shape, stride, padding, dilation)
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    cout, cin_g, kh, kw = w.shape
    cout_g = cout // groups
    y = np.zeros((x.shape[0], out[0], out[1], cout), dtype=np.result_type(x, w))
    for g in range(groups):
        ci, co = slice(g * cin_g, (g + 1) * cin_g), slice(g * cout_g, (g + 1) * cout_g)
        for i in range(kh):
            for j in range(kw):
                patch = xp[_tap_window(i, j, stride, dilation, out) + (ci,)]
                y[..., co] += patch @ w[co, :, i, j].T
    if b is not None:
        y += b
    if activation == "relu":
        y = np.maximum(y, 0)
    return y


def conv2d_backward_data(dy, w, input_shape, stride=1, padding=0, dilation=1, groups=1):
    """dx: every output gradient flows back through each tap to the input pixel it read."""
    stride, dilation, pads, out = _conv_setup(input_shape, w.shape, stride, padding, dilation)
    n, h, wd, c = input_shape
    dxp = np.zeros((n, h + sum(pads[0]), wd + sum(pads[1]), c), dtype=np.result_type(dy, w))
    cout, cin_g, kh, kw = w.shape
    cout_g = cout // groups
    for g in range(groups):
        ci, co = slice(g * cin_g, (g + 1) * cin_g), slice(g * cout_g, (g + 1) * cout_g)
        for i in range(kh):
            for j in range(kw):
                dxp[_tap_window(i, j, stride, dilation, out) + (ci,)] += dy[..., co] @ w[co, :, i, j]
    return dxp[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + wd, :]


def conv2d_backward_weight(x, dy, kernel_size, stride=1, padding=0, dilation=1, groups=1):
    """dw[co, ci, i, j] = sum over batch and output pixels of x_padded(tap i, j)[ci] * dy[co]."""
    kh, kw = (kernel_size, kernel_size) if np.isscalar(kernel_size) else tuple(kernel_size)
    cout, cin_g = dy.shape[3], x.shape[3] // groups
    stride, dilation, pads, out = _conv_setup(x.shape, (cout, cin_g, kh, kw), stride, padding, dilation)
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    cout_g = cout // groups
    dw = np.zeros((cout, cin_g, kh, kw), dtype=np.result_type(x, dy))
    for g in range(groups):
        ci, co = slice(g * cin_g, (g + 1) * cin_g), slice(g * cout_g, (g + 1) * cout_g)
        for i in range(kh):
            for j in range(kw):
                patch = xp[_tap_window(i, j, stride, dilation, out) + (ci,)]
                dw[co, :, i, j] = np.tensordot(dy[..., co], patch, axes=([0, 1, 2], [0, 1, 2]))
    return dw


def bias_backward(dy):
    return dy.reshape(-1, dy.shape[-1]).sum(axis=0)


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """The transposed convolution is, by definition, conv2d's backward-data pass."""
    s = (stride, stride) if np.isscalar(stride) else tuple(stride)
    d = (dilation, dilation) if np.isscalar(dilation) else tuple(dilation)
    p = (padding, padding) if np.isscalar(padding) else tuple(padding)
    op = (output_padding, output_padding) if np.isscalar(output_padding) else tuple(output_padding)
    out = [(size - 1) * s[a] - 2 * p[a] + d[a] * (w.shape[2 + a] - 1) + op[a] + 1
           for a, size in enumerate(x.shape[1:3])]
    y = conv2d_backward_data(x, w, (x.shape[0], out[0], out[1], w.shape[1] * groups), s, p, d, groups)
    return y + b if b is not None else y


def conv_transpose2d_backward_data(dy, w, stride=1, padding=0, dilation=1, groups=1):
    return conv2d(dy, w, None, stride, padding, dilation, groups)


def conv_transpose2d_backward_weight(x, dy, kernel_size, stride=1, padding=0, dilation=1, groups=1):
    return conv2d_backward_weight(dy, x, kernel_size, stride, padding, dilation, groups)


def linear(x, w, b=None):
    y = x @ w.T
    return y + b if b is not None else y


def linear_backward_data(dy, w):
    return dy @ w


def linear_backward_weight(x, dy):
    return dy.T @ x


# --- pooling ---
# NHWC, PyTorch's semantics: output size and ceil_mode (the last window must start inside the
# input or the left padding), padding at most kernel_size // 2, -inf padding for max
# pooling, zero padding for average and sum pooling.

def _pool_pair(value):
    if np.ndim(value) == 0:
        return int(value), int(value)
    a, b = value
    return int(a), int(b)


def _pool_output_size(size, k, s, p, d, ceil_mode):
    span = d * (k - 1) + 1
    if p > k // 2:
        raise ValueError(f"pooling: padding {p} must be at most half the kernel size {k}")
    n = (size + 2 * p - span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (n - 1) * s >= size + p:
        n -= 1
    if n < 1:
        raise ValueError(f"pooling: kernel {k} (dilation {d}) is larger than the padded input {size}")
    return n


def _pool_setup(shape, kernel_size, stride, padding, dilation, ceil_mode):
    """(kh, kw), (sh, sw), (ph, pw), (dh, dw), (OH, OW) for an NHWC input of ``shape``."""
    kernel = _pool_pair(kernel_size)
    stride = kernel if stride is None else _pool_pair(stride)
    padding = _pool_pair(padding)
    dilation = _pool_pair(dilation)
    out = tuple(_pool_output_size(size, k, s, p, d, ceil_mode) for size, k, s, p, d
                in zip(shape[1:3], kernel, stride, padding, dilation))
    return kernel, stride, padding, dilation, out


def _pool_taps(shape, kernel, stride, padding, dilation, out):
    """Yield, for each window tap (i, j) in row-major order: input rows and columns it reads for
    every output row and column, and whether each lies inside the input."""
    H, W = shape[1:3]
    rows0 = np.arange(out[0]) * stride[0] - padding[0]
    cols0 = np.arange(out[1]) * stride[1] - padding[1]
    for i in range(kernel[0]):
        ih = rows0 + i * dilation[0]
        for j in range(kernel[1]):
            iw = cols0 + j * dilation[1]
            yield ih, iw, (ih >= 0) & (ih < H), (iw >= 0) & (iw < W)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max pooling; returns ``(y, indices)`` with ``indices`` the flat input index ih * W + iw
    (int32; -1 where a window holds no input pixel, y = -inf there). Ties: first maximum in
    row-major window order; a NaN wins (the last NaN of the window)."""
    x = np.asarray(x)
    N, H, W, C = x.shape
    kernel, stride, padding, dilation, (OH, OW) = _pool_setup(
        x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    y = np.full((N, OH, OW, C), -np.inf, dtype=x.dtype)
    indices = np.full((N, OH, OW, C), -1, dtype=np.int32)
    for ih, iw, ok_h, ok_w in _pool_taps(x.shape, kernel, stride, padding, dilation, (OH, OW)):
        v = x[:, np.clip(ih, 0, H - 1)][:, :, np.clip(iw, 0, W - 1)]
        valid = (ok_h[:, None] & ok_w[None, :])[None, :, :, None]
        flat = (ih[:, None] * W + iw[None, :])[None, :, :, None]
        take = valid & ((v > y) | np.isnan(v) | (indices < 0))
        y = np.where(take, v, y)
        indices = np.where(take, flat, indices).astype(np.int32)
    return y, indices


def max_pool2d_backward(dy, indices, input_shape):
    """Each dy element added to the input pixel its index names (index -1: nowhere)."""
    dy, indices = np.asarray(dy), np.asarray(indices)
    N, H, W, C = input_shape
    dx = np.zeros((N, H * W, C), dtype=dy.dtype)
    n, oh, ow, c = np.nonzero(np.asarray(indices) >= 0)
    np.add.at(dx, (n, indices[n, oh, ow, c], c), dy[n, oh, ow, c])
    return dx.reshape(N, H, W, C)


def _avg_divisor(shape, kernel, stride, padding, out, count_include_pad):
    """PyTorch's divisor per output pixel (OH, OW): the window clipped to the padded input
    (count_include_pad) or to the input."""
    factors = []
    for size, k, s, p, n in zip(shape[1:3], kernel, stride, padding, out):
        start = np.arange(n) * s - p
        if count_include_pad:
            factors.append(np.minimum(start + k, size + p) - start)
        else:
            factors.append(np.minimum(start + k, size) - np.maximum(start, 0))
    return np.multiply.outer(factors[0], factors[1])


def _sum_pool(x, kernel_size, stride, padding, ceil_mode, divisor):
    x = np.asarray(x)
    N, H, W, C = x.shape
    kernel, stride, padding, _, (OH, OW) = _pool_setup(x.shape, kernel_size, stride, padding, 1,
                                                       ceil_mode)
    y = np.zeros((N, OH, OW, C), dtype=x.dtype)
    for ih, iw, ok_h, ok_w in _pool_taps(x.shape, kernel, stride, padding, (1, 1), (OH, OW)):
        rows, cols = np.nonzero(ok_h)[0], np.nonzero(ok_w)[0]
        y[:, rows[:, None], cols[None, :]] += x[:, ih[ok_h][:, None], iw[ok_w][None, :]]
    if divisor:
        y /= _avg_divisor(x.shape, kernel, stride, padding, (OH, OW), divisor == "pad")[
            None, :, :, None].astype(x.dtype)
    return y


def _sum_pool_backward(dy, input_shape, kernel_size, stride, padding, ceil_mode, divisor):
    dy = np.asarray(dy)
    kernel, stride, padding, _, out = _pool_setup(input_shape, kernel_size, stride, padding, 1,
                                                  ceil_mode)
    if divisor:
        dy = dy / _avg_divisor(input_shape, kernel, stride, padding, out, divisor == "pad")[
            None, :, :, None].astype(dy.dtype)
    dx = np.zeros(input_shape, dtype=dy.dtype)
    for ih, iw, ok_h, ok_w in _pool_taps(input_shape, kernel, stride, padding, (1, 1), out):
        # Within one tap, distinct output pixels read distinct input pixels: no collisions.
        dx[:, ih[ok_h][:, None], iw[ok_w][None, :]] += dy[:, ok_h][:, :, ok_w]
    return dx


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Average pooling (zero padding), PyTorch's divisor."""
    return _sum_pool(x, kernel_size, stride, padding, ceil_mode,
                     "pad" if count_include_pad else "valid")


def avg_pool2d_backward(dy, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True):
    return _sum_pool_backward(dy, tuple(input_shape), kernel_size, stride, padding, ceil_mode,
                              "pad" if count_include_pad else "valid")


def sum_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """Sum over each window (zero padding)."""
    return _sum_pool(x, kernel_size, stride, padding, ceil_mode, None)


def sum_pool2d_backward(dy, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False):
    return _sum_pool_backward(dy, tuple(input_shape), kernel_size, stride, padding, ceil_mode,
                              None)


def global_avg_pool2d(x):
    """Mean over height and width: (N, H, W, C) -> (N, C)."""
    x = np.asarray(x)
    return x.sum(axis=(1, 2)) / x.dtype.type(x.shape[1] * x.shape[2])


def global_avg_pool2d_backward(dy, input_shape):
    dy = np.asarray(dy)
    N, H, W, C = input_shape
    return np.broadcast_to((dy / dy.dtype.type(H * W))[:, None, None, :], (N, H, W, C)).copy()


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


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def relu6(x):
    (x,) = _f64(x)
    return np.minimum(np.maximum(x, 0), 6)  # NaN propagates


def relu6_backward(dy, y):
    dy, y = _f64(dy, y)
    return np.where((y > 0) & (y < 6), dy, 0.0)


def hardsigmoid(x):
    (x,) = _f64(x)
    return np.minimum(np.maximum(x + 3, 0), 6) / 6


def hardsigmoid_backward(dy, x):
    dy, x = _f64(dy, x)
    return np.where((x > -3) & (x < 3), dy / 6, 0.0)


def hardswish(x):
    (x,) = _f64(x)
    return x * np.minimum(np.maximum(x + 3, 0), 6) / 6


def hardswish_backward(dy, x):
    """PyTorch's gradient: 0 for x <= -3, dy (x/3 + 1/2) for -3 < x < 3, dy for x >= 3."""
    dy, x = _f64(dy, x)
    return np.where(x <= -3, 0.0, np.where(x >= 3, dy, dy * (x / 3 + 0.5)))


def silu(x):
    (x,) = _f64(x)
    return x * sigmoid(x)


def silu_backward(dy, x):
    dy, x = _f64(dy, x)
    s = sigmoid(x)
    return dy * s * (1 + x * (1 - s))


_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def normal_cdf(x):
    """Phi(x) = 0.5 erfc(-x / sqrt 2): accurate in the lower tail too (unlike 0.5 (1 + erf))."""
    return 0.5 * _erfc(-np.asarray(x, dtype=np.float64) / math.sqrt(2))


def normal_pdf(x):
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


_GELU_BETA = math.sqrt(2 / math.pi)
_GELU_KAPPA = 0.044715


def gelu(x, approximate="none"):
    """x Phi(x) (PyTorch's default), or the tanh form 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    (x,) = _f64(x)
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(_GELU_BETA * (x + _GELU_KAPPA * x ** 3)))
    return x * normal_cdf(x)


def gelu_backward(dy, x, approximate="none"):
    dy, x = _f64(dy, x)
    if approximate == "tanh":
        t = np.tanh(_GELU_BETA * (x + _GELU_KAPPA * x ** 3))
        return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _GELU_BETA
                     * (1 + 3 * _GELU_KAPPA * x * x))
    return dy * (normal_cdf(x) + x * normal_pdf(x))


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

def batch_norm_forward_train(x, weight, bias, eps=1e-5, activation=None):
    """Normalise over every axis but the last with the batch statistics: (y, mean, biased var);
    activation='relu' applies a ReLU to y."""
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    var = ((x - mean) ** 2).mean(axis=axes)
    y = (x - mean) / np.sqrt(var + eps) * weight + bias
    return (relu(y) if activation == "relu" else y), mean, var


def batch_norm_forward_eval(x, weight, bias, running_mean, running_var, eps=1e-5,
                            activation=None):
    y = (x - running_mean) / np.sqrt(running_var + eps) * weight + bias
    return relu(y) if activation == "relu" else y


def batch_norm_backward(dy, x, weight, mean, var, eps=1e-5, y=None):
    """Training-mode backward through the batch statistics: (dx, dweight, dbias). With y, the
    output of a forward pass with a ReLU, dy is first taken back through that ReLU."""
    if y is not None:
        dy = relu_backward(dy, y)
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
    rows = np.zeros(n, dtype=log_probs.dtype)   # a term of weight 0 adds nothing, even if infinite
    if label_smoothing != 1:
        rows = rows + (1 - label_smoothing) * nll
    if label_smoothing != 0:
        rows = rows + label_smoothing * smooth
    loss = rows.mean()
    return float(loss), np.exp(log_probs)


def softmax_cross_entropy_backward(probs, labels, label_smoothing=0.0):
    n, c = probs.shape
    target = np.full(probs.shape, label_smoothing / c, dtype=probs.dtype)
    target[np.arange(n), labels] += 1 - label_smoothing
    return (probs - target) / n


# --- optimizers ---
# In place, like cconv's: the caller passes copies (float64 for a tight oracle).

def _penalty(p, l1, l2):
    return l1 * np.sign(p) + 2 * l2 * p


def sgd_update(param, grad, momentum_buffer=None, *, lr, momentum=0.0, dampening=0.0,
               weight_decay=0.0, nesterov=False, l1=0.0, l2=0.0, first_step=False):
    g = grad + _penalty(param, l1, l2) + weight_decay * param
    if momentum:
        if first_step:
            momentum_buffer[...] = g
        else:
            momentum_buffer[...] = momentum * momentum_buffer + (1 - dampening) * g
        g = g + momentum * momentum_buffer if nesterov else momentum_buffer
    param -= lr * g
    return param


def adam_update(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1=0.9, beta2=0.999,
                eps=1e-8, weight_decay=0.0, decoupled=False, l1=0.0, l2=0.0):
    g = grad + _penalty(param, l1, l2) + (0.0 if decoupled else weight_decay) * param
    if decoupled:
        param *= 1 - lr * weight_decay
    exp_avg[...] = beta1 * exp_avg + (1 - beta1) * g
    exp_avg_sq[...] = beta2 * exp_avg_sq + (1 - beta2) * g * g
    denom = np.sqrt(exp_avg_sq) / np.sqrt(1 - beta2 ** step) + eps
    param -= lr / (1 - beta1 ** step) * exp_avg / denom
    return param


# --- channel gate (squeeze-excitation) ---

def mul_channel_gate(x, g):
    """y = x * g broadcast over height and width: x (N, H, W, C), g (N, C) or (N, 1, 1, C)."""
    x, g = _f64(x, g)
    return x * g.reshape(g.shape[0], 1, 1, -1)


def mul_channel_gate_backward(dy, x, g):
    """(dx, dg): dx = dy * g, dg = sum over height and width of dy * x, in g's shape."""
    dy, x, g = _f64(dy, x, g)
    dx = dy * g.reshape(g.shape[0], 1, 1, -1)
    return dx, (dy * x).sum(axis=(1, 2)).reshape(g.shape)


# --- upsampling ---

def nearest_source_index(in_size, out_size):
    """PyTorch's 'nearest' source index along one axis: floor(dst * scale) clamped to in - 1,
    scale = in / out, both computed in float32 as PyTorch does (its rounding can move the index
    one below floor(dst * in / out)); dst when out == in, dst // 2 when out == 2 in."""
    dst = np.arange(out_size)
    if out_size == in_size:
        return dst
    if out_size == 2 * in_size:
        return dst // 2
    scale = np.float32(in_size) / np.float32(out_size)
    return np.minimum(np.floor(dst.astype(np.float32) * scale).astype(np.int64), in_size - 1)


def _interp_matrix(in_size, out_size, mode, align_corners=False):
    """The (out, in) matrix M of one axis: y = M x along that axis."""
    m = np.zeros((out_size, in_size))
    dst = np.arange(out_size)
    if mode == "nearest":
        m[dst, nearest_source_index(in_size, out_size)] = 1.0
        return m
    if out_size == in_size:
        return np.eye(in_size)
    if align_corners:
        src = dst * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    else:
        src = np.maximum((dst + 0.5) * in_size / out_size - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam = np.clip(src - i0, 0.0, 1.0)
    i1 = np.minimum(i0 + 1, in_size - 1)
    np.add.at(m, (dst, i0), 1 - lam)
    np.add.at(m, (dst, i1), lam)
    return m


def _pair_size(size):
    """An int, (H, W), or an NHWC shape (N, H, W, C) -> (H, W)."""
    if np.isscalar(size):
        return int(size), int(size)
    size = tuple(int(s) for s in size)
    return size if len(size) == 2 else size[1:3]


def _resize(x, mh, mw):
    return np.einsum("oh,nhwc,pw->nopc", mh, x, mw)


def upsample_nearest2d(x, out_size):
    """PyTorch's interpolate(mode='nearest') on NHWC x, to out_size (Ho, Wo)."""
    (x,) = _f64(x)
    ho, wo = _pair_size(out_size)
    return _resize(x, _interp_matrix(x.shape[1], ho, "nearest"),
                   _interp_matrix(x.shape[2], wo, "nearest"))


def upsample_nearest2d_backward(dy, in_size):
    (dy,) = _f64(dy)
    h, w = _pair_size(in_size)
    return _resize(dy, _interp_matrix(h, dy.shape[1], "nearest").T,
                   _interp_matrix(w, dy.shape[2], "nearest").T)


def upsample_bilinear2d(x, out_size, align_corners=False):
    """PyTorch's interpolate(mode='bilinear', align_corners=...) on NHWC x, to out_size (Ho, Wo)."""
    (x,) = _f64(x)
    ho, wo = _pair_size(out_size)
    return _resize(x, _interp_matrix(x.shape[1], ho, "bilinear", align_corners),
                   _interp_matrix(x.shape[2], wo, "bilinear", align_corners))


def upsample_bilinear2d_backward(dy, in_size, align_corners=False):
    (dy,) = _f64(dy)
    h, w = _pair_size(in_size)
    return _resize(dy, _interp_matrix(h, dy.shape[1], "bilinear", align_corners).T,
                   _interp_matrix(w, dy.shape[2], "bilinear", align_corners).T)
