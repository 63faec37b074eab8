"""fastcnn as an ONNX backend (``onnx.backend.base.Backend``), so that the ``onnx`` package's
own node tests (``onnx.backend.test.BackendTest``) run against it::

    import fastcnn.onnx.backend as backend
    outputs = backend.run_model(model_proto, [x])

A fastcnn model computes on a batch; the graph inputs that fastcnn needs as constants (a
convolution's weight, a Reshape's shape, a tensor without a batch axis) are bound to the values
given at run time, so the model is built on the first run and again when those values change.
Convolutions run the direct algorithm here: the node tests compare exact zeros with an absolute
tolerance of 1e-7, below what Winograd's transforms round to (about 1e-6 of the output's
magnitude); a model from :func:`fastcnn.onnx.load` picks the fastest algorithm as usual.
"""
import numpy as np
from onnx.backend.base import Backend, BackendRep

from . import load

# The inputs of an operator that fastcnn takes as constants (by position).
_CONSTANT_INPUTS = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "BatchNormalization": (1, 2, 3, 4), "PRelu": (1,),
    "Gemm": (1, 2), "MatMul": (1,), "Pad": (1, 2, 3), "Clip": (1, 2), "Reshape": (1,),
    "Squeeze": (1,), "Unsqueeze": (1,), "Resize": (1, 2, 3), "Upsample": (1,), "Dropout": (1, 2),
    "ReduceMean": (1,), "ReduceSum": (1,),
}


class FastcnnRep(BackendRep):
    """A prepared model: imported on its first run, with its constant inputs bound."""

    def __init__(self, model_proto):
        self.proto = model_proto
        self._bound, self._model = None, None
        graph = model_proto.graph
        initializers = {t.name for t in graph.initializer}
        self.input_names = [vi.name for vi in graph.input if vi.name not in initializers]
        constant = set()
        for node in graph.node:
            for i in _CONSTANT_INPUTS.get(node.op_type, ()):
                if i < len(node.input) and node.input[i]:
                    constant.add(node.input[i])
        self._constant_inputs = constant

    def _split(self, inputs):
        """(bound constants, batched inputs): a tensor is batched when it has a batch axis
        like the first input's."""
        arrays = [np.asarray(v) for v in inputs]
        if len(arrays) != len(self.input_names):
            raise ValueError(f"the model takes {len(self.input_names)} inputs, got {len(arrays)}")
        batch = next((a.shape[0] for n, a in zip(self.input_names, arrays)
                      if n not in self._constant_inputs and a.ndim >= 2), None)
        bound, batched = {}, []
        for name, a in zip(self.input_names, arrays):
            if name in self._constant_inputs or a.ndim < 2 or a.shape[0] != batch or \
                    a.dtype.kind != "f":
                bound[name] = a
            else:
                batched.append((name, a))
        return bound, batched

    def _build(self, bound, batched):
        import onnx
        from onnx import numpy_helper
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        graph = proto.graph
        keep = [vi for vi in graph.input if vi.name not in bound]
        del graph.input[:]
        graph.input.extend(keep)
        for name, value in bound.items():
            graph.initializer.append(numpy_helper.from_array(value, name))
        shapes = [a.shape[1:] for _, a in batched]
        model = load(proto, input_shape=shapes)
        for layer in model.layers:
            if hasattr(layer, "algo"):
                layer.algo = "direct"
        return model

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            inputs = [inputs[n] for n in self.input_names]
        elif not isinstance(inputs, (list, tuple)):
            inputs = [inputs]
        bound, batched = self._split(inputs)
        if not batched:
            raise ValueError("the model has no input with a batch axis")
        key = ({n: (a.dtype.str, a.shape, a.tobytes()) for n, a in bound.items()},
               [a.shape[1:] for _, a in batched])
        if self._model is None or self._bound != key:
            self._model, self._bound = self._build(bound, batched), key
            self._model.eval()
        xs = [a.astype(np.float32) for _, a in batched]
        out = self._model.forward(xs[0] if len(xs) == 1 else xs)
        return tuple(out) if isinstance(out, list) else (out,)


class FastcnnBackend(Backend):
    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        super().prepare(model, device, **kwargs)
        return FastcnnRep(model)

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device):
        return device.upper() == "CPU"


prepare = FastcnnBackend.prepare
run_model = FastcnnBackend.run_model
run_node = FastcnnBackend.run_node
supports_device = FastcnnBackend.supports_device
