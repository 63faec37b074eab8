"""Residual: y = body(x) + shortcut(x), the block of ResNets, as a container of two models."""
import numpy as np

import cconv

from .base import Layer
from .norm import BatchNorm2d
from .registry import layer_from_config, layer_to_config


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
        if getattr(body, "training", False) and getattr(body, "accepts_residual", False) and \
                body.layers and type(body.layers[-1]) is BatchNorm2d:
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
        return dict(body=layer_to_config(self.body),
                    shortcut=None if self.shortcut is None else layer_to_config(self.shortcut))

    @classmethod
    def from_config(cls, config):
        shortcut = config.get("shortcut")
        return cls(layer_from_config(config["body"]),
                   None if shortcut is None else layer_from_config(shortcut))

    def output_shape(self, shape):
        out = apply_shape(self.body, shape)
        s = tuple(shape) if self.shortcut is None else apply_shape(self.shortcut, shape)
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


def apply_shape(layer, shape):
    return tuple(layer.output_shape(tuple(shape)))
