"""Activation functions, elementwise (softmax over the channel axis)."""
import numpy as np

import cconv

from .base import Layer, shape_error

class _Elementwise(Layer):
    def flops(self, shape):
        return int(np.prod(shape))


class ReLU(_Elementwise):
    def __init__(self, inplace=False):
        self._y = None

    def forward(self, x):
        y = cconv.relu(x)
        self._y = y   # (return y, not self._y: another thread may run this layer too)
        return y

    def backward(self, dy):
        return cconv.relu_backward(dy, self._y)


class LeakyReLU(_Elementwise):
    def __init__(self, negative_slope=0.01, inplace=False):
        self.negative_slope = float(negative_slope)
        self._x = None

    def forward(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._x = x
        return cconv.leaky_relu(x, self.negative_slope)

    def backward(self, dy):
        return cconv.leaky_relu_backward(dy, self._x, self.negative_slope)

    def get_config(self):
        return dict(negative_slope=self.negative_slope)


class Sigmoid(_Elementwise):
    def forward(self, x):
        y = cconv.sigmoid(x)
        self._y = y
        return y

    def backward(self, dy):
        return cconv.sigmoid_backward(dy, self._y)


class Tanh(_Elementwise):
    def forward(self, x):
        y = cconv.tanh(x)
        self._y = y
        return y

    def backward(self, dy):
        return cconv.tanh_backward(dy, self._y)


class Softmax(_Elementwise):
    """Softmax over the channel axis: the last axis of NHWC or (N, features) input.

    ``dim`` follows PyTorch's meaning: 1 (or -1) is the channel axis, which is where PyTorch's
    dim=1 points for NCHW and (N, C) tensors.
    """

    def __init__(self, dim=1):
        if dim not in (1, -1):
            raise ValueError(f"Softmax: only the channel axis (dim=1 or -1) is supported, got {dim}")
        self.dim = dim
        self._y = None

    def forward(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim < 2:
            raise shape_error(self, "(N, C) or (N, H, W, C)", x)
        y = cconv.softmax(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        self._y = y
        return y

    def backward(self, dy):
        y = self._y
        dy = np.ascontiguousarray(dy, dtype=np.float32).reshape(-1, y.shape[-1])
        return cconv.softmax_backward(dy, y.reshape(-1, y.shape[-1])).reshape(y.shape)

    def get_config(self):
        return dict(dim=self.dim)

    def flops(self, shape):
        return 3 * int(np.prod(shape))




class _Pointwise(_Elementwise):
    """An activation computed by a pair of compiled ops: ``cconv.<op>(x)`` and
    ``cconv.<op>_backward(dy, x)``."""

    _op = None

    def forward(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._saved = x
        return getattr(cconv, self._op)(x)

    def backward(self, dy):
        return getattr(cconv, self._op + "_backward")(dy, self._saved)


class ReLU6(_Elementwise):
    """min(max(x, 0), 6) (MobileNetV2). After a convolution it runs in the convolution's store."""

    def __init__(self, inplace=False):
        self._y = None

    def forward(self, x):
        y = cconv.relu6(x)
        self._y = y
        return y

    def backward(self, dy):
        return cconv.relu6_backward(dy, self._y)


class Hardsigmoid(_Pointwise):
    """relu6(x + 3) / 6 (MobileNetV3's gates)."""
    _op = "hardsigmoid"

    def __init__(self, inplace=False):
        self._saved = None


class Hardswish(_Pointwise):
    """x * relu6(x + 3) / 6 (MobileNetV3)."""
    _op = "hardswish"

    def __init__(self, inplace=False):
        self._saved = None


class SiLU(_Pointwise):
    """x * sigmoid(x), also called swish (EfficientNet)."""
    _op = "silu"

    def __init__(self, inplace=False):
        self._saved = None


class GELU(_Elementwise):
    """x * Phi(x) with the exact normal CDF, or its tanh approximation with
    ``approximate='tanh'`` (PyTorch's argument; ConvNeXt, vision transformers)."""

    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        self._x = None

    def forward(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._x = x
        return cconv.gelu(x, approximate=self.approximate)

    def backward(self, dy):
        return cconv.gelu_backward(dy, self._x, approximate=self.approximate)

    def get_config(self):
        return dict(approximate=self.approximate)


class Identity(Layer):
    """Passes its input through (a placeholder, e.g. for a removed head)."""

    def __init__(self, *args, **kwargs):
        pass

    def forward(self, x):
        return x

    def backward(self, dy):
        return dy
