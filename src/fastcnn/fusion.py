"""Passes over a model's layers that make it faster without changing what it computes.

Training mode: a ReLU after a layer that can apply it in its own store (Conv2d, Linear,
BatchNorm2d, Residual) runs inside that layer; after a BatchNorm2d its backward runs there too.

Eval mode: the model runs *steps* (:func:`chain_steps`): a Conv2d with the BatchNorm2d after it
folded into its weights and the ReLU after that fused, as one prepared cconv.Conv2dPlan; a
Linear with its ReLU; a Residual with its ReLU; any other layer as it is. A step keeps what it
prepared until an array it was made from is replaced (load_state_dict, a training step) or an
optimizer updates the parameters in place.

Both passes work on a chain of layers, where each layer's output feeds the next one only: a
Sequential is one chain, and a graph model hands them the chains of its graph.
"""
import operator

import numpy as np

import cconv

from .nn import Add, BatchNorm2d, Conv2d, Linear, MaxPool2d, ReLU, ReLU6, Residual
from .nn.base import check_nhwc, parameter_updates

# Layers whose forward takes activation='relu': a ReLU right after them is fused into them.
# Convolutions and Linear take activation='relu6' too (their store is a clamp).
FUSES_RELU = (Conv2d, Linear, Residual, BatchNorm2d, Add)
# Layers whose backward also covers a ReLU fused into their forward: that ReLU's own backward
# is skipped (the others keep the ReLU's output for its backward).
FUSES_RELU_BACKWARD = (BatchNorm2d,)
# A ReLU followed by max pooling: its gradient mask (output > 0) is applied to the pooled
# gradient instead, a quarter of the elements for 2x2 windows. The same gradient: the pooling's
# backward routes each element to the window's maximum, which is the pooled value, and elsewhere
# writes zeros, which the mask would keep.
RELU_MASK_AFTER = (MaxPool2d,)
# The activations a convolution's store applies, by layer class.
CLAMPS = {ReLU: "relu", ReLU6: "relu6"}
FUSES_CLAMPS = (Conv2d, Linear)


def clamp_name(layer):
    """'relu' / 'relu6' for the activations a convolution can apply in its store, else None."""
    return CLAMPS.get(type(layer))


class LayerStep:
    """One layer run as it is."""
    size = 1

    def __init__(self, index, layer):
        self.index, self.layer = index, layer

    def __call__(self, x):
        return self.layer.forward(x)


class PreparedStep(LayerStep):
    """A step that prepares something from parameter arrays (``_sources``) and keeps it until
    one of them is replaced or the parameters are updated in place."""

    def __init__(self, index, layer, relu):
        super().__init__(index, layer)
        self.relu = relu
        self.size = 1 + (relu is not None)
        self._cached = None    # (updates, sources, prepared), replaced as a whole (threads)

    def _sources(self):
        raise NotImplementedError

    def _make(self, sources):
        raise NotImplementedError

    def prepared(self):
        sources, updates = self._sources(), parameter_updates()
        cached = self._cached
        if cached is None or cached[0] != updates or not all(map(operator.is_, sources,
                                                                     cached[1])):
            cached = self._cached = (updates, sources, self._make(sources))
        return cached[2]


class ConvStep(PreparedStep):
    """Conv2d (with the eval-mode BatchNorm2d after it folded into its weights) (with the ReLU
    after it fused) as one cconv.Conv2dPlan."""

    def __init__(self, index, conv, bn, relu):
        super().__init__(index, conv, relu)
        self.bn = bn
        self.size += bn is not None
        self._shape = None

    def _sources(self):
        conv, bn = self.layer, self.bn
        sources = (conv.weight.data, None if conv.bias is None else conv.bias.data)
        if bn is not None:
            sources += bn._affine() + (bn.running_mean, bn.running_var)
        return sources

    def _make(self, sources):
        conv, bn = self.layer, self.bn
        w, b = sources[:2]
        if bn is not None:
            gamma, beta, mean, var = sources[2:]
            scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + bn.eps)
            bias = np.zeros(conv.out_channels) if b is None else b.astype(np.float64)
            w = (w * scale[:, None, None, None]).astype(np.float32)
            b = ((bias - mean) * scale + beta).astype(np.float32)
        return cconv.Conv2dPlan(w, b, activation=clamp_name(self.relu), algo=conv.algo,
                                **conv.conv_args())

    def __call__(self, x):
        conv = self.layer
        if x.shape != self._shape:   # a new shape: the layer's own checks and messages
            x = check_nhwc(conv, x, conv.in_channels)
            self._shape = x.shape
        y = self.prepared()(x)
        if self.bn is None:          # what backward needs, as in training mode
            conv._x = x
        if self.relu is not None:
            self.relu._y = y
        return y


class LinearStep(PreparedStep):
    """Linear (with the ReLU after it fused) as a cconv.Conv2dPlan of a 1x1 image."""

    def _sources(self):
        lin = self.layer
        return (lin.weight.data, None if lin.bias is None else lin.bias.data)

    def _make(self, sources):
        w, b = sources
        return cconv.Conv2dPlan(w.reshape(w.shape + (1, 1)), b,
                                activation=clamp_name(self.relu))

    def __call__(self, x):
        lin = self.layer
        if type(x) is not np.ndarray or x.ndim != 2 or x.shape[1] != lin.in_features \
                or x.shape[0] == 0:
            return lin.forward(x, activation=clamp_name(self.relu))  # its errors
        n = x.shape[0]
        lin._x = x
        y = self.prepared()(x.reshape(n, 1, 1, lin.in_features)).reshape(n, lin.out_features)
        if self.relu is not None:
            self.relu._y = y
        return y


class ResidualStep(LayerStep):
    """Residual whose Sequential body and shortcut run their own eval steps (with the ReLU
    after it fused into the add)."""

    def __init__(self, index, residual, relu):
        super().__init__(index, residual)
        self.relu = relu
        self.size = 1 + (relu is not None)

    def __call__(self, x):
        res = self.layer
        x = np.ascontiguousarray(x, dtype=np.float32)
        a = res.body.forward(x)
        s = x if res.shortcut is None else res.shortcut.forward(x)
        y = res.join(x, a, s, activation="relu" if self.relu else None)
        if self.relu is not None:
            self.relu._y = y
        return y




class ReLUInStoreStep(LayerStep):
    """A BatchNorm2d or an Add with the ReLU after it applied in its own store."""

    def __init__(self, index, layer, relu):
        super().__init__(index, layer)
        self.relu, self.size = relu, 2

    def __call__(self, x):
        y = self.relu._y = self.layer.forward(x, activation="relu")
        return y


def chain_steps(layers, first_index=0):
    """The eval-mode steps of a chain of layers: one step per layer, or per Conv2d with the
    BatchNorm2d and the ReLU or ReLU6 after it, Linear with its ReLU or ReLU6, Residual,
    BatchNorm2d or Add with its ReLU."""
    steps, i = [], 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        step = None
        if type(layer) is Conv2d:
            bn = nxt if type(nxt) is BatchNorm2d and nxt.track_running_stats else None
            after = layers[i + 2] if bn is not None and i + 2 < len(layers) else nxt
            step = ConvStep(first_index + i, layer, bn, after if clamp_name(after) else None)
        elif type(layer) is Linear:
            step = LinearStep(first_index + i, layer, nxt if clamp_name(nxt) else None)
        elif type(layer) is Residual:
            step = ResidualStep(first_index + i, layer, nxt if type(nxt) is ReLU else None)
        elif type(layer) in (BatchNorm2d, Add) and type(nxt) is ReLU:
            step = ReLUInStoreStep(first_index + i, layer, nxt)
        steps.append(step or LayerStep(first_index + i, layer))
        i += steps[-1].size
    return steps


def folds_batch_norm(steps):
    """Whether a step folds a batch norm into a convolution (then no backward is possible)."""
    return any(type(step) is ConvStep and step.bn is not None for step in steps)
