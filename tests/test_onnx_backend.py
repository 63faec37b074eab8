"""ONNX's own node tests (onnx.backend.test) run against fastcnn.onnx.backend, for every
operator fastcnn reads. A node test fastcnn refuses on purpose (an attribute value it does not
support, a tensor without a batch axis) is skipped with the refusal's message as the reason; a
wrong result or any other error fails. ``pytest -rs`` lists the reasons; the summary at the end
of the run counts passed / failed / skipped per operator."""
import re
import unittest

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx.backend.test")

import onnx.backend.test  # noqa: E402

from fastcnn.onnx import backend as fastcnn_backend  # noqa: E402

# ONNX node-test names of the operators fastcnn reads (test_<name>_...).
OPERATOR_TESTS = {
    "Add": "add", "AveragePool": "averagepool", "BatchNormalization": "batchnorm",
    "Clip": "clip", "Concat": "concat", "Constant": "constant", "Conv": "conv",
    "ConvTranspose": "convtranspose", "Div": "div", "Dropout": "dropout", "Flatten": "flatten",
    "Gelu": "gelu", "Gemm": "gemm", "GlobalAveragePool": "globalaveragepool",
    "GlobalMaxPool": "globalmaxpool", "HardSigmoid": "hardsigmoid", "HardSwish": "hardswish",
    "Identity": "identity", "LeakyRelu": "leakyrelu", "LogSoftmax": "logsoftmax",
    "MatMul": "matmul", "MaxPool": "maxpool", "Mul": "mul", "Pad": "(?:constant|edge|reflect)_pad",
    "PRelu": "prelu", "ReduceMean": "reduce_mean", "ReduceSum": "reduce_sum", "Relu": "relu",
    "Reshape": "reshape", "Resize": "resize", "Sigmoid": "sigmoid", "Softmax": "softmax",
    "Squeeze": "squeeze", "Sub": "sub", "Sum": "sum", "Tanh": "tanh", "Transpose": "transpose",
    "Unsqueeze": "unsqueeze", "Upsample": "upsample",
}
# Variants of these operators' tests that are not about the operator's own semantics: other
# element types, the test-data "expanded" function bodies (they use other operators), training
# mode of Dropout/BatchNorm outputs fastcnn does not produce.
EXCLUDED = r"(_expanded(_ver\d+)?|_int\d*|_uint\d*|_bool|_double|_float16|_bfloat16|_string)(_cpu)?$"

pattern = r"^test_(?:%s)(?:_.*)?_cpu$" % "|".join(OPERATOR_TESTS.values())


def operator_of(test_name):
    """The operator a node test belongs to (the longest matching prefix)."""
    best = None
    for op, prefix in OPERATOR_TESTS.items():
        m = re.match(r"test_(?:%s)(?:_|$)" % prefix, test_name)
        if m and (best is None or len(m.group(0)) > best[1]):
            best = (op, len(m.group(0)))
    return best[0] if best else None


class _Refusals:
    """The backend, with its deliberate refusals ('... is not supported') as skips."""

    class Rep:
        def __init__(self, rep):
            self.rep = rep

        def run(self, inputs, **kwargs):
            try:
                return self.rep.run(inputs, **kwargs)
            except ValueError as exc:
                if "not supported" in str(exc) or "without a batch" in str(exc) or \
                        "batch axis" in str(exc):
                    raise unittest.SkipTest(str(exc)) from None
                raise

    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        return cls.Rep(fastcnn_backend.prepare(model, device, **kwargs))

    @classmethod
    def supports_device(cls, device):
        return fastcnn_backend.supports_device(device)

    run_model = classmethod(lambda cls, model, inputs, device="CPU", **kw:
                            cls.prepare(model, device, **kw).run(inputs))


backend_test = onnx.backend.test.BackendTest(_Refusals, __name__)
backend_test.include(pattern)
backend_test.exclude(EXCLUDED)
# Not node tests of these operators, though their names start like them.
backend_test.exclude(r"^test_(constantofshape|constant_pad_axes_.*_int|reshape_.*_int|"
                     r"maxpool_with_argmax|sum_example_int|dropout_random_old|reduce_sum_square)")
_included = re.compile(pattern)
_excluded = re.compile(EXCLUDED)
_cases = backend_test.test_cases   # (a property: new classes each time it is read)
for _case in _cases.values():       # only the operators' own tests are collected
    for _name in [n for n in dir(_case) if n.startswith("test_")]:
        if not _included.search(_name) or _excluded.search(_name):
            delattr(_case, _name)
globals().update(_cases)
