"""VGG-11 with batch norm and VGG-16 (Simonyan and Zisserman 2015) as graph models with
torchvision's structure and state-dict keys (``features.0.weight``, ``classifier.6.bias``...),
so torchvision's weights load with ``load_state_dict`` unchanged, and torchvision's
initialisation (convolutions Kaiming-normal fan-out, Linear N(0, 0.01), biases 0).

The features are pooled to 7x7 (AdaptiveAvgPool2d((7, 7)), as torchvision: smaller inputs are
spread over the 7x7 grid) before the 25088-4096-4096 classifier, so any input of at least
32x32 works; the classifier alone has 119.5 M parameters (about 480 MB as float32).
"""
from .. import nn as L
from ..graph import Model, Sequential
from .resnet import image_input, init_torchvision

_CFGS = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


def _features(cfg, batch_norm, in_channels):
    layers = []
    for v in cfg:
        if v == "M":
            layers.append(L.MaxPool2d(2, stride=2))
        else:
            layers.append(L.Conv2d(in_channels, v, 3, padding=1))
            if batch_norm:
                layers.append(L.BatchNorm2d(v))
            layers.append(L.ReLU())
            in_channels = v
    return Sequential(*layers, name="features")


def _vgg(cfg, batch_norm, num_classes, dropout, input_shape, where):
    inp = image_input(input_shape, where)
    x = _features(_CFGS[cfg], batch_norm, inp.shape[2])(inp)
    x = L.Flatten(name="flatten")(L.AdaptiveAvgPool2d((7, 7), name="avgpool")(x))
    out = Sequential(L.Linear(512 * 7 * 7, 4096), L.ReLU(), L.Dropout(dropout),
                     L.Linear(4096, 4096), L.ReLU(), L.Dropout(dropout),
                     L.Linear(4096, num_classes), name="classifier")(x)
    return init_torchvision(Model(inp, out), linear="normal")


def vgg11_bn(num_classes=1000, dropout=0.5, input_shape=(224, 224, 3)):
    """VGG-11 (configuration "A") with batch norm after every convolution: 132.9 M parameters
    for 1000 classes."""
    return _vgg("A", True, num_classes, dropout, input_shape, "vgg11_bn")


def vgg16(num_classes=1000, dropout=0.5, input_shape=(224, 224, 3)):
    """VGG-16 (configuration "D"), no batch norm: 138.4 M parameters for 1000 classes."""
    return _vgg("D", False, num_classes, dropout, input_shape, "vgg16")
