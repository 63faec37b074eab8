"""Layers that join several tensors: Add, Multiply (with a squeeze-excitation gate broadcast
over the pixels) and Concatenate (channels). Called on a list of tensors in a graph model."""
import numpy as np

import cconv

from .base import Layer


def _read_only(a):
    """``a`` as a read-only view: a gradient handed to several branches must not be written
    into by one of them."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


class _Merge(Layer):
    takes_several_inputs = True

    def _inputs(self, xs):
        if not isinstance(xs, (list, tuple)) or len(xs) < 2:
            raise ValueError(f"{type(self).__name__}: takes a list of at least 2 inputs, got "
                             f"{type(xs).__name__}")
        return [np.ascontiguousarray(x, dtype=np.float32) for x in xs]

    def output_shape(self, shapes):
        if not isinstance(shapes, list) or len(shapes) < 2:
            raise ValueError(f"{type(self).__name__}: takes a list of at least 2 inputs")
        shapes = [tuple(s) for s in shapes]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"{type(self).__name__}: input shapes {shapes} differ")
        return shapes[0]


class Add(_Merge):
    """The elementwise sum of its inputs (all of one shape): a residual connection, a
    detection neck's merge of two scales. A ReLU after it runs in the same pass."""

    def forward(self, xs, activation=None):
        xs = self._inputs(xs)
        shapes = [x.shape for x in xs]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"Add: input shapes {shapes} differ")
        self._n = len(xs)
        y = xs[0]
        for k, x in enumerate(xs[1:]):
            last = k == len(xs) - 2
            y = cconv.add(y, x, activation=activation if last else None)
        return y

    def backward(self, dy):
        dy = _read_only(dy)
        return [dy] * self._n

    def flops(self, shapes):
        return (len(shapes) - 1) * int(np.prod(shapes[0]))


class Multiply(_Merge):
    """The elementwise product of its inputs. An input of shape (1, 1, C) (a squeeze-excitation
    gate, e.g. after ``AdaptiveAvgPool2d(1)`` and two 1x1 convolutions) or (C,) is broadcast
    over the (H, W, C) pixels of the other, as in MobileNetV3 and EfficientNet."""

    def output_shape(self, shapes):
        if not isinstance(shapes, list) or len(shapes) < 2:
            raise ValueError("Multiply: takes a list of at least 2 inputs")
        shapes = [tuple(s) for s in shapes]
        full = max(shapes, key=lambda s: int(np.prod(s)))
        for s in shapes:
            if s != full and not _is_gate(s, full):
                raise ValueError(f"Multiply: input shapes {shapes}: each must be {full} or a "
                                 f"per-channel gate (1, 1, {full[-1]})")
        return full

    def forward(self, xs):
        xs = self._inputs(xs)
        self._xs = xs
        y = xs[0]
        for x in xs[1:]:
            y = _multiply(y, x)
        return y

    def backward(self, dy):
        dy = np.ascontiguousarray(dy, dtype=np.float32)
        xs = self._xs
        grads = []
        for i, x in enumerate(xs):
            others = None
            for j, o in enumerate(xs):   # the product of the other inputs
                if j != i:
                    others = o if others is None else _multiply(others, o)
            g = _multiply(dy, others)
            if g.shape != x.shape:   # a broadcast gate: sum over the pixels it was spread on
                g = g.reshape(g.shape[0], -1, g.shape[-1]).sum(axis=1, dtype=np.float64)
                g = g.astype(np.float32).reshape(x.shape)
            grads.append(g)
        return grads

    def flops(self, shapes):
        return (len(shapes) - 1) * int(np.prod(max(shapes, key=lambda s: int(np.prod(s)))))


def _is_gate(s, full):
    return len(full) >= 2 and s in ((1,) * (len(full) - 1) + (full[-1],), (full[-1],))


def _multiply(a, b):
    if a.shape == b.shape:
        return np.multiply(a, b)
    if a.size < b.size:
        a, b = b, a
    if a.ndim == 4 and b.size == a.shape[0] * a.shape[3]:
        return cconv.mul_channel_gate(a, b.reshape(a.shape[0], a.shape[3]))
    return np.multiply(a, b.reshape((b.shape[0],) + (1,) * (a.ndim - 2) + (a.shape[-1],)))


class Concatenate(Layer):
    """Its inputs side by side along ``axis``: the channels by default (Inception, U-Net's skip
    connections, DenseNet; NHWC's contiguous axis, where PyTorch's torch.cat(dim=1) on NCHW
    points), or any other sample axis (1 = the first after the batch)."""

    takes_several_inputs = True

    def __init__(self, axis=-1):
        if isinstance(axis, bool) or not isinstance(axis, int) or axis == 0:
            raise ValueError(f"Concatenate: axis must be a sample axis (-1 for the channels, or "
                             f">= 1; 0 is the batch), got {axis!r}")
        self.axis = axis

    def _sample_axis(self, rank):
        """The axis within one sample's shape of ``rank`` axes."""
        axis = self.axis - 1 if self.axis > 0 else rank + self.axis
        if not 0 <= axis < rank:
            raise ValueError(f"Concatenate: axis {self.axis} is out of range for samples of "
                             f"{rank} axes")
        return axis

    def output_shape(self, shapes):
        if not isinstance(shapes, list) or len(shapes) < 2:
            raise ValueError("Concatenate: takes a list of at least 2 inputs")
        shapes = [tuple(s) for s in shapes]
        if any(len(s) != len(shapes[0]) for s in shapes):
            raise ValueError(f"Concatenate: input shapes {shapes} differ in rank")
        axis = self._sample_axis(len(shapes[0]))
        rest = [s[:axis] + s[axis + 1:] for s in shapes]
        if any(r != rest[0] for r in rest):
            raise ValueError(f"Concatenate: input shapes {shapes} differ in more than axis "
                             f"{self.axis}")
        return shapes[0][:axis] + (sum(s[axis] for s in shapes),) + shapes[0][axis + 1:]

    def forward(self, xs):
        if not isinstance(xs, (list, tuple)) or len(xs) < 2:
            raise ValueError("Concatenate: takes a list of at least 2 inputs")
        xs = [np.asarray(x, dtype=np.float32) for x in xs]
        self.output_shape([x.shape[1:] for x in xs])
        self._dim = 1 + self._sample_axis(xs[0].ndim - 1)
        self._widths = [x.shape[self._dim] for x in xs]
        return np.concatenate(xs, axis=self._dim)

    def backward(self, dy):
        dy = np.asarray(dy, dtype=np.float32)
        bounds = np.cumsum(self._widths)[:-1]
        return [np.ascontiguousarray(part) for part in np.split(dy, bounds, axis=self._dim)]

    def get_config(self):
        return dict(axis=self.axis)
