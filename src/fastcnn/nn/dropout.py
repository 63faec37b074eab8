"""Regularisation by dropping activations."""
import numbers

import numpy as np

import cconv

from .base import Layer, rng

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
        y, self._mask = cconv.dropout(x, self.p, int(rng().integers(2 ** 63 - 1)))
        return y

    def backward(self, dy):
        if self._mask is None:
            return dy
        return cconv.dropout_backward(dy, self._mask, self.p)

    def get_config(self):
        return dict(p=self.p)

    def flops(self, shape):
        return int(np.prod(shape))




class Dropout2d(Layer):
    """Zero whole channels of each sample with probability p in training (scaling the rest by
    1/(1-p)), as PyTorch's Dropout2d on NCHW: one draw per (sample, channel)."""

    def __init__(self, p=0.5, inplace=False):
        if not isinstance(p, numbers.Real) or not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout2d: p must be in [0, 1), got {p}")
        self.p = float(p)
        self._gate = None

    def forward(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.training or self.p == 0.0:
            self._gate = None
            return x
        if x.ndim != 4:
            raise ValueError(f"Dropout2d: expected input of shape (N, H, W, C), got {x.shape}")
        keep = rng().random((x.shape[0], x.shape[3])) >= self.p
        self._gate = (keep / (1.0 - self.p)).astype(np.float32)
        return cconv.mul_channel_gate(x, self._gate)

    def backward(self, dy):
        if self._gate is None:
            return dy
        return cconv.mul_channel_gate(np.ascontiguousarray(dy, dtype=np.float32), self._gate)

    def get_config(self):
        return dict(p=self.p)


class DropPath(Layer):
    """Stochastic depth (Huang et al. 2016): in training, drop a residual branch for a whole
    sample with probability p and scale the kept ones by 1/(1-p); torchvision's
    ``StochasticDepth(p, mode="row")``. Put it at the end of the branch, before the Add."""

    def __init__(self, p=0.0):
        if not isinstance(p, numbers.Real) or not 0.0 <= p < 1.0:
            raise ValueError(f"DropPath: p must be in [0, 1), got {p}")
        self.p = float(p)
        self._scale = None

    def forward(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.training or self.p == 0.0:
            self._scale = None
            return x
        keep = rng().random(x.shape[0]) >= self.p
        self._scale = (keep / (1.0 - self.p)).astype(np.float32).reshape(
            (x.shape[0],) + (1,) * (x.ndim - 1))
        return x * self._scale

    def backward(self, dy):
        if self._scale is None:
            return dy
        return np.asarray(dy, dtype=np.float32) * self._scale

    def get_config(self):
        return dict(p=self.p)
