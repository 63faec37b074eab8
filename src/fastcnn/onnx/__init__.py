"""ONNX in and out: :func:`load` reads a file into a trainable model, :func:`export` writes one,
and :mod:`fastcnn.onnx.backend` runs ONNX's own backend tests against fastcnn.

Needs the ``onnx`` package (``pip install fastcnn[onnx]``); ``import fastcnn`` does not.
"""
from .model import OnnxModel


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


def supported_operators():
    """The ONNX operators :func:`load` reads."""
    from .importer import supported_operators as ops
    return ops()


__all__ = ["load", "supported_operators", "OnnxModel"]
