"""Losses: ``forward(output, target) -> float`` and ``backward() -> d_output``."""
import numpy as np

import cconv
from cconv._validation import labels_int64


class Loss:
    def __call__(self, output, target):
        return self.forward(output, target)

    def get_config(self):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy of logits (N, classes) against integer labels (N,), mean over the
    batch, with optional label smoothing (PyTorch's definition). Fused and numerically stable."""

    def __init__(self, label_smoothing=0.0):
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self._probs = self._labels = None

    def forward(self, output, target):
        output = np.ascontiguousarray(output, dtype=np.float32)
        if output.ndim != 2:
            raise ValueError(f"CrossEntropyLoss: expected logits of shape (N, classes), got {output.shape}")
        labels = labels_int64("CrossEntropyLoss", target, output.shape[0])
        if labels.size and (labels.min() < 0 or labels.max() >= output.shape[1]):
            raise ValueError(f"CrossEntropyLoss: labels must be in [0, {output.shape[1]}), "
                             f"got values in [{labels.min()}, {labels.max()}]")
        loss, self._probs = cconv.softmax_cross_entropy(output, labels, self.label_smoothing)
        self._labels = labels
        return float(loss)

    def backward(self):
        return cconv.softmax_cross_entropy_backward(self._probs, self._labels, self.label_smoothing)

    def get_config(self):
        return dict(label_smoothing=self.label_smoothing)


class MSELoss(Loss):
    """Mean squared error over every element: mean((output - target)^2)."""

    def __init__(self):
        self._diff = None

    def forward(self, output, target):
        output = np.asarray(output, dtype=np.float32)
        target = np.asarray(target, dtype=np.float32)
        if output.shape != target.shape:
            raise ValueError(f"MSELoss: output shape {output.shape} and target shape "
                             f"{target.shape} differ")
        self._diff = output - target
        return float(np.mean(np.square(self._diff, dtype=np.float64)))

    def backward(self):
        return (self._diff * np.float32(2.0 / self._diff.size)).astype(np.float32)


LOSSES = {"CrossEntropyLoss": CrossEntropyLoss, "MSELoss": MSELoss}
_ALIASES = {"cross_entropy": CrossEntropyLoss, "crossentropy": CrossEntropyLoss,
            "categorical_crossentropy": CrossEntropyLoss,
            "sparse_categorical_crossentropy": CrossEntropyLoss, "mse": MSELoss}


def get(loss):
    """A loss instance from an instance or a name ('cross_entropy', 'mse')."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss.lower() in _ALIASES:
        return _ALIASES[loss.lower()]()
    raise ValueError(f"unknown loss {loss!r}: use fastcnn.CrossEntropyLoss(), fastcnn.MSELoss(), "
                     f"'cross_entropy' or 'mse'")
