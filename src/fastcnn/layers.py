"""Layers: thin, readable wrappers that call the compiled ops of ``cconv``.

Activations are NHWC float32; parameters are numpy float32 arrays in PyTorch order, so that a
state dict moves between fastcnn and a PyTorch model of the same architecture unchanged.
Every layer keeps what its backward needs from its forward, and ``backward(dy)`` adds the
parameter gradients into ``.grad`` and returns ``dx``.

Random initialisation (Kaiming-uniform with a=sqrt(5), as PyTorch) and dropout masks draw from
one seeded generator: call :func:`manual_seed` for reproducible runs (the default seed is 0, so
a fresh process is reproducible too).

Threads: a forward pass keeps no state between its steps, so several threads may run the same
model at once. :func:`inference_mode` (what ``predict`` and ``evaluate`` use) switches layers to
evaluation behaviour for the calling thread only, without changing the model's mode.
"""
import contextlib
import math
import numbers
import threading

import numpy as np

import cconv
from cconv._validation import (check_workspace, conv_output_size, conv_padding, nbytes_of, pair,
                               pool_output_size)

_generator = np.random.default_rng(0)
_local = threading.local()


@contextlib.contextmanager
def inference_mode():
    """Within this block, every layer behaves as in evaluation mode (batch-norm running
    statistics, no dropout) in the calling thread, whatever its ``training`` flag; other threads
    and the model's own mode are unaffected. ``Sequential.predict`` and ``evaluate`` use it."""
    previous = getattr(_local, "inference", False)
    _local.inference = True
    try:
        yield
    finally:
        _local.inference = previous


def _positive_int(layer, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")
    return int(value)


def manual_seed(seed):
    """Seed the generator behind weight initialisation and dropout (like ``torch.manual_seed``)."""
    global _generator
    _generator = np.random.default_rng(int(seed))
    return _generator


def _rng():
    return _generator


class Parameter:
    """A trainable array: ``data`` (float32, PyTorch order) and ``grad`` (None until backward)."""

    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data = np.ascontiguousarray(data, dtype=np.float32)
        self.grad = None

    @property
    def shape(self):
        return self.data.shape

    @property
    def size(self):
        return self.data.size

    def accumulate(self, g):
        """grad += g (grad is None after zero_grad: then it simply becomes g)."""
        if self.grad is None:
            self.grad = g
        else:
            self.grad = self.grad + g

    def __repr__(self):
        return f"Parameter(shape={self.data.shape})"


# Counts the in-place updates of parameter arrays (optimizer steps): what eval mode prepares
# from parameters (folded, packed convolution weights) is made again when it changes.
_updates = 0


def _parameters_updated():
    global _updates
    _updates += 1


def _uniform(shape, bound):
    return _rng().uniform(-bound, bound, size=shape).astype(np.float32)


def _check_parameters(layer, *shapes):
    """Refuse parameters that would not fit the memory limit, before allocating them."""
    total = sum(nbytes_of(s) for s in shapes)
    check_workspace(layer, 3 * total, f"its parameters {', '.join(str(tuple(s)) for s in shapes)}")


def _kaiming_uniform(shape, fan_in):
    # PyTorch: kaiming_uniform_(w, a=sqrt(5)) -> bound = sqrt(6 / ((1 + a^2) fan_in)) = 1/sqrt(fan_in);
    # the bias is uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) too.
    return _uniform(shape, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0)


def _shape_error(layer, expected, x):
    return ValueError(f"{type(layer).__name__}: expected input of shape {expected}, "
                      f"got {tuple(np.shape(x))}")


def _check_nhwc(layer, x, channels):
    """NHWC input with ``channels`` channels (None: any), as contiguous float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    expected = f"(N, H, W, {channels if channels is not None else 'C'}) (NHWC)"
    if x.ndim != 4 or (channels is not None and x.shape[3] != channels):
        raise _shape_error(layer, expected, x)
    if 0 in x.shape:
        raise ValueError(f"{type(layer).__name__}: empty input of shape {x.shape}")
    return x


class Layer:
    """Base class: parameters, buffers, children, train/eval, state dicts, configs.

    A subclass lists its parameter attributes in ``_param_names`` and its non-trainable state in
    ``_buffer_names``; containers override :meth:`named_children`.
    """

    _param_names = ()
    _buffer_names = ()
    _training = True

    @property
    def training(self):
        """Training mode (set by :meth:`train` and :meth:`eval`); False in this thread inside
        :func:`inference_mode`."""
        return self._training and not getattr(_local, "inference", False)

    @training.setter
    def training(self, mode):
        self._training = bool(mode)

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    # --- structure ---------------------------------------------------------------------------
    def named_children(self):
        return []

    def named_parameters(self, prefix=""):
        for name in self._param_names:
            p = getattr(self, name)
            if p is not None:
                yield prefix + name, p
        for cname, child in self.named_children():
            yield from child.named_parameters(f"{prefix}{cname}.")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        for name in self._buffer_names:
            b = getattr(self, name)
            if b is not None:
                yield prefix + name, b
        for cname, child in self.named_children():
            yield from child.named_buffers(f"{prefix}{cname}.")

    def num_parameters(self):
        return int(sum(p.size for p in self.parameters()))

    def train(self, mode=True):
        self.training = bool(mode)
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # --- state dict (PyTorch keys) -------------------------------------------------------------
    def _state_items(self, prefix=""):
        """(key, owner, attribute, is_parameter) in PyTorch's state-dict order."""
        for name in self._param_names:
            if getattr(self, name) is not None:
                yield prefix + name, self, name, True
        for name in self._buffer_names:
            if getattr(self, name) is not None:
                yield prefix + name, self, name, False
        for cname, child in self.named_children():
            yield from child._state_items(f"{prefix}{cname}.")

    def state_dict(self):
        """An ordered dict of copies of every parameter and buffer, with PyTorch's keys."""
        out = {}
        for key, owner, name, is_param in self._state_items():
            value = getattr(owner, name)
            out[key] = (value.data if is_param else value).copy()
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays (numpy, or torch tensors) into the parameters and buffers, by key.

        Shapes must match exactly. With ``strict`` (the default) missing or unexpected keys are a
        ``ValueError``, as in PyTorch.
        """
        items = {key: (owner, name, is_param) for key, owner, name, is_param in self._state_items()}
        missing = [k for k in items if k not in state_dict]
        unexpected = [k for k in state_dict if k not in items]
        if strict and (missing or unexpected):
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for key, (owner, name, is_param) in items.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            if hasattr(value, "detach"):  # a torch tensor
                value = value.detach().cpu().numpy()
            value = np.asarray(value)
            if value.dtype.kind not in "biuf":
                raise ValueError(f"load_state_dict: {key} must be a numeric array, got dtype "
                                 f"{value.dtype}")
            current = getattr(owner, name)
            target = current.data if is_param else current
            if value.shape != target.shape:
                raise ValueError(f"load_state_dict: {key} has shape {target.shape} in "
                                 f"{type(owner).__name__}, got {value.shape}")
            if is_param:
                if not np.isfinite(value).all():
                    raise ValueError(f"load_state_dict: {key} contains NaN or Inf")
                current.data = np.array(value, dtype=np.float32, order="C")
            else:
                setattr(owner, name, np.array(value, dtype=target.dtype, order="C"))
        return self

    # --- description -----------------------------------------------------------------------------
    def get_config(self):
        """Constructor arguments as JSON-friendly values (used by fastcnn.save)."""
        return {}

    def output_shape(self, shape):
        """Output shape of one sample given its input shape (no batch axis)."""
        return tuple(shape)

    def flops(self, shape):
        """Forward floating-point operations for one sample of input ``shape``."""
        return 0

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


# ---------------------------------------------------------------------------------------------
# Convolutions
# ---------------------------------------------------------------------------------------------
class Conv2d(Layer):
    """2-D convolution over NHWC input; weight (out, in/groups, kh, kw) as PyTorch."""

    _param_names = ("weight", "bias")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", algo="auto"):
        if padding_mode != "zeros":
            raise ValueError(f"Conv2d: only padding_mode='zeros' is supported, got {padding_mode!r}")
        in_channels, out_channels = (_positive_int("Conv2d", "in_channels", in_channels),
                                     _positive_int("Conv2d", "out_channels", out_channels))
        groups = _positive_int("Conv2d", "groups", groups)
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
        _check_parameters("Conv2d", (self.out_channels, fan_in), (self.out_channels,))
        self.weight = Parameter(_kaiming_uniform(
            (self.out_channels, self.in_channels // self.groups) + self.kernel_size, fan_in))
        self.bias = Parameter(_kaiming_uniform((self.out_channels,), fan_in)) if bias else None
        self._x = None

    def _args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def forward(self, x, activation=None):
        x = _check_nhwc(self, x, self.in_channels)
        self._x = x
        return cconv.conv2d(x, self.weight.data, None if self.bias is None else self.bias.data,
                            activation=activation, algo=self.algo, **self._args())

    def backward(self, dy):
        dy = self.backward_params(dy)
        return cconv.conv2d_backward_data(dy, self.weight.data, self._x.shape, algo=self.algo,
                                          **self._args())

    def backward_params(self, dy):
        """The parameter gradients only (the model's first layer needs no input gradient)."""
        dy = np.ascontiguousarray(dy, dtype=np.float32)
        self.weight.accumulate(cconv.conv2d_backward_weight(self._x, dy, self.kernel_size,
                                                            algo=self.algo, **self._args()))
        if self.bias is not None:
            self.bias.accumulate(cconv.bias_backward(dy))
        return dy

    def get_config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=_json_padding(self.padding), dilation=list(self.dilation),
                    groups=self.groups, bias=self.bias is not None, algo=self.algo)

    def output_shape(self, shape):
        h, w, c = _hwc(self, shape, self.in_channels)
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
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros"):
        if padding_mode != "zeros":
            raise ValueError("ConvTranspose2d: only padding_mode='zeros' is supported")
        in_channels, out_channels = (_positive_int("ConvTranspose2d", "in_channels", in_channels),
                                     _positive_int("ConvTranspose2d", "out_channels", out_channels))
        groups = _positive_int("ConvTranspose2d", "groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"ConvTranspose2d: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        self.kernel_size = pair("ConvTranspose2d", "kernel_size", kernel_size, minimum=1)
        self.stride = pair("ConvTranspose2d", "stride", stride, minimum=1)
        self.padding = pair("ConvTranspose2d", "padding", padding)
        self.output_padding = pair("ConvTranspose2d", "output_padding", output_padding)
        self.dilation = pair("ConvTranspose2d", "dilation", dilation, minimum=1)
        # PyTorch computes fan_in from weight.size(1) * kh * kw for transposed convolutions too.
        fan_in = self.out_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        _check_parameters("ConvTranspose2d", (self.in_channels, fan_in), (self.out_channels,))
        self.weight = Parameter(_kaiming_uniform(
            (self.in_channels, self.out_channels // self.groups) + self.kernel_size, fan_in))
        self.bias = Parameter(_kaiming_uniform((self.out_channels,), fan_in)) if bias else None
        self._x = None

    def _args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def forward(self, x):
        x = _check_nhwc(self, x, self.in_channels)
        self._x = x
        return cconv.conv_transpose2d(x, self.weight.data,
                                      None if self.bias is None else self.bias.data,
                                      output_padding=self.output_padding, **self._args())

    def backward(self, dy):
        x = self._x
        dy = np.ascontiguousarray(dy, dtype=np.float32)
        self.weight.accumulate(cconv.conv_transpose2d_backward_weight(x, dy, self.kernel_size,
                                                                      **self._args()))
        if self.bias is not None:
            self.bias.accumulate(cconv.bias_backward(dy))
        return cconv.conv_transpose2d_backward_data(dy, self.weight.data, **self._args())

    def get_config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=list(self.padding), output_padding=list(self.output_padding),
                    groups=self.groups, bias=self.bias is not None, dilation=list(self.dilation))

    def output_shape(self, shape):
        h, w, _ = _hwc(self, shape, self.in_channels)
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


def _hwc(layer, shape, channels=None):
    if len(shape) != 3 or (channels is not None and shape[2] != channels):
        raise ValueError(f"{type(layer).__name__}: expected input of shape (H, W, "
                         f"{channels if channels is not None else 'C'}) per sample, got {tuple(shape)}")
    return tuple(shape)


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------
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
        h, w, c = _hwc(self, shape)
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
        x = _check_nhwc(self, x, None)
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
        x = _check_nhwc(self, x, None)
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
        x = _check_nhwc(self, x, None)
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
        x = _check_nhwc(self, x, None)
        self._shape = x.shape
        return cconv.global_avg_pool2d(x)

    def backward(self, dy):
        return cconv.global_avg_pool2d_backward(dy, self._shape)

    def output_shape(self, shape):
        h, w, c = _hwc(self, shape)
        return (c,)

    def flops(self, shape):
        return int(np.prod(shape))


# ---------------------------------------------------------------------------------------------
# Dense, normalisation, regularisation
# ---------------------------------------------------------------------------------------------
class Linear(Layer):
    """y = x W^T + b over the last axis; weight (out_features, in_features) as PyTorch."""

    _param_names = ("weight", "bias")

    def __init__(self, in_features, out_features, bias=True):
        self.in_features = _positive_int("Linear", "in_features", in_features)
        self.out_features = _positive_int("Linear", "out_features", out_features)
        _check_parameters("Linear", (self.out_features, self.in_features), (self.out_features,))
        self.weight = Parameter(_kaiming_uniform((self.out_features, self.in_features), self.in_features))
        self.bias = Parameter(_kaiming_uniform((self.out_features,), self.in_features)) if bias else None
        self._x = None

    def forward(self, x, activation=None):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise _shape_error(self, f"(N, {self.in_features})", x)
        if x.shape[0] == 0:
            raise ValueError(f"Linear: empty input of shape {x.shape}")
        self._x = x
        return cconv.linear(x, self.weight.data, None if self.bias is None else self.bias.data,
                            activation=activation)

    def backward(self, dy):
        return cconv.linear_backward_data(self.backward_params(dy), self.weight.data)

    def backward_params(self, dy):
        """The parameter gradients only (the model's first layer needs no input gradient)."""
        dy = np.ascontiguousarray(dy, dtype=np.float32)
        self.weight.accumulate(cconv.linear_backward_weight(self._x, dy))
        if self.bias is not None:
            self.bias.accumulate(cconv.bias_backward(dy))
        return dy

    def get_config(self):
        return dict(in_features=self.in_features, out_features=self.out_features,
                    bias=self.bias is not None)

    def output_shape(self, shape):
        if tuple(shape) != (self.in_features,):
            raise ValueError(f"Linear: expected input of shape ({self.in_features},) per sample, "
                             f"got {tuple(shape)}")
        return (self.out_features,)

    def flops(self, shape):
        return 2 * self.in_features * self.out_features


class BatchNorm2d(Layer):
    """Batch normalisation over (N, H, W) per channel: batch statistics in training, running
    averages (momentum 0.1, unbiased variance, as PyTorch) in evaluation."""

    _param_names = ("weight", "bias")
    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        num_features = _positive_int("BatchNorm2d", "num_features", num_features)
        _check_parameters("BatchNorm2d", (6, num_features))
        if not (isinstance(eps, numbers.Real) and math.isfinite(eps) and eps > 0):
            raise ValueError(f"BatchNorm2d: eps must be a positive number, got {eps!r}")
        if momentum is not None and not (isinstance(momentum, numbers.Real)
                                         and 0.0 <= momentum <= 1.0):
            raise ValueError(f"BatchNorm2d: momentum must be None or in [0, 1], got {momentum!r}")
        self.num_features, self.eps, self.momentum = num_features, float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        c = self.num_features
        self.weight = Parameter(np.ones(c, np.float32)) if affine else None
        self.bias = Parameter(np.zeros(c, np.float32)) if affine else None
        if track_running_stats:
            self.running_mean = np.zeros(c, np.float32)
            self.running_var = np.ones(c, np.float32)
            self.num_batches_tracked = np.array(0, dtype=np.int64)
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self._ones, self._zeros = np.ones(c, np.float32), np.zeros(c, np.float32)
        self._cache = None

    def _affine(self):
        if self.affine:
            return self.weight.data, self.bias.data
        return self._ones, self._zeros

    def forward(self, x, activation=None, residual=None):
        """``activation='relu'`` fuses a ReLU after the batch norm into its store; the
        backward of such a forward then takes dy of the ReLU's output (the model skips the
        ReLU's own backward: see Sequential). ``residual`` (a Residual's shortcut output) is
        added before the activation in the same pass; the activation's backward then stays
        with the caller, and this layer's backward takes dy of the sum."""
        x = _check_nhwc(self, x, self.num_features)
        if residual is not None and residual.shape != x.shape:
            raise ValueError(f"BatchNorm2d: the residual added to its output has shape "
                             f"{residual.shape}, the output {x.shape}")
        w, b = self._affine()
        own_relu = activation is not None and residual is None  # its backward is this layer's
        if self.training or not self.track_running_stats:
            y, mean, var = cconv.batch_norm_forward_train(x, w, b, eps=self.eps,
                                                          activation=activation,
                                                          residual=residual)
            self._cache = (x, mean, var, True, y if own_relu else None)
            if self.training and self.track_running_stats:
                self._update_running(mean, var, x.shape[0] * x.shape[1] * x.shape[2])
            return y
        y = cconv.batch_norm_forward_eval(x, w, b, self.running_mean, self.running_var,
                                          eps=self.eps, activation=activation, residual=residual)
        self._cache = (x, self.running_mean, self.running_var, False, y if own_relu else None)
        return y

    def _update_running(self, mean, var, n):
        self.num_batches_tracked = self.num_batches_tracked + 1
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (n / max(n - 1, 1))
        self.running_mean = ((1 - m) * self.running_mean + m * mean).astype(np.float32)
        self.running_var = ((1 - m) * self.running_var + m * unbiased).astype(np.float32)

    def backward(self, dy):
        x, mean, var, batch_stats, relu_y = self._cache
        dy = np.ascontiguousarray(dy, dtype=np.float32)
        w, _ = self._affine()
        if batch_stats:  # through the fused ReLU, if any, in the same passes
            dx, dw, db = cconv.batch_norm_backward(dy, x, w, mean, var, eps=self.eps, y=relu_y)
        else:
            if relu_y is not None:
                dy = cconv.relu_backward(dy, relu_y)
            # Evaluation mode: a fixed per-channel affine map y = x * scale + shift.
            inv_std = (1.0 / np.sqrt(var.astype(np.float64) + self.eps)).astype(np.float32)
            xhat = (x - mean) * inv_std
            dw, db = cconv.bias_backward(dy * xhat), cconv.bias_backward(dy)
            dx = dy * (w * inv_std)
        if self.affine:
            self.weight.accumulate(dw)
            self.bias.accumulate(db)
        return dx

    def get_config(self):
        return dict(num_features=self.num_features, eps=self.eps, momentum=self.momentum,
                    affine=self.affine, track_running_stats=self.track_running_stats)

    def output_shape(self, shape):
        return _hwc(self, shape, self.num_features)

    def flops(self, shape):
        return 2 * int(np.prod(shape))


class Dropout(Layer):
    """Zero each activation with probability p in training (scaling the rest by 1/(1-p));
    the identity in evaluation. Masks come from the generator seeded by :func:`manual_seed`."""

    def __init__(self, p=0.5, inplace=False):
        if not isinstance(p, numbers.Real) or not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = float(p)
        self._mask = None

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self._mask = None
            return np.ascontiguousarray(x, dtype=np.float32)
        y, self._mask = cconv.dropout(x, self.p, int(_rng().integers(2 ** 63 - 1)))
        return y

    def backward(self, dy):
        if self._mask is None:
            return dy
        return cconv.dropout_backward(dy, self._mask, self.p)

    def get_config(self):
        return dict(p=self.p)

    def flops(self, shape):
        return int(np.prod(shape))


# ---------------------------------------------------------------------------------------------
# Activations and reshaping
# ---------------------------------------------------------------------------------------------
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
            raise _shape_error(self, "(N, C) or (N, H, W, C)", x)
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


class Flatten(Layer):
    """(N, H, W, C) -> (N, C*H*W) in (C, H, W) order, as PyTorch flattens NCHW, so that the
    weights of a following Linear layer are PyTorch's. A 2-D input passes through."""

    def __init__(self, start_dim=1, end_dim=-1):
        if (start_dim, end_dim) != (1, -1):
            raise ValueError("Flatten: only start_dim=1, end_dim=-1 is supported")
        self._shape = None

    def forward(self, x):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim < 2:
            raise _shape_error(self, "(N, H, W, C) or (N, features)", x)
        self._shape = x.shape
        if x.ndim == 2:
            return np.ascontiguousarray(x)
        channels_first = (0, x.ndim - 1) + tuple(range(1, x.ndim - 1))
        return np.ascontiguousarray(x.transpose(channels_first)).reshape(x.shape[0], -1)

    def backward(self, dy):
        shape = self._shape
        if len(shape) == 2:
            return dy
        moved = (shape[0], shape[-1]) + tuple(shape[1:-1])
        channels_last = (0,) + tuple(range(2, len(shape))) + (1,)
        return np.ascontiguousarray(np.reshape(dy, moved).transpose(channels_last))

    def output_shape(self, shape):
        return (int(np.prod(shape)),)


class Residual(Layer):
    """y = body(x) + shortcut(x); the shortcut is the identity when None.

    Its state-dict keys are ``body.*`` and ``shortcut.*``, as a PyTorch module with attributes
    ``body`` and ``shortcut``.
    """

    def __init__(self, body, shortcut=None):
        self.body, self.shortcut = body, shortcut

    def named_children(self):
        out = [("body", self.body)]
        if self.shortcut is not None:
            out.append(("shortcut", self.shortcut))
        return out

    def forward(self, x, activation=None):
        """body(x) + shortcut(x); ``activation='relu'`` fuses a ReLU after it into the add.
        A body that ends in a BatchNorm2d (ResNet's blocks) takes the shortcut's output into
        that layer's store: no separate pass for the sum."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        s = x if self.shortcut is None else self.shortcut(x)
        body = self.body
        if getattr(body, "training", False) and getattr(body, "layers", None) and \
                type(body.layers[-1]) is BatchNorm2d:
            return body.forward(x, residual=s, activation=activation)
        return self.join(x, body(x), s, activation)

    def join(self, x, a, s, activation=None):
        """The residual's output from its body's output ``a`` and its shortcut's ``s``."""
        if a.shape != s.shape:
            raise ValueError(f"Residual: body output {a.shape} and shortcut output {s.shape} "
                             f"differ (input {x.shape})")
        return cconv.add(a, s, activation=activation)

    def backward(self, dy, input_relu=None):
        """``input_relu``: the output of a ReLU that produced this layer's input; the gradient
        returned is then the one of that ReLU's input (the model skips the ReLU's backward),
        summed and masked in one pass."""
        # Both branches receive dy itself (the add's gradient), read-only: no copies, and a
        # layer that would write into its dy raises instead of corrupting the other branch's.
        dy = np.ascontiguousarray(dy, dtype=np.float32)
        if dy.flags.writeable:
            dy = dy.view()
            dy.flags.writeable = False
        dx = self.body.backward(dy)
        dxs = dy if self.shortcut is None else self.shortcut.backward(dy)
        if input_relu is not None:
            return cconv.add_relu_backward(dx, dxs, input_relu)
        return cconv.add(dx, dxs)

    def get_config(self):
        from .io import layer_to_config
        return dict(body=layer_to_config(self.body),
                    shortcut=None if self.shortcut is None else layer_to_config(self.shortcut))

    def output_shape(self, shape):
        out = _apply_shape(self.body, shape)
        s = tuple(shape) if self.shortcut is None else _apply_shape(self.shortcut, shape)
        if out != s:
            raise ValueError(f"Residual: body output {out} and shortcut output {s} differ")
        return out

    def flops(self, shape):
        total = self.body.flops(shape) + int(np.prod(self.output_shape(shape)))
        if self.shortcut is not None:
            total += self.shortcut.flops(shape)
        return total

    def __repr__(self):
        return f"Residual(body={self.body!r}, shortcut={self.shortcut!r})"


def _apply_shape(layer, shape):
    return tuple(layer.output_shape(tuple(shape)))


LAYERS = {cls.__name__: cls for cls in (
    Conv2d, ConvTranspose2d, MaxPool2d, AvgPool2d, SumPool2d, GlobalAvgPool2d, Linear,
    BatchNorm2d, Dropout, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, Flatten, Residual)}
