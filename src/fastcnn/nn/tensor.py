"""Layers over tensors of any rank, with NumPy's (and ONNX's) broadcasting: Permute, Reshape,
arithmetic between tensors or with a learned constant, PReLU, Clip, softmax along any axis,
reductions, padding and matrix products.

The image layers assume NHWC; these make no assumption about what the axes mean, which is what
a graph read from an ONNX file needs (and what Keras' Permute and Reshape are for). A constant
operand is a trainable Parameter named ``value`` (a layer-scale, a per-channel bias): it
broadcasts against the whole batch, its shape counting the batch axis as ONNX's does.
"""
import numpy as np

from .base import Layer, Parameter, shape_error


def unbroadcast(g, shape):
    """The gradient ``g`` of a broadcast result, summed back to an operand of ``shape``
    (float64 sums: the order is fixed, so results do not depend on threads)."""
    shape = tuple(shape)
    if g.shape == shape:
        return np.ascontiguousarray(g, dtype=np.float32)
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and g.shape[lead + i] != 1)
    return g.sum(axis=axes, dtype=np.float64).reshape(shape).astype(np.float32)


def _broadcast_sample(layer, shapes):
    """The per-sample shape of a broadcast of per-sample shapes (batch axes excluded)."""
    try:
        return tuple(np.broadcast_shapes(*[(1,) + tuple(s) for s in shapes])[1:])
    except ValueError:
        raise ValueError(f"{layer}: shapes {[tuple(s) for s in shapes]} do not broadcast "
                         f"together") from None


def _align_ranks(xs):
    """Batches of samples of different ranks, each with unit axes put after its batch axis up
    to the highest rank: the samples broadcast as their shapes do (trailing axes aligned), and
    the batch axes meet each other."""
    rank = max(x.ndim for x in xs)
    return [x.reshape(x.shape[:1] + (1,) * (rank - x.ndim) + x.shape[1:]) for x in xs]


class Permute(Layer):
    """Reorder the axes of each sample (Keras'): ``dims`` numbers them from 1 (0 is the batch
    axis, which stays first); ``Permute((3, 1, 2))`` turns NHWC into NCHW."""

    def __init__(self, dims):
        dims = tuple(int(d) for d in dims)
        if sorted(dims) != list(range(1, len(dims) + 1)):
            raise ValueError(f"Permute: dims must be a permutation of 1..{len(dims)}, got {dims}")
        self.dims = dims
        self._axes = (0,) + dims
        self._inverse = tuple(int(i) for i in np.argsort(self._axes))

    def forward(self, x):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != len(self._axes):
            raise shape_error(self, f"a rank-{len(self._axes)} tensor", x)
        return np.ascontiguousarray(x.transpose(self._axes))

    def backward(self, dy):
        return np.ascontiguousarray(np.asarray(dy, dtype=np.float32).transpose(self._inverse))

    def output_shape(self, shape):
        if len(shape) != len(self.dims):
            raise ValueError(f"expected {len(self.dims)} axes per sample, got {tuple(shape)}")
        return tuple(shape[d - 1] for d in self.dims)

    def get_config(self):
        return dict(dims=list(self.dims))


class Reshape(Layer):
    """Give each sample ``target_shape`` (Keras'; one entry may be -1), in C order."""

    def __init__(self, target_shape):
        self.target_shape = tuple(int(v) for v in target_shape)
        if self.target_shape.count(-1) > 1 or any(v < -1 or v == 0 for v in self.target_shape):
            raise ValueError(f"Reshape: target_shape must be positive sizes and at most one -1, "
                             f"got {self.target_shape}")

    def output_shape(self, shape):
        size, known = int(np.prod(shape)), int(np.prod([v for v in self.target_shape if v != -1]))
        if -1 in self.target_shape:
            if size % known:
                raise ValueError(f"cannot reshape {tuple(shape)} to {self.target_shape}")
            return tuple(size // known if v == -1 else v for v in self.target_shape)
        if size != known:
            raise ValueError(f"cannot reshape {tuple(shape)} ({size} values) to "
                             f"{self.target_shape} ({known})")
        return self.target_shape

    def forward(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._shape = x.shape
        try:
            return x.reshape((x.shape[0],) + self.output_shape(x.shape[1:]))
        except ValueError as exc:
            raise ValueError(f"Reshape: input of shape {x.shape}: {exc}") from None

    def backward(self, dy):
        return np.ascontiguousarray(dy, dtype=np.float32).reshape(self._shape)

    def get_config(self):
        return dict(target_shape=list(self.target_shape))


_OPS = ("add", "sub", "mul", "div")


def _apply(op, a, b):
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    return a / b


def _partials(op, a, b, dy):
    """d(a op b)/da * dy and d(a op b)/db * dy, before un-broadcasting."""
    if op == "add":
        return dy, dy
    if op == "sub":
        return dy, -dy
    if op == "mul":
        return dy * b, dy * a
    return dy / b, -dy * a / (b * b)


class Arithmetic(Layer):
    """``op`` ('add', 'sub', 'mul' or 'div') of two tensors, or 'add' of several, with
    broadcasting (ONNX's Add, Sub, Mul, Div and Sum). Called on a list of tensors."""

    takes_several_inputs = True

    def __init__(self, op):
        if op not in _OPS:
            raise ValueError(f"Arithmetic: op must be one of {_OPS}, got {op!r}")
        self.op = op

    def output_shape(self, shapes):
        if not isinstance(shapes, list) or len(shapes) < 2 or (self.op != "add" and len(shapes) != 2):
            raise ValueError(f"Arithmetic {self.op!r}: takes a list of "
                             f"{'2 or more' if self.op == 'add' else '2'} inputs")
        return _broadcast_sample(f"Arithmetic {self.op!r}", shapes)

    def forward(self, xs):
        xs = [np.asarray(x, dtype=np.float32) for x in xs]
        self._shapes = [x.shape for x in xs]
        xs = _align_ranks(xs)
        self._xs = xs
        y = xs[0]
        for x in xs[1:]:
            y = _apply(self.op, y, x)
        return np.ascontiguousarray(y, dtype=np.float32)

    def backward(self, dy):
        dy = np.asarray(dy, dtype=np.float32)
        xs = self._xs
        if self.op == "add":
            grads = [dy] * len(xs)
        else:
            grads = _partials(self.op, xs[0], xs[1], dy)
        return [unbroadcast(g, x.shape).reshape(shape)
                for g, x, shape in zip(grads, xs, self._shapes)]

    def get_config(self):
        return dict(op=self.op)

    def flops(self, shapes):
        return int(np.prod(self.output_shape(shapes)))


class ConstantArithmetic(Layer):
    """``x op value`` (or ``value op x`` with ``reverse``) with a learned constant ``value`` of
    ``shape`` (the batch axis included, as it broadcasts against the batch): a model's input
    normalisation, a layer-scale, a bias. ``op`` as :class:`Arithmetic`, or 'prelu'
    (x where x > 0, else value * x: a PReLU slope of any broadcastable shape)."""

    _param_names = ("value",)

    def __init__(self, op, shape, reverse=False):
        if op not in _OPS + ("prelu",):
            raise ValueError(f"ConstantArithmetic: op must be one of {_OPS + ('prelu',)}, "
                             f"got {op!r}")
        self.op, self.reverse = op, bool(reverse)
        self.value = Parameter(np.zeros(tuple(int(v) for v in shape), np.float32))

    def output_shape(self, shape):
        const = self.value.shape
        if len(const) > len(shape) + 1:
            raise ValueError(f"the constant of shape {const} has more axes than a batch of "
                             f"{tuple(shape)}")
        return _broadcast_sample(f"ConstantArithmetic {self.op!r}", [shape, const[1:]]
                                 if len(const) == len(shape) + 1 else [shape, const])

    def forward(self, x):
        x = np.asarray(x, dtype=np.float32)
        self._x = x
        c = self.value.data
        if self.op == "prelu":
            y = np.where(x > 0, x, x * c)
        elif self.reverse:
            y = _apply(self.op, c, x)
        else:
            y = _apply(self.op, x, c)
        return np.ascontiguousarray(y, dtype=np.float32)

    def backward(self, dy):
        dy = np.asarray(dy, dtype=np.float32)
        x, c = self._x, self.value.data
        if self.op == "prelu":
            dx, dc = np.where(x > 0, dy, dy * c), np.where(x > 0, 0, dy * x)
        elif self.reverse:
            dc, dx = _partials(self.op, c, x, dy)
        else:
            dx, dc = _partials(self.op, x, c, dy)
        if self.value.requires_grad:
            self.value.accumulate(unbroadcast(dc, c.shape))
        return unbroadcast(dx, x.shape)

    def get_config(self):
        return dict(op=self.op, shape=list(self.value.shape), reverse=self.reverse)

    def flops(self, shape):
        return int(np.prod(shape))


class PReLU(Layer):
    """x where x > 0, else a * x, with one learned slope ``a`` per channel (the last axis) or
    one for all (PyTorch's ``num_parameters``, initialised to ``init``)."""

    _param_names = ("weight",)

    def __init__(self, num_parameters=1, init=0.25):
        if int(num_parameters) < 1:
            raise ValueError(f"PReLU: num_parameters must be >= 1, got {num_parameters}")
        self.num_parameters = int(num_parameters)
        self.weight = Parameter(np.full(self.num_parameters, init, np.float32))

    def output_shape(self, shape):
        if self.num_parameters != 1 and (not shape or shape[-1] != self.num_parameters):
            raise ValueError(f"expected {self.num_parameters} channels (last axis), got "
                             f"{tuple(shape)}")
        return tuple(shape)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float32)
        if self.num_parameters != 1 and x.shape[-1] != self.num_parameters:
            raise shape_error(self, f"(..., {self.num_parameters})", x)
        self._x = x
        return np.ascontiguousarray(np.where(x > 0, x, x * self.weight.data), dtype=np.float32)

    def backward(self, dy):
        dy, x, a = np.asarray(dy, dtype=np.float32), self._x, self.weight.data
        if self.weight.requires_grad:
            g = np.where(x > 0, 0, dy * x)
            self.weight.accumulate(unbroadcast(g, (1,) * (x.ndim - 1) + (a.size,)).reshape(a.shape)
                                   if a.size > 1 else np.array([g.sum(dtype=np.float64)],
                                                               np.float32))
        return np.ascontiguousarray(np.where(x > 0, dy, dy * a), dtype=np.float32)

    def get_config(self):
        return dict(num_parameters=self.num_parameters)


class Clip(Layer):
    """min(max(x, min_value), max_value) (ONNX's Clip; ReLU6 is Clip(0, 6)). Either bound
    may be None; the gradient passes where x is strictly inside."""

    def __init__(self, min_value=None, max_value=None):
        self.min_value = None if min_value is None else float(min_value)
        self.max_value = None if max_value is None else float(max_value)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float32)
        self._x = x
        lo = -np.inf if self.min_value is None else np.float32(self.min_value)
        hi = np.inf if self.max_value is None else np.float32(self.max_value)
        return np.ascontiguousarray(np.clip(x, lo, hi), dtype=np.float32)

    def backward(self, dy):
        x = self._x
        inside = np.ones(x.shape, bool)
        if self.min_value is not None:
            inside &= x > np.float32(self.min_value)
        if self.max_value is not None:
            inside &= x < np.float32(self.max_value)
        return np.where(inside, np.asarray(dy, dtype=np.float32), np.float32(0))

    def get_config(self):
        return dict(min_value=self.min_value, max_value=self.max_value)


class SoftmaxAxis(Layer):
    """Softmax (or log-softmax with ``log``) along ``axis`` of the whole tensor (1 or more:
    the batch axis is not a sample axis). :class:`Softmax` is the compiled one over channels."""

    def __init__(self, axis, log=False):
        if int(axis) < 1:
            raise ValueError(f"SoftmaxAxis: axis must be >= 1 (0 is the batch axis), got {axis}")
        self.axis, self.log = int(axis), bool(log)

    def output_shape(self, shape):
        if self.axis > len(shape):
            raise ValueError(f"axis {self.axis} is out of range for {len(shape) + 1} axes")
        return tuple(shape)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float32)
        z = x - x.max(axis=self.axis, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=self.axis, keepdims=True)
        y = (z - np.log(s)) if self.log else e / s
        self._y = y = np.ascontiguousarray(y, dtype=np.float32)
        return y

    def backward(self, dy):
        dy, y = np.asarray(dy, dtype=np.float32), self._y
        if self.log:
            return (dy - np.exp(y) * dy.sum(axis=self.axis, keepdims=True)).astype(np.float32)
        return (y * (dy - (dy * y).sum(axis=self.axis, keepdims=True))).astype(np.float32)

    def get_config(self):
        return dict(axis=self.axis, log=self.log)


class Reduce(Layer):
    """The mean or sum over ``axes`` of each sample (numbered from 1: the batch axis is kept),
    keeping them as size-1 axes with ``keepdims``: ONNX's ReduceMean and ReduceSum."""

    def __init__(self, op, axes, keepdims=True):
        if op not in ("mean", "sum"):
            raise ValueError(f"Reduce: op must be 'mean' or 'sum', got {op!r}")
        axes = tuple(sorted(int(a) for a in axes))
        if not axes or axes[0] < 1 or len(set(axes)) != len(axes):
            raise ValueError(f"Reduce: axes must be distinct sample axes (>= 1; 0 is the batch), "
                             f"got {axes}")
        self.op, self.axes, self.keepdims = op, axes, bool(keepdims)

    def output_shape(self, shape):
        if self.axes[-1] > len(shape):
            raise ValueError(f"axes {self.axes} out of range for {len(shape) + 1} axes")
        dropped = {a - 1 for a in self.axes}
        return tuple(1 if i in dropped else n for i, n in enumerate(shape)
                     if self.keepdims or i not in dropped)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float32)
        self._shape = x.shape
        f = np.mean if self.op == "mean" else np.sum
        return np.ascontiguousarray(f(x, axis=self.axes, keepdims=self.keepdims, dtype=np.float64),
                                    dtype=np.float32)

    def backward(self, dy):
        dy = np.asarray(dy, dtype=np.float32)
        if not self.keepdims:
            dy = np.expand_dims(dy, self.axes)
        if self.op == "mean":
            dy = dy / np.float32(np.prod([self._shape[a] for a in self.axes]))
        return np.ascontiguousarray(np.broadcast_to(dy, self._shape), dtype=np.float32)

    def get_config(self):
        return dict(op=self.op, axes=list(self.axes), keepdims=self.keepdims)


class Pad(Layer):
    """Pad each sample's axes by ``pads`` ((before, after) per sample axis), with ``mode``
    'constant' (``value``), 'reflect' or 'edge' (ONNX's Pad, NumPy's np.pad)."""

    def __init__(self, pads, mode="constant", value=0.0):
        self.pads = tuple((int(b), int(a)) for b, a in pads)
        if any(b < 0 or a < 0 for b, a in self.pads):
            raise ValueError(f"Pad: pads must be >= 0 (crop with a slice), got {self.pads}")
        if mode not in ("constant", "reflect", "edge"):
            raise ValueError(f"Pad: mode must be 'constant', 'reflect' or 'edge', got {mode!r}")
        self.mode, self.value = mode, float(value)

    def output_shape(self, shape):
        if len(shape) != len(self.pads):
            raise ValueError(f"pads for {len(self.pads)} axes, got a sample of {tuple(shape)}")
        if self.mode == "reflect" and any(max(p) >= n for p, n in zip(self.pads, shape)):
            raise ValueError(f"reflect padding {self.pads} must be smaller than {tuple(shape)}")
        return tuple(n + b + a for n, (b, a) in zip(shape, self.pads))

    def forward(self, x):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != len(self.pads) + 1:
            raise shape_error(self, f"a rank-{len(self.pads) + 1} tensor", x)
        self._shape = x.shape
        width = ((0, 0),) + self.pads
        if self.mode == "constant":
            return np.pad(x, width, constant_values=np.float32(self.value))
        return np.pad(x, width, mode=self.mode)

    def backward(self, dy):
        dy = np.asarray(dy, dtype=np.float32)
        if self.mode == "constant":
            index = (slice(None),) + tuple(slice(b, b + n) for (b, _), n in
                                           zip(self.pads, self._shape[1:]))
            return np.ascontiguousarray(dy[index])
        # reflect / edge: each output position reads one input position along each axis; the
        # gradient adds back into it, one axis at a time (padding is separable).
        g = dy
        for axis, ((before, after), n) in enumerate(zip(self.pads, self._shape[1:]), start=1):
            if before == after == 0:
                continue
            source = np.pad(np.arange(n), (before, after), mode=self.mode)
            moved = np.moveaxis(g, axis, 0)
            out = np.zeros((n,) + moved.shape[1:], np.float32)
            np.add.at(out, source, moved)
            g = np.moveaxis(out, 0, axis)
        return np.ascontiguousarray(g, dtype=np.float32)

    def get_config(self):
        return dict(pads=[list(p) for p in self.pads], mode=self.mode, value=self.value)


class MatMul(Layer):
    """x @ weight over the last two axes (NumPy's matmul) with a learned ``weight`` of
    ``weight_shape`` (K, M), or (..., K, M) broadcast against the batch's leading axes."""

    _param_names = ("weight",)

    def __init__(self, weight_shape):
        shape = tuple(int(v) for v in weight_shape)
        if len(shape) < 2:
            raise ValueError(f"MatMul: weight_shape needs 2 or more axes, got {shape}")
        self.weight = Parameter(np.zeros(shape, np.float32))

    def output_shape(self, shape):
        w, full = self.weight.shape, (1,) + tuple(shape)
        if len(full) < 2 or full[-1] != w[-2] or len(w) > len(full):
            raise ValueError(f"a sample of {tuple(shape)} cannot multiply a weight of {w}")
        try:
            batch = np.broadcast_shapes(full[:-2], w[:-2])
        except ValueError:
            raise ValueError(f"a sample of {tuple(shape)} cannot multiply a weight of {w}") from None
        return (tuple(batch) + (full[-2], w[-1]))[1:]

    def forward(self, x):
        x = np.asarray(x, dtype=np.float32)
        self._x = x
        return np.ascontiguousarray(np.matmul(x, self.weight.data), dtype=np.float32)

    def backward(self, dy):
        dy, x, w = np.asarray(dy, dtype=np.float32), self._x, self.weight.data
        if self.weight.requires_grad:
            dw = np.matmul(np.swapaxes(x, -1, -2).astype(np.float64), dy)
            self.weight.accumulate(unbroadcast(dw, w.shape))
        dx = np.matmul(dy, np.swapaxes(w, -1, -2))
        return unbroadcast(dx, x.shape)

    def get_config(self):
        return dict(weight_shape=list(self.weight.shape))
