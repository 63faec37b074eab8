"""ResNet-18, -34 and -50 (He et al. 2016) as graph models with torchvision's structure and
state-dict keys (``conv1.weight``, ``layer1.0.bn1.running_mean``, ``layer2.0.downsample.0.weight``,
``fc.bias``...), so torchvision's weights load with ``load_state_dict`` unchanged.

ResNet-50 is torchvision's "V1.5": the stride of a bottleneck is on its 3x3 convolution.
The weights are initialised as torchvision does (Kaiming-normal, fan-out, for convolutions;
batch norm to 1 and 0; PyTorch's default for the classifier), from the generator that
:func:`fastcnn.manual_seed` seeds.

This module also holds what the other torchvision architectures share (the input check, the
initialisers, torchvision's ``_make_divisible`` and ``Conv2dNormActivation``).
"""
import math

import numpy as np

from .. import nn as L
from ..graph import Model, Sequential
from ..nn.base import rng


# --- shared with the other architectures ---------------------------------------------------------
def image_input(input_shape, where, channels=3):
    """fc.Input of one sample's (H, W, C), checked; (H, W) gets ``channels`` channels."""
    shape = tuple(int(v) for v in input_shape)
    if len(shape) == 2:
        shape = shape + (channels,)
    if len(shape) != 3:
        raise ValueError(f"{where}: input_shape must be (H, W, C), got {input_shape!r}")
    return L.Input(shape)


def named(layer, name):
    """``layer`` with its ``name`` set (for the layers whose constructor takes no ``name=``)."""
    layer.name = name
    return layer


def make_divisible(v, divisor, min_value=None):
    """torchvision's ``_make_divisible``: ``v`` rounded to a multiple of ``divisor``, not
    below ``min_value`` (default ``divisor``) nor below 90% of ``v``."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_norm_act(in_channels, out_channels, kernel_size=3, stride=1, groups=1,
                  activation=L.ReLU, name=None):
    """torchvision's ``Conv2dNormActivation``: a Sequential of Conv2d (no bias, "same"
    padding), BatchNorm2d and the activation (None: none), keys ``0.weight``, ``1.weight``..."""
    layers = [L.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                       padding=(kernel_size - 1) // 2, groups=groups, bias=False),
              L.BatchNorm2d(out_channels)]
    if activation is not None:
        layers.append(activation())
    return Sequential(*layers, name=name)


def all_layers(layer):
    """The layer and every layer inside it (depth first)."""
    yield layer
    for _, child in layer.named_children():
        yield from all_layers(child)


def init_torchvision(model, linear="default"):
    """torchvision's initialisation: every Conv2d Kaiming-normal with fan-out and gain sqrt(2),
    bias 0; every BatchNorm2d weight 1, bias 0; Linear layers ``"default"`` (PyTorch's,
    as made), ``"normal"`` (N(0, 0.01), bias 0) or ``"uniform"`` (U(+-1/sqrt(out)), bias 0)."""
    gen = rng()
    for layer in all_layers(model):
        if type(layer) is L.Conv2d:
            w = layer.weight.data
            fan_out = w.shape[0] * int(np.prod(w.shape[2:]))
            std = math.sqrt(2.0) / math.sqrt(fan_out)
            layer.weight.data = gen.standard_normal(w.shape, dtype=np.float32) * np.float32(std)
            if layer.bias is not None:
                layer.bias.data = np.zeros_like(layer.bias.data)
        elif type(layer) is L.BatchNorm2d and layer.affine:
            layer.weight.data = np.ones_like(layer.weight.data)
            layer.bias.data = np.zeros_like(layer.bias.data)
        elif type(layer) is L.Linear and linear != "default":
            w = layer.weight.data
            if linear == "normal":
                layer.weight.data = gen.standard_normal(w.shape, dtype=np.float32) * np.float32(0.01)
            else:
                bound = 1.0 / math.sqrt(w.shape[0])
                layer.weight.data = gen.uniform(-bound, bound, w.shape).astype(np.float32)
            if layer.bias is not None:
                layer.bias.data = np.zeros_like(layer.bias.data)
    return model


# --- ResNet ----------------------------------------------------------------------------------
def _downsample(in_channels, out_channels, stride):
    if stride == 1 and in_channels == out_channels:
        return None
    return Sequential(L.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                      L.BatchNorm2d(out_channels), name="downsample")


def _basic_block(shape, planes, stride, name):
    """torchvision's BasicBlock: conv1 bn1 relu conv2 bn2 (+ downsample(x)) relu."""
    inp = L.Input(shape)
    in_channels = shape[2]
    x = L.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False, name="conv1")(inp)
    x = L.ReLU(name="relu")(L.BatchNorm2d(planes, name="bn1")(x))
    x = L.Conv2d(planes, planes, 3, padding=1, bias=False, name="conv2")(x)
    x = L.BatchNorm2d(planes, name="bn2")(x)
    down = _downsample(in_channels, planes, stride)
    identity = inp if down is None else down(inp)
    out = L.ReLU(name="relu_2")(named(L.Add(), "add")([x, identity]))
    return Model(inp, out, name=name)


def _bottleneck(shape, planes, stride, name):
    """torchvision's Bottleneck (V1.5): conv1 1x1, conv2 3x3 (stride), conv3 1x1 to 4 * planes."""
    inp = L.Input(shape)
    in_channels, out_channels = shape[2], planes * 4
    x = L.Conv2d(in_channels, planes, 1, bias=False, name="conv1")(inp)
    x = L.ReLU(name="relu")(L.BatchNorm2d(planes, name="bn1")(x))
    x = L.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False, name="conv2")(x)
    x = L.ReLU(name="relu_2")(L.BatchNorm2d(planes, name="bn2")(x))
    x = L.Conv2d(planes, out_channels, 1, bias=False, name="conv3")(x)
    x = L.BatchNorm2d(out_channels, name="bn3")(x)
    down = _downsample(in_channels, out_channels, stride)
    identity = inp if down is None else down(inp)
    out = L.ReLU(name="relu_3")(named(L.Add(), "add")([x, identity]))
    return Model(inp, out, name=name)


def _resnet(block, expansion, layers, num_classes, input_shape, where):
    inp = image_input(input_shape, where)
    x = L.Conv2d(inp.shape[2], 64, 7, stride=2, padding=3, bias=False, name="conv1")(inp)
    x = L.ReLU(name="relu")(L.BatchNorm2d(64, name="bn1")(x))
    x = L.MaxPool2d(3, stride=2, padding=1, name="maxpool")(x)
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
        items = []
        for i in range(blocks):
            shape = x.shape if not items else items[-1].outputs[0].shape
            stride = 2 if stage > 0 and i == 0 else 1
            items.append(block(shape, planes, stride, name=str(i)))
        x = Sequential(*items, name=f"layer{stage + 1}")(x)
    x = L.Flatten(name="flatten")(L.AdaptiveAvgPool2d(1, name="avgpool")(x))
    out = L.Linear(512 * expansion, num_classes, name="fc")(x)
    return init_torchvision(Model(inp, out))


def resnet18(num_classes=1000, input_shape=(224, 224, 3)):
    """ResNet-18: basic blocks [2, 2, 2, 2]; 11.7 M parameters for 1000 classes. Any input of
    at least 32x32 (NHWC); the classifier pools globally (AdaptiveAvgPool2d(1))."""
    return _resnet(_basic_block, 1, (2, 2, 2, 2), num_classes, input_shape, "resnet18")


def resnet34(num_classes=1000, input_shape=(224, 224, 3)):
    """ResNet-34: basic blocks [3, 4, 6, 3]; 21.8 M parameters for 1000 classes."""
    return _resnet(_basic_block, 1, (3, 4, 6, 3), num_classes, input_shape, "resnet34")


def resnet50(num_classes=1000, input_shape=(224, 224, 3)):
    """ResNet-50 (V1.5): bottleneck blocks [3, 4, 6, 3]; 25.6 M parameters for 1000 classes."""
    return _resnet(_bottleneck, 4, (3, 4, 6, 3), num_classes, input_shape, "resnet50")
