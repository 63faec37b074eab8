"""Plain-numpy implementation of every op of the compiled op set, forward and backward.

Written for clarity, not speed: the oracle the tests compare against and the baseline the
benchmarks measure. Same conventions as ``cconv``: NHWC activations, PyTorch-order parameters.
Every function computes in the dtype it is given (pass float64 for a tight oracle).
"""
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
