"""Gradients of a model's outputs with respect to its input or to an inner layer's output, for
explanations (:mod:`fastcnn.explain`) and attacks (:mod:`fastcnn.attacks`).

A model is differentiated as it stands: no autograd tape, its own ``backward`` with the input
gradient asked for. Around that pass the parameters are frozen (so no layer computes or adds a
parameter gradient: their ``.grad`` stay as they were), and the model runs in evaluation mode
(batch-norm running statistics, no dropout) unless ``training=True``, through
``inference_mode(backward=True)`` so that nothing is folded that backward would need. In
training mode the batch-norm statistics a forward pass updates are put back afterwards.

An inner layer is observed by putting a :class:`_Recorder` in its place for the duration: it
runs the layer and keeps its output and the gradient that reaches it. It is not one of the
fused types, so the layer runs unfused (a convolution's output is taken before its ReLU).
"""
import contextlib

import numpy as np

from .graph import Model, Sequential
from .nn import Layer, inference_mode


def single_input(model, x, what):
    """``x`` as the float32 batch of a one-input model (``what`` names the caller)."""
    inputs = getattr(model, "inputs", None)
    if isinstance(model, Model) and not isinstance(model, Sequential) and len(inputs) != 1:
        raise ValueError(f"{what}: the model has {len(inputs)} inputs; explanations and attacks "
                         f"take models of one input")
    if isinstance(x, (list, tuple)):
        raise ValueError(f"{what}: takes one batch of images (N, H, W, C), got a list")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim < 2:
        raise ValueError(f"{what}: takes a batch (N, ...), got an array of shape {x.shape}; "
                         f"a single image is x[None]")
    return x


@contextlib.contextmanager
def _frozen(model):
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad = False
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad = flag


@contextlib.contextmanager
def _buffers_kept(model):
    """Batch-norm statistics (what state_dict has beyond the parameters) as they were."""
    params = {key for key, _ in model.named_parameters()}
    saved = {k: np.copy(v) for k, v in model.state_dict().items() if k not in params}
    try:
        yield
    finally:
        if saved:
            model.load_state_dict(saved, strict=False)


@contextlib.contextmanager
def differentiable(model, training=False):
    """A block in which ``model.forward`` then ``model.backward(dy, input_grad=True)`` give
    input (and recorded) gradients without touching parameters or their gradients."""
    was_training = model.training
    with _frozen(model):
        if training:
            model.train()
            try:
                with _buffers_kept(model):
                    yield
            finally:
                model.train(was_training)
        else:
            with inference_mode(backward=True):
                yield


def output_of(model, y, output, what):
    if isinstance(y, list):
        if not 0 <= output < len(y):
            raise ValueError(f"{what}: output={output}, but the model has {len(y)} outputs")
        return y[output]
    if output != 0:
        raise ValueError(f"{what}: output={output}, but the model has one output")
    return y


def _output_grads(y, output, g):
    """The backward argument: ``g`` for the chosen output, zeros for the others."""
    if not isinstance(y, list):
        return g
    return [g if i == output else np.zeros_like(t) for i, t in enumerate(y)]


def targets_of(scores, target, what):
    """Class indices (N,) from ``target``: an int, one per sample, or None (the top class)."""
    n = len(scores)
    if scores.ndim != 2:
        raise ValueError(f"{what}: the model's output has shape {scores.shape}; a target class "
                         f"needs class scores (N, classes)")
    if target is None:
        return np.argmax(scores, axis=1)
    t = np.asarray(target)
    if t.ndim == 0:
        t = np.full(n, int(t))
    if t.shape != (n,) or t.dtype.kind not in "iu":
        raise ValueError(f"{what}: target must be a class index or one per sample ({n}), got "
                         f"{np.asarray(target).shape} of {np.asarray(target).dtype}")
    if t.min() < 0 or t.max() >= scores.shape[1]:
        raise ValueError(f"{what}: target classes must be in 0..{scores.shape[1] - 1}, got "
                         f"{t.min()}..{t.max()}")
    return t.astype(np.int64)


def gradient(model, x, output_grad, output=0, training=False, what="gradient"):
    """(outputs of ``output``, the input gradient) for one batch: ``output_grad(scores)`` gives
    the gradient of the quantity differentiated with respect to those outputs."""
    with differentiable(model, training):
        y = model.forward(x)
        scores = output_of(model, y, output, what)
        g = np.ascontiguousarray(output_grad(scores), dtype=np.float32)
        dx = model.backward(_output_grads(y, output, g), input_grad=True)
    return scores, dx


def one_hot_grad(targets):
    """``output_grad`` of the target scores' sum (each sample's own target)."""
    def grad(scores):
        g = np.zeros_like(scores)
        g[np.arange(len(scores)), targets] = 1
        return g
    return grad


# --- inner layers ----------------------------------------------------------------------------
class _Recorder(Layer):
    """Runs ``layer`` and keeps its output and the gradient that reaches it."""

    def __init__(self, layer):
        self.layer = layer
        self.output = self.grad = None
        self.takes_several_inputs = getattr(layer, "takes_several_inputs", False)

    def forward(self, x, **kwargs):
        self.output = y = self.layer.forward(x, **kwargs)
        return y

    def backward(self, dy):
        self.grad = np.array(dy, dtype=np.float32)
        return self.layer.backward(dy)

    def output_shape(self, shape):
        return self.layer.output_shape(shape)

    def flops(self, shape):
        return self.layer.flops(shape)


def _child(container, part, path):
    if isinstance(container, Model):   # Sequential: an index or a name; Model: a name
        try:
            return container.get_layer(part)
        except (ValueError, IndexError):
            pass
    else:
        children = dict(container.named_children())
        if part in children:
            return children[part]
    names = [name for name, _ in container.named_children()]
    raise ValueError(f"layer {path!r}: no {part!r} in {type(container).__name__} (it has "
                     f"{names}); name a layer by its name, its index in a Sequential, or a "
                     f"dotted path such as 'layer4.1.conv2'")


def locate(model, layer):
    """(container, child key, the layer) for ``layer``: an index of a Sequential, a name, or a
    dotted path through nested containers (state-dict style, ``'layer4.1.conv2'``)."""
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        if not isinstance(model, Sequential):
            raise ValueError(f"layer={layer}: an index names a layer of a Sequential; name a "
                             f"graph model's layer by its name")
        n = len(model.layers)
        if not -n <= layer < n:
            raise ValueError(f"layer={layer}: the Sequential has {n} layers")
        i = int(layer) % n
        return model, i, model.layers[i]
    if not isinstance(layer, str) or not layer:
        raise ValueError(f"layer must be an index or a name, got {layer!r}")
    container, parts = model, layer.split(".")
    for part in parts[:-1]:
        container = _child(container, part, layer)
    found = _child(container, parts[-1], layer)
    if isinstance(container, Sequential):
        key = next(i for i, child in enumerate(container.layers) if child is found)
    elif isinstance(container, Model):
        key = found.name
        if container.calls(found) > 1:
            raise ValueError(f"layer {layer!r} is called more than once in the model (shared "
                             f"weights): which call to explain is ambiguous")
    else:
        key = parts[-1]
    return container, key, found


def _put(container, key, new):
    if isinstance(container, Sequential):
        container[key] = new
    elif isinstance(container, Model):
        container.replace_layer(key, new)
    else:
        setattr(container, key, new)


@contextlib.contextmanager
def recording(model, layer):
    """A block in which the :class:`_Recorder` yielded stands in for ``layer``."""
    container, key, found = locate(model, layer)
    recorder = _Recorder(found)
    recorder.name = found.name
    _put(container, key, recorder)
    try:
        yield recorder
    finally:
        _put(container, key, found)
