"""MobileNetV2 (Sandler et al. 2018) as a graph model with torchvision's structure and
state-dict keys (``features.0.0.weight``, ``features.2.conv.1.0.weight``,
``classifier.1.bias``...), so torchvision's weights load with ``load_state_dict`` unchanged,
and torchvision's initialisation."""
from .. import nn as L
from ..graph import Model, Sequential
from .resnet import conv_norm_act, image_input, init_torchvision, make_divisible, named

# t (expansion), c (channels), n (blocks), s (stride of the first)
_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
            (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _inverted_residual(shape, out_channels, stride, expand_ratio, name):
    """torchvision's InvertedResidual: ``conv`` = [1x1 expansion ConvBNReLU6 (if t != 1),
    3x3 depthwise ConvBNReLU6, 1x1 projection Conv2d, BatchNorm2d], plus the input when the
    shape is kept."""
    inp = L.Input(shape)
    in_channels = shape[2]
    hidden = int(round(in_channels * expand_ratio))
    layers = []
    if expand_ratio != 1:
        layers.append(conv_norm_act(in_channels, hidden, 1, activation=L.ReLU6))
    layers += [conv_norm_act(hidden, hidden, 3, stride=stride, groups=hidden, activation=L.ReLU6),
               L.Conv2d(hidden, out_channels, 1, bias=False), L.BatchNorm2d(out_channels)]
    out = Sequential(*layers, name="conv")(inp)
    if stride == 1 and in_channels == out_channels:
        out = named(L.Add(), "add")([inp, out])
    return Model(inp, out, name=name)


def mobilenet_v2(num_classes=1000, width_mult=1.0, dropout=0.2, input_shape=(224, 224, 3)):
    """MobileNetV2: 3.5 M parameters for 1000 classes at width 1.0. ``width_mult`` scales
    every layer's channels (rounded to multiples of 8, torchvision's rule); ``dropout`` is
    before the classifier. Any input of at least 32x32 (NHWC): the features are pooled
    globally."""
    inp = image_input(input_shape, "mobilenet_v2")
    input_channel = make_divisible(32 * width_mult, 8)
    last_channel = make_divisible(1280 * max(1.0, width_mult), 8)
    features = [conv_norm_act(inp.shape[2], input_channel, 3, stride=2, activation=L.ReLU6)]
    shape = features[0].output_shape(inp.shape)
    for t, c, n, s in _SETTING:
        output_channel = make_divisible(c * width_mult, 8)
        for i in range(n):
            block = _inverted_residual(shape, output_channel, s if i == 0 else 1, t,
                                       name=str(len(features)))
            features.append(block)
            shape = block.outputs[0].shape
    features.append(conv_norm_act(shape[2], last_channel, 1, activation=L.ReLU6))
    x = Sequential(*features, name="features")(inp)
    x = L.Flatten(name="flatten")(L.AdaptiveAvgPool2d(1, name="avgpool")(x))
    out = Sequential(L.Dropout(dropout), L.Linear(last_channel, num_classes),
                     name="classifier")(x)
    return init_torchvision(Model(inp, out), linear="normal")
