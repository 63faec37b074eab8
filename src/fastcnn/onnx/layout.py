"""Axis permutations between an ONNX tensor and the array fastcnn stores for it.

fastcnn keeps images channels-last, ONNX channels-first. Every tensor of an imported (or
exported) graph carries ``perm``: the stored array is ``onnx_tensor.transpose(perm)``, so NCHW
stored as NHWC has ``perm = (0, 2, 3, 1)``. Layers that do not care about axes (ReLU, adding
tensors of one layout) keep their input's perm, and a transpose is only made where a layer
needs another one: at most once per tensor and layout.
"""
import numpy as np


def identity(rank):
    return tuple(range(rank))


def channels_last(rank):
    """The perm that stores an (N, C, *spatial) tensor as (N, *spatial, C)."""
    return (0,) + tuple(range(2, rank)) + (1,) if rank >= 3 else identity(rank)


def inverse(perm):
    return tuple(int(i) for i in np.argsort(perm))


def between(src, dst):
    """The transpose that turns an array stored with ``src`` into one stored with ``dst``."""
    inv = inverse(src)
    return tuple(inv[a] for a in dst)


def stored_axis(perm, onnx_axis):
    """Where ONNX axis ``onnx_axis`` (>= 0) of a tensor lies in its stored array."""
    return inverse(perm)[onnx_axis]


def onnx_shape(perm, stored_shape):
    """The ONNX shape of an array stored with ``perm``."""
    return tuple(stored_shape[i] for i in inverse(perm))


def store_constant(perm, value):
    """A constant that broadcasts against an ONNX tensor, laid out to broadcast against the
    array stored with ``perm`` (its missing leading axes added as 1s first, as NumPy does)."""
    value = np.asarray(value)
    rank = len(perm)
    if value.ndim > rank:
        raise ValueError(f"a constant of shape {value.shape} has more axes than the tensor "
                         f"({rank})")
    value = value.reshape((1,) * (rank - value.ndim) + value.shape)
    return np.ascontiguousarray(value.transpose(perm))
