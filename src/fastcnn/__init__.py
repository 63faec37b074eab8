"""fastcnn: train and run convolutional neural networks fast on the CPU.

    import fastcnn as fc
    model = fc.models.lenet5()
    model.compile(optimizer=fc.Adam(lr=2e-3), loss=fc.CrossEntropyLoss())
    (x, y), (x_test, y_test) = fc.datasets.load_mnist()
    model.fit(x, y, epochs=5, batch_size=64)
    model.evaluate(x_test, y_test)

Activations are NHWC float32; parameters are in PyTorch order, so PyTorch state dicts load as
they are. ``fc.manual_seed(n)`` seeds weight initialisation and dropout.

The package's layers, from the bottom: ``cconv`` (the compiled ops) <- ``nn`` (layers) <-
``training`` (the fit loop every model has) <- ``graph`` (Model, Sequential) <- ``models``;
above the models: ``backprop`` (input and layer gradients) <- ``explain``, ``attacks``, and
``plot`` (pictures, with matplotlib).
"""
import importlib

from cconv import (get_isa, get_memory_limit, get_num_threads, set_isa, set_memory_limit,
                   set_num_threads)

from . import data, losses, nn, optim, training
from .training import callbacks
from .data import DataLoader
from .graph import Model, Sequential
from .losses import CrossEntropyLoss, MSELoss
from .nn import *  # noqa: F401,F403  (every layer class, Input, Parameter...)
from .nn import __all__ as _layer_names
from .optim import SGD, Adam, AdamW
from .training import (Callback, CosineAnnealingLR, CSVLogger, EarlyStopping, History,
                       LinearWarmup, ModelCheckpoint, NonFiniteError, ReduceLROnPlateau, StepLR,
                       TerminateOnNaN)

# Loaded on first use (PEP 562), so that `import fastcnn` costs only what building and training
# a model needs: `fc.onnx`, `fc.datasets`, `fc.save` ... import their module when first touched.
_LAZY_MODULES = ("attacks", "backprop", "datasets", "distributed", "explain", "finetune",
                 "images", "io", "models", "onnx", "plot", "reference")
_LAZY_NAMES = {"load": "io", "save": "io", "load_state_dict_file": "io"}


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_MODULES) | set(_LAZY_NAMES))


__version__ = "0.1.0"

__all__ = _layer_names + [
    "Model", "Sequential", "models", "nn",
    # training
    "CrossEntropyLoss", "MSELoss", "SGD", "Adam", "AdamW", "StepLR", "CosineAnnealingLR",
    "ReduceLROnPlateau", "LinearWarmup", "Callback", "History", "EarlyStopping",
    "ModelCheckpoint", "CSVLogger", "TerminateOnNaN", "NonFiniteError", "losses", "optim",
    "callbacks", "training",
    # data and files
    "DataLoader", "data", "datasets", "io", "save", "load", "load_state_dict_file", "onnx",
    # runtime
    "get_isa", "set_isa", "get_num_threads", "set_num_threads", "get_memory_limit",
    "set_memory_limit", "info", "reference",
    # understanding a model
    "explain", "attacks", "plot",
]


def info(measure_peak=False):
    """Version, ISA chosen and available, OpenMP runtime, threads, caches (and measured peak)."""
    from cconv import info as _info
    return _info(measure_peak)
