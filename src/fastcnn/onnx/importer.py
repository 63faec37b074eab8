"""Read an ONNX graph into a trainable :class:`~fastcnn.onnx.OnnxModel`.

Each ONNX node becomes fastcnn layers called on symbolic tensors, so the result is an ordinary
graph model: the same fused, prepared execution, ``fit``, ``save``. Tensors carry a layout
(:mod:`.layout`): convolutions, pooling and resizing work channels-last, the rest keeps whatever
layout its input has, and a transpose is made only where a layer needs another one. Constant
subgraphs (the Shape -> Gather -> Concat -> Reshape chains that exporters write for a flatten)
are computed here, once.
"""
import math
import re

import numpy as np

from .. import nn
from . import layout as L
from .model import OnnxModel

#: Stands for the batch size in shapes computed at load time (the batch axis is dynamic).
BATCH = -(2 ** 40)

_CONVERTERS = {}
#: Operators computed at load time when all their inputs are known.
_FOLDABLE = {"Shape", "Gather", "Concat", "Unsqueeze", "Squeeze", "Reshape", "Cast", "Mul", "Add",
             "Sub", "Div", "Slice", "ConstantOfShape", "Identity", "Range", "Floor", "Ceil",
             "Sqrt", "Neg", "Transpose", "Flatten", "Expand"}


def converts(*op_types):
    def decorate(fn):
        for op in op_types:
            _CONVERTERS[op] = fn
        return fn
    return decorate


def supported_operators():
    """The ONNX operators :func:`load` reads (besides constant subgraphs it computes)."""
    return sorted(_CONVERTERS)


def spatial_name(rank):
    return f"{rank - 2}-D"


def _sanitize(text):
    return re.sub(r"[^0-9A-Za-z_]+", "_", text).strip("_")


class _Importer:
    def __init__(self, onnx, proto, layout, input_shape):
        from onnx import numpy_helper
        self.onnx, self.numpy_helper = onnx, numpy_helper
        self.layout = layout
        graph = proto.graph
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                          None)
        if self.opset is None:
            raise ValueError("onnx.load: the file imports no version of the default ONNX domain")
        self.consts = {}
        for init in graph.initializer:
            self.consts[init.name] = numpy_helper.to_array(init)
        self.initializers = set(self.consts)
        self.tensors = {}       # ONNX name -> (symbolic tensor, perm)
        self._converted = {}    # (ONNX name, perm) -> symbolic tensor
        self.key_names, self._names, self._bound = {}, set(), set()
        self.graph, self.input_shape = graph, input_shape
        self.file_batch = None

    # --- tensors ---------------------------------------------------------------------------------
    def const(self, name):
        return self.consts.get(name) if name else None

    def has(self, node, i):
        return len(node.input) > i and node.input[i] != ""

    def is_const(self, name):
        return name in self.consts

    def get(self, name, perm=None):
        """The symbolic tensor of ONNX ``name`` stored with ``perm`` (as it is: None)."""
        if name in self.consts:
            raise ValueError(f"a constant is used where fastcnn needs a computed tensor "
                             f"({name!r})")
        if name not in self.tensors:
            raise ValueError(f"tensor {name!r} is used before it is computed")
        sym, have = self.tensors[name]
        if perm is None or tuple(perm) == have:
            return sym
        key = (name, tuple(perm))
        if key not in self._converted:
            q = L.between(have, perm)
            self._converted[key] = self.call(nn.Permute(q[1:]), sym, f"{name}_to_{'_'.join(map(str, perm))}")
        return self._converted[key]

    def perm(self, name):
        return self.tensors[name][1]

    def rank(self, name):
        return len(self.tensors[name][1])

    def onnx_shape(self, name):
        """The ONNX shape of a computed tensor, BATCH for its batch axis."""
        sym, perm = self.tensors[name]
        return L.onnx_shape(perm, (BATCH,) + tuple(sym.shape))

    def put(self, name, sym, perm):
        self.tensors[name] = (sym, tuple(perm))

    # --- layers ------------------------------------------------------------------------------------
    def _unique(self, base):
        base = _sanitize(base) or "layer"
        name, k = base, 1
        while name in self._names:
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    def call(self, layer, inputs, base):
        layer.name = self._unique(base)
        return layer(inputs)

    def layer_name(self, node, weight=None):
        """A layer's name: its weight's prefix ('layer1.0.conv1' for 'layer1.0.conv1.weight'),
        else the node's name, else its operator."""
        if weight and weight.endswith(".weight"):
            return weight[: -len(".weight")]
        return node.name or node.op_type.lower()

    def bind(self, layer, attr, value, source=None, frozen=False):
        """Set a layer's parameter or buffer; keyed by the initializer ``source`` when it holds
        that initializer's values as they are."""
        current = getattr(layer, attr)
        target = current.data if isinstance(current, nn.Parameter) else current
        value = np.asarray(value)
        if value.shape != target.shape:
            value = value.reshape(target.shape)
        array = np.ascontiguousarray(value, dtype=target.dtype)
        if isinstance(current, nn.Parameter):
            current.data = array
            if frozen:
                current.requires_grad = False
        else:
            setattr(layer, attr, array)
        if source is not None and source in self.initializers and source not in self._bound:
            original = self.consts[source]
            if original.shape == array.shape and np.array_equal(original.astype(array.dtype), array):
                self.key_names[f"{layer.name}.{attr}"] = source
                self._bound.add(source)

    def constant_op(self, op, x, perm, value, node, source=None, reverse=False, frozen=None):
        """``x op value`` with ``value`` laid out for a tensor stored with ``perm``."""
        stored = L.store_constant(perm, np.asarray(value, np.float32))
        layer = nn.ConstantArithmetic(op, stored.shape, reverse=reverse)
        layer.name = self._unique(node.name or node.op_type.lower())
        unchanged = source if tuple(perm) == L.identity(len(perm)) else None
        self.bind(layer, "value", stored, unchanged,
                  frozen=(source not in self.initializers) if frozen is None else frozen)
        return layer(x)

    # --- the graph -----------------------------------------------------------------------------------
    def inputs(self):
        graph, proto_inputs = self.graph, []
        for vi in graph.input:
            if vi.name in self.consts:
                continue        # an initializer listed as an input (files before IR 4)
            proto_inputs.append(vi)
        if not proto_inputs:
            raise ValueError("onnx.load: the graph has no inputs (only constants)")
        given = self.input_shape
        if given is not None and len(proto_inputs) == 1 and not isinstance(given[0], (list, tuple)):
            given = [given]
        if given is not None and len(given) != len(proto_inputs):
            raise ValueError(f"onnx.load: input_shape gives {len(given)} shapes for "
                             f"{len(proto_inputs)} inputs")
        symbols = []
        for i, vi in enumerate(proto_inputs):
            tt = vi.type.tensor_type
            if tt.elem_type != self.onnx.TensorProto.FLOAT:
                kind = (self.onnx.TensorProto.DataType.Name(tt.elem_type)
                        if vi.type.HasField("tensor_type") else vi.type.WhichOneof("value"))
                raise ValueError(f"onnx.load: input {vi.name!r} of type {kind} is not supported: "
                                 f"fastcnn models take float32 tensors")
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                    for d in tt.shape.dim]
            if len(dims) < 2:
                raise ValueError(f"onnx.load: input {vi.name!r} of shape {dims} is not supported: "
                                 f"fastcnn models take a batch axis and at least one more")
            sample = dims[1:]
            if given is not None:
                sample = [int(v) for v in given[i]]
                if len(sample) != len(dims) - 1:
                    raise ValueError(f"onnx.load: input_shape {tuple(sample)} for input "
                                     f"{vi.name!r} of rank {len(dims)} (give the shape without "
                                     f"the batch axis)")
            if any(v == 0 for v in sample):
                raise ValueError(f"onnx.load: input {vi.name!r} of shape {dims} is empty: not "
                                 f"supported")
            if any(v is None for v in sample):
                raise ValueError(f"onnx.load: input {vi.name!r} has dynamic sizes "
                                 f"{['?' if v is None else v for v in dims]}: pass input_shape= "
                                 f"(one sample's shape, without the batch axis)")
            if dims[0] is not None and self.file_batch is None:
                self.file_batch = dims[0]
            rank = len(dims)
            perm = L.channels_last(rank) if self.layout == "nhwc" else L.identity(rank)
            stored = tuple(([0] + sample)[p] for p in perm)[1:]
            sym = nn.Input(stored, name=_sanitize(vi.name) or f"input_{i}")
            self.put(vi.name, sym, perm)
            symbols.append(sym)
        return symbols

    def run(self):
        inputs = self.inputs()
        for node in self.graph.node:
            if node.domain not in ("", "ai.onnx"):
                raise ValueError(self.unsupported(node, f"domain {node.domain!r}"))
            if self.fold(node):
                continue
            convert = _CONVERTERS.get(node.op_type)
            if convert is None:
                raise ValueError(self.unsupported(node))
            try:
                convert(self, node)
            except ValueError as exc:
                raise ValueError(f"onnx.load: node {node.name or '(unnamed)'!r} "
                                 f"({node.op_type}, opset {self.opset}): {exc}") from None
        outputs = []
        for vo in self.graph.output:
            if vo.name in self.consts:
                raise ValueError(f"onnx.load: output {vo.name!r} is a constant, it does not "
                                 f"depend on the inputs")
            rank = self.rank(vo.name)
            perm = L.channels_last(rank) if self.layout == "nhwc" else L.identity(rank)
            sym = self.get(vo.name, perm)
            if sym.node.layer is None or any(sym is o for o in outputs):
                sym = self.call(nn.Identity(), sym, f"{vo.name}_output")
            outputs.append(sym)
        return OnnxModel(inputs[0] if len(inputs) == 1 else inputs,
                         outputs[0] if len(outputs) == 1 else outputs,
                         key_names=self.key_names, layout=self.layout)

    def unsupported(self, node, what=None):
        return (f"onnx.load: node {node.name or '(unnamed)'!r}: operator {node.op_type} "
                f"({what or 'opset ' + str(self.opset)}) is not supported; fastcnn reads "
                f"{', '.join(supported_operators())}")

    # --- constant folding ----------------------------------------------------------------------------
    def fold(self, node):
        if node.op_type == "Constant":
            self.consts[node.output[0]] = self.constant_value(node)
            return True
        if node.op_type not in _FOLDABLE:
            return False
        ins = [n for n in node.input]
        if node.op_type == "Shape":
            if self.is_const(ins[0]):
                shape = np.array(self.consts[ins[0]].shape, np.int64)
            else:
                shape = np.array(self.onnx_shape(ins[0]), np.int64)
            a = attrs(node)
            start, end = a.get("start", 0), a.get("end", None)
            self.consts[node.output[0]] = shape[start:end]
            return True
        if not all(n == "" or self.is_const(n) for n in ins):
            return False
        values = [self.consts[n] if n else None for n in ins]
        self.consts[node.output[0]] = _evaluate(node, values, self.opset)
        return True

    def constant_value(self, node):
        a = attrs(node)
        for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if key in a:
                v = a[key]
                return np.asarray(v, np.float32 if "float" in key else
                                  np.int64 if "int" in key else None)
        raise ValueError(f"onnx.load: Constant node {node.name!r}: only value, value_float(s) and "
                         f"value_int(s) are supported")


def attrs(node):
    """A node's attributes as Python values (tensors as arrays)."""
    from onnx import helper, numpy_helper
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if a.type == a.TENSOR:
            v = numpy_helper.to_array(v)
        elif isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode() for s in v]
        out[a.name] = v
    return out


def _evaluate(node, values, opset):
    """A foldable node on known inputs, with NumPy."""
    op, a = node.op_type, attrs(node)
    x = values[0]
    if op == "Identity":
        return x
    if op == "Gather":
        return np.take(x, values[1].astype(np.int64), axis=a.get("axis", 0))
    if op == "Concat":
        return np.concatenate([np.atleast_1d(v) for v in values], axis=a.get("axis", 0))
    if op == "Unsqueeze":
        axes = a.get("axes") if opset < 13 else values[1].tolist()
        out = x
        for ax in sorted(ax % (x.ndim + len(axes)) for ax in axes):
            out = np.expand_dims(out, ax)
        return out
    if op == "Squeeze":
        axes = a.get("axes") if opset < 13 else (None if len(values) < 2 or values[1] is None
                                                 else values[1].tolist())
        return np.squeeze(x, axis=None if axes is None else tuple(axes))
    if op == "Reshape":
        shape = values[1].astype(np.int64)
        shape = [x.shape[i] if s == 0 and not a.get("allowzero", 0) else s
                 for i, s in enumerate(shape)]
        return x.reshape(shape)
    if op == "Flatten":
        axis = a.get("axis", 1)
        return x.reshape(int(np.prod(x.shape[:axis])), -1)
    if op == "Cast":
        from onnx import helper
        return x.astype(helper.tensor_dtype_to_np_dtype(a["to"]))
    if op in ("Mul", "Add", "Sub", "Div"):
        y = values[1]
        if op == "Div" and x.dtype.kind in "iu":
            return np.floor_divide(x, y)
        return {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract, "Div": np.divide}[op](x, y)
    if op in ("Floor", "Ceil", "Sqrt", "Neg"):
        return {"Floor": np.floor, "Ceil": np.ceil, "Sqrt": np.sqrt, "Neg": np.negative}[op](x)
    if op == "Transpose":
        return np.transpose(x, a.get("perm"))
    if op == "Expand":
        return x * np.ones(values[1].astype(np.int64), x.dtype)
    if op == "Range":
        return np.arange(values[0], values[1], values[2]).astype(values[0].dtype)
    if op == "ConstantOfShape":
        fill = a.get("value", np.zeros(1, np.float32))
        return np.full(values[0].astype(np.int64), fill.reshape(-1)[0], fill.dtype)
    if op == "Slice":
        if opset < 10:
            starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
        else:
            starts, ends = values[1].tolist(), values[2].tolist()
            axes = values[3].tolist() if len(values) > 3 and values[3] is not None else None
            steps = values[4].tolist() if len(values) > 4 and values[4] is not None else None
        axes = list(range(len(starts))) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
        index = [slice(None)] * x.ndim
        for ax, s, e, st in zip(axes, starts, ends, steps):
            index[ax] = slice(s, e, st)
        return x[tuple(index)]
    raise AssertionError(op)


# --- converters --------------------------------------------------------------------------------------
def _spatial_pads(a, in_size, kernel, stride, dilation, what):
    """ONNX's pads (or auto_pad) as ((before, after) per spatial axis)."""
    n = len(in_size)
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for size, k, s, d in zip(in_size, kernel, stride, dilation):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            out.append((small, big) if auto == "SAME_UPPER" else (big, small))
        return tuple(out)
    if auto == "VALID":
        return ((0, 0),) * n
    if auto != "NOTSET":
        raise ValueError(f"{what}: auto_pad {auto!r} is not an ONNX value")
    pads = list(a.get("pads", [0] * 2 * n))
    if any(p < 0 for p in pads):
        raise ValueError(f"{what}: negative pads {pads} are not supported")
    return tuple((pads[i], pads[i + n]) for i in range(n))


@converts("Conv")
def _conv(ctx, node):
    a = attrs(node)
    w = ctx.const(node.input[1])
    if w is None:
        raise ValueError("the weight must be an initializer (a constant)")
    rank = w.ndim
    if rank not in (3, 4):
        raise ValueError(f"{spatial_name(w.ndim)} convolutions are not supported (weight of shape "
                         f"{w.shape}); fastcnn has 1-D and 2-D ones")
    spatial = rank - 2
    kernel = tuple(a.get("kernel_shape", w.shape[2:]))
    stride = tuple(a.get("strides", [1] * spatial))
    dilation = tuple(a.get("dilations", [1] * spatial))
    groups = a.get("group", 1)
    perm = L.channels_last(rank)
    x = ctx.get(node.input[0], perm)
    in_size = x.shape[:-1]
    pads = _spatial_pads(a, in_size, kernel, stride, dilation, "Conv")
    b = ctx.const(node.input[2]) if ctx.has(node, 2) else None
    if ctx.has(node, 2) and b is None:
        raise ValueError("the bias must be an initializer (a constant)")
    in_ch, out_ch = w.shape[1] * groups, w.shape[0]
    name = ctx.layer_name(node, node.input[1])
    if spatial == 1:
        (lo, hi), = pads
        if lo != hi:
            x = ctx.call(nn.Pad(((lo, hi), (0, 0))), x, f"{name}_pad")
            lo = 0
        layer = nn.Conv1d(in_ch, out_ch, kernel[0], stride[0], lo, dilation[0], groups,
                          bias=b is not None)
    else:
        padding = tuple(pads) if any(lo != hi for lo, hi in pads) else tuple(p[0] for p in pads)
        layer = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation, groups,
                          bias=b is not None)
    _put_weighted(ctx, node, layer, name, x, w, b, perm)


def _put_weighted(ctx, node, layer, name, x, w, b, perm):
    """Name ``layer``, give it the node's weight (input 1) and bias (input 2, or None), and put
    its output on ``x`` as the node's."""
    layer.name = ctx._unique(name)
    ctx.bind(layer, "weight", w, node.input[1])
    if b is not None:
        ctx.bind(layer, "bias", b, node.input[2])
    ctx.put(node.output[0], layer(x), perm)


@converts("ConvTranspose")
def _conv_transpose(ctx, node):
    a = attrs(node)
    w = ctx.const(node.input[1])
    if w is None or w.ndim != 4:
        raise ValueError("transposed convolutions other than 2-D ones with an initializer weight "
                         "are not supported")
    groups = a.get("group", 1)
    kernel = tuple(a.get("kernel_shape", w.shape[2:]))
    stride = tuple(a.get("strides", [1, 1]))
    dilation = tuple(a.get("dilations", [1, 1]))
    out_pad = list(a.get("output_padding", [0, 0]))
    perm = L.channels_last(4)
    x = ctx.get(node.input[0], perm)
    in_size = x.shape[:2]
    full = [s * (i - 1) + (k - 1) * d + 1 for i, k, s, d in zip(in_size, kernel, stride, dilation)]
    if "output_shape" in a:
        target = list(a["output_shape"])[-2:]
        totals = [f + op - t for f, op, t in zip(full, out_pad, target)]
        if any(t < 0 for t in totals):
            # the output is larger than the full result: the rest is output padding
            out_pad = [op - min(t, 0) for op, t in zip(out_pad, totals)]
            totals = [max(t, 0) for t in totals]
        auto = a.get("auto_pad", "NOTSET")
        pads = [((t - t // 2), t // 2) if auto == "SAME_LOWER" else (t // 2, t - t // 2)
                for t in totals]
    elif a.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        target = [i * s for i, s in zip(in_size, stride)]
        totals = [f + op - t for f, op, t in zip(full, out_pad, target)]
        pads = [((t - t // 2), t // 2) if a["auto_pad"] == "SAME_LOWER" else (t // 2, t - t // 2)
                for t in totals]
    else:
        pads = list(_spatial_pads(a, in_size, kernel, stride, dilation, "ConvTranspose"))
    # fastcnn's padding is symmetric: an extra row at the end is output padding taken back,
    # at the start it is not expressible.
    padding, extra = [], []
    for (lo, hi), op in zip(pads, out_pad):
        if hi < lo:
            raise ValueError(f"ConvTranspose: pads {pads} with more padding at the start than at "
                             f"the end are not supported")
        padding.append(lo)
        extra.append(op - (hi - lo))
    if any(e < 0 for e in extra):
        # crop the end instead: pad symmetrically by the larger amount, give back the rest
        raise ValueError(f"ConvTranspose: asymmetric pads {pads} are not supported")
    b = ctx.const(node.input[2]) if ctx.has(node, 2) else None
    in_ch, out_ch = w.shape[0], w.shape[1] * groups
    if any(e >= max(s, d) for e, s, d in zip(extra, stride, dilation)):
        raise ValueError(f"ConvTranspose: output padding {extra} must be smaller than the stride "
                         f"or the dilation")
    layer = nn.ConvTranspose2d(in_ch, out_ch, kernel, stride, tuple(padding), tuple(extra), groups,
                               bias=b is not None, dilation=dilation)
    _put_weighted(ctx, node, layer, ctx.layer_name(node, node.input[1]), x, w, b, perm)


@converts("BatchNormalization")
def _batch_norm(ctx, node):
    a = attrs(node)
    if len([o for o in node.output if o]) > 1 or a.get("training_mode", 0):
        raise ValueError("training-mode batch normalization (several outputs) is not supported: "
                         "fastcnn computes batch statistics itself when the model trains")
    scale, bias, mean, var = (ctx.const(n) for n in node.input[1:5])
    if any(v is None for v in (scale, bias, mean, var)):
        raise ValueError("scale, bias, mean and variance must be initializers")
    rank = ctx.rank(node.input[0])
    if rank not in (2, 3, 4):
        raise ValueError(f"batch normalization of a rank-{rank} tensor is not supported")
    perm = L.channels_last(rank)
    x = ctx.get(node.input[0], perm)
    c = scale.size
    # ONNX's momentum weighs the running value, PyTorch's (fastcnn's) the batch's.
    momentum = 1.0 - a.get("momentum", 0.9)
    layer = (nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d)(c, eps=a.get("epsilon", 1e-5),
                                                              momentum=momentum)
    name = node.input[1]
    layer.name = ctx._unique(name[: -len(".weight")] if name.endswith(".weight") else
                             node.name or "batchnorm")
    for attr, i in (("weight", 1), ("bias", 2), ("running_mean", 3), ("running_var", 4)):
        ctx.bind(layer, attr, ctx.const(node.input[i]), node.input[i])
    ctx.put(node.output[0], layer(x), perm)


def _unary(make):
    def convert(ctx, node):
        sym, perm = ctx.tensors[node.input[0]]
        ctx.put(node.output[0], ctx.call(make(attrs(node)), sym, node.name or node.op_type.lower()),
                perm)
    return convert


converts("Relu")(_unary(lambda a: nn.ReLU()))
converts("Sigmoid")(_unary(lambda a: nn.Sigmoid()))
converts("Tanh")(_unary(lambda a: nn.Tanh()))
converts("HardSwish")(_unary(lambda a: nn.Hardswish()))
converts("LeakyRelu")(_unary(lambda a: nn.LeakyReLU(a.get("alpha", 0.01))))
converts("Gelu")(_unary(lambda a: nn.GELU(a.get("approximate", "none"))))


@converts("Identity")
def _identity(ctx, node):
    ctx.tensors[node.output[0]] = ctx.tensors[node.input[0]]


@converts("Dropout")
def _dropout(ctx, node):
    if len(node.output) > 1 and node.output[1]:
        raise ValueError("Dropout's mask output is not supported")
    a = attrs(node)
    ratio = a.get("ratio", 0.5)
    if ctx.opset >= 12 and ctx.has(node, 1):
        r = ctx.const(node.input[1])
        if r is None:
            raise ValueError("the ratio must be a constant")
        ratio = float(r)
    sym, perm = ctx.tensors[node.input[0]]
    ctx.put(node.output[0], ctx.call(nn.Dropout(ratio), sym, node.name or "dropout"), perm)


@converts("Clip")
def _clip(ctx, node):
    a = attrs(node)
    if ctx.opset < 11:
        lo, hi = a.get("min"), a.get("max")
    else:
        lo, hi = (ctx.const(node.input[i]) if ctx.has(node, i) else None for i in (1, 2))
        for i, v in ((1, lo), (2, hi)):
            if ctx.has(node, i) and v is None:
                raise ValueError("the bounds must be constants")
        for v in (lo, hi):
            if v is not None and np.size(v) != 1:
                raise ValueError(f"the bounds must be scalars, got shape {np.shape(v)}")
        # a scalar, or (as some exporters write it) a one-element vector
        lo, hi = (None if v is None else float(np.reshape(v, -1)[0]) for v in (lo, hi))
    if hi is not None and math.isinf(hi) and hi > 0:
        hi = None
    if lo is not None and math.isinf(lo) and lo < 0:
        lo = None
    layer = (nn.ReLU6() if (lo, hi) == (0.0, 6.0) else nn.ReLU() if (lo, hi) == (0.0, None)
             else nn.Clip(lo, hi))
    sym, perm = ctx.tensors[node.input[0]]
    ctx.put(node.output[0], ctx.call(layer, sym, node.name or "clip"), perm)


@converts("HardSigmoid")
def _hard_sigmoid(ctx, node):
    a = attrs(node)
    alpha, beta = a.get("alpha", 0.2), a.get("beta", 0.5)
    sym, perm = ctx.tensors[node.input[0]]
    if abs(alpha - 1 / 6) < 1e-7 and beta == 0.5:
        out = ctx.call(nn.Hardsigmoid(), sym, node.name or "hardsigmoid")
    else:   # ONNX's definition: clip(alpha * x + beta, 0, 1)
        out = ctx.constant_op("mul", sym, perm, np.float32(alpha), node)
        out = ctx.constant_op("add", out, perm, np.float32(beta), node)
        out = ctx.call(nn.Clip(0.0, 1.0), out, node.name or "hardsigmoid")
    ctx.put(node.output[0], out, perm)


@converts("PRelu")
def _prelu(ctx, node):
    slope = ctx.const(node.input[1])
    if slope is None:
        raise ValueError("the slope must be a constant")
    sym, perm = ctx.tensors[node.input[0]]
    rank = len(perm)
    channels = ctx.onnx_shape(node.input[0])[1] if rank >= 2 else None
    per_channel = (slope.size == channels and slope.size > 1 and perm[-1] == 1 and
                   slope.ndim < rank and L.store_constant(L.identity(rank), slope).shape ==
                   (1, channels) + (1,) * (rank - 2))
    if slope.size == 1 or per_channel:
        layer = nn.PReLU(slope.size)
        layer.name = ctx._unique(ctx.layer_name(node, node.input[1]))
        ctx.bind(layer, "weight", slope.reshape(-1), node.input[1] if slope.ndim == 1 else None)
        ctx.put(node.output[0], layer(sym), perm)
    else:
        ctx.put(node.output[0], ctx.constant_op("prelu", sym, perm, slope, node,
                                                source=node.input[1], frozen=False), perm)


_ARITH = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}


@converts("Add", "Sub", "Mul", "Div")
def _arithmetic(ctx, node):
    op = _ARITH[node.op_type]
    left, right = node.input[0], node.input[1]
    lc, rc = ctx.const(left), ctx.const(right)
    if lc is not None or rc is not None:
        tensor, value, source = (right, lc, left) if lc is not None else (left, rc, right)
        if value.dtype.kind not in "f":
            raise ValueError(f"{node.op_type} of a float tensor and a {value.dtype} constant")
        sym, perm = ctx.tensors[tensor]
        if value.ndim > len(perm):
            raise ValueError(f"the constant of shape {value.shape} has more axes than the "
                             f"tensor ({len(perm)})")
        out = ctx.constant_op(op, sym, perm, value, node, source=source, reverse=lc is not None)
        ctx.put(node.output[0], out, perm)
        return
    _join(ctx, node, op, [left, right])


def _common_perm(ctx, names):
    """One layout for tensors that meet: the first's when all have its rank, else the file's
    (broadcasting over different ranks aligns ONNX's trailing axes)."""
    ranks = {ctx.rank(n) for n in names}
    if len(ranks) == 1:
        perms = [ctx.perm(n) for n in names]
        return max(perms, key=lambda p: p != L.identity(len(p)))
    return None


def _join(ctx, node, op, names):
    perm = _common_perm(ctx, names)
    if perm is None:
        syms = [ctx.get(n, L.identity(ctx.rank(n))) for n in names]
        perm = L.identity(max(ctx.rank(n) for n in names))
        if any(len(s.shape) + 1 != len(perm) for s in syms):
            raise ValueError(f"{node.op_type} of tensors of ranks "
                             f"{[len(s.shape) + 1 for s in syms]}: broadcasting over different "
                             f"ranks is not supported")
    else:
        syms = [ctx.get(n, perm) for n in names]
    shapes = [s.shape for s in syms]
    base = node.name or node.op_type.lower()
    if op == "add" and all(s == shapes[0] for s in shapes):
        out = ctx.call(nn.Add(), syms, base)
    elif op == "mul" and len(syms) == 2 and len(perm) == 4 and perm[-1] == 1 and \
            shapes[0][-1] == shapes[1][-1] and (shapes[0] == shapes[1] or
                                                (1, 1) in (shapes[0][:2], shapes[1][:2])) and \
            max(shapes, key=np.prod) in shapes and _gate_shape(shapes):
        out = ctx.call(nn.Multiply(), syms, base)
    else:
        out = ctx.call(nn.Arithmetic(op), syms, base)
    ctx.put(node.output[0], out, perm)


def _gate_shape(shapes):
    a, b = shapes
    return a == b or a[:2] == (1, 1) or b[:2] == (1, 1)


@converts("Sum")
def _sum(ctx, node):
    if any(ctx.is_const(n) for n in node.input):
        raise ValueError("Sum of constants and tensors is not supported")
    if len(node.input) == 1:
        ctx.tensors[node.output[0]] = ctx.tensors[node.input[0]]
        return
    _join(ctx, node, "add", list(node.input))


@converts("Concat")
def _concat(ctx, node):
    a = attrs(node)
    names = list(node.input)
    if any(ctx.is_const(n) for n in names):
        raise ValueError("Concat of constants and computed tensors is not supported")
    rank = ctx.rank(names[0])
    axis = a["axis"] % rank
    if axis == 0:
        raise ValueError("concatenating along the batch axis is not supported")
    perm = _common_perm(ctx, names)
    if perm is None:
        raise ValueError("Concat of tensors of different ranks")
    syms = [ctx.get(n, perm) for n in names]
    if len(syms) == 1:
        ctx.put(node.output[0], syms[0], perm)
        return
    stored = L.stored_axis(perm, axis)
    layer = nn.Concatenate(axis=-1 if stored == rank - 1 else stored)
    ctx.put(node.output[0], ctx.call(layer, syms, node.name or "concat"), perm)


@converts("Softmax", "LogSoftmax")
def _softmax(ctx, node):
    a = attrs(node)
    log = node.op_type == "LogSoftmax"
    rank = ctx.rank(node.input[0])
    axis = a.get("axis", 1 if ctx.opset < 13 else -1) % rank
    if axis == 0:
        raise ValueError("softmax over the batch axis is not supported")
    base = node.name or node.op_type.lower()
    if ctx.opset < 13 and axis != rank - 1:
        # before opset 13: softmax over the axes from ``axis`` on, flattened
        x = ctx.get(node.input[0], L.identity(rank))
        flat = ctx.call(nn.Reshape(x.shape[:axis - 1] + (-1,)), x, f"{base}_flatten")
        y = ctx.call(nn.SoftmaxAxis(axis, log=log), flat, base)
        ctx.put(node.output[0], ctx.call(nn.Reshape(x.shape), y, f"{base}_unflatten"),
                L.identity(rank))
        return
    sym, perm = ctx.tensors[node.input[0]]
    stored = L.stored_axis(perm, axis)
    layer = (nn.Softmax(dim=-1) if stored == rank - 1 and not log else
             nn.SoftmaxAxis(stored, log=log))
    ctx.put(node.output[0], ctx.call(layer, sym, base), perm)


def _pool_args(ctx, node, spatial):
    a = attrs(node)
    kernel = tuple(a["kernel_shape"])
    stride = tuple(a.get("strides", [1] * spatial))
    dilation = tuple(a.get("dilations", [1] * spatial))
    return a, kernel, stride, dilation


def _onnx_pool_size(size, k, s, d, pads, ceil_mode):
    """ONNX's output length of a pooling window sliding along one axis."""
    lo, hi = pads
    span = (size + lo + hi - (k - 1) * d - 1) / s + 1
    if not ceil_mode:
        return int(math.floor(span))
    out = int(math.ceil(span))
    if (out - 1) * s >= size + lo:   # the last window would start in the padding
        out -= 1
    return out


@converts("MaxPool", "AveragePool")
def _pool(ctx, node):
    is_max = node.op_type == "MaxPool"
    if is_max and len(node.output) > 1 and node.output[1]:
        raise ValueError("MaxPool's Indices output is not supported")
    rank = ctx.rank(node.input[0])
    if rank not in (3, 4):
        raise ValueError(f"pooling a rank-{rank} tensor is not supported (1-D and 2-D are)")
    spatial = rank - 2
    a, kernel, stride, dilation = _pool_args(ctx, node, spatial)
    ceil_mode = bool(a.get("ceil_mode", 0))
    include_pad = bool(a.get("count_include_pad", 0))
    if a.get("storage_order", 0) != 0 and is_max:
        pass   # only matters for the Indices output
    perm = L.channels_last(rank)
    x = ctx.get(node.input[0], perm)
    base = node.name or node.op_type.lower()
    if spatial == 1:    # a 1-D pool is a 2-D pool of a 1-pixel-high image
        x = ctx.call(nn.Reshape((1,) + x.shape), x, f"{base}_2d")
        kernel, stride, dilation = (1,) + kernel, (1,) + stride, (1,) + dilation
    in_size = x.shape[:2]
    pads = _spatial_pads(a, ctx.onnx_shape(node.input[0])[2:], kernel[-spatial:],
                         stride[-spatial:], dilation[-spatial:], node.op_type)
    if spatial == 1:
        pads = ((0, 0),) + pads
    out = tuple(_onnx_pool_size(n, k, s, d, p, ceil_mode)
                for n, k, s, d, p in zip(in_size, kernel, stride, dilation, pads))
    if min(out) < 1:
        raise ValueError(f"the window {kernel} is larger than the padded input {in_size}")
    symmetric = all(lo == hi and lo <= k // 2 for (lo, hi), k in zip(pads, kernel))
    fast = symmetric and (is_max or dilation == (1, 1))
    if fast:
        p = tuple(lo for lo, _ in pads)
        layer = (nn.MaxPool2d(kernel, stride, p, dilation, ceil_mode=ceil_mode) if is_max else
                 nn.AvgPool2d(kernel, stride, p, ceil_mode=ceil_mode, count_include_pad=include_pad))
        if layer.output_shape(tuple(in_size) + (x.shape[-1],))[:2] != out:
            fast = False
    if fast:
        y = ctx.call(layer, x, base)
    else:
        y = _explicit_pool(ctx, x, is_max, kernel, stride, dilation, pads, out, include_pad, base)
    if spatial == 1:
        y = ctx.call(nn.Reshape(y.shape[1:]), y, f"{base}_1d")
    ctx.put(node.output[0], y, perm)


def _explicit_pool(ctx, x, is_max, kernel, stride, dilation, pads, out, include_pad, base):
    """Pooling ONNX's way where PyTorch's limits do not allow it (asymmetric padding, padding
    over half the window, ceil-mode windows): pad explicitly, pool without padding and, for
    the average, divide each window by the count ONNX takes."""
    need = [(o - 1) * s + (k - 1) * d + 1 for o, k, s, d in zip(out, kernel, stride, dilation)]
    extra = [max(0, n - (size + lo + hi)) for n, size, (lo, hi) in zip(need, x.shape[:2], pads)]
    width = tuple((lo, hi + e) for (lo, hi), e in zip(pads, extra)) + ((0, 0),)
    if is_max:
        padded = ctx.call(nn.Pad(width, value=-np.inf), x, f"{base}_pad")
        return ctx.call(nn.MaxPool2d(kernel, stride, 0, dilation), padded, base)
    if dilation != (1, 1):
        raise ValueError("dilated average pooling is not supported")
    padded = ctx.call(nn.Pad(width), x, f"{base}_pad")
    summed = ctx.call(nn.SumPool2d(kernel, stride, 0), padded, base)
    # how many values each window averages: inside the image, or inside image and padding
    mask = np.zeros([n + lo + hi for n, (lo, hi) in zip(x.shape[:2], width[:2])], np.float64)
    if include_pad:
        mask[: mask.shape[0] - extra[0], : mask.shape[1] - extra[1]] = 1
    else:
        (top, _), (left, _) = width[:2]
        mask[top: top + x.shape[0], left: left + x.shape[1]] = 1
    count = np.array([[mask[i * stride[0]: i * stride[0] + kernel[0],
                            j * stride[1]: j * stride[1] + kernel[1]].sum()
                       for j in range(out[1])] for i in range(out[0])])
    inverse = np.where(count > 0, 1 / np.maximum(count, 1), 0).astype(np.float32)
    layer = nn.ConstantArithmetic("mul", (1, out[0], out[1], 1))
    layer.name = ctx._unique(f"{base}_divide")
    ctx.bind(layer, "value", inverse.reshape(1, out[0], out[1], 1), frozen=True)
    return layer(summed)


@converts("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx, node):
    rank = ctx.rank(node.input[0])
    perm = L.channels_last(rank)
    x = ctx.get(node.input[0], perm)
    base = node.name or node.op_type.lower()
    if node.op_type == "GlobalMaxPool":
        if rank != 4:
            raise ValueError(f"global max pooling of a rank-{rank} tensor is not supported")
        y = ctx.call(nn.AdaptiveMaxPool2d(1), x, base)
    elif rank == 4:
        y = ctx.call(nn.GlobalAvgPool2d(), x, base)
        y = ctx.call(nn.Reshape((1, 1) + y.shape), y, f"{base}_keepdims")
    else:
        y = ctx.call(nn.Reduce("mean", range(1, rank - 1)), x, base)
    ctx.put(node.output[0], y, perm)


@converts("ReduceMean", "ReduceSum")
def _reduce(ctx, node):
    a = attrs(node)
    op = "mean" if node.op_type == "ReduceMean" else "sum"
    rank = ctx.rank(node.input[0])
    axes_from_input = (op == "sum" and ctx.opset >= 13) or ctx.opset >= 18
    if axes_from_input:
        axes = ctx.const(node.input[1]) if ctx.has(node, 1) else None
        if ctx.has(node, 1) and axes is None:
            raise ValueError("the axes must be a constant")
        axes = None if axes is None else axes.tolist()
    else:
        axes = a.get("axes")
    keepdims = bool(a.get("keepdims", 1))
    sym, perm = ctx.tensors[node.input[0]]
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            ctx.tensors[node.output[0]] = ctx.tensors[node.input[0]]
            return
        axes = list(range(rank))
    axes = sorted({int(v) % rank for v in axes})
    if 0 in axes:
        raise ValueError("reducing over the batch axis is not supported")
    stored = sorted(L.stored_axis(perm, v) for v in axes)
    base = node.name or node.op_type.lower()
    if op == "mean" and rank == 4 and stored == [1, 2]:
        y = ctx.call(nn.GlobalAvgPool2d(), sym, base)
        if keepdims:
            y = ctx.call(nn.Reshape((1, 1) + y.shape), y, f"{base}_keepdims")
    else:
        y = ctx.call(nn.Reduce(op, stored, keepdims), sym, base)
    if keepdims:
        new_perm = perm
    else:
        kept = [p for i, p in enumerate(perm) if i not in stored]
        new_perm = tuple(int(r) for r in np.argsort(np.argsort(kept)))
    ctx.put(node.output[0], y, new_perm)


@converts("Flatten")
def _flatten(ctx, node):
    rank = ctx.rank(node.input[0])
    axis = attrs(node).get("axis", 1)
    axis = axis + rank if axis < 0 else axis
    if axis != 1:
        raise ValueError(f"Flatten with axis={attrs(node).get('axis', 1)} of a rank-{rank} tensor "
                         f"merges the batch axis with others: not supported")
    perm = ctx.perm(node.input[0])
    base = node.name or "flatten"
    if perm == L.channels_last(rank) and rank >= 3:
        out = ctx.call(nn.Flatten(), ctx.get(node.input[0]), base)  # flattens channels first
    else:
        out = ctx.call(nn.Reshape((-1,)), ctx.get(node.input[0], L.identity(rank)), base)
    ctx.put(node.output[0], out, L.identity(2))


def _shape_text(shape):
    return "(" + ", ".join("N" if v == BATCH else str(v) for v in shape) + ")"


def _reshape_to(ctx, node, name, target, base):
    """Reshape tensor ``name`` to the ONNX shape ``target`` (its batch axis first)."""
    rank = ctx.rank(name)
    x = ctx.get(name, L.identity(rank))
    sample = tuple(int(v) for v in target[1:])
    out = ctx.call(nn.Reshape(sample), x, base)
    ctx.put(node.output[0], out, L.identity(len(sample) + 1))


@converts("Reshape")
def _reshape(ctx, node):
    a = attrs(node)
    shape = a.get("shape") if ctx.opset < 5 else ctx.const(node.input[1])
    if shape is None:
        raise ValueError("the target shape must be a constant (or computed from static shapes)")
    shape = [int(v) for v in np.asarray(shape).reshape(-1)]
    current = ctx.onnx_shape(node.input[0])
    if not shape or shape[0] not in (0, -1, BATCH) + ((ctx.file_batch,) if ctx.file_batch else ()):
        raise ValueError(f"Reshape to {shape} changes the batch axis (the first); fastcnn "
                         f"models keep it")
    if any(v == BATCH for v in shape[1:]) or any(v < -1 for v in shape[1:]):
        raise ValueError(f"Reshape to {shape}: the batch size is moved to another axis")
    allowzero = a.get("allowzero", 0)
    if -1 in shape[1:] and shape[0] == -1:
        shape[0] = 0
    sample = [current[i] if v == 0 and not allowzero else v for i, v in enumerate(shape)][1:]
    size, known = int(np.prod(current[1:])), int(np.prod([v for v in sample if v != -1]))
    if (-1 in sample and size % known) or (-1 not in sample and size != known):
        raise ValueError(f"Reshape of {_shape_text(current)} to {shape} moves values across the batch axis: "
                         f"not supported (fastcnn models keep the batch axis)")
    _reshape_to(ctx, node, node.input[0], [BATCH] + sample, node.name or "reshape")


@converts("Squeeze", "Unsqueeze")
def _squeeze(ctx, node):
    a = attrs(node)
    if ctx.opset < 13:
        axes = a.get("axes")
    else:
        axes = ctx.const(node.input[1]) if ctx.has(node, 1) else None
        if ctx.has(node, 1) and axes is None:
            raise ValueError("the axes must be a constant")
        axes = None if axes is None else [int(v) for v in np.asarray(axes).reshape(-1)]
    shape = list(ctx.onnx_shape(node.input[0]))
    if node.op_type == "Squeeze":
        if axes is None:
            axes = [i for i, n in enumerate(shape) if n == 1 and i > 0]
        axes = {v % len(shape) for v in axes}
        if 0 in axes:
            raise ValueError("squeezing the batch axis is not supported")
        if any(shape[v] != 1 for v in axes):
            raise ValueError(f"cannot squeeze axes {sorted(axes)} of shape {shape}")
        new = [n for i, n in enumerate(shape) if i not in axes]
    else:
        if axes is None:
            raise ValueError("Unsqueeze needs axes")
        rank = len(shape) + len(axes)
        axes = sorted(v % rank for v in axes)
        if 0 in axes:
            raise ValueError("unsqueezing before the batch axis is not supported")
        new = list(shape)
        for v in axes:
            new.insert(v, 1)
    _reshape_to(ctx, node, node.input[0], new, node.name or node.op_type.lower())


@converts("Transpose")
def _transpose(ctx, node):
    sym, perm = ctx.tensors[node.input[0]]
    rank = len(perm)
    p = list(attrs(node).get("perm", reversed(range(rank))))
    if p[0] != 0:
        raise ValueError(f"Transpose {p} moves the batch axis: not supported")
    inv = L.inverse(p)
    # the stored array is unchanged: only which ONNX axis each stored axis holds changes
    ctx.put(node.output[0], sym, tuple(inv[a] for a in perm))


@converts("Gemm")
def _gemm(ctx, node):
    a = attrs(node)
    if a.get("transA", 0):
        raise ValueError("Gemm with transA=1 is not supported")
    b = ctx.const(node.input[1])
    if b is None:
        raise ValueError("B must be an initializer (a constant)")
    alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
    weight = b if a.get("transB", 0) else b.T
    if ctx.rank(node.input[0]) != 2:
        raise ValueError(f"Gemm of a rank-{ctx.rank(node.input[0])} input is not supported")
    x = ctx.get(node.input[0], L.identity(2))
    c = ctx.const(node.input[2]) if ctx.has(node, 2) else None
    if ctx.has(node, 2) and c is None:
        raise ValueError("C must be an initializer (a constant)")
    out_features = weight.shape[0]
    if c is not None and c.size not in (1, out_features):
        raise ValueError(f"C of shape {c.shape} (a matrix, not a bias of {out_features} outputs) "
                         f"is not supported")
    layer = nn.Linear(weight.shape[1], out_features, bias=c is not None)
    layer.name = ctx._unique(ctx.layer_name(node, node.input[1]))
    unchanged = a.get("transB", 0) and alpha == 1.0
    ctx.bind(layer, "weight", alpha * weight, node.input[1] if unchanged else None)
    if c is not None:
        bias = np.broadcast_to(beta * c.reshape(-1), (out_features,))
        ctx.bind(layer, "bias", bias, node.input[2] if beta == 1.0 and c.size == out_features
                 else None)
    ctx.put(node.output[0], layer(x), L.identity(2))


@converts("MatMul")
def _matmul(ctx, node):
    b = ctx.const(node.input[1])
    if b is None or ctx.is_const(node.input[0]):
        raise ValueError("MatMul of two computed tensors is not supported: the second must be "
                         "a constant")
    rank = ctx.rank(node.input[0])
    x = ctx.get(node.input[0], L.identity(rank))
    base = ctx.layer_name(node, node.input[1])
    if rank == 2 and b.ndim == 2:
        layer = nn.Linear(b.shape[0], b.shape[1], bias=False)
        layer.name = ctx._unique(base)
        ctx.bind(layer, "weight", b.T)
    elif b.ndim >= 2:
        layer = nn.MatMul(b.shape)
        layer.name = ctx._unique(base)
        ctx.bind(layer, "weight", b, node.input[1])
    else:
        raise ValueError(f"MatMul by a constant of shape {b.shape} is not supported")
    out = layer(x)
    ctx.put(node.output[0], out, L.identity(len(out.shape) + 1))


@converts("Pad")
def _pad(ctx, node):
    a = attrs(node)
    mode = a.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        raise ValueError(f"Pad mode {mode!r} is not supported (constant, reflect, edge)")
    rank = ctx.rank(node.input[0])
    if ctx.opset < 11:
        pads, value, axes = a.get("pads"), a.get("value", 0.0), None
    else:
        pads = ctx.const(node.input[1])
        if pads is None:
            raise ValueError("pads must be a constant")
        value = ctx.const(node.input[2]) if ctx.has(node, 2) else 0.0
        if ctx.has(node, 2) and value is None:
            raise ValueError("the constant value must be a constant")
        axes = ctx.const(node.input[3]) if ctx.has(node, 3) else None
    pads = [int(v) for v in np.asarray(pads).reshape(-1)]
    axes = list(range(rank)) if axes is None else [int(v) % rank for v in np.asarray(axes)]
    n = len(axes)
    per_axis = [(0, 0)] * rank
    for i, ax in enumerate(axes):
        per_axis[ax] = (pads[i], pads[i + n])
    if per_axis[0] != (0, 0):
        raise ValueError(f"padding the batch axis ({per_axis[0]}) is not supported")
    if any(p < 0 for pair in per_axis for p in pair):
        raise ValueError(f"negative pads {pads} (cropping) are not supported")
    sym, perm = ctx.tensors[node.input[0]]
    stored = [per_axis[p] for p in perm][1:]
    layer = nn.Pad(stored, mode=mode, value=float(np.asarray(value).reshape(-1)[0])
                   if np.size(value) else 0.0)
    ctx.put(node.output[0], ctx.call(layer, sym, node.name or "pad"), perm)


@converts("Resize", "Upsample")
def _resize(ctx, node):
    a = attrs(node)
    mode = a.get("mode", "nearest")
    rank = ctx.rank(node.input[0])
    if rank != 4:
        raise ValueError(f"resizing a rank-{rank} tensor is not supported (2-D images are)")
    shape = ctx.onnx_shape(node.input[0])
    sizes = scales = None
    if node.op_type == "Upsample":
        scales = a.get("scales") if ctx.opset < 9 else ctx.const(node.input[1])
    elif ctx.opset < 11:
        scales = ctx.const(node.input[1])
    else:
        scales = ctx.const(node.input[2]) if ctx.has(node, 2) else None
        sizes = ctx.const(node.input[3]) if ctx.has(node, 3) else None
        if scales is not None and scales.size == 0:
            scales = None
    if scales is None and sizes is None:
        raise ValueError("the scales or sizes must be constants")
    axes = a.get("axes")
    if axes is not None:
        full = [1.0] * rank if sizes is None else list(shape)
        given = (scales if sizes is None else sizes).tolist()
        for ax, v in zip(axes, given):
            full[ax % rank] = v
        if sizes is None:
            scales = np.array(full, np.float32)
        else:
            sizes = np.array(full, np.int64)
    if sizes is not None:
        out = [int(v) for v in sizes]
        if out[:2] != list(shape[:2]) and out[:2] != [BATCH, shape[1]]:
            if out[1] != shape[1]:
                raise ValueError("resizing the batch or channel axis is not supported")
        out = out[2:]
        if a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            raise ValueError("keep_aspect_ratio_policy other than 'stretch' is not supported")
        factor = [o / i for o, i in zip(out, shape[2:])]
    else:
        scales = [float(v) for v in np.asarray(scales).reshape(-1)]
        if scales[:2] != [1.0, 1.0]:
            raise ValueError(f"resizing the batch or channel axis (scales {scales}) is not "
                             f"supported")
        factor = scales[2:]
        out = [int(math.floor(i * s)) for i, s in zip(shape[2:], factor)]
    if a.get("antialias", 0) and any(f < 1 for f in factor):
        raise ValueError("antialiased downsampling is not supported")
    coord = a.get("coordinate_transformation_mode", "half_pixel" if node.op_type == "Resize"
                  else "asymmetric")
    in_size = shape[2:]
    if mode == "nearest":
        nearest = a.get("nearest_mode", "round_prefer_floor" if node.op_type == "Resize"
                        else "floor")
        if node.op_type == "Upsample":
            nearest = "floor"
        for n, o, f in zip(in_size, out, factor):
            onnx_index = _onnx_nearest(n, o, f, coord, nearest)
            ours = np.minimum(np.floor(np.arange(o) * (n / o)).astype(np.int64), n - 1)
            if onnx_index is None or not np.array_equal(onnx_index, ours):
                raise ValueError(f"nearest resizing with coordinate_transformation_mode={coord!r}"
                                 f" and nearest_mode={nearest!r} from {n} to {o} samples "
                                 f"other pixels than PyTorch's nearest (not supported)")
        layer = nn.Upsample(size=tuple(out), mode="nearest")
    elif mode == "linear":
        if coord not in ("half_pixel", "pytorch_half_pixel", "align_corners"):
            raise ValueError(f"linear resizing with coordinate_transformation_mode={coord!r} is "
                             f"not supported (half_pixel, pytorch_half_pixel, align_corners)")
        # ONNX places the samples by the scale given; fastcnn (as PyTorch) by output / input
        if any(abs(f - o / i) > 1e-6 for f, o, i in zip(factor, out, in_size)):
            raise ValueError(f"linear resizing by {factor} to {out} samples is not "
                             f"supported: fastcnn samples where the scale is output / input")
        align = coord == "align_corners"
        if not align:
            if coord == "pytorch_half_pixel" and min(out) == 1:
                raise ValueError("pytorch_half_pixel to a size of 1 is not supported")
        if a.get("exclude_outside", 0):
            raise ValueError("exclude_outside=1 is not supported")
        layer = nn.Upsample(size=tuple(out), mode="bilinear", align_corners=align)
    else:
        raise ValueError(f"resize mode {mode!r} is not supported (nearest, linear)")
    perm = L.channels_last(4)
    x = ctx.get(node.input[0], perm)
    ctx.put(node.output[0], ctx.call(layer, x, node.name or "resize"), perm)


def _onnx_nearest(n, o, scale, coord, nearest):
    """The input index ONNX's nearest resize reads for each of ``o`` outputs (None: a mode
    this does not model)."""
    x = np.arange(o, dtype=np.float64)
    if coord == "asymmetric":
        src = x / scale
    elif coord == "half_pixel":
        src = (x + 0.5) / scale - 0.5
    elif coord == "pytorch_half_pixel":
        src = (x + 0.5) / scale - 0.5 if o > 1 else np.zeros(o)
    elif coord == "align_corners":
        src = x * (n - 1) / (o - 1) if o > 1 else np.zeros(o)
    elif coord == "tf_half_pixel_for_nn":
        src = (x + 0.5) / scale
    else:
        return None
    if nearest == "floor":
        idx = np.floor(src)
    elif nearest == "ceil":
        idx = np.ceil(src)
    elif nearest == "round_prefer_floor":
        idx = np.where(src - np.floor(src) == 0.5, np.floor(src), np.round(src))
    elif nearest == "round_prefer_ceil":
        idx = np.where(src - np.floor(src) == 0.5, np.ceil(src), np.round(src))
    else:
        return None
    return np.clip(idx, 0, n - 1).astype(np.int64)


def load_proto(onnx, source):
    """A ModelProto from a path, bytes or a ModelProto; a clear error for anything else."""
    if isinstance(source, onnx.ModelProto):
        return source
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            proto = onnx.load_model_from_string(bytes(source))
        else:
            proto = onnx.load(source)
    except FileNotFoundError:
        raise
    except Exception as exc:  # protobuf's DecodeError, a truncated file...
        raise ValueError(f"onnx.load: {source if isinstance(source, str) else 'the data'} is not "
                         f"a readable ONNX model ({type(exc).__name__}: {exc})") from None
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ValueError(f"onnx.load: the model is not valid ONNX: {exc}") from None
    return proto


def build(onnx, source, layout="nchw", input_shape=None):
    if layout not in ("nchw", "nhwc"):
        raise ValueError(f"onnx.load: layout must be 'nchw' (the file's) or 'nhwc', got {layout!r}")
    proto = load_proto(onnx, source)
    return _Importer(onnx, proto, layout, input_shape).run()
