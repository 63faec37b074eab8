"""Convolutions: Conv2d and ConvTranspose2d over NHWC input, weights in PyTorch order."""
import numbers

import numpy as np

import cconv
from cconv._validation import conv_output_size, conv_padding, pair

from .base import (Layer, Parameter, check_nhwc, check_parameters, hwc, kaiming_uniform,
                   positive_int)

class Conv2d(Layer):
    """2-D convolution over NHWC input; weight (out, in/groups, kh, kw) as PyTorch."""

    _param_names = ("weight", "bias")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", algo="auto"):
        if padding_mode != "zeros":
            raise ValueError(f"Conv2d: only padding_mode='zeros' is supported, got {padding_mode!r}")
        in_channels, out_channels = (positive_int("Conv2d", "in_channels", in_channels),
                                     positive_int("Conv2d", "out_channels", out_channels))
        groups = positive_int("Conv2d", "groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        self.kernel_size = pair("Conv2d", "kernel_size", kernel_size, minimum=1)
        self.stride = pair("Conv2d", "stride", stride, minimum=1)
        self.dilation = pair("Conv2d", "dilation", dilation, minimum=1)
        self.padding = padding if isinstance(padding, str) else _conv_padding_arg(padding)
        self.algo = algo
        fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        check_parameters("Conv2d", (self.out_channels, fan_in), (self.out_channels,))
        self.weight = Parameter(kaiming_uniform(
            (self.out_channels, self.in_channels // self.groups) + self.kernel_size, fan_in))
        self.bias = Parameter(kaiming_uniform((self.out_channels,), fan_in)) if bias else None
        self._x = None

    def conv_args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def forward(self, x, activation=None):
        x = check_nhwc(self, x, self.in_channels)
        self._x = x
        return cconv.conv2d(x, self.weight.data, None if self.bias is None else self.bias.data,
                            activation=activation, algo=self.algo, **self.conv_args())

    def backward(self, dy):
        dy = self.backward_params(dy)
        return cconv.conv2d_backward_data(dy, self.weight.data, self._x.shape, algo=self.algo,
                                          **self.conv_args())

    def backward_params(self, dy):
        """The parameter gradients only (the model's first layer needs no input gradient)."""
        dy = np.ascontiguousarray(dy, dtype=np.float32)
        if self.weight.requires_grad:   # frozen: no weight-gradient pass at all
            self.weight.accumulate(cconv.conv2d_backward_weight(self._x, dy, self.kernel_size,
                                                                algo=self.algo, **self.conv_args()))
        if self.bias is not None and self.bias.requires_grad:
            self.bias.accumulate(cconv.bias_backward(dy))
        return dy

    def get_config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=_json_padding(self.padding), dilation=list(self.dilation),
                    groups=self.groups, bias=self.bias is not None, algo=self.algo)

    def output_shape(self, shape):
        h, w, c = hwc(self, shape, self.in_channels)
        pad = conv_padding("Conv2d", self.padding, self.kernel_size, self.stride, self.dilation, (h, w))
        ho, wo = conv_output_size("Conv2d", (h, w), self.kernel_size, self.stride, pad,
                                  self.dilation, (None, h, w, c))
        return (ho, wo, self.out_channels)

    def flops(self, shape):
        ho, wo, co = self.output_shape(shape)
        k = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        return 2 * ho * wo * co * k


class ConvTranspose2d(Layer):
    """Transposed convolution (the gradient of Conv2d w.r.t. its input); weight (in, out/groups, kh, kw)."""

    _param_names = ("weight", "bias")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 algo="auto"):
        if padding_mode != "zeros":
            raise ValueError("ConvTranspose2d: only padding_mode='zeros' is supported")
        in_channels, out_channels = (positive_int("ConvTranspose2d", "in_channels", in_channels),
                                     positive_int("ConvTranspose2d", "out_channels", out_channels))
        groups = positive_int("ConvTranspose2d", "groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"ConvTranspose2d: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        self.kernel_size = pair("ConvTranspose2d", "kernel_size", kernel_size, minimum=1)
        self.stride = pair("ConvTranspose2d", "stride", stride, minimum=1)
        self.padding = pair("ConvTranspose2d", "padding", padding)
        self.output_padding = pair("ConvTranspose2d", "output_padding", output_padding)
        self.dilation = pair("ConvTranspose2d", "dilation", dilation, minimum=1)
        self.algo = algo
        # PyTorch computes fan_in from weight.size(1) * kh * kw for transposed convolutions too.
        fan_in = self.out_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        check_parameters("ConvTranspose2d", (self.in_channels, fan_in), (self.out_channels,))
        self.weight = Parameter(kaiming_uniform(
            (self.in_channels, self.out_channels // self.groups) + self.kernel_size, fan_in))
        self.bias = Parameter(kaiming_uniform((self.out_channels,), fan_in)) if bias else None
        self._x = None

    def conv_args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def forward(self, x):
        x = check_nhwc(self, x, self.in_channels)
        self._x = x
        return cconv.conv_transpose2d(x, self.weight.data,
                                      None if self.bias is None else self.bias.data,
                                      output_padding=self.output_padding, algo=self.algo,
                                      **self.conv_args())

    def backward(self, dy):
        x = self._x
        dy = np.ascontiguousarray(dy, dtype=np.float32)
        if self.weight.requires_grad:
            self.weight.accumulate(cconv.conv_transpose2d_backward_weight(x, dy, self.kernel_size,
                                                                          **self.conv_args()))
        if self.bias is not None and self.bias.requires_grad:
            self.bias.accumulate(cconv.bias_backward(dy))
        return cconv.conv_transpose2d_backward_data(dy, self.weight.data, **self.conv_args())

    def get_config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=list(self.padding), output_padding=list(self.output_padding),
                    groups=self.groups, bias=self.bias is not None, dilation=list(self.dilation),
                    algo=self.algo)

    def output_shape(self, shape):
        h, w, _ = hwc(self, shape, self.in_channels)
        out = [(size - 1) * s - 2 * p + d * (k - 1) + op + 1 for size, s, p, d, k, op in
               zip((h, w), self.stride, self.padding, self.dilation, self.kernel_size,
                   self.output_padding)]
        return (out[0], out[1], self.out_channels)

    def flops(self, shape):
        h, w, _ = shape
        k = self.out_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        return 2 * h * w * self.in_channels * k


def _conv_padding_arg(padding):
    if isinstance(padding, numbers.Integral):
        return (int(padding), int(padding))
    rows, cols = padding
    if isinstance(rows, numbers.Integral) and isinstance(cols, numbers.Integral):
        return (int(rows), int(cols))
    return (tuple(int(v) for v in rows), tuple(int(v) for v in cols))


def _json_padding(padding):
    if isinstance(padding, str):
        return padding
    return [list(p) if isinstance(p, tuple) else p for p in padding]


class Conv1d(Conv2d):
    """1-D convolution over (N, L, C) input (time series, audio), run by the 2-D kernels as a
    convolution of a 1-pixel-high image; weight (out, in/groups, k) as PyTorch's Conv1d."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", algo="auto"):
        k, s, d = (_single("Conv1d", n, v) for n, v in
                   (("kernel_size", kernel_size), ("stride", stride), ("dilation", dilation)))
        pad = padding if isinstance(padding, str) else ((0, 0), (_single("Conv1d", "padding",
                                                                         padding, 0),) * 2)
        super().__init__(in_channels, out_channels, (1, k), (1, s), pad, (1, d), groups, bias,
                         padding_mode, algo)
        self.weight.data = self.weight.data.reshape(self.out_channels, -1, k)

    def _weight4(self):
        w = self.weight.data
        return w.reshape(w.shape[0], w.shape[1], 1, w.shape[2])

    def forward(self, x, activation=None):
        x = _check_nlc(self, x, self.in_channels)
        self._x = x[:, None]
        y = cconv.conv2d(self._x, self._weight4(), None if self.bias is None else self.bias.data,
                         activation=activation, algo=self.algo, **self.conv_args())
        return y[:, 0]

    def backward(self, dy):
        dy = self.backward_params(dy)
        dx = cconv.conv2d_backward_data(dy, self._weight4(), self._x.shape, algo=self.algo,
                                        **self.conv_args())
        return dx[:, 0]

    def backward_params(self, dy):
        dy = np.ascontiguousarray(dy, dtype=np.float32)[:, None]
        if self.weight.requires_grad:
            dw = cconv.conv2d_backward_weight(self._x, dy, self.kernel_size, algo=self.algo,
                                              **self.conv_args())
            self.weight.accumulate(dw.reshape(self.weight.shape))
        if self.bias is not None and self.bias.requires_grad:
            self.bias.accumulate(cconv.bias_backward(dy))
        return dy

    def get_config(self):
        pad = self.padding if isinstance(self.padding, str) else self.padding[1][0]
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=self.kernel_size[1], stride=self.stride[1], padding=pad,
                    dilation=self.dilation[1], groups=self.groups, bias=self.bias is not None,
                    algo=self.algo)

    def output_shape(self, shape):
        if len(shape) != 2 or shape[1] != self.in_channels:
            raise ValueError(f"Conv1d: expected input of shape (L, {self.in_channels}) per "
                             f"sample, got {tuple(shape)}")
        return super().output_shape((1,) + tuple(shape))[1:]

    def flops(self, shape):
        return super().flops((1,) + tuple(shape))


def _single(layer, name, value, minimum=1):
    """A 1-D size given as an int or a 1-tuple."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{layer}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_nlc(layer, x, channels):
    """(N, L, C) input with ``channels`` channels, as contiguous float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 3 or (channels is not None and x.shape[2] != channels):
        raise ValueError(f"{type(layer).__name__}: expected input of shape (N, L, "
                         f"{channels if channels is not None else 'C'}) (channels last), got "
                         f"{x.shape}")
    if 0 in x.shape:
        raise ValueError(f"{type(layer).__name__}: empty input of shape {x.shape}")
    return x
