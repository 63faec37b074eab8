"""Layers by family. Each is a small class over the compiled ops of ``cconv``: ``forward``,
``backward`` (adds its parameters' gradients into ``.grad``, returns the input gradient),
PyTorch's constructor arguments, defaults, initialisation and state-dict keys. Images are
(N, H, W, C), sequences (N, L, C), vectors (N, features)."""
from .base import IncompatibleKeys, Layer, Parameter, inference_mode, manual_seed
from .symbolic import Input, SymbolicTensor
from .registry import LAYERS, layer_from_config, layer_to_config, register
from .activation import (GELU, Hardsigmoid, Hardswish, Identity, LeakyReLU, ReLU, ReLU6, Sigmoid,
                         SiLU, Softmax, Tanh)
from .conv import Conv1d, Conv2d, ConvTranspose2d
from .dropout import Dropout, Dropout2d, DropPath
from .linear import Linear
from .merge import Add, Concatenate, Multiply
from .norm import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm, SyncBatchNorm
from .pool import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool1d, AvgPool2d,
                   GlobalAvgPool2d, MaxPool1d, MaxPool2d, SumPool2d)
from .residual import Residual
from .shape import Flatten, Rescaling, Upsample, ZeroPad2d
from .tensor import (Arithmetic, Clip, ConstantArithmetic, MatMul, Pad, Permute, PReLU, Reduce,
                     Reshape, SoftmaxAxis)

LAYER_CLASSES = (
    Conv2d, ConvTranspose2d, Conv1d, Linear,
    MaxPool2d, AvgPool2d, SumPool2d, GlobalAvgPool2d, AdaptiveAvgPool2d, AdaptiveMaxPool2d,
    MaxPool1d, AvgPool1d, AdaptiveAvgPool1d,
    BatchNorm2d, BatchNorm1d, SyncBatchNorm, GroupNorm, LayerNorm, Dropout, Dropout2d, DropPath,
    ReLU, LeakyReLU, ReLU6, Sigmoid, Tanh, Softmax, Hardsigmoid, Hardswish, SiLU, GELU, Identity,
    Add, Multiply, Concatenate, Flatten, ZeroPad2d, Upsample, Rescaling, Residual,
    Permute, Reshape, Arithmetic, ConstantArithmetic, PReLU, Clip, SoftmaxAxis, Reduce, Pad, MatMul,
)
for _cls in LAYER_CLASSES:
    register(_cls)
del _cls

__all__ = [cls.__name__ for cls in LAYER_CLASSES] + [
    "IncompatibleKeys", "Layer", "Parameter", "Input", "SymbolicTensor", "inference_mode",
    "manual_seed", "LAYERS", "layer_from_config", "layer_to_config", "register"]
