"""Symbolic tensors: what calling layers on :func:`Input` builds (Keras' functional API).

A symbolic tensor stands for one sample's activations (its shape has no batch axis) and knows
the call that produced it; :class:`fastcnn.Model` walks these calls back from its outputs to
make its graph. Nothing is computed here except shapes, so a shape mismatch is found when the
layer is called, not when the model first runs.
"""


class Node:
    """One call of a layer: the tensors it took and the ones it produced (``layer`` is None
    for an :func:`Input`)."""

    __slots__ = ("layer", "inputs", "outputs", "input_name")

    def __init__(self, layer, inputs, input_name=None):
        self.layer, self.inputs, self.outputs = layer, list(inputs), []
        self.input_name = input_name


class SymbolicTensor:
    """The output ``index`` of ``node``: one sample's ``shape`` (no batch axis)."""

    __slots__ = ("shape", "node", "index", "__weakref__")

    def __init__(self, shape, node, index=0):
        self.shape, self.node, self.index = tuple(shape), node, index

    def __repr__(self):
        node = self.node
        source = (f"Input {node.input_name!r}" if node.layer is None else
                  f"{type(node.layer).__name__} {node.layer.name or ''}".rstrip())
        return f"SymbolicTensor(shape=(None, {', '.join(map(str, self.shape))}), from {source})"


def Input(shape, name=None):
    """A model input: one sample's shape without the batch axis, NHWC for images
    (``fc.Input((96, 96, 3))``), (L, C) for sequences, (features,) for vectors."""
    try:
        shape = tuple(int(v) for v in shape)
    except TypeError:
        raise ValueError(f"Input: shape must be a tuple of sizes, got {shape!r}") from None
    if not shape or any(v < 1 for v in shape):
        raise ValueError(f"Input: shape must be positive sizes without the batch axis, got {shape}")
    if name is not None and (not isinstance(name, str) or not name or "." in name):
        raise ValueError(f"Input: name must be a non-empty string without '.', got {name!r}")
    node = Node(None, [], input_name=name)
    tensor = SymbolicTensor(shape, node)
    node.outputs.append(tensor)
    return tensor


def describe(layer):
    """'Conv2d 'stem'' or 'Conv2d': how errors name a layer."""
    return f"{type(layer).__name__} {layer.name!r}" if layer.name else type(layer).__name__


def call_symbolic(layer, x):
    """``layer(x)`` on symbolic tensors: the output shape(s) checked now, the call recorded."""
    several = isinstance(x, (list, tuple))
    inputs = list(x) if several else [x]
    if several != bool(getattr(layer, "takes_several_inputs", False)):
        expected = "one tensor" if several else "a list of tensors"
        raise ValueError(f"{describe(layer)}: takes {expected}, got "
                         f"{[t.shape for t in inputs] if several else x.shape}")
    shapes = [t.shape for t in inputs]
    try:
        out = layer.output_shape(shapes if several else shapes[0])
    except ValueError as exc:
        raise ValueError(f"{describe(layer)} called on input shape"
                         f"{'s' if several else ''} {shapes if several else shapes[0]}: "
                         f"{exc}") from None
    node = Node(layer, inputs)
    multiple = getattr(layer, "multiple_outputs", False)
    for i, shape in enumerate(out if multiple else [out]):
        node.outputs.append(SymbolicTensor(shape, node, i))
    return list(node.outputs) if multiple else node.outputs[0]
