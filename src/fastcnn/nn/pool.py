"""Pooling: max, average and sum over windows, and global average pooling."""
import numpy as np

import cconv
from cconv._validation import pair, pool_output_size

from .base import Layer, check_nhwc, hwc

class _Pool2d(Layer):
    _dilation = (1, 1)

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        name = type(self).__name__
        self.kernel_size = pair(name, "kernel_size", kernel_size, minimum=1)
        self.stride = self.kernel_size if stride is None else pair(name, "stride", stride, minimum=1)
        self.padding = pair(name, "padding", padding)
        self.ceil_mode = bool(ceil_mode)
        self._shape = None

    def output_shape(self, shape):
        h, w, c = hwc(self, shape)
        ho, wo = pool_output_size(type(self).__name__, (h, w), self.kernel_size, self.stride,
                                  self.padding, self._dilation, self.ceil_mode, (None, h, w, c))
        return (ho, wo, c)

    def flops(self, shape):
        ho, wo, c = self.output_shape(shape)
        return ho * wo * c * self.kernel_size[0] * self.kernel_size[1]

    def get_config(self):
        return dict(kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=list(self.padding), ceil_mode=self.ceil_mode)


class MaxPool2d(_Pool2d):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        if return_indices:
            raise ValueError("MaxPool2d: return_indices=True is not supported")
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.dilation = self._dilation = pair("MaxPool2d", "dilation", dilation, minimum=1)
        self._indices = None

    def forward(self, x):
        x = check_nhwc(self, x, None)
        self._shape = x.shape
        y, self._indices = cconv.max_pool2d(x, self.kernel_size, self.stride, self.padding,
                                            self.dilation, self.ceil_mode)
        return y

    def backward(self, dy):
        return cconv.max_pool2d_backward(dy, self._indices, self._shape)

    def get_config(self):
        return dict(super().get_config(), dilation=list(self.dilation))


class AvgPool2d(_Pool2d):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def _args(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)

    def forward(self, x):
        x = check_nhwc(self, x, None)
        self._shape = x.shape
        return cconv.avg_pool2d(x, **self._args())

    def backward(self, dy):
        return cconv.avg_pool2d_backward(dy, self._shape, **self._args())

    def get_config(self):
        return dict(super().get_config(), count_include_pad=self.count_include_pad)


class SumPool2d(_Pool2d):
    """Sum over each window (an average pool without the division)."""

    def _args(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    ceil_mode=self.ceil_mode)

    def forward(self, x):
        x = check_nhwc(self, x, None)
        self._shape = x.shape
        return cconv.sum_pool2d(x, **self._args())

    def backward(self, dy):
        return cconv.sum_pool2d_backward(dy, self._shape, **self._args())


class GlobalAvgPool2d(Layer):
    """Mean over height and width: (N, H, W, C) -> (N, C).

    The PyTorch equivalent is ``nn.AdaptiveAvgPool2d(1)`` followed by ``nn.Flatten()``; in fastcnn
    write ``GlobalAvgPool2d(), Flatten()`` (Flatten passes a 2-D input through) to keep the
    layer indices, and so the state-dict keys, of such a PyTorch model.
    """

    def forward(self, x):
        x = check_nhwc(self, x, None)
        self._shape = x.shape
        return cconv.global_avg_pool2d(x)

    def backward(self, dy):
        return cconv.global_avg_pool2d_backward(dy, self._shape)

    def output_shape(self, shape):
        h, w, c = hwc(self, shape)
        return (c,)

    def flops(self, shape):
        return int(np.prod(shape))




def _adaptive_bins(size, out):
    """PyTorch's adaptive pooling windows along one axis: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


class _AdaptivePool2d(Layer):
    """Pool (H, W) down to ``output_size`` whatever the input size, PyTorch's windows. When the
    input divides evenly it runs as the compiled fixed-window pooling."""

    def __init__(self, output_size):
        size = (output_size, output_size) if not isinstance(output_size, (tuple, list)) \
            else tuple(output_size)
        if len(size) != 2 or any(s is not None and (not isinstance(s, int) or s < 1)
                                 for s in size):
            raise ValueError(f"{type(self).__name__}: output_size must be an int or a pair of "
                             f"ints >= 1 (or None: the input's), got {output_size!r}")
        self.output_size = size

    def _out(self, h, w):
        return tuple(i if o is None else o for i, o in zip((h, w), self.output_size))

    def output_shape(self, shape):
        h, w, c = hwc(self, shape)
        return self._out(h, w) + (c,)

    def forward(self, x):
        x = check_nhwc(self, x, None)
        n, h, w, c = x.shape
        ho, wo = self._out(h, w)
        self._shape, self._window = x.shape, None
        if h % ho == 0 and w % wo == 0:
            self._window = (h // ho, w // wo)
            return self._fixed(x)
        self._bins = (_adaptive_bins(h, ho), _adaptive_bins(w, wo))
        return self._general(x)

    def get_config(self):
        return dict(output_size=list(self.output_size))

    def flops(self, shape):
        return int(np.prod(shape))


class AdaptiveAvgPool2d(_AdaptivePool2d):
    """Average over adaptive windows; ``AdaptiveAvgPool2d(1)`` is global average pooling with
    a (1, 1, C) output, as PyTorch's (follow it with Flatten for a classifier)."""

    def _fixed(self, x):
        if self._window == x.shape[1:3]:
            return cconv.global_avg_pool2d(x).reshape(x.shape[0], 1, 1, x.shape[3])
        return cconv.avg_pool2d(x, self._window, self._window, 0)

    def _general(self, x):
        rows, cols = self._bins
        y = np.empty((x.shape[0], len(rows), len(cols), x.shape[3]), np.float32)
        for i, (r0, r1) in enumerate(rows):
            for j, (c0, c1) in enumerate(cols):
                y[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2), dtype=np.float64)
        return y

    def backward(self, dy):
        dy = np.ascontiguousarray(dy, dtype=np.float32)
        if self._window is not None:
            if self._window == self._shape[1:3]:
                return cconv.global_avg_pool2d_backward(dy.reshape(dy.shape[0], -1), self._shape)
            return cconv.avg_pool2d_backward(dy, self._shape, self._window, self._window, 0)
        rows, cols = self._bins
        dx = np.zeros(self._shape, np.float64)
        for i, (r0, r1) in enumerate(rows):
            for j, (c0, c1) in enumerate(cols):
                dx[:, r0:r1, c0:c1] += dy[:, i, j, None, None] / ((r1 - r0) * (c1 - c0))
        return dx.astype(np.float32)


class AdaptiveMaxPool2d(_AdaptivePool2d):
    """Maximum over adaptive windows (PyTorch's windows; the gradient goes to the first maximum)."""

    def _fixed(self, x):
        y, self._indices = cconv.max_pool2d(x, self._window, self._window, 0)
        return y

    def _general(self, x):
        rows, cols = self._bins
        n, h, w, c = x.shape
        y = np.empty((n, len(rows), len(cols), c), np.float32)
        self._argmax = {}
        for i, (r0, r1) in enumerate(rows):
            for j, (c0, c1) in enumerate(cols):
                win = x[:, r0:r1, c0:c1].reshape(n, -1, c)
                k = win.argmax(axis=1)
                self._argmax[i, j] = k
                y[:, i, j] = np.take_along_axis(win, k[:, None], axis=1)[:, 0]
        return y

    def backward(self, dy):
        dy = np.ascontiguousarray(dy, dtype=np.float32)
        if self._window is not None:
            return cconv.max_pool2d_backward(dy, self._indices, self._shape)
        rows, cols = self._bins
        n, h, w, c = self._shape
        dx = np.zeros(self._shape, np.float32)
        for (i, j), k in self._argmax.items():
            (r0, r1), (c0, c1) = rows[i], cols[j]
            win = np.zeros((n, (r1 - r0) * (c1 - c0), c), np.float32)
            np.put_along_axis(win, k[:, None], dy[:, i, j][:, None], axis=1)
            dx[:, r0:r1, c0:c1] += win.reshape(n, r1 - r0, c1 - c0, c)
        return dx


class _Pool1d(Layer):
    """A 1-D pooling over (N, L, C) run as its 2-D layer on a 1-pixel-high image."""

    def forward(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 3:
            raise ValueError(f"{type(self).__name__}: expected input of shape (N, L, C), got "
                             f"{x.shape}")
        return self._inner.forward(x[:, None])[:, 0]

    def backward(self, dy):
        return self._inner.backward(np.ascontiguousarray(dy, dtype=np.float32)[:, None])[:, 0]

    def output_shape(self, shape):
        if len(shape) != 2:
            raise ValueError(f"{type(self).__name__}: expected (L, C) per sample, got {shape}")
        return self._inner.output_shape((1,) + tuple(shape))[1:]

    def flops(self, shape):
        return self._inner.flops((1,) + tuple(shape))


def _one(name, value, minimum=0):
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class MaxPool1d(_Pool1d):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        k = _one("MaxPool1d: kernel_size", kernel_size, 1)
        s = k if stride is None else _one("MaxPool1d: stride", stride, 1)
        self._args = dict(kernel_size=k, stride=s, padding=_one("MaxPool1d: padding", padding),
                          dilation=_one("MaxPool1d: dilation", dilation, 1),
                          ceil_mode=bool(ceil_mode))
        self._inner = MaxPool2d((1, k), (1, s), (0, self._args["padding"]),
                                (1, self._args["dilation"]), ceil_mode=bool(ceil_mode))

    def get_config(self):
        return dict(self._args)


class AvgPool1d(_Pool1d):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        k = _one("AvgPool1d: kernel_size", kernel_size, 1)
        s = k if stride is None else _one("AvgPool1d: stride", stride, 1)
        self._args = dict(kernel_size=k, stride=s, padding=_one("AvgPool1d: padding", padding),
                          ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad))
        self._inner = AvgPool2d((1, k), (1, s), (0, self._args["padding"]), bool(ceil_mode),
                                bool(count_include_pad))

    def get_config(self):
        return dict(self._args)


class AdaptiveAvgPool1d(_Pool1d):
    def __init__(self, output_size):
        self.output_size = _one("AdaptiveAvgPool1d: output_size", output_size, 1)
        self._inner = AdaptiveAvgPool2d((1, self.output_size))

    def get_config(self):
        return dict(output_size=self.output_size)
