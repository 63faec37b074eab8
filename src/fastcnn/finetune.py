"""Fine-tuning a trained classifier on new classes: find its head, replace it, train.

A classifier ends in a Linear layer (ONNX's Gemm), perhaps followed by layers that do not
change what it decides (Softmax, Dropout, Identity), perhaps inside a trailing Sequential (the
``classifier`` block of torchvision's and fastcnn's MobileNet and EfficientNet).
:func:`replace_classifier` puts a new Linear with the new number of classes in its place.
:func:`fine_tune` trains it: by default on a frozen backbone the fast way (the backbone runs
once over the images, in inference mode, so its batch norms keep their statistics as Keras does
for a frozen model, and the head trains on the features it gave); with ``unfreeze`` the whole
network trains on the images.
"""
import time

import numpy as np

from .graph import Model, Sequential
from .losses import CrossEntropyLoss
from .nn import Dropout, Identity, Linear, Softmax, inference_mode
from .optim import Adam

_AFTER_HEAD = (Softmax, Dropout, Identity)


def _path_in(seq):
    """Indices leading to the head Linear of Sequential ``seq`` through trailing nested
    Sequentials, or None when ``seq`` does not end in one."""
    for i in range(len(seq.layers) - 1, -1, -1):
        layer = seq.layers[i]
        if isinstance(layer, Linear):
            return [i]
        if isinstance(layer, Sequential):
            inner = _path_in(layer)
            return None if inner is None else [i] + inner
        if not isinstance(layer, _AFTER_HEAD):
            return None
    return None


class _HeadSite:
    """Where a classifier's head sits: the Sequentials that hold it (outermost first) and its
    index in each, and, in a graph model, the node whose layer holds it and its input."""

    def __init__(self, model):
        self.model = model
        if isinstance(model, Sequential):
            self.node, self.containers = None, [model]
        else:
            if not isinstance(model, Model) or len(model.outputs) != 1:
                raise ValueError("fine-tune: the model must be a classifier with one output")
            node = model.outputs[0].node
            while node.layer is not None and isinstance(node.layer, _AFTER_HEAD):
                node = node.inputs[0].node
            self.node = node
            self.containers = [node.layer] if isinstance(node.layer, Sequential) else []
            if not self.containers and not isinstance(node.layer, Linear):
                raise ValueError(
                    f"fine-tune: the model's output does not come from a Linear classifier (it "
                    f"comes from {type(node.layer).__name__}); a head can be replaced after a "
                    f"Linear (ONNX Gemm), optionally followed by Softmax or Dropout")
        self.path = _path_in(self.containers[0]) if self.containers else []
        if self.path is None:
            raise ValueError("fine-tune: the model does not end in a Linear classifier "
                             "(optionally followed by Softmax or Dropout)")
        for i in self.path[:-1]:
            self.containers.append(self.containers[-1].layers[i])

    @property
    def head(self):
        return self.containers[-1].layers[self.path[-1]] if self.path else self.node.layer

    def layers_before(self):
        """The layers inside the containers that run before the head, in order."""
        return [layer for seq, i in zip(self.containers, self.path) for layer in seq.layers[:i]]

    def up_to(self, with_head):
        """A model sharing this one's layers, from its input to the head's input (``with_head``
        False: the features) or output (True: the logits, even when a Softmax follows)."""
        layers = self.layers_before() + ([self.head] if with_head else [])
        if self.node is None:
            return Sequential(*layers, input_shape=self.model.input_shape)
        inputs = self.model.inputs[0] if len(self.model.inputs) == 1 else self.model.inputs
        x = self.node.inputs[0]
        return Model(inputs, Sequential(*layers)(x) if layers else x)

    def replace(self, new_head):
        if not self.path:
            self.model.replace_layer(self.node.layer.name, new_head)
            return
        self.containers[-1][self.path[-1]] = new_head
        if self.node is not None:
            # the nested Sequential's output changed: the graph checks its shapes again
            self.model.replace_layer(self.node.layer.name, self.node.layer)


def find_classifier(model):
    """The model's head: the last Linear before its output."""
    return _HeadSite(model).head


def replace_classifier(model, num_classes):
    """Put a new Linear with ``num_classes`` outputs in place of the model's head (it keeps the
    old one's name, so state-dict keys stay); returns the new head."""
    site = _HeadSite(model)
    head = Linear(site.head.in_features, int(num_classes), bias=True)
    head.name = site.head.name
    site.replace(head)
    return head


def backbone_and_head(model):
    """(backbone, head): a model from the input to the head's features, and the head; both
    share the model's layers, so training them trains the model."""
    site = _HeadSite(model)
    return site.up_to(with_head=False), site.head


def features(backbone, batches):
    """The backbone's outputs over ``batches`` of (x, y), in inference mode: (features, labels)."""
    feats, labels = [], []
    with inference_mode():
        for xb, yb in batches:
            feats.append(np.asarray(backbone.forward(xb)))
            labels.append(np.asarray(yb))
    return np.concatenate(feats), np.concatenate(labels)


def accuracy(model, batches):
    """The share of samples whose largest output is their label (inference mode)."""
    right = total = 0
    with inference_mode():
        for xb, yb in batches:
            right += int(np.sum(np.argmax(model.forward(xb), axis=-1) == np.asarray(yb)))
            total += len(yb)
    return right / max(total, 1)


def fine_tune(model, train, validation=None, epochs=5, unfreeze=False, lr=None, batch_size=32,
              seed=0, verbose=1):
    """Train ``model`` (whose head :func:`replace_classifier` has replaced) on ``train`` (a
    :class:`fastcnn.data.Dataset` such as an ImageFolder, or a DataLoader); returns the
    held-out accuracy on ``validation`` (None without it) and the History.

    Frozen (the default): the backbone's features are computed once and the head trains on
    them with Adam (lr 1e-3); nothing else changes, batch-norm statistics included.
    ``unfreeze``: every layer trains on the images (Adam, lr 1e-4).
    """
    site = _HeadSite(model)
    if unfreeze:
        model.requires_grad_(True)
        trainable = site.up_to(with_head=True)
        trainable.compile(optimizer=Adam(lr=lr or 1e-4), loss=CrossEntropyLoss())
        history = trainable.fit(train, epochs=epochs, batch_size=batch_size, seed=seed,
                                verbose=verbose)
    else:
        model.requires_grad_(False)
        site.head.requires_grad_(True)
        start = time.perf_counter()
        feats, labels = features(site.up_to(with_head=False), _eval_batches(train, batch_size))
        if verbose:
            seconds = time.perf_counter() - start
            print(f"backbone features of {len(labels)} images in {seconds:.1f} s "
                  f"({len(labels) / max(seconds, 1e-9):.0f} images/s)")
        classifier = Sequential(site.head)
        classifier.compile(optimizer=Adam(lr=lr or 1e-3), loss=CrossEntropyLoss())
        history = classifier.fit(feats, labels, epochs=epochs, batch_size=batch_size, seed=seed,
                                 verbose=verbose)
    result = None if validation is None else accuracy(model, _eval_batches(validation, batch_size))
    return result, history


def _eval_batches(data, batch_size):
    """(x, y) batches of a Dataset or DataLoader in order, without augmentation."""
    loader = data.loader(batch_size=batch_size) if hasattr(data, "loader") else data
    return loader.eval_batches()
