"""Write a fastcnn model as an ONNX graph (:func:`fastcnn.onnx.export`).

The model is walked call by call (nested models, Sequential and Residual blocks inlined) in its
eval-mode semantics: batch norm with its running statistics (exported as BatchNormalization,
not folded), dropout as nothing. Every exported tensor carries ``perm`` (:mod:`.layout`): the
array fastcnn stores for it is ``onnx_tensor.transpose(perm)``. The graph's image inputs are
NCHW by default, stored NHWC: perm ``(0, 2, 3, 1)``, no Transpose. Layers that need channels
first (convolutions, pooling, batch norm, resizing, Flatten) take their input with that perm,
elementwise layers keep the perm they get, ``Permute`` layers only change it (no node), and a
Transpose is emitted only where a layer needs another perm than its input has, once per tensor
and perm. So a file read by :func:`fastcnn.onnx.load` and exported again gets no transposes
beyond the ones it had.

Initializers are named by the model's state-dict keys where they hold the parameter's values
in its own order (a reshape keeps the name), so a file exported after an import keeps the
original initializer names.
"""
import math
import os

import numpy as np

from .. import nn
from ..graph import Model, Sequential
from . import layout as L
from .model import OnnxModel

#: Lowest opset the exporter writes (Clip, Pad and Resize take their arguments as inputs).
MIN_OPSET = 11


class _T:
    """An exported tensor: its ONNX ``name``, ``perm`` (stored == onnx.transpose(perm)) and the
    shape fastcnn stores for one sample (no batch axis)."""

    __slots__ = ("name", "perm", "shape")

    def __init__(self, name, perm, shape):
        self.name, self.perm, self.shape = name, tuple(int(p) for p in perm), tuple(shape)
        assert len(self.perm) == len(self.shape) + 1, (self.perm, self.shape)

    @property
    def rank(self):
        return len(self.perm)

    def onnx_shape(self, batch="N"):
        return L.onnx_shape(self.perm, (batch,) + self.shape)


_RULES = {}


def _rule(*classes):
    def decorate(fn):
        for cls in classes:
            _RULES[cls] = fn
        return fn
    return decorate


def _data_order(t):
    """The stored axes of size > 1 (the batch's included) in the order the ONNX tensor of
    ``t`` has them: two layouts of one array with the same order hold the same values in the
    same order (a Reshape turns one into the other)."""
    shape = (None,) + t.shape
    return [i for i in L.inverse(t.perm) if shape[i] != 1]


def exportable_layers():
    """The layer classes :func:`fastcnn.onnx.export` writes (and Model, Sequential, OnnxModel)."""
    return sorted(cls.__name__ for cls in _RULES)


def _describe(layer, path):
    name = path or layer.name
    return f"{type(layer).__name__} {name!r}" if name else type(layer).__name__


# --- naming of state-dict entries --------------------------------------------------------------------
def _buffer_keys(layer):
    """{id(buffer array): state-dict key} for ``layer`` and its children (OnnxModel's renamed)."""
    out = {}
    for cname, child in layer.named_children():
        for ident, key in _buffer_keys(child).items():
            out.setdefault(ident, f"{cname}.{key}")
    for key, b in layer.named_buffers():
        out.setdefault(id(b), key)
    if isinstance(layer, OnnxModel):
        out = {ident: layer.key_names.get(key, key) for ident, key in out.items()}
    return out


def state_keys(model):
    """{id(Parameter or buffer array): its key in ``model.state_dict()``}."""
    keys = {}
    for key, p in model.named_parameters():
        keys.setdefault(id(p), key)
    for ident, key in _buffer_keys(model).items():
        keys.setdefault(ident, key)
    return keys


class _Exporter:
    def __init__(self, onnx, model, opset):
        from onnx import helper, numpy_helper
        self.onnx, self.helper, self.numpy_helper = onnx, helper, numpy_helper
        self.opset = opset
        self.keys = state_keys(model)
        self.names = set(self.keys.values())     # every tensor name given or reserved
        self.node_names = set()
        self.nodes, self.initializers = [], {}   # name -> array
        self._const_cache = {}
        self._converted = {}                     # (name, perm) -> _T

    # --- names -----------------------------------------------------------------------------------
    def unique(self, base, taken=None):
        taken = self.names if taken is None else taken
        base = base or "t"
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    # --- initializers ----------------------------------------------------------------------------
    def param(self, source, value=None, hint="value"):
        """An initializer from a parameter or buffer ``source`` (``value``: its values as the
        graph needs them, by default as they are): named by its state-dict key when it holds
        the source's values in their order, else by ``hint``."""
        data = source.data if isinstance(source, nn.Parameter) else np.asarray(source)
        value = data if value is None else np.asarray(value)
        value = np.ascontiguousarray(value, dtype=np.float32)
        key = self.keys.get(id(source))
        if key is not None and value.size == data.size and \
                np.array_equal(value.reshape(-1), data.astype(np.float32).reshape(-1)):
            have = self.initializers.get(key)
            if have is None:
                self.initializers[key] = value
                return key
            if have.shape == value.shape and np.array_equal(have, value):
                return key
        return self.const(value, f"{key}_{hint}" if key else hint, share=False)

    def const(self, value, hint="const", dtype=np.float32, share=True):
        value = np.array(value, dtype=dtype, order="C")   # keeps 0-d scalars 0-d
        cache_key = (value.dtype.str, value.shape, value.tobytes())
        if share and cache_key in self._const_cache:
            return self._const_cache[cache_key]
        name = self.unique(hint)
        self.initializers[name] = value
        if share:
            self._const_cache[cache_key] = name
        return name

    def ints(self, values, hint="shape"):
        return self.const(np.asarray(values, np.int64).reshape(-1), hint, dtype=np.int64)

    # --- nodes -----------------------------------------------------------------------------------
    def node(self, op, inputs, name, outputs=1, **attrs):
        """Emit a node; returns its output name (or names, for ``outputs`` > 1)."""
        name = self.unique(name, self.node_names)
        outs = [self.unique(name if i == 0 else f"{name}_{i}") for i in range(outputs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(self.helper.make_node(op, list(inputs), outs, name=name, **attrs))
        return outs[0] if outputs == 1 else outs

    def like(self, t, name, shape=None, perm=None):
        return _T(name, t.perm if perm is None else perm, t.shape if shape is None else shape)

    def unary(self, op, t, name, **attrs):
        return self.like(t, self.node(op, [t.name], name, **attrs))

    def unary_inputs(self, op, t, inputs, name, **attrs):
        """``op`` of ``inputs`` (``t``'s name first, constants after): ``t``'s layout."""
        return self.like(t, self.node(op, inputs, name, **attrs))

    def binary(self, op, a, b, name, **attrs):
        """``op`` of tensor ``a`` (kept layout) and a name ``b``."""
        return self.like(a, self.node(op, [a.name, b], name, **attrs))

    # --- layouts ---------------------------------------------------------------------------------
    def as_perm(self, t, perm):
        """``t`` with its ONNX tensor laid out so that stored == onnx.transpose(perm)."""
        perm = tuple(perm)
        if perm == t.perm:
            return t
        key = (t.name, perm)
        if key not in self._converted:
            base = f"{t.name}_to_{''.join(map(str, perm))}"
            target = _T(t.name, perm, t.shape)
            if _data_order(t) == _data_order(target):
                # only axes of size 1 move: the same values in the same order, a Reshape
                out = self.reshape(t, target.onnx_shape(0)[1:], base)
            else:
                out = self.node("Transpose", [t.name], base,
                                perm=[t.perm[i] for i in L.inverse(perm)])
            self._converted[key] = _T(out, perm, t.shape)
        return self._converted[key]

    def channels_first(self, t):
        return self.as_perm(t, L.channels_last(t.rank))

    def stored_order(self, t):
        return self.as_perm(t, L.identity(t.rank))

    def common(self, ts):
        """The tensors ``ts`` (of one rank) in one layout: the one most of them have."""
        perms = [t.perm for t in ts]
        best = max(perms, key=lambda p: (perms.count(p), -perms.index(p)))
        return [self.as_perm(t, best) for t in ts]

    def reshape(self, t, onnx_sample_shape, name):
        """Reshape the ONNX tensor of ``t`` to (N, *onnx_sample_shape); returns the name."""
        return self.node("Reshape", [t.name, self.ints([0] + list(onnx_sample_shape))], name)

    def reduce(self, op, t, axes, keepdims, name):
        """ReduceMean / ReduceSum over ONNX ``axes`` of ``t``; returns the name."""
        axes = sorted(int(a) for a in axes)
        if (op == "ReduceSum" and self.opset >= 13) or self.opset >= 18:
            return self.node(op, [t.name, self.ints(axes, "axes")], name, keepdims=int(keepdims))
        return self.node(op, [t.name], name, axes=axes, keepdims=int(keepdims))

    def softmax(self, t, stored_axis, log, name):
        op = "LogSoftmax" if log else "Softmax"
        if self.opset < 13 and t.perm[stored_axis] != t.rank - 1:
            # before opset 13 softmax flattens the axes from ``axis`` on: put it last
            target = [i if i < stored_axis else i - 1 for i in range(t.rank)]
            target[stored_axis] = t.rank - 1
            t = self.as_perm(t, target)
        return self.unary(op, t, name, axis=t.perm[stored_axis])

    def pad(self, t, stored_pads, name, mode="constant", value=0.0):
        """Pad ``t`` by ``stored_pads`` ((before, after) per stored axis, the batch's first)."""
        inverse = L.inverse(t.perm)
        begins = [stored_pads[inverse[j]][0] for j in range(t.rank)]
        ends = [stored_pads[inverse[j]][1] for j in range(t.rank)]
        shape = tuple(n + b + a for n, (b, a) in zip(t.shape, stored_pads[1:]))
        inputs = [t.name, self.ints(begins + ends, "pads")]
        if mode == "constant" and value != 0.0:
            inputs.append(self.const(np.float32(value), "pad_value"))
        return self.like(t, self.node("Pad", inputs, name, mode=mode), shape)

    # --- the walk over a model --------------------------------------------------------------------
    def call(self, layer, inputs, path):
        """Emit ``layer`` on the exported tensors ``inputs``; returns the list of its outputs."""
        if isinstance(layer, Sequential):
            x = inputs[0]
            for i, child in enumerate(layer.layers):
                x = self.call(child, [x], f"{path}.{i}" if path else str(i))[0]
            return [x]
        if isinstance(layer, Model):
            env = {id(t): v for t, v in zip(layer.inputs, inputs)}
            for node in layer._nodes:
                child = node.layer
                outs = self.call(child, [env[id(t)] for t in node.inputs],
                                 f"{path}.{child.name}" if path else child.name)
                for sym, t in zip(node.outputs, outs):
                    env[id(sym)] = t
            return [env[id(t)] for t in layer.outputs]
        rule = _RULES.get(type(layer))
        if rule is None:
            raise ValueError(f"onnx.export: layer {_describe(layer, path)} has no ONNX export "
                             f"rule; fastcnn exports {', '.join(exportable_layers())} (and "
                             f"Model, Sequential and OnnxModel made of them)")
        name = path or layer.name or type(layer).__name__.lower()
        several = bool(getattr(layer, "takes_several_inputs", False))
        try:
            out = rule(self, layer, inputs if several else inputs[0], name)
        except ValueError as exc:
            raise ValueError(f"onnx.export: layer {_describe(layer, path)}: {exc}") from None
        return out if isinstance(out, list) else [out]


# --- convolutions -----------------------------------------------------------------------------------
def _bias(ex, layer):
    return [ex.param(layer.bias)] if layer.bias is not None else []


@_rule(nn.Conv2d)
def _conv2d(ex, layer, x, name):
    from cconv._validation import conv_padding
    x = ex.channels_first(x)
    h, w, _ = x.shape
    (top, bottom), (left, right) = conv_padding("Conv2d", layer.padding, layer.kernel_size,
                                                layer.stride, layer.dilation, (h, w))
    out = ex.node("Conv", [x.name, ex.param(layer.weight)] + _bias(ex, layer), name,
                  kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                  pads=[top, left, bottom, right], dilations=list(layer.dilation),
                  group=layer.groups)
    return ex.like(x, out, layer.output_shape(x.shape))


@_rule(nn.Conv1d)
def _conv1d(ex, layer, x, name):
    from cconv._validation import conv_padding
    x = ex.channels_first(x)
    length = x.shape[0]
    _, (lo, hi) = conv_padding("Conv1d", layer.padding, layer.kernel_size, layer.stride,
                               layer.dilation, (1, length))
    out = ex.node("Conv", [x.name, ex.param(layer.weight)] + _bias(ex, layer), name,
                  kernel_shape=[layer.kernel_size[1]], strides=[layer.stride[1]], pads=[lo, hi],
                  dilations=[layer.dilation[1]], group=layer.groups)
    return ex.like(x, out, layer.output_shape(x.shape))


@_rule(nn.ConvTranspose2d)
def _conv_transpose2d(ex, layer, x, name):
    x = ex.channels_first(x)
    ph, pw = layer.padding
    out = ex.node("ConvTranspose", [x.name, ex.param(layer.weight)] + _bias(ex, layer), name,
                  kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                  pads=[ph, pw, ph, pw], dilations=list(layer.dilation), group=layer.groups,
                  output_padding=list(layer.output_padding))
    return ex.like(x, out, layer.output_shape(x.shape))


@_rule(nn.Linear)
def _linear(ex, layer, x, name):
    x = ex.stored_order(x)
    out = ex.node("Gemm", [x.name, ex.param(layer.weight)] + _bias(ex, layer), name, transB=1)
    return ex.like(x, out, layer.output_shape(x.shape))


@_rule(nn.MatMul)
def _matmul(ex, layer, x, name):
    x = ex.stored_order(x)
    out = ex.node("MatMul", [x.name, ex.param(layer.weight)], name)
    shape = layer.output_shape(x.shape)
    return _T(out, L.identity(len(shape) + 1), shape)


# --- pooling ----------------------------------------------------------------------------------------
def _pool(ex, x, op, name, kernel, stride, padding, shape, dilation=None, ceil_mode=False,
          count_include_pad=None):
    x = ex.channels_first(x)
    n = len(kernel)
    dilation = None if dilation is None or all(d == 1 for d in dilation) else list(dilation)
    out = ex.node(op, [x.name], name, kernel_shape=list(kernel), strides=list(stride),
                  pads=list(padding) * 2, dilations=dilation,
                  ceil_mode=int(ceil_mode) if ceil_mode else None,
                  count_include_pad=None if count_include_pad is None else int(count_include_pad))
    assert len(padding) == n
    return ex.like(x, out, shape)


@_rule(nn.MaxPool2d)
def _max_pool2d(ex, layer, x, name):
    return _pool(ex, x, "MaxPool", name, layer.kernel_size, layer.stride, layer.padding,
                 layer.output_shape(x.shape), layer.dilation, layer.ceil_mode)


@_rule(nn.AvgPool2d)
def _avg_pool2d(ex, layer, x, name):
    return _pool(ex, x, "AveragePool", name, layer.kernel_size, layer.stride, layer.padding,
                 layer.output_shape(x.shape), ceil_mode=layer.ceil_mode,
                 count_include_pad=layer.count_include_pad)


@_rule(nn.SumPool2d)
def _sum_pool2d(ex, layer, x, name):
    y = _pool(ex, x, "AveragePool", f"{name}_average", layer.kernel_size, layer.stride,
              layer.padding, layer.output_shape(x.shape), ceil_mode=layer.ceil_mode,
              count_include_pad=True)
    k = layer.kernel_size[0] * layer.kernel_size[1]
    return ex.binary("Mul", y, ex.const(np.float32(k), "window_size"), name)


@_rule(nn.MaxPool1d)
def _max_pool1d(ex, layer, x, name):
    c = layer.get_config()
    return _pool(ex, x, "MaxPool", name, [c["kernel_size"]], [c["stride"]], [c["padding"]],
                 layer.output_shape(x.shape), [c["dilation"]], c["ceil_mode"])


@_rule(nn.AvgPool1d)
def _avg_pool1d(ex, layer, x, name):
    c = layer.get_config()
    return _pool(ex, x, "AveragePool", name, [c["kernel_size"]], [c["stride"]], [c["padding"]],
                 layer.output_shape(x.shape), ceil_mode=c["ceil_mode"],
                 count_include_pad=c["count_include_pad"])


@_rule(nn.GlobalAvgPool2d)
def _global_avg_pool2d(ex, layer, x, name):
    x = ex.channels_first(x)
    pooled = _T(ex.node("GlobalAveragePool", [x.name], f"{name}_pool"), x.perm,
                (1, 1, x.shape[2]))
    return _T(ex.node("Flatten", [pooled.name], name, axis=1), L.identity(2), (x.shape[2],))


def _adaptive(ex, layer, x, name, is_max, out_size):
    """Adaptive pooling of a channels-first tensor: global, or fixed windows where the input
    divides evenly; ``out_size`` the output's spatial sizes."""
    x = ex.channels_first(x)
    spatial = x.shape[:-1]
    shape = tuple(out_size) + (x.shape[-1],)
    if all(o == 1 for o in out_size):
        op = "GlobalMaxPool" if is_max else "GlobalAveragePool"
        return ex.like(x, ex.node(op, [x.name], name), shape)
    if any(i % o for i, o in zip(spatial, out_size)):
        raise ValueError(f"adaptive pooling of {spatial} to {tuple(out_size)}: ONNX has fixed "
                         f"windows only, and the input does not divide evenly (export with an "
                         f"input size that is a multiple of the output size)")
    window = [i // o for i, o in zip(spatial, out_size)]
    return _pool(ex, x, "MaxPool" if is_max else "AveragePool", name, window, window,
                 [0] * len(window), shape)


@_rule(nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
def _adaptive_pool2d(ex, layer, x, name):
    return _adaptive(ex, layer, x, name, isinstance(layer, nn.AdaptiveMaxPool2d),
                     layer.output_shape(x.shape)[:2])


@_rule(nn.AdaptiveAvgPool1d)
def _adaptive_avg_pool1d(ex, layer, x, name):
    return _adaptive(ex, layer, x, name, False, layer.output_shape(x.shape)[:1])


# --- normalisation ----------------------------------------------------------------------------------
@_rule(nn.BatchNorm2d, nn.BatchNorm1d)
def _batch_norm(ex, layer, x, name):
    if not layer.track_running_stats:
        raise ValueError("batch norm without running statistics (track_running_stats=False) "
                         "normalises with each batch's statistics at inference: ONNX's "
                         "BatchNormalization needs running ones")
    x = ex.channels_first(x)
    c = layer.num_features
    if layer.affine:
        scale, bias = ex.param(layer.weight), ex.param(layer.bias)
    else:
        scale, bias = ex.const(np.ones(c), "ones"), ex.const(np.zeros(c), "zeros")
    inputs = [x.name, scale, bias, ex.param(layer.running_mean), ex.param(layer.running_var)]
    momentum = None if layer.momentum is None else 1.0 - float(layer.momentum)
    return ex.unary_inputs("BatchNormalization", x, inputs, name, epsilon=layer.eps,
                           momentum=momentum)


def _channel_param(ex, t, source, channel_axis):
    """A per-channel parameter shaped to broadcast along ONNX axis ``channel_axis`` of ``t``."""
    data = source.data if isinstance(source, nn.Parameter) else np.asarray(source)
    return ex.param(source, data.reshape((-1,) + (1,) * (t.rank - 1 - channel_axis)))


@_rule(nn.GroupNorm)
def _group_norm(ex, layer, x, name):
    # (N, C, ...) -> (N, G, rest) -> InstanceNormalization -> (N, C, ...), then the affine map
    x = ex.channels_first(x)
    g = layer.num_groups
    grouped = ex.reshape(x, [g, -1], f"{name}_groups")
    ones, zeros = ex.const(np.ones(g), "ones"), ex.const(np.zeros(g), "zeros")
    normed = ex.node("InstanceNormalization", [grouped, ones, zeros], f"{name}_normalize",
                     epsilon=layer.eps)
    back = ex.node("Reshape", [normed, ex.ints([0] + list(x.onnx_shape()[1:]))],
                   f"{name}_ungroup" if layer.affine else name)
    y = ex.like(x, back)
    if layer.affine:
        y = ex.binary("Mul", y, _channel_param(ex, y, layer.weight, 1), f"{name}_scale")
        y = ex.binary("Add", y, _channel_param(ex, y, layer.bias, 1), name)
    return y


@_rule(nn.LayerNorm)
def _layer_norm(ex, layer, x, name):
    # over the stored last axis (the channels): ONNX axis perm[-1] of the tensor
    last = x.rank - 1
    if ex.opset >= 17:
        if x.perm[-1] != last:
            x = ex.stored_order(x)
        scale = (ex.param(layer.weight) if layer.affine else
                 ex.const(np.ones(layer.normalized_shape), "ones"))
        inputs = [x.name, scale] + ([ex.param(layer.bias)] if layer.affine else [])
        return ex.unary_inputs("LayerNormalization", x, inputs, name, axis=-1,
                               epsilon=layer.eps)
    axis = x.perm[-1]
    mean = ex.reduce("ReduceMean", x, [axis], True, f"{name}_mean")
    centred = ex.binary("Sub", x, mean, f"{name}_centre")
    square = ex.binary("Mul", centred, centred.name, f"{name}_square")
    var = ex.reduce("ReduceMean", square, [axis], True, f"{name}_variance")
    var = ex.node("Add", [var, ex.const(np.float32(layer.eps), "epsilon")], f"{name}_add_eps")
    std = ex.node("Sqrt", [var], f"{name}_std")
    y = ex.binary("Div", centred, std, f"{name}_normalize" if layer.affine else name)
    if layer.affine:
        y = ex.binary("Mul", y, _channel_param(ex, y, layer.weight, axis), f"{name}_scale")
        y = ex.binary("Add", y, _channel_param(ex, y, layer.bias, axis), name)
    return y


# --- activations ------------------------------------------------------------------------------------
@_rule(nn.Identity, nn.Dropout, nn.Dropout2d, nn.DropPath)
def _identity(ex, layer, x, name):
    return x      # inference: the identity, no node


def _simple(op, **attrs):
    def rule(ex, layer, x, name):
        return ex.unary(op, x, name, **attrs)
    return rule


_rule(nn.ReLU)(_simple("Relu"))
_rule(nn.Sigmoid)(_simple("Sigmoid"))
_rule(nn.Tanh)(_simple("Tanh"))


@_rule(nn.LeakyReLU)
def _leaky_relu(ex, layer, x, name):
    return ex.unary("LeakyRelu", x, name, alpha=layer.negative_slope)


def _clip(ex, x, lo, hi, name):
    if lo is None and hi is None:
        return x
    inputs = [x.name, "" if lo is None else ex.const(np.float32(lo), "clip_min")]
    if hi is not None:
        inputs.append(ex.const(np.float32(hi), "clip_max"))
    return ex.unary_inputs("Clip", x, inputs, name)


@_rule(nn.ReLU6)
def _relu6(ex, layer, x, name):
    return _clip(ex, x, 0.0, 6.0, name)


@_rule(nn.Clip)
def _clip_layer(ex, layer, x, name):
    return _clip(ex, x, layer.min_value, layer.max_value, name)


@_rule(nn.Hardsigmoid)
def _hardsigmoid(ex, layer, x, name):
    return ex.unary("HardSigmoid", x, name, alpha=1.0 / 6.0, beta=0.5)


@_rule(nn.Hardswish)
def _hardswish(ex, layer, x, name):
    if ex.opset >= 14:
        return ex.unary("HardSwish", x, name)
    gate = ex.unary("HardSigmoid", x, f"{name}_gate", alpha=1.0 / 6.0, beta=0.5)
    return ex.binary("Mul", x, gate.name, name)


@_rule(nn.SiLU)
def _silu(ex, layer, x, name):
    gate = ex.unary("Sigmoid", x, f"{name}_sigmoid")
    return ex.binary("Mul", x, gate.name, name)


@_rule(nn.GELU)
def _gelu(ex, layer, x, name):
    if ex.opset >= 20:
        return ex.unary("Gelu", x, name, approximate=layer.approximate)
    c = lambda v, hint: ex.const(np.float32(v), hint)  # noqa: E731
    if layer.approximate == "tanh":
        # 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
        cube = ex.binary("Mul", x, x.name, f"{name}_square")
        cube = ex.binary("Mul", cube, x.name, f"{name}_cube")
        inner = ex.binary("Mul", cube, c(0.044715, "gelu_coefficient"), f"{name}_scale_cube")
        inner = ex.binary("Add", inner, x.name, f"{name}_inner")
        inner = ex.binary("Mul", inner, c(math.sqrt(2.0 / math.pi), "sqrt_2_over_pi"),
                          f"{name}_scale")
        phi = ex.unary("Tanh", inner, f"{name}_tanh")
    else:
        # 0.5 x (1 + erf(x / sqrt(2)))
        inner = ex.binary("Div", x, c(math.sqrt(2.0), "sqrt_2"), f"{name}_scale")
        phi = ex.unary("Erf", inner, f"{name}_erf")
    phi = ex.binary("Add", phi, c(1.0, "one"), f"{name}_add_one")
    y = ex.binary("Mul", x, phi.name, f"{name}_mul")
    return ex.binary("Mul", y, c(0.5, "half"), name)


@_rule(nn.Softmax)
def _softmax(ex, layer, x, name):
    return ex.softmax(x, x.rank - 1, False, name)


@_rule(nn.SoftmaxAxis)
def _softmax_axis(ex, layer, x, name):
    if layer.axis >= x.rank:
        raise ValueError(f"axis {layer.axis} is out of range for a rank-{x.rank} tensor")
    return ex.softmax(x, layer.axis, layer.log, name)


@_rule(nn.PReLU)
def _prelu(ex, layer, x, name):
    if layer.num_parameters == 1:
        return ex.binary("PRelu", x, ex.param(layer.weight), name)
    # one slope per channel: the stored last axis, ONNX axis perm[-1]
    return ex.binary("PRelu", x, _channel_param(ex, x, layer.weight, x.perm[-1]), name)


# --- merging ----------------------------------------------------------------------------------------
def _join(ex, op, xs, name, shape=None):
    """``op`` of tensors of one shape and layout, pairwise (Add: Sum for more than two)."""
    xs = ex.common(xs)
    if op == "Add" and len(xs) > 2:
        return ex.like(xs[0], ex.node("Sum", [t.name for t in xs], name), shape)
    y = xs[0]
    for k, t in enumerate(xs[1:]):
        last = k == len(xs) - 2
        y = ex.like(y, ex.node(op, [y.name, t.name], name if last else f"{name}_{k}"),
                    shape if last else None)
    return y


@_rule(nn.Add)
def _add(ex, layer, xs, name):
    return _join(ex, "Add", xs, name)


@_rule(nn.Multiply)
def _multiply(ex, layer, xs, name):
    full = max(xs, key=lambda t: int(np.prod(t.shape)))
    ref = [t for t in xs if t.shape == full.shape]
    perm = ex.common(ref)[0].perm
    same = []
    for t in xs:
        if len(t.shape) != len(full.shape):
            # a (C,) gate: laid out as the (1, ..., 1, C) gate it broadcasts as
            gate_shape = (1,) * (len(full.shape) - 1) + t.shape[-1:]
            g = ex.stored_order(t)
            t = _T(ex.reshape(g, L.onnx_shape(perm, (0,) + gate_shape)[1:], f"{name}_gate"),
                   perm, gate_shape)
        same.append(ex.as_perm(t, perm))
    y = same[0]
    for k, t in enumerate(same[1:]):
        last = k == len(same) - 2
        y = _T(ex.node("Mul", [y.name, t.name], name if last else f"{name}_{k}"), perm,
               layer.output_shape([y.shape, t.shape]))
    return y


@_rule(nn.Concatenate)
def _concatenate(ex, layer, xs, name):
    xs = ex.common(xs)
    stored = layer.axis if layer.axis > 0 else xs[0].rank + layer.axis   # its stored axis
    return ex.like(xs[0], ex.node("Concat", [t.name for t in xs], name, axis=xs[0].perm[stored]),
                   layer.output_shape([t.shape for t in xs]))


@_rule(nn.Residual)
def _residual(ex, layer, x, name):
    body = ex.call(layer.body, [x], f"{name}.body")[0]
    short = x if layer.shortcut is None else ex.call(layer.shortcut, [x], f"{name}.shortcut")[0]
    if body.shape != short.shape:
        raise ValueError(f"body output {body.shape} and shortcut output {short.shape} differ")
    return _join(ex, "Add", [body, short], name)


_ARITH = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div"}


@_rule(nn.Arithmetic)
def _arithmetic(ex, layer, xs, name):
    shape = layer.output_shape([t.shape for t in xs])
    if len({t.rank for t in xs}) == 1:
        xs = ex.common(xs)
    else:   # samples broadcast by their trailing axes in the stored order, as fastcnn does;
        # ONNX aligns the batch axis too, so lower ranks get unit axes after it
        rank = max(t.rank for t in xs)
        xs = [ex.stored_order(t) for t in xs]
        xs = [t if t.rank == rank else
              _T(ex.reshape(t, (1,) * (rank - t.rank) + tuple(t.onnx_shape()[1:]),
                            f"{name}_rank{k}"), L.identity(rank), (1,) * (rank - t.rank) + t.shape)
              for k, t in enumerate(xs)]
    op = _ARITH[layer.op]
    if op == "Add" and len(xs) > 2:
        out = ex.node("Sum", [t.name for t in xs], name)
    else:
        out = xs[0].name
        for k, t in enumerate(xs[1:]):
            out = ex.node(op, [out, t.name], name if k == len(xs) - 2 else f"{name}_{k}")
    perm = max(xs, key=lambda t: t.rank).perm
    return _T(out, perm, shape)


@_rule(nn.ConstantArithmetic)
def _constant_arithmetic(ex, layer, x, name):
    value = layer.value.data
    shape = layer.output_shape(x.shape)
    if value.ndim > x.rank:
        raise ValueError(f"the constant of shape {value.shape} has more axes than the tensor "
                         f"({x.rank})")
    if len(shape) != len(x.shape):
        raise ValueError(f"the result of rank {len(shape) + 1} is not the tensor's rank")
    full = value.reshape((1,) * (x.rank - value.ndim) + value.shape)
    const = ex.param(layer.value, full.transpose(L.inverse(x.perm)))
    if layer.op == "prelu":
        if shape == x.shape:
            return ex.binary("PRelu", x, const, name)
        # the slope broadcasts the result beyond x's shape: where(x > 0, x, x * slope)
        scaled = ex.binary("Mul", x, const, f"{name}_scaled")
        positive = ex.node("Greater", [x.name, ex.const(np.float32(0), "zero")],
                           f"{name}_positive")
        return _T(ex.node("Where", [positive, x.name, scaled.name], name), x.perm, shape)
    op = _ARITH[layer.op]
    inputs = [const, x.name] if layer.reverse else [x.name, const]
    return _T(ex.node(op, inputs, name), x.perm, shape)


@_rule(nn.Rescaling)
def _rescaling(ex, layer, x, name):
    y = ex.binary("Mul", x, ex.const(np.float32(layer.scale), "scale"),
                  f"{name}_scale" if layer.offset != 0.0 else name)
    if layer.offset != 0.0:
        y = ex.binary("Add", y, ex.const(np.float32(layer.offset), "offset"), name)
    return y


# --- shapes -----------------------------------------------------------------------------------------
@_rule(nn.Flatten)
def _flatten(ex, layer, x, name):
    if x.rank == 2:
        return x
    x = ex.channels_first(x)     # fastcnn flattens NHWC in (C, H, W) order: ONNX's of NCHW
    return _T(ex.node("Flatten", [x.name], name, axis=1), L.identity(2),
              layer.output_shape(x.shape))


@_rule(nn.Permute)
def _permute(ex, layer, x, name):
    axes = (0,) + layer.dims    # stored_out = stored_in.transpose(axes): only the perm changes
    return _T(x.name, tuple(x.perm[a] for a in axes), layer.output_shape(x.shape))


@_rule(nn.Reshape)
def _reshape(ex, layer, x, name):
    shape = layer.output_shape(x.shape)
    if shape == x.shape:
        return x                # the stored array is unchanged
    if _data_order(x) != _data_order(_T(x.name, L.identity(x.rank), x.shape)):
        x = ex.stored_order(x)  # the ONNX tensor holds the values in another order
    out = _T("", L.identity(len(shape) + 1), shape)
    if len(shape) >= 2:
        # channels first where that is the same values in the same order ((1, 1, C) is
        # (C, 1, 1)): what a convolution or Flatten after it takes, with no transpose
        first = _T("", L.channels_last(len(shape) + 1), shape)
        if _data_order(first) == _data_order(out):
            out = first
    out.name = ex.reshape(x, out.onnx_shape(0)[1:], name)
    return out


@_rule(nn.ZeroPad2d)
def _zero_pad2d(ex, layer, x, name):
    left, right, top, bottom = layer.padding
    return ex.pad(x, [(0, 0), (top, bottom), (left, right), (0, 0)], name)


@_rule(nn.Pad)
def _pad_layer(ex, layer, x, name):
    if len(layer.pads) != len(x.shape):
        raise ValueError(f"pads for {len(layer.pads)} axes, got a sample of {x.shape}")
    return ex.pad(x, [(0, 0)] + list(layer.pads), name, mode=layer.mode, value=layer.value)


@_rule(nn.Reduce)
def _reduce_layer(ex, layer, x, name):
    op = "ReduceMean" if layer.op == "mean" else "ReduceSum"
    shape = layer.output_shape(x.shape)
    out = ex.reduce(op, x, [x.perm[a] for a in layer.axes], layer.keepdims, name)
    if layer.keepdims:
        return _T(out, x.perm, shape)
    kept = [p for i, p in enumerate(x.perm) if i not in layer.axes]
    return _T(out, tuple(int(r) for r in np.argsort(np.argsort(kept))), shape)


@_rule(nn.Upsample)
def _upsample(ex, layer, x, name):
    x = ex.channels_first(x)
    h, w, c = x.shape
    shape = layer.output_shape(x.shape)
    ho, wo = shape[:2]
    if layer.mode == "nearest":
        attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                     nearest_mode="floor")
    else:
        attrs = dict(mode="linear", coordinate_transformation_mode="align_corners"
                     if layer.align_corners else "half_pixel")
    empty = ex.const(np.zeros(0, np.float32), "empty") if ex.opset < 13 else ""
    if ho % h == 0 and wo % w == 0:     # integer factors: exact scales
        scales = ex.const(np.array([1, 1, ho // h, wo // w], np.float32), "scales")
        inputs = [x.name, empty, scales]
    elif ex.opset >= 18:
        inputs = [x.name, "", "", ex.ints([ho, wo], "sizes")]
        attrs["axes"] = [2, 3]
    else:                               # sizes of every axis: the batch's is dynamic
        dims = ex.node("Shape", [x.name], f"{name}_shape")
        batch = ex.node("Slice", [dims, ex.ints([0], "start"), ex.ints([2], "end")],
                        f"{name}_batch_channels")
        sizes = ex.node("Concat", [batch, ex.ints([ho, wo], "sizes")], f"{name}_sizes", axis=0)
        inputs = [x.name, empty, empty, sizes]
    return ex.like(x, ex.node("Resize", inputs, name, **attrs), shape)


# --- the model's boundary ---------------------------------------------------------------------------
def _sample_shapes(model, input_shape):
    """One sample's shape of each input (the model's own layout), and their names."""
    if isinstance(model, Sequential):
        shape = model.input_shape
        if input_shape is not None:
            shape = tuple(int(v) for v in input_shape)
        if shape is None:
            raise ValueError("onnx.export: the Sequential's input shape is unknown (made without "
                             "input_shape= and not run yet): pass input_shape=, one sample's "
                             "shape in the model's layout without the batch axis, e.g. "
                             "(28, 28, 1)")
        return [tuple(shape)], ["input"]
    shapes = [tuple(t.shape) for t in model.inputs]
    if input_shape is not None:
        given = input_shape
        if len(shapes) == 1 and not isinstance(given[0], (list, tuple)):
            given = [given]
        given = [tuple(int(v) for v in s) for s in given]
        if given != shapes:
            raise ValueError(f"onnx.export: input_shape {given if len(given) > 1 else given[0]} "
                             f"is not the model's ({shapes if len(shapes) > 1 else shapes[0]}); "
                             f"a graph model's input shapes are fixed when it is made")
    names = []
    for i, t in enumerate(model.inputs):
        names.append(t.node.input_name or ("input" if i == 0 else f"input_{i}"))
    return shapes, names


def _native_layout(model):
    return getattr(model, "layout", "nhwc") if isinstance(model, OnnxModel) else "nhwc"


def build(onnx, model, input_shape=None, opset=17, layout=None):
    if not isinstance(model, nn.Layer):
        raise TypeError(f"onnx.export: expected a fastcnn model, got {type(model).__name__}")
    native = _native_layout(model)
    if layout is None:      # an OnnxModel: the layout it takes; any other: channels first
        layout = native if isinstance(model, OnnxModel) else "nchw"
    if layout not in ("nchw", "nhwc"):
        raise ValueError(f"onnx.export: layout must be 'nchw' (channels first, PyTorch's and "
                         f"ONNX Runtime's) or 'nhwc' (the model's own), got {layout!r}")
    latest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= latest:
        raise ValueError(f"onnx.export: opset must be an int from {MIN_OPSET} to {latest} (this "
                         f"onnx package's newest), got {opset!r}")
    if not isinstance(model, Model):     # a single layer: a one-layer Sequential
        if input_shape is None:
            raise ValueError("onnx.export: exporting a single layer needs input_shape=")
        model = Sequential(model)
    shapes, input_names = _sample_shapes(model, input_shape)
    # channels-first files for a channels-last model: inputs and outputs (N, C, spatial...)
    to_nchw = layout == "nchw" and native == "nhwc"
    boundary = (lambda rank: L.channels_last(rank)) if to_nchw else L.identity

    ex = _Exporter(onnx, model, opset)
    helper, TensorProto = onnx.helper, onnx.TensorProto
    outputs_count = 1 if isinstance(model, Sequential) else len(model.outputs)
    output_names = ["output" if i == 0 else f"output_{i}" for i in range(outputs_count)]
    for n in input_names + output_names:
        if n in ex.names:
            raise ValueError(f"onnx.export: the input or output name {n!r} is also a "
                             f"parameter's name")
        ex.names.add(n)
    inputs, graph_inputs = [], []
    for name, shape in zip(input_names, shapes):
        t = _T(name, boundary(len(shape) + 1), shape)
        inputs.append(t)
        graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                          list(t.onnx_shape())))
    outs = ex.call(model, inputs, "")   # the layers' eval-mode semantics; nothing runs

    rename, graph_outputs = {}, []
    taken = set(input_names) | set(ex.initializers)
    for name, t in zip(output_names, outs):
        t = ex.as_perm(t, boundary(t.rank))
        source = rename.get(t.name, t.name)
        if source in taken or source in rename.values() or t.name in rename:
            ex.nodes.append(helper.make_node("Identity", [source], [name],
                                             name=ex.unique(f"{name}_identity", ex.node_names)))
        else:
            rename[t.name] = name
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                           list(t.onnx_shape())))
    if rename:
        for node in ex.nodes:
            for seq in (node.input, node.output):
                for i, n in enumerate(seq):
                    if n in rename:
                        seq[i] = rename[n]

    initializers = [ex.numpy_helper.from_array(v, name) for name, v in ex.initializers.items()]
    graph = helper.make_graph(ex.nodes, type(model).__name__, graph_inputs, graph_outputs,
                              initializer=initializers)
    opsets = [helper.make_opsetid("", opset)]
    from .. import __version__
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="fastcnn",
                              producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:     # a graph this module got wrong: say so
        raise RuntimeError(f"onnx.export: the graph made does not pass onnx.checker (a bug in "
                           f"fastcnn's exporter, please report it): {exc}") from exc
    return proto


def export(model, path=None, input_shape=None, opset=17, layout=None):
    """See :func:`fastcnn.onnx.export`."""
    from . import _onnx
    proto = build(_onnx(), model, input_shape=input_shape, opset=opset, layout=layout)
    if path is not None:
        data = proto.SerializeToString()
        if hasattr(path, "write"):
            path.write(data)
        else:
            with open(os.fspath(path), "wb") as f:
                f.write(data)
    return proto
