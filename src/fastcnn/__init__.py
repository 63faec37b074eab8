"""fastcnn: train and run convolutional neural networks fast on the CPU.

    import fastcnn as fc
    model = fc.models.lenet5()
    model.compile(optimizer=fc.Adam(lr=2e-3), loss=fc.CrossEntropyLoss())
    (x, y), (x_test, y_test) = fc.datasets.load_mnist()
    model.fit(x, y, epochs=5, batch_size=64)
    model.evaluate(x_test, y_test)

Activations are NHWC float32; parameters are in PyTorch order, so PyTorch state dicts load as
they are. ``fc.manual_seed(n)`` seeds weight initialisation and dropout.
"""
from cconv import (get_isa, get_memory_limit, get_num_threads, set_isa, set_memory_limit,
                   set_num_threads)

from . import reference
from . import callbacks, data, datasets, losses, models, optim
from .callbacks import Callback, EarlyStopping, History, ModelCheckpoint
from .data import DataLoader
from .io import load, save
from .layers import (AvgPool2d, BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, Flatten,
                     GlobalAvgPool2d, Layer, LeakyReLU, Linear, MaxPool2d, Parameter, ReLU,
                     Residual, Sigmoid, Softmax, SumPool2d, Tanh, inference_mode, manual_seed)
from .losses import CrossEntropyLoss, MSELoss
from .optim import SGD, Adam, AdamW, CosineAnnealingLR, StepLR
from .sequential import Sequential

__version__ = "0.1.0"

__all__ = [
    # layers and models
    "Layer", "Parameter", "Sequential", "Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d",
    "SumPool2d", "GlobalAvgPool2d", "Linear", "BatchNorm2d", "Dropout", "ReLU", "LeakyReLU",
    "Sigmoid", "Tanh", "Softmax", "Flatten", "Residual", "models", "manual_seed", "inference_mode",
    # training
    "CrossEntropyLoss", "MSELoss", "SGD", "Adam", "AdamW", "StepLR", "CosineAnnealingLR",
    "Callback", "History", "EarlyStopping", "ModelCheckpoint", "losses", "optim", "callbacks",
    # data and files
    "DataLoader", "data", "datasets", "save", "load",
    # runtime
    "get_isa", "set_isa", "get_num_threads", "set_num_threads", "get_memory_limit",
    "set_memory_limit", "info", "reference",
]


def info(measure_peak=False):
    """Version, ISA chosen and available, OpenMP runtime, threads, caches (and measured peak)."""
    from cconv import info as _info
    return _info(measure_peak)
