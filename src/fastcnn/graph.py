"""Models: graphs of layers (Keras' functional API), and Sequential, a chain of layers.

    inp = fc.Input((96, 96, 3))
    x = fc.Conv2d(3, 16, 3, padding=1, name="stem")(inp)
    y = fc.Concatenate()([fc.ReLU()(x), fc.MaxPool2d(2)(x)])
    model = fc.Model(inp, [head1(y), head2(y)])

A :class:`Model` walks back from its outputs to its inputs once, when it is made, and cuts the
graph into *segments*: maximal chains of layers in which each layer's output feeds only the
next (a layer with several inputs may start one). Each chain runs as a :class:`Sequential`, so
the fusions of :mod:`fastcnn.fusion` (a ReLU in the store of the layer before it, batch norm
folded into the convolution in eval mode) apply inside every chain of every model, and a
Sequential is the one-chain case. Between segments the model keeps the activations by tensor
and sums the gradients of a tensor that feeds several layers.

Training (compile, fit, evaluate, predict) comes from :class:`fastcnn.training.Trainer`.
"""
import copy
import re

import numpy as np

import cconv

from .fusion import (FUSES_CLAMPS, FUSES_RELU, FUSES_RELU_BACKWARD, RELU_MASK_AFTER,
                     chain_steps, folds_batch_norm)
from .nn import BatchNorm2d, Conv2d, Layer, ReLU, ReLU6, Residual, Sigmoid, Softmax
from .nn.base import backward_kept
from .nn.registry import layer_from_config, layer_to_config, register
from .nn.symbolic import Input, SymbolicTensor, describe
from .training.trainer import Trainer


def _snake(name):
    """Conv2d -> conv2d, GlobalAvgPool2d -> global_avg_pool2d, ReLU6 -> relu6."""
    for word in ("ReLU", "SiLU", "GELU"):
        name = name.replace(word, word.capitalize())
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


class _Segment:
    """A part of a graph run as one call: ``runner`` (a chain, or one layer with several
    outputs) from its ``inputs`` to its ``outputs`` (symbolic tensors)."""

    __slots__ = ("runner", "inputs", "outputs", "several_inputs", "several_outputs", "nodes")

    def __init__(self, runner, nodes):
        self.runner, self.nodes = runner, nodes
        self.inputs, self.outputs = nodes[0].inputs, nodes[-1].outputs
        self.several_inputs = bool(getattr(nodes[0].layer, "takes_several_inputs", False))
        self.several_outputs = bool(getattr(nodes[-1].layer, "multiple_outputs", False))

    def trainable(self):
        return any(p.requires_grad for p in self.runner.parameters())


class Model(Trainer, Layer):
    """A model made of layers called on symbolic tensors: ``fc.Model(inputs, outputs)``.

    ``inputs`` and ``outputs`` are one tensor or a list of them (then ``forward``, ``fit`` and
    ``predict`` take and return lists of arrays, in that order). A layer may be called several
    times: its calls share its parameters (and add up their gradients). Its state-dict keys are
    ``<layer name>.<parameter>``; layers made without a name get one from their class
    (``conv2d``, ``conv2d_1``...). A Model is itself a layer: call it on tensors to nest it.
    """

    takes_several_inputs = False   # set per instance: a model with several inputs

    def __init__(self, inputs, outputs):
        self._single_input = not isinstance(inputs, (list, tuple))
        self._single_output = not isinstance(outputs, (list, tuple))
        self.inputs = [inputs] if self._single_input else list(inputs)
        self.outputs = [outputs] if self._single_output else list(outputs)
        self.takes_several_inputs = not self._single_input
        self.multiple_outputs = not self._single_output
        self._build()
        self.input_shape = self.inputs[0].shape if self._single_input else None
        self._last_forward_folded = False

    # --- building the graph ----------------------------------------------------------------------
    def _build(self):
        for kind, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
            if not tensors or not all(isinstance(t, SymbolicTensor) for t in tensors):
                raise ValueError(f"Model: {kind} must be symbolic tensors (from fc.Input(...) and "
                                 f"layers called on it), got {tensors!r}")
        for t in self.inputs:
            if t.node.layer is not None:
                raise ValueError(f"Model: input {t} is not an fc.Input(...)")
        if len(set(map(id, self.inputs))) != len(self.inputs):
            raise ValueError("Model: the same Input is given twice")
        self._nodes = self._topological_order()
        self._name_layers()
        self._runners = self._node_runners()
        self._segments = self._cut_segments()

    def _topological_order(self):
        """The layer calls between the inputs and the outputs, each after the calls it needs."""
        order, state = [], {}      # state: 1 while a node's inputs are visited, 2 when done
        inputs = {id(t.node) for t in self.inputs}
        for out in self.outputs:
            stack = [(out.node, iter(out.node.inputs))]
            while stack:
                node, pending = stack[-1]
                state.setdefault(id(node), 1)
                advanced = False
                for t in pending:
                    s = state.get(id(t.node))
                    if s == 1:
                        raise ValueError(f"Model: the graph has a cycle through "
                                         f"{describe(t.node.layer)}")
                    if s is None:
                        if t.node.layer is None and id(t.node) not in inputs:
                            raise ValueError(
                                f"Model: an output depends on Input {t.node.input_name or t} "
                                f"of shape {t.shape}, which is not among the model's inputs")
                        stack.append((t.node, iter(t.node.inputs)))
                        advanced = True
                        break
                if not advanced:
                    stack.pop()
                    state[id(node)] = 2
                    if node.layer is not None:
                        order.append(node)
                    elif id(node) not in inputs:
                        raise ValueError(f"Model: an output comes from an Input that is not "
                                         f"among the model's inputs")
        for node in order:
            if node.layer is self:
                raise ValueError("Model: a model cannot contain itself (a cycle)")
        return order

    def _name_layers(self):
        """Give unnamed layers a name from their class (Keras' rule) and refuse two layers of
        one name: the names are the state-dict keys."""
        taken = {layer.name: layer for layer in self.layers if layer.name is not None}
        counts = {}
        for layer in self.layers:
            if layer.name is None:
                base = _snake(type(layer).__name__)
                while True:
                    k = counts.get(base, 0)
                    counts[base] = k + 1
                    name = base if k == 0 else f"{base}_{k}"
                    if name not in taken:
                        break
                layer.name = name
                taken[name] = layer
            elif taken[layer.name] is not layer:
                raise ValueError(f"Model: two different layers are named {layer.name!r} "
                                 f"({describe(taken[layer.name])} and {describe(layer)})")

    @property
    def layers(self):
        """The model's layers, each once, in the order they run."""
        seen, out = set(), []
        for node in self._nodes:
            if id(node.layer) not in seen:
                seen.add(id(node.layer))
                out.append(node.layer)
        return out

    def calls(self, layer):
        """How many times ``layer`` is called in the graph (more than once: shared weights)."""
        return sum(node.layer is layer for node in self._nodes)

    def _node_runners(self):
        """The object that runs each call: the layer itself for its first call, for later
        calls a copy that shares its parameters (each call keeps its own activations for the
        backward pass)."""
        runners, seen = {}, set()
        for node in self._nodes:
            layer = node.layer
            if id(layer) not in seen:
                seen.add(id(layer))
                runners[id(node)] = layer
                continue
            if any(True for _ in layer.named_buffers()):
                raise ValueError(f"Model: {describe(layer)} is called more than once, and a layer "
                                 f"with running statistics (batch norm) cannot be shared")
            runners[id(node)] = copy.deepcopy(layer, {id(p): p for p in layer.parameters()})
        return runners

    def _cut_segments(self):
        consumers = {}
        for node in self._nodes:
            for t in node.inputs:
                consumers.setdefault(id(t), []).append(node)
        model_outputs = {id(t) for t in self.outputs}

        def next_in_chain(node):
            if getattr(node.layer, "multiple_outputs", False):
                return None
            out = node.outputs[0]
            after = consumers.get(id(out), [])
            if id(out) in model_outputs or len(after) != 1:
                return None
            nxt = after[0]
            if getattr(nxt.layer, "takes_several_inputs", False) or \
                    getattr(nxt.layer, "multiple_outputs", False):
                return None
            return nxt

        segments, placed = [], set()
        for node in self._nodes:
            if id(node) in placed:
                continue
            chain = [node]
            if not getattr(node.layer, "multiple_outputs", False):
                nxt = next_in_chain(node)
                while nxt is not None:
                    chain.append(nxt)
                    nxt = next_in_chain(nxt)
            placed.update(id(n) for n in chain)
            runners = [self._runners[id(n)] for n in chain]
            if len(chain) == 1 and (getattr(node.layer, "multiple_outputs", False) or
                                    isinstance(runners[0], Model)):
                runner = runners[0]
            else:
                runner = _Chain(runners, [describe(n.layer) for n in chain])
            segments.append(_Segment(runner, chain))
        return segments

    # --- running ---------------------------------------------------------------------------------
    @property
    def num_outputs(self):
        return len(self.outputs)

    def prepare_inputs(self, x):
        """The inputs as float32 arrays: one array, or a list of one per input."""
        if self._single_input:
            if isinstance(x, (list, tuple)):
                raise ValueError(f"Model: takes one input array of shape (N, "
                                 f"{', '.join(map(str, self.inputs[0].shape))}), got a list")
            return check_batch("Model", np.ascontiguousarray(x, dtype=np.float32),
                               self.inputs[0].shape)
        if not isinstance(x, (list, tuple)) or len(x) != len(self.inputs):
            raise ValueError(f"Model: takes a list of {len(self.inputs)} input arrays, of shapes "
                             f"{[(None,) + t.shape for t in self.inputs]}")
        return [check_batch(f"Model input {i}", np.ascontiguousarray(a, dtype=np.float32), t.shape)
                for i, (a, t) in enumerate(zip(x, self.inputs))]

    def outputs_are_probabilities(self, i):
        layer = self.outputs[i].node.layer
        return isinstance(layer, (Softmax, Sigmoid))

    def forward(self, x):
        """The outputs for a batch: one array, or a list of one per output."""
        xs = self.prepare_inputs(x)
        values = dict(zip(map(id, self.inputs), [xs] if self._single_input else xs))
        self._last_forward_folded = False
        for seg in self._segments:
            arg = ([values[id(t)] for t in seg.inputs] if seg.several_inputs
                   else values[id(seg.inputs[0])])
            y = seg.runner.forward(arg)
            if seg.several_outputs:
                values.update(zip(map(id, seg.outputs), y))
            else:
                values[id(seg.outputs[0])] = y
            if not self.training and getattr(seg.runner, "_last_forward_folded", False):
                self._last_forward_folded = True
        outs = [values[id(t)] for t in self.outputs]
        return outs[0] if self._single_output else outs

    def backward(self, dy, input_grad=True):
        """Backpropagate the gradient of the outputs (a list for several); returns the
        gradient of the input(s), or None with ``input_grad=False`` (then the layers whose
        input needs no gradient compute their parameters' gradients only, and frozen layers
        at the start of the model nothing at all)."""
        if self._last_forward_folded:
            raise RuntimeError("Model.backward: the last forward ran in eval mode with batch norm "
                               "folded into the convolutions; call model.train() before the "
                               "forward pass to backpropagate")
        dys = [dy] if self._single_output else list(dy)
        if len(dys) != len(self.outputs):
            raise ValueError(f"Model.backward: the model has {len(self.outputs)} outputs, got "
                             f"{len(dys)} gradients")
        needs = {id(t) for t in self.inputs} if input_grad else set()
        for seg in self._segments:
            if seg.trainable() or any(id(t) in needs for t in seg.inputs):
                needs.update(id(t) for t in seg.outputs)
        grads = {}
        for t, g in zip(self.outputs, dys):
            _accumulate(grads, t, g)
        for seg in reversed(self._segments):
            if seg.several_outputs:
                g = [grads.pop(id(t), None) for t in seg.outputs]
                if all(v is None for v in g):
                    continue
                ref = next(v for v in g if v is not None)
                g = [np.zeros((len(ref),) + t.shape, np.float32) if v is None else v
                     for t, v in zip(seg.outputs, g)]
            else:
                g = grads.pop(id(seg.outputs[0]), None)
                if g is None:
                    continue
            need_in = [id(t) in needs for t in seg.inputs]
            if not any(need_in):
                if seg.trainable():
                    seg.runner.backward(g, input_grad=False)
                    self._gradients_ready(seg.runner)
                continue
            dx = seg.runner.backward(g, input_grad=True)
            self._gradients_ready(seg.runner)
            for t, d, need in zip(seg.inputs, dx if seg.several_inputs else [dx], need_in):
                if need:
                    _accumulate(grads, t, d)
        if not input_grad:
            return None
        dxs = [grads.get(id(t)) for t in self.inputs]
        return dxs[0] if self._single_input else dxs

    #: Called with each layer (or chain of layers) whose parameter gradients backward has just
    #: completed: data-parallel training starts summing them across ranks then.
    on_gradients_ready = None

    def _gradients_ready(self, layer):
        if self.on_gradients_ready is not None:
            self.on_gradients_ready(layer)

    def train(self, mode=True):
        super().train(mode)
        for seg in self._segments:
            if seg.runner is not None:
                seg.runner.train(mode)
        for runner in self._runners.values():   # the copies of shared layers
            runner.train(mode)
        return self

    # --- structure -------------------------------------------------------------------------------
    def named_children(self):
        return [(layer.name, layer) for layer in self.layers]

    def get_layer(self, name):
        """The layer called ``name`` (Keras' ``model.get_layer``)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"Model: no layer named {name!r}; its layers are "
                         f"{[layer.name for layer in self.layers]}")

    def replace_layer(self, name, new_layer):
        """Put ``new_layer`` where the layer called ``name`` is (a new head for fine-tuning):
        every call of the old layer now calls the new one, which takes the old name unless it
        has its own. The shapes are checked again; returns the old layer."""
        old = self.get_layer(name)
        if not isinstance(new_layer, Layer):
            raise ValueError(f"Model.replace_layer: not a layer: {new_layer!r}")
        if new_layer.name is None:
            new_layer.name = old.name
        for node in self._nodes:
            if node.layer is old:
                shapes = [t.shape for t in node.inputs]
                try:
                    out = new_layer.output_shape(shapes if len(shapes) > 1 or
                                                 getattr(new_layer, "takes_several_inputs", False)
                                                 else shapes[0])
                except ValueError as exc:
                    raise ValueError(f"Model.replace_layer: {describe(new_layer)} on input "
                                     f"shape {shapes}: {exc}") from None
                if tuple(out) != node.outputs[0].shape:
                    # the layers after it see a new shape: check them too
                    node.outputs[0].shape = tuple(out)
                node.layer = new_layer
        self._revalidate_shapes()
        self._build()
        return old

    def _revalidate_shapes(self):
        for node in self._nodes:
            several = getattr(node.layer, "takes_several_inputs", False)
            shapes = [t.shape for t in node.inputs]
            try:
                out = node.layer.output_shape(shapes if several else shapes[0])
            except ValueError as exc:
                raise ValueError(f"Model: {describe(node.layer)} on input shape "
                                 f"{shapes if several else shapes[0]}: {exc}") from None
            for t, shape in zip(node.outputs, out if getattr(node.layer, "multiple_outputs",
                                                             False) else [out]):
                t.shape = tuple(shape)

    # --- description -----------------------------------------------------------------------------
    def output_shape(self, shape):
        shapes = [tuple(shape)] if self._single_input else [tuple(s) for s in shape]
        expected = [t.shape for t in self.inputs]
        if shapes != expected:
            raise ValueError(f"Model: expected input shape{'s' if len(expected) > 1 else ''} "
                             f"{expected if len(expected) > 1 else expected[0]} per sample, got "
                             f"{shapes if len(shapes) > 1 else shapes[0]}")
        outs = [t.shape for t in self.outputs]
        return outs[0] if self._single_output else outs

    def flops(self, shape):
        self.output_shape(shape)
        return sum(node.layer.flops(node.inputs[0].shape if len(node.inputs) == 1 else
                                    [t.shape for t in node.inputs]) for node in self._nodes)

    def get_config(self):
        """The graph as JSON: the layers, and for each call the tensors it took (by the
        index of the call that made them and the output's index)."""
        index = {}
        for i, t in enumerate(self.inputs):
            index[id(t.node)] = -1 - i
        calls = []
        for k, node in enumerate(self._nodes):
            index[id(node)] = k
        layer_index = {id(layer): i for i, layer in enumerate(self.layers)}
        for node in self._nodes:
            calls.append({"layer": layer_index[id(node.layer)],
                          "inputs": [[index[id(t.node)], t.index] for t in node.inputs]})
        return {
            "inputs": [{"shape": list(t.shape), "name": t.node.input_name} for t in self.inputs],
            "layers": [layer_to_config(layer) for layer in self.layers],
            "calls": calls,
            "outputs": [[index[id(t.node)], t.index] for t in self.outputs],
            "single_input": self._single_input, "single_output": self._single_output,
        }

    @classmethod
    def from_config(cls, config):
        inputs = [Input(spec["shape"], name=spec.get("name")) for spec in config["inputs"]]
        layers = [layer_from_config(c) for c in config["layers"]]
        made = []

        def tensor(ref):
            node, i = ref
            if node < 0:
                return inputs[-1 - node]
            out = made[node]
            return out[i] if isinstance(out, list) else out

        for call in config["calls"]:
            args = [tensor(ref) for ref in call["inputs"]]
            layer = layers[call["layer"]]
            several = getattr(layer, "takes_several_inputs", False)
            made.append(layer(args if several else args[0]))
        outputs = [tensor(ref) for ref in config["outputs"]]
        return cls(inputs[0] if config.get("single_input", True) else inputs,
                   outputs[0] if config.get("single_output", True) else outputs)

    def summary(self, input_shape=None, print_fn=print):
        """Print each layer call: its name and type, output shape, parameters, FLOPs per
        sample, the layers it takes its input from (the graph's edges), and for convolutions
        the algorithm their forward pass runs."""
        producer = {id(t.node): (t.node.input_name or f"input_{i}")
                    for i, t in enumerate(self.inputs)}
        for node in self._nodes:
            producer[id(node)] = node.layer.name
        rows = [("Layer (type)", "Output shape", "Params", "FLOPs", "Inputs from", "Algorithm")]
        seen, total_flops = set(), 0
        for t in self.inputs:
            rows.append((f"{producer[id(t.node)]} (Input)", str(t.shape), "0", "0", "", ""))
        for node in self._nodes:
            layer = node.layer
            shapes = [t.shape for t in node.inputs]
            arg = shapes if len(shapes) > 1 or getattr(layer, "takes_several_inputs", False) \
                else shapes[0]
            flops = layer.flops(arg)
            total_flops += flops
            params = 0 if id(layer) in seen else layer.num_parameters()
            seen.add(id(layer))
            out = [t.shape for t in node.outputs]
            rows.append((f"{layer.name} ({type(layer).__name__})",
                         str(out[0] if len(out) == 1 else out), f"{params:,}", f"{flops:,}",
                         ", ".join(producer[id(t.node)] for t in node.inputs),
                         _algorithm(layer, arg)))
        widths = [max(len(r[c]) for r in rows) for c in range(6)]
        line = "-" * (sum(widths) + 10)

        def fmt(r):
            return (f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  "
                    f"{r[3]:>{widths[3]}}  {r[4]:<{widths[4]}}  {r[5]:<{widths[5]}}").rstrip()

        total = self.num_parameters()
        out = [fmt(rows[0]), line] + [fmt(r) for r in rows[1:]] + [line]
        out.append(f"Inputs: {[t.shape for t in self.inputs]}  Outputs: "
                   f"{[t.shape for t in self.outputs]}")
        out.append(f"Total params: {total:,} ({total * 4 / 1024:.1f} KiB as float32)")
        out.append(f"Forward FLOPs per sample: {total_flops:,} ({total_flops / 1e6:.2f} MFLOP)")
        print_fn("\n".join(out))

    def __repr__(self):
        return (f"Model(inputs={[t.shape for t in self.inputs]}, outputs="
                f"{[t.shape for t in self.outputs]}, layers={len(self.layers)})")


def check_batch(where, x, sample_shape):
    """``x``, a batch of samples of ``sample_shape`` (None: not known yet): the rank and the
    channels (last axis) must match, the spatial sizes may differ (a convolutional model takes
    any size its layers allow). The error says what the array probably is and how to fix it."""
    if sample_shape is None or (x.ndim == len(sample_shape) + 1 and
                                x.shape[-1] == sample_shape[-1]):
        return x
    sample_shape = tuple(sample_shape)
    expected = f"(N, {', '.join(map(str, sample_shape))})"
    hint = ""
    if x.shape == sample_shape or (x.ndim == len(sample_shape) and
                                   x.shape[-1] == sample_shape[-1] and len(sample_shape) > 1):
        hint = ": a single sample? pass x[None], a batch of one"
    elif x.ndim == len(sample_shape) + 1 and len(sample_shape) in (2, 3) and \
            x.shape[1] == sample_shape[-1]:
        axes = "0, 2, 3, 1" if len(sample_shape) == 3 else "0, 2, 1"
        hint = (f": channels first ({'NCHW' if len(sample_shape) == 3 else 'NCL'})? fastcnn takes "
                f"channels last, use x.transpose({axes})")
    raise ValueError(f"{where}: expected input of shape {expected} (channels last), got "
                     f"{x.shape}{hint}")


def _accumulate(grads, tensor, g):
    """The gradient of a tensor that feeds several layers is the sum of theirs."""
    key = id(tensor)
    grads[key] = g if key not in grads else cconv.add(grads[key], g)


def _algorithm(layer, shape):
    if type(layer) is Conv2d and isinstance(shape, tuple):
        return cconv.conv2d_algorithm((1,) + tuple(shape), layer.weight.shape, algo=layer.algo,
                                      **layer.conv_args())
    return ""


class Sequential(Model):
    """Layers applied in order: ``Sequential(fc.Conv2d(1, 6, 5), fc.ReLU(), ...)``.

    State-dict keys are PyTorch ``nn.Sequential``'s: ``"0.weight"``, ``"3.running_mean"``,
    ``"5.body.0.weight"``. ``input_shape`` (H, W, C) is optional; it is recorded on the first
    forward pass and used by :meth:`summary` and by ``fastcnn predict``.
    """

    def __init__(self, *layers, input_shape=None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is not a layer: {layer!r}")
        self.layers = list(layers)
        self.input_shape = None if input_shape is None else tuple(int(v) for v in input_shape)
        self._program = None       # eval mode: (the layers, their steps); see _eval_steps
        self._last_forward_folded = False
        self._relu_backward_fused = set()  # ReLUs whose backward the layer before runs
        self._pooled_relu = {}

    @property
    def layers(self):
        """The list of layers, in order (it may be edited: append, slice assignment...)."""
        return self._layers

    @layers.setter
    def layers(self, layers):
        self._layers = list(layers)

    # --- container -----------------------------------------------------------------------------
    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(*self.layers[i])
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    def append(self, layer):
        """Add a layer at the end (``add`` is the Keras spelling)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential: not a layer: {layer!r}")
        self.layers.append(layer)
        return self

    add = append

    def __setitem__(self, i, layer):
        """Replace layer ``i`` (a new head: ``model[-1] = fc.Linear(84, 5)``)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential: not a layer: {layer!r}")
        self.layers[i] = layer

    def named_children(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def get_layer(self, name):
        """Layer ``name``: its index (an int or a digit string) or its own name."""
        if isinstance(name, int) or (isinstance(name, str) and name.isdigit()):
            return self.layers[int(name)]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"Sequential: no layer named {name!r}")

    def replace_layer(self, name, new_layer):
        """Put ``new_layer`` in the place of layer ``name`` (index or name); returns the old one."""
        old = self.get_layer(name)
        self[next(i for i, layer in enumerate(self.layers) if layer is old)] = new_layer
        return old

    def _label(self, i):
        return f"Sequential layer {i} ({type(self.layers[i]).__name__})"

    # --- what the trainer asks ----------------------------------------------------------------
    accepts_residual = True   # forward(x, residual=, activation=): see Residual
    num_outputs = 1
    multiple_outputs = False

    def prepare_inputs(self, x):
        return self._prepare(x)

    def outputs_are_probabilities(self, i):
        return bool(self.layers) and isinstance(self.layers[-1], (Softmax, Sigmoid))

    # --- forward / backward --------------------------------------------------------------------
    def _first_channels(self):
        first = self.layers[0] if self.layers else None
        return getattr(first, "in_channels", getattr(first, "num_features", None))

    def _prepare(self, x):
        """Convert the input once at the model boundary: float32, contiguous, NHWC (a batch of
        one-channel images may come without its channel axis), checked against input_shape."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        shape = self.input_shape
        if x.ndim == 3 and (x.shape[1:] == tuple(shape[:2]) and shape[2:] == (1,)
                            if shape is not None and len(shape) == 3
                            else self._first_channels() == 1):
            x = x[..., None]
        if shape is None or (x.ndim == len(shape) + 1 and x.shape[-1] == shape[-1]):
            return x
        where = (f"{self._label(0)}: {type(self.layers[0]).__name__}" if self.layers
                 else "Sequential")
        return check_batch(where, x, shape)

    def forward(self, x, residual=None, activation=None):
        """Run the layers. A ReLU after a Conv2d, a Linear, a Residual or a BatchNorm2d is fused
        into it (after a BatchNorm2d, its backward too: one pass less either way). In
        eval mode the model runs prepared steps (see :meth:`_eval_steps`): a Conv2d followed by
        BatchNorm2d runs as one convolution with the batch norm folded into its weights, and the
        convolutions keep their packed weights between calls: the same outputs (within float32
        rounding), one pass over memory.

        ``residual`` and ``activation`` (a Residual's join, for a model whose last layer is a
        BatchNorm2d): the output is activation(layers(x) + residual), the sum and the
        activation in the last layer's store in training mode."""
        x = self._prepare(x)
        if self.input_shape is None and not isinstance(x, list) and x.ndim >= 2:
            self.input_shape = tuple(x.shape[1:])
        if not self.training and not backward_kept():
            if residual is None:
                return self._forward_eval(x)
            return cconv.add(self._forward_eval(x), residual, activation=activation)
        layers = self.layers
        if residual is not None and not (layers and type(layers[-1]) is BatchNorm2d):
            return cconv.add(self.forward(x), residual, activation=activation)
        self._last_forward_folded = False
        self._relu_backward_fused = fused = set()
        self._pooled_relu = pooled = {}   # pooling index -> its output, the ReLU's mask
        i = 0
        try:
            while i < len(layers):
                layer = layers[i]
                if residual is not None and i == len(layers) - 1:
                    x = layer.forward(x, activation=activation, residual=residual)
                    break
                nxt = layers[i + 1] if i + 1 < len(layers) else None
                if type(nxt) is ReLU and type(layer) in FUSES_RELU:
                    # The ReLU keeps the output its backward needs.
                    x = nxt._y = layer.forward(x, activation="relu")
                    if type(layer) in FUSES_RELU_BACKWARD:
                        fused.add(i + 1)
                    elif i + 2 < len(layers) and type(layers[i + 2]) in RELU_MASK_AFTER:
                        fused.add(i + 1)
                        pooled[i + 2] = None
                    i += 2
                    continue
                if type(nxt) is ReLU6 and type(layer) in FUSES_CLAMPS:
                    x = nxt._y = layer.forward(x, activation="relu6")   # its backward: ReLU6's
                    i += 2
                    continue
                x = layer.forward(x)
                if i in pooled:
                    pooled[i] = x
                i += 1
        except ValueError as exc:  # say where in the model the bad shape arrived
            raise ValueError(f"{self._label(i)}: {exc}") from None
        return x

    def _eval_steps(self):
        """The eval-mode program (the layers, their steps, whether a batch norm is folded):
        one step per layer, or per Conv2d with the BatchNorm2d and
        the ReLU after it, Linear with its ReLU, Residual with its ReLU. A step keeps what it
        prepared (folded weights, a cconv.Conv2dPlan) until an array it was made from is
        replaced (load_state_dict, a training step) or an optimizer updates the parameters in
        place; the program is made again when the layers change, and by train() and eval().
        Edit parameters in place in eval mode? Call eval() again."""
        program = self._program
        if program is not None and program[0] == self.layers:
            return program
        layers = list(self.layers)
        steps = chain_steps(layers)
        folded = folds_batch_norm(steps)
        self._program = program = (layers, steps, folded)
        return program

    def _forward_eval(self, x):
        self._relu_backward_fused, self._pooled_relu = set(), {}
        _, steps, self._last_forward_folded = self._eval_steps()
        step = None
        try:
            for step in steps:
                x = step(x)
        except ValueError as exc:  # say where in the model the bad shape arrived
            raise ValueError(f"{self._label(step.index)}: {exc}") from None
        return x

    def train(self, mode=True):
        self._program = None
        return Layer.train(self, mode)

    def backward(self, dy, input_grad=True):
        """Backpropagate ``dy``; returns the input gradient, or None with ``input_grad=False``
        (training a model: then its first layer computes its parameter gradients only)."""
        if self._last_forward_folded:
            raise RuntimeError("Sequential.backward: the last forward ran in eval mode with batch "
                               "norm folded into the convolutions; call model.train() before "
                               "the forward pass to backpropagate")
        fused, pooled = self._relu_backward_fused, self._pooled_relu
        layers, skip = self.layers, -1
        first = 0
        if not input_grad:   # frozen layers at the start need no backward at all
            while first < len(layers) and not any(p.requires_grad
                                                  for p in layers[first].parameters()):
                first += 1
        for i in range(len(layers) - 1, first - 1, -1):
            layer = layers[i]
            if i in fused or i == skip:
                continue  # this ReLU's backward runs inside the layer before it, or after it
            if i in pooled:
                dy = cconv.relu_backward(dy, pooled[i])
            if i == first and not input_grad:
                if hasattr(layer, "backward_params"):
                    layer.backward_params(dy)
                    self._gradients_ready(layer)
                    return None
            if type(layer) is Residual and i > 0 and type(layers[i - 1]) is ReLU and \
                    i - 1 not in fused:
                # The ReLU before a residual block: its mask goes into the block's final sum.
                dy, skip = layer.backward(dy, input_relu=layers[i - 1]._y), i - 1
                self._gradients_ready(layer)
                continue
            dy = layer.backward(dy)
            self._gradients_ready(layer)
        return dy

    # --- description ---------------------------------------------------------------------------
    def get_config(self):
        cfg = {"layers": [layer_to_config(layer) for layer in self.layers]}
        if self.input_shape is not None:
            cfg["input_shape"] = list(self.input_shape)
        return cfg

    @classmethod
    def from_config(cls, config):
        return cls(*[layer_from_config(c) for c in config.get("layers", [])],
                   input_shape=config.get("input_shape"))

    def output_shape(self, shape):
        for layer in self.layers:
            shape = tuple(layer.output_shape(tuple(shape)))
        return shape

    def flops(self, shape):
        total = 0
        for layer in self.layers:
            total += layer.flops(tuple(shape))
            shape = layer.output_shape(tuple(shape))
        return total

    def summary(self, input_shape=None, print_fn=print):
        """Print each layer with its output shape, parameter count, forward FLOPs per image and,
        for convolutions, the kernels their forward pass runs (direct-igemm, direct-planar,
        depthwise, winograd-f4 or winograd-f2; see ``cconv.conv2d_algorithm``).

        ``input_shape`` is one sample's (H, W, C); by default the model's ``input_shape``.
        """
        shape = tuple(input_shape) if input_shape is not None else self.input_shape
        rows = [("#", "Layer (type)", "Output shape", "Params", "FLOPs", "Algorithm")]
        total_flops = 0
        for i, layer in enumerate(self.layers):
            algorithm = ""
            if shape is not None:
                if type(layer) is Conv2d:
                    algorithm = cconv.conv2d_algorithm((1,) + tuple(shape), layer.weight.shape,
                                                       algo=layer.algo, **layer.conv_args())
                flops = layer.flops(shape)
                shape = tuple(layer.output_shape(shape))
                total_flops += flops
                shape_text, flops_text = str(shape), f"{flops:,}"
            else:
                shape_text = flops_text = "?"
            rows.append((str(i), type(layer).__name__, shape_text, f"{layer.num_parameters():,}",
                         flops_text, algorithm))
        widths = [max(len(r[c]) for r in rows) for c in range(6)]
        line = "-" * (sum(widths) + 10)

        def fmt(r):
            return (f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  "
                    f"{r[3]:>{widths[3]}}  {r[4]:>{widths[4]}}  {r[5]:<{widths[5]}}").rstrip()

        out = [fmt(rows[0]), line] + [fmt(r) for r in rows[1:]] + [line]
        total = self.num_parameters()
        first = self.input_shape if input_shape is None else tuple(input_shape)
        out.append(f"Input shape: {first if first is not None else 'unknown (pass input_shape)'}")
        out.append(f"Total params: {total:,} ({total * 4 / 1024:.1f} KiB as float32)")
        if first is not None:
            out.append(f"Forward FLOPs per image: {total_flops:,} ({total_flops / 1e6:.2f} MFLOP)")
        print_fn("\n".join(out))

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"


class _Chain(Sequential):
    """A chain of a graph model's layers, run by Sequential's code. Not a layer of the model
    (the layers in it are); its first layer may take several inputs."""

    def __init__(self, layers, labels):
        super().__init__(*layers)
        self._labels = labels

    def _prepare(self, x):
        return x if isinstance(x, list) else np.ascontiguousarray(x, dtype=np.float32)

    def _label(self, i):
        return f"Model layer {self._labels[i]}"


for _cls in (Model, Sequential):
    register(_cls)
del _cls
