"""EfficientNet-B0 (Tan and Le 2019) as a graph model with torchvision's structure and
state-dict keys (``features.0.0.weight``, ``features.2.1.block.2.fc1.weight``,
``classifier.1.bias``...), so torchvision's weights load with ``load_state_dict`` unchanged,
and torchvision's initialisation.

Each MBConv block is ``block`` = [1x1 expansion ConvBNSiLU (when the expansion is not 1),
kxk depthwise ConvBNSiLU, squeeze-excitation (``avgpool``, ``fc1``, SiLU, ``fc2``, Sigmoid,
times its input), 1x1 projection ConvBN], then, where the shape is kept, stochastic depth
(DropPath, its probability growing linearly with the block's index up to
``stochastic_depth_prob``) and the sum with the block's input.
"""
import math

from .. import nn as L
from ..graph import Model, Sequential
from .resnet import conv_norm_act, image_input, init_torchvision, make_divisible, named

# expand_ratio, kernel, stride, input_channels, out_channels, num_layers (B0: width and depth 1)
_B0 = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
       (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))


def _squeeze_excitation(shape, squeeze_channels, name):
    """torchvision's SqueezeExcitation with SiLU: x * sigmoid(fc2(silu(fc1(avgpool(x)))))."""
    inp = L.Input(shape)
    channels = shape[2]
    s = L.AdaptiveAvgPool2d(1, name="avgpool")(inp)
    s = L.SiLU(name="activation")(L.Conv2d(channels, squeeze_channels, 1, name="fc1")(s))
    s = L.Conv2d(squeeze_channels, channels, 1, name="fc2")(s)
    s = named(L.Sigmoid(), "scale_activation")(s)
    return Model(inp, named(L.Multiply(), "multiply")([inp, s]), name=name)


def _mbconv(shape, expand_ratio, kernel, stride, out_channels, sd_prob, name):
    inp = L.Input(shape)
    in_channels = shape[2]
    expanded = make_divisible(in_channels * expand_ratio, 8)
    body = L.Input(shape)
    x, layers = body, []
    if expanded != in_channels:
        layers.append(conv_norm_act(in_channels, expanded, 1, activation=L.SiLU))
    layers.append(conv_norm_act(expanded, expanded, kernel, stride=stride, groups=expanded,
                                activation=L.SiLU))
    for layer in layers:
        x = layer(x)
    layers.append(_squeeze_excitation(x.shape, max(1, in_channels // 4), name=str(len(layers))))
    x = layers[-1](x)
    layers.append(conv_norm_act(expanded, out_channels, 1, activation=None))
    x = layers[-1](x)
    for i, layer in enumerate(layers):
        layer.name = str(i)
    out = Model(body, x, name="block")(inp)
    if stride == 1 and in_channels == out_channels:
        out = L.DropPath(sd_prob, name="stochastic_depth")(out)
        out = named(L.Add(), "add")([out, inp])
    return Model(inp, out, name=name)


def efficientnet_b0(num_classes=1000, dropout=0.2, stochastic_depth_prob=0.2,
                    input_shape=(224, 224, 3)):
    """EfficientNet-B0: 5.3 M parameters for 1000 classes (torchvision's ``efficientnet_b0``;
    batch norm eps 1e-5, momentum 0.1). ``dropout`` is before the classifier;
    ``stochastic_depth_prob`` is the last block's drop-path probability. Any input of at least
    32x32 (NHWC): the features are pooled globally."""
    inp = image_input(input_shape, "efficientnet_b0")
    features = [conv_norm_act(inp.shape[2], _B0[0][3], 3, stride=2, activation=L.SiLU,
                              name="0")]
    shape = features[0].output_shape(inp.shape)
    total_blocks = sum(cfg[5] for cfg in _B0)
    block_id = 0
    for expand_ratio, kernel, stride, in_channels, out_channels, num_layers in _B0:
        stage = []
        for i in range(int(math.ceil(num_layers))):
            sd_prob = stochastic_depth_prob * float(block_id) / total_blocks
            block = _mbconv(shape, expand_ratio, kernel, stride if i == 0 else 1,
                            make_divisible(out_channels, 8), sd_prob, name=str(i))
            stage.append(block)
            shape = block.outputs[0].shape
            block_id += 1
        features.append(Sequential(*stage, name=str(len(features))))
    last_in = shape[2]
    features.append(conv_norm_act(last_in, 4 * last_in, 1, activation=L.SiLU,
                                  name=str(len(features))))
    x = Sequential(*features, name="features")(inp)
    x = L.Flatten(name="flatten")(L.AdaptiveAvgPool2d(1, name="avgpool")(x))
    out = Sequential(L.Dropout(dropout), L.Linear(4 * last_in, num_classes),
                     name="classifier")(x)
    return init_torchvision(Model(inp, out), linear="uniform")
