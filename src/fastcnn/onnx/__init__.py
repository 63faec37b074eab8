"""ONNX in and out: :func:`load` reads a file into a trainable model, :func:`export` writes one,
and :mod:`fastcnn.onnx.backend` runs ONNX's own backend tests against fastcnn.

Needs the ``onnx`` package (``pip install fastcnn[onnx]``); ``import fastcnn`` does not.
"""
from .model import OnnxModel
# The module export.py, imported now under another name: the package's ``export`` is the
# function below (a first import of the submodule later would rebind the name to the module).
from . import export as _exporter


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("fastcnn.onnx needs the onnx package: pip install fastcnn[onnx] "
                          "(or pip install onnx)") from None
    return onnx


def load(source, layout="nchw", input_shape=None):
    """A trainable :class:`OnnxModel` from an ONNX file (a path, its bytes or a ModelProto).

    ``layout='nchw'`` (the default) takes and returns arrays in the file's layout, as ONNX
    Runtime does (images NCHW); the conversion to fastcnn's channels-last happens once inside
    the model, for ``forward``, ``fit``, ``evaluate`` and ``predict`` alike. ``layout='nhwc'``
    takes and returns fastcnn's own layout, with no conversion. ``input_shape`` (one sample's
    shape, without the batch axis, in the file's layout; a list for several inputs) is needed
    only where the file leaves sizes other than the batch dynamic.

    Parameters are named after the file's initializers. An operator fastcnn does not have is a
    ``ValueError`` naming it, its node and the opset, with the list of those it has.
    """
    from .importer import build
    return build(_onnx(), source, layout=layout, input_shape=input_shape)


def export(model, path=None, input_shape=None, opset=17, layout=None):
    """Write ``model`` as an ONNX file; returns the ``onnx.ModelProto`` (also written to
    ``path``, a file name or a binary file object, when given).

    Any fastcnn model (Sequential, Model, nested models, Residual blocks, an
    :class:`OnnxModel` from :func:`load`) is exported with its eval-mode semantics: batch norm
    as BatchNormalization with the running statistics, dropout as nothing.

    ``layout='nchw'`` (the default) gives a channels-first file, as PyTorch's exporter does
    and ONNX Runtime expects: an image input the model takes as (N, H, W, C) becomes
    (N, C, H, W), (N, L, C) becomes (N, C, L), (N, F) stays, and the outputs alike (a U-Net's
    segmentation map is NCHW). ``layout='nhwc'`` keeps the model's own layout: the file takes
    and returns exactly the arrays ``model.forward`` does. An OnnxModel is exported in the
    layout it was loaded with, so its file takes what the model takes.

    The batch axis is dynamic; the other sizes come from the model. ``input_shape`` (one
    sample's shape in the model's layout, without the batch axis) is needed only for a
    Sequential whose input shape is unknown. Initializers are named by the state-dict keys
    (an imported model keeps its file's names), nodes by the layers. ``opset`` from 11 on;
    GELU is one node from opset 20, LayerNorm from 17, decompositions before. The result
    passes ``onnx.checker.check_model(full_check=True)``. A layer without an export rule is a
    ``ValueError`` naming it, with the list of those that export.
    """
    return _exporter.export(model, path=path, input_shape=input_shape, opset=opset, layout=layout)


def supported_operators():
    """The ONNX operators :func:`load` reads."""
    from .importer import supported_operators as ops
    return ops()


__all__ = ["load", "export", "supported_operators", "OnnxModel"]
