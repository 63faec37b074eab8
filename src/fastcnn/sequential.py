"""Sequential: a stack of layers that is itself a layer, with a Keras-style training loop."""
import copy
import operator
import os
import signal
import threading

import numpy as np

import cconv

from . import callbacks as _callbacks
from . import layers as _layers
from . import losses as _losses
from . import optim as _optim
from .data import DataLoader
from .layers import (BatchNorm2d, Conv2d, Layer, Linear, ReLU, Residual, Sigmoid, Softmax,
                     _check_nhwc, inference_mode)

# Layers whose forward takes activation='relu': a ReLU right after them is fused into them.
_FUSES_RELU = (Conv2d, Linear, Residual, BatchNorm2d)
# Layers whose backward also covers a ReLU fused into their forward: that ReLU's own backward
# is skipped (the others keep the ReLU's output for its backward).
_FUSES_RELU_BACKWARD = (BatchNorm2d,)
# A ReLU followed by max pooling: its gradient mask (output > 0) is applied to the pooled
# gradient instead, a quarter of the elements for 2x2 windows. The same gradient: the pooling's
# backward routes each element to the window's maximum, which is the pooled value, and elsewhere
# writes zeros, which the mask would keep.
_RELU_MASK_AFTER = (_layers.MaxPool2d,)
from .progress import ProgressBar


class _DeferredInterrupt:
    """While fit runs in the main thread, the first Ctrl-C (SIGINT) only sets ``requested``:
    fit finishes the optimisation step under way and stops between two steps, so the model
    never holds half-updated parameters. A second Ctrl-C interrupts at once. A SIGINT handler of
    the application's own (anything but Python's default) is left alone."""

    def __init__(self):
        self.requested = False
        self._installed = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        return False


# --- eval-mode steps ---------------------------------------------------------------------------
class _LayerStep:
    """One layer run as it is."""
    size = 1

    def __init__(self, index, layer):
        self.index, self.layer = index, layer

    def __call__(self, x):
        return self.layer.forward(x)


class _Prepared(_LayerStep):
    """A step that prepares something from parameter arrays (``_sources``) and keeps it until
    one of them is replaced or the parameters are updated in place."""

    def __init__(self, index, layer, relu):
        super().__init__(index, layer)
        self.relu = relu
        self.size = 1 + (relu is not None)
        self._cached = None    # (updates, sources, prepared), replaced as a whole (threads)

    def _sources(self):
        raise NotImplementedError

    def _make(self, sources):
        raise NotImplementedError

    def prepared(self):
        sources, updates = self._sources(), _layers._updates
        cached = self._cached
        if cached is None or cached[0] != updates or not all(map(operator.is_, sources,
                                                                     cached[1])):
            cached = self._cached = (updates, sources, self._make(sources))
        return cached[2]


class _ConvStep(_Prepared):
    """Conv2d (with the eval-mode BatchNorm2d after it folded into its weights) (with the ReLU
    after it fused) as one cconv.Conv2dPlan."""

    def __init__(self, index, conv, bn, relu):
        super().__init__(index, conv, relu)
        self.bn = bn
        self.size += bn is not None
        self._shape = None

    def _sources(self):
        conv, bn = self.layer, self.bn
        sources = (conv.weight.data, None if conv.bias is None else conv.bias.data)
        if bn is not None:
            sources += bn._affine() + (bn.running_mean, bn.running_var)
        return sources

    def _make(self, sources):
        conv, bn = self.layer, self.bn
        w, b = sources[:2]
        if bn is not None:
            gamma, beta, mean, var = sources[2:]
            scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + bn.eps)
            bias = np.zeros(conv.out_channels) if b is None else b.astype(np.float64)
            w = (w * scale[:, None, None, None]).astype(np.float32)
            b = ((bias - mean) * scale + beta).astype(np.float32)
        return cconv.Conv2dPlan(w, b, activation="relu" if self.relu else None, algo=conv.algo,
                                **conv._args())

    def __call__(self, x):
        conv = self.layer
        if x.shape != self._shape:   # a new shape: the layer's own checks and messages
            x = _check_nhwc(conv, x, conv.in_channels)
            self._shape = x.shape
        y = self.prepared()(x)
        if self.bn is None:          # what backward needs, as in training mode
            conv._x = x
        if self.relu is not None:
            self.relu._y = y
        return y


class _LinearStep(_Prepared):
    """Linear (with the ReLU after it fused) as a cconv.Conv2dPlan of a 1x1 image."""

    def _sources(self):
        lin = self.layer
        return (lin.weight.data, None if lin.bias is None else lin.bias.data)

    def _make(self, sources):
        w, b = sources
        return cconv.Conv2dPlan(w.reshape(w.shape + (1, 1)), b,
                                activation="relu" if self.relu else None)

    def __call__(self, x):
        lin = self.layer
        if type(x) is not np.ndarray or x.ndim != 2 or x.shape[1] != lin.in_features \
                or x.shape[0] == 0:
            return lin.forward(x, activation="relu" if self.relu else None)  # its errors
        n = x.shape[0]
        lin._x = x
        y = self.prepared()(x.reshape(n, 1, 1, lin.in_features)).reshape(n, lin.out_features)
        if self.relu is not None:
            self.relu._y = y
        return y


class _ResidualStep(_LayerStep):
    """Residual whose Sequential body and shortcut run their own eval steps (with the ReLU
    after it fused into the add)."""

    def __init__(self, index, residual, relu):
        super().__init__(index, residual)
        self.relu = relu
        self.size = 1 + (relu is not None)

    def __call__(self, x):
        res = self.layer
        x = np.ascontiguousarray(x, dtype=np.float32)
        a = _eval_forward(res.body, x)
        s = x if res.shortcut is None else _eval_forward(res.shortcut, x)
        y = res.join(x, a, s, activation="relu" if self.relu else None)
        if self.relu is not None:
            self.relu._y = y
        return y


def _eval_forward(layer, x):
    if type(layer) is Sequential and not layer.training:
        if layer.input_shape is None and x.ndim >= 2:
            layer.input_shape = tuple(x.shape[1:])
        return layer._forward_eval(x)
    return layer.forward(x)


class Sequential(Layer):
    """Layers applied in order: ``Sequential(fc.Conv2d(1, 6, 5), fc.ReLU(), ...)``.

    State-dict keys are PyTorch ``nn.Sequential``'s: ``"0.weight"``, ``"3.running_mean"``,
    ``"5.body.0.weight"``. ``input_shape`` (H, W, C) is optional; it is recorded on the first
    forward pass and used by :meth:`summary` and by ``fastcnn predict``.
    """

    def __init__(self, *layers, input_shape=None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is not a layer: {layer!r}")
        self.layers = list(layers)
        self.input_shape = None if input_shape is None else tuple(int(v) for v in input_shape)
        self.optimizer = None
        self.loss = None
        self.history = None
        self.stop_training = False
        self._program = None       # eval mode: (the layers, their steps); see _eval_steps
        self._last_forward_folded = False
        self._relu_backward_fused = set()  # ReLUs whose backward the layer before runs
        self._pooled_relu = {}

    # --- container -----------------------------------------------------------------------------
    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(*self.layers[i])
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    def append(self, layer):
        """Add a layer at the end (``add`` is the Keras spelling)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential: not a layer: {layer!r}")
        self.layers.append(layer)
        return self

    add = append

    def named_children(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    # --- forward / backward --------------------------------------------------------------------
    def _first_channels(self):
        first = self.layers[0] if self.layers else None
        return getattr(first, "in_channels", getattr(first, "num_features", None))

    def _prepare(self, x):
        """Convert the input once at the model boundary: float32, contiguous, NHWC."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim == 3 and (self._first_channels() == 1 or
                            (self.input_shape is not None and self.input_shape[-1:] == (1,)
                             and len(self.input_shape) == 3)):
            x = x[..., None]
        return x

    def forward(self, x, residual=None, activation=None):
        """Run the layers. A ReLU after a Conv2d, a Linear, a Residual or a BatchNorm2d is fused
        into it (after a BatchNorm2d, its backward too: one pass less either way). In
        eval mode the model runs prepared steps (see :meth:`_eval_steps`): a Conv2d followed by
        BatchNorm2d runs as one convolution with the batch norm folded into its weights, and the
        convolutions keep their packed weights between calls: the same outputs (within float32
        rounding), one pass over memory.

        ``residual`` and ``activation`` (a Residual's join, for a model whose last layer is a
        BatchNorm2d): the output is activation(layers(x) + residual), the sum and the
        activation in the last layer's store in training mode."""
        x = self._prepare(x)
        if self.input_shape is None and x.ndim >= 2:
            self.input_shape = tuple(x.shape[1:])
        if not self.training:
            if residual is None:
                return self._forward_eval(x)
            return cconv.add(self._forward_eval(x), residual, activation=activation)
        layers = self.layers
        if residual is not None and not (layers and type(layers[-1]) is BatchNorm2d):
            return cconv.add(self.forward(x), residual, activation=activation)
        self._last_forward_folded = False
        self._relu_backward_fused = fused = set()
        self._pooled_relu = pooled = {}   # pooling index -> its output, the ReLU's mask
        i = 0
        try:
            while i < len(layers):
                layer = layers[i]
                if residual is not None and i == len(layers) - 1:
                    x = layer.forward(x, activation=activation, residual=residual)
                    break
                nxt = layers[i + 1] if i + 1 < len(layers) else None
                if type(nxt) is ReLU and type(layer) in _FUSES_RELU:
                    # The ReLU keeps the output its backward needs.
                    x = nxt._y = layer.forward(x, activation="relu")
                    if type(layer) in _FUSES_RELU_BACKWARD:
                        fused.add(i + 1)
                    elif i + 2 < len(layers) and type(layers[i + 2]) in _RELU_MASK_AFTER:
                        fused.add(i + 1)
                        pooled[i + 2] = None
                    i += 2
                    continue
                x = layer.forward(x)
                if i in pooled:
                    pooled[i] = x
                i += 1
        except ValueError as exc:  # say where in the model the bad shape arrived
            raise ValueError(f"Sequential layer {i} ({type(layers[i]).__name__}): {exc}") from None
        return x

    def _eval_steps(self):
        """The eval-mode program (the layers, their steps, whether a batch norm is folded):
        one step per layer, or per Conv2d with the BatchNorm2d and
        the ReLU after it, Linear with its ReLU, Residual with its ReLU. A step keeps what it
        prepared (folded weights, a cconv.Conv2dPlan) until an array it was made from is
        replaced (load_state_dict, a training step) or an optimizer updates the parameters in
        place; the program is made again when the layers change, and by train() and eval().
        Edit parameters in place in eval mode? Call eval() again."""
        program = self._program
        if program is not None and program[0] == self.layers:
            return program
        layers, steps, i = list(self.layers), [], 0
        while i < len(layers):
            layer = layers[i]
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            step = None
            if type(layer) is Conv2d:
                bn = nxt if type(nxt) is BatchNorm2d and nxt.track_running_stats else None
                after = layers[i + 2] if bn is not None and i + 2 < len(layers) else nxt
                step = _ConvStep(i, layer, bn, after if type(after) is ReLU else None)
            elif type(layer) is Linear:
                step = _LinearStep(i, layer, nxt if type(nxt) is ReLU else None)
            elif type(layer) is Residual:
                step = _ResidualStep(i, layer, nxt if type(nxt) is ReLU else None)
            steps.append(step or _LayerStep(i, layer))
            i += steps[-1].size
        folded = any(type(step) is _ConvStep and step.bn is not None for step in steps)
        self._program = program = (layers, steps, folded)
        return program

    def _forward_eval(self, x):
        self._relu_backward_fused, self._pooled_relu = set(), {}
        _, steps, self._last_forward_folded = self._eval_steps()
        step = None
        try:
            for step in steps:
                x = step(x)
        except ValueError as exc:  # say where in the model the bad shape arrived
            raise ValueError(f"Sequential layer {step.index} ({type(step.layer).__name__}): "
                             f"{exc}") from None
        return x

    def train(self, mode=True):
        self._program = None
        return super().train(mode)

    def backward(self, dy, input_grad=True):
        """Backpropagate ``dy``; returns the input gradient, or None with ``input_grad=False``
        (training a model: then its first layer computes its parameter gradients only)."""
        if self._last_forward_folded:
            raise RuntimeError("Sequential.backward: the last forward ran in eval mode with batch "
                               "norm folded into the convolutions; call model.train() before "
                               "the forward pass to backpropagate")
        fused, pooled = self._relu_backward_fused, self._pooled_relu
        layers, skip = self.layers, -1
        for i in range(len(layers) - 1, -1, -1):
            layer = layers[i]
            if i in fused or i == skip:
                continue  # this ReLU's backward runs inside the layer before it, or after it
            if i in pooled:
                dy = cconv.relu_backward(dy, pooled[i])
            if i == 0 and not input_grad:
                if hasattr(layer, "backward_params"):
                    layer.backward_params(dy)
                    return None
            if type(layer) is Residual and i > 0 and type(layers[i - 1]) is ReLU and \
                    i - 1 not in fused:
                # The ReLU before a residual block: its mask goes into the block's final sum.
                dy, skip = layer.backward(dy, input_relu=layers[i - 1]._y), i - 1
                continue
            dy = layer.backward(dy)
        return dy

    # --- description ---------------------------------------------------------------------------
    def get_config(self):
        from .io import layer_to_config
        cfg = {"layers": [layer_to_config(layer) for layer in self.layers]}
        if self.input_shape is not None:
            cfg["input_shape"] = list(self.input_shape)
        return cfg

    def output_shape(self, shape):
        for layer in self.layers:
            shape = tuple(layer.output_shape(tuple(shape)))
        return shape

    def flops(self, shape):
        total = 0
        for layer in self.layers:
            total += layer.flops(tuple(shape))
            shape = layer.output_shape(tuple(shape))
        return total

    def summary(self, input_shape=None, print_fn=print):
        """Print each layer with its output shape, parameter count, forward FLOPs per image and,
        for convolutions, the algorithm their forward pass runs (direct, depthwise, winograd-f4
        or winograd-f2; see ``cconv.conv2d_algorithm``).

        ``input_shape`` is one sample's (H, W, C); by default the model's ``input_shape``.
        """
        shape = tuple(input_shape) if input_shape is not None else self.input_shape
        rows = [("#", "Layer (type)", "Output shape", "Params", "FLOPs", "Algorithm")]
        total_flops = 0
        for i, layer in enumerate(self.layers):
            algorithm = ""
            if shape is not None:
                if type(layer) is Conv2d:
                    algorithm = cconv.conv2d_algorithm((1,) + tuple(shape), layer.weight.shape,
                                                       algo=layer.algo, **layer._args())
                flops = layer.flops(shape)
                shape = tuple(layer.output_shape(shape))
                total_flops += flops
                shape_text, flops_text = str(shape), f"{flops:,}"
            else:
                shape_text = flops_text = "?"
            rows.append((str(i), type(layer).__name__, shape_text, f"{layer.num_parameters():,}",
                         flops_text, algorithm))
        widths = [max(len(r[c]) for r in rows) for c in range(6)]
        line = "-" * (sum(widths) + 10)

        def fmt(r):
            return (f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  "
                    f"{r[3]:>{widths[3]}}  {r[4]:>{widths[4]}}  {r[5]:<{widths[5]}}").rstrip()

        out = [fmt(rows[0]), line] + [fmt(r) for r in rows[1:]] + [line]
        total = self.num_parameters()
        first = self.input_shape if input_shape is None else tuple(input_shape)
        out.append(f"Input shape: {first if first is not None else 'unknown (pass input_shape)'}")
        out.append(f"Total params: {total:,} ({total * 4 / 1024:.1f} KiB as float32)")
        if first is not None:
            out.append(f"Forward FLOPs per image: {total_flops:,} ({total_flops / 1e6:.2f} MFLOP)")
        print_fn("\n".join(out))

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"

    # --- training ------------------------------------------------------------------------------
    def compile(self, optimizer="adam", loss="cross_entropy"):
        """Choose the optimizer (an instance, or 'sgd' / 'adam' / 'adamw') and the loss (an
        instance, or 'cross_entropy' / 'mse'). Accuracy is reported with CrossEntropyLoss."""
        self.optimizer = _optim.get(optimizer)
        self.optimizer.bind(self.parameters())
        self.loss = _losses.get(loss)
        return self

    def _classification(self):
        return isinstance(self.loss, _losses.CrossEntropyLoss)

    def train_step(self, x, y):
        """One optimisation step on a batch; returns (loss, number of correct predictions)."""
        out = self.forward(x)
        loss = self.loss.forward(out, y)
        self.zero_grad()
        self.backward(self.loss.backward(), input_grad=False)
        self.optimizer.step()
        correct = int(np.count_nonzero(out.argmax(axis=1) == y)) if self._classification() else 0
        return loss, correct

    def fit(self, x, y=None, epochs=1, batch_size=32, shuffle=True, seed=0, validation_split=0.0,
            validation_data=None, callbacks=(), verbose=1, augment=None, drop_last=False,
            checkpoint=None, resume=False):
        """Train for ``epochs`` passes over (x, y); returns a :class:`~fastcnn.callbacks.History`.

        ``x`` may also be a :class:`~fastcnn.data.DataLoader` (then ``y``, ``batch_size``,
        ``shuffle``, ``seed`` and ``augment`` are the loader's). ``shuffle`` draws a new
        permutation each epoch from a generator seeded with ``seed``; ``shuffle=False`` takes
        the batches in order. ``validation_split`` holds out the last fraction of (x, y)
        (before shuffling, as Keras); ``validation_data=(x_val, y_val)`` gives them explicitly.
        ``augment`` is a batch transform (see :mod:`fastcnn.data`). ``verbose``: 0 silent,
        1 a progress bar (plain lines when the output is not a terminal), 2 one line per epoch.

        ``checkpoint``: a file (or a :class:`fastcnn.io.Checkpoint`, to record metadata of
        your own with it) that, after every epoch, receives atomically what it takes to
        continue: weights and buffers, the optimizer's state, the epochs done, the history, the
        callbacks' state (learning-rate schedules...) and the random generators' states
        (shuffling, augmentation, dropout). With ``resume=True`` an existing checkpoint is
        loaded first and training goes on from the epoch after it: a run killed at any point
        and resumed ends with the weights, bit for bit, of a run that was never interrupted
        (same data, arguments and seed). Without the file, training starts from scratch.

        Ctrl-C: the step under way is finished, then fit stops and raises KeyboardInterrupt;
        the model holds the weights after the last full step, ``model.history`` the epochs
        completed (the partial epoch is neither recorded nor checkpointed).
        """
        if self.optimizer is None or self.loss is None:
            raise RuntimeError("Sequential.fit: call model.compile(optimizer=..., loss=...) first")
        if isinstance(x, DataLoader):
            if validation_split:
                raise ValueError("fit: validation_split needs arrays; with a DataLoader pass "
                                 "validation_data=(x_val, y_val)")
            loader = x
        else:
            x = self._prepare(x)
            y = np.asarray(y)
            if len(x) != len(y):
                raise ValueError(f"fit: x has {len(x)} samples but y has {len(y)}")
            if validation_data is None and validation_split:
                if not 0.0 < validation_split < 1.0:
                    raise ValueError(f"fit: validation_split must be in (0, 1), got {validation_split}")
                n_val = int(round(len(x) * validation_split))
                if n_val == 0 or n_val == len(x):
                    raise ValueError(f"fit: validation_split={validation_split} leaves no "
                                     f"training or no validation samples out of {len(x)}")
                validation_data = (x[-n_val:], y[-n_val:])
                x, y = x[:-n_val], y[:-n_val]
            loader = DataLoader(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed,
                                drop_last=drop_last, transform=augment)
        if self.input_shape is None:
            self.input_shape = tuple(loader.x.shape[1:])

        history = _callbacks.History()
        callbacks = list(callbacks)
        cbs = _callbacks.CallbackList([history] + callbacks, self)
        self.stop_training = False
        self.train()
        cbs.on_train_begin({})
        start = 0
        if checkpoint is not None:
            from .io import Checkpoint
            if not isinstance(checkpoint, Checkpoint):
                checkpoint = Checkpoint(checkpoint)
            if resume and os.path.exists(checkpoint.path):
                start = self._restore_checkpoint(checkpoint.path, loader, history, callbacks)
        interrupt = _DeferredInterrupt()
        with interrupt:
            self._epochs(loader, start, epochs, batch_size, validation_data, verbose, history,
                         cbs, callbacks, checkpoint, interrupt)
        if interrupt.requested:
            self.eval()
            self.history = history
            raise KeyboardInterrupt(f"fit interrupted during epoch {len(history.epoch) + 1}: the "
                                    f"model holds the weights after its last full step")
        cbs.on_train_end({})
        self.eval()
        self.history = history
        return history

    def _epochs(self, loader, start, epochs, batch_size, validation_data, verbose, history, cbs,
                callbacks, checkpoint, interrupt):
        for epoch in range(start, epochs):
            if self.stop_training:
                break
            cbs.on_epoch_begin(epoch, {})
            bar = ProgressBar(len(loader.x) if not loader.drop_last else
                              len(loader) * loader.batch_size,
                              epoch=epoch, epochs=epochs, verbose=verbose,
                              accuracy=self._classification())
            total_loss, total_correct, seen = 0.0, 0, 0
            self.train()
            for step, (xb, yb) in enumerate(loader):
                loss, correct = self.train_step(xb, yb)
                n = len(xb)
                total_loss += loss * n
                total_correct += correct
                seen += n
                logs = {"loss": total_loss / seen}
                if self._classification():
                    logs["accuracy"] = total_correct / seen
                bar.update(seen, logs)
                cbs.on_train_batch_end(step, {"loss": loss, "size": n})
                if interrupt.requested:
                    return
                if not np.isfinite(loss):
                    self.stop_training = True
                    break
            logs = {"loss": total_loss / max(seen, 1)}
            if self._classification():
                logs["accuracy"] = total_correct / max(seen, 1)
            if validation_data is not None:
                val = self.evaluate(*validation_data, batch_size=max(batch_size, 256))
                logs.update({f"val_{k}": v for k, v in val.items()})
                self.train()
            logs["lr"] = self.optimizer.lr
            logs["images_per_s"] = bar.rate()
            bar.finish(logs)
            cbs.on_epoch_end(epoch, logs)
            if checkpoint is not None:
                self._write_checkpoint(checkpoint, loader, history, callbacks, epoch + 1)
            if interrupt.requested:
                return

    # --- checkpoints ---------------------------------------------------------------------------
    def _write_checkpoint(self, checkpoint, loader, history, callbacks, epochs_done):
        from .io import save
        state = {
            "metadata": checkpoint.metadata,
            "epochs_done": epochs_done,
            "stop_training": bool(self.stop_training),
            "history": {"epoch": list(history.epoch), "history": history.history},
            "rng": {"shuffle": loader._order_rng.bit_generator.state,
                    "augment": loader._augment_rng.bit_generator.state,
                    "layers": _layers._rng().bit_generator.state},
            "callbacks": [[type(cb).__name__, cb.state_dict()] for cb in callbacks],
        }
        save(self, checkpoint.path, training_state=state)

    def _restore_checkpoint(self, path, loader, history, callbacks):
        """Load a checkpoint written by fit into this model and the loop's state; returns the
        number of epochs it had completed."""
        from .io import load_training_state
        state = load_training_state(path, self)
        try:
            saved = state["callbacks"]
            names = [name for name, _ in saved]
            if names != [type(cb).__name__ for cb in callbacks]:
                raise ValueError(f"{path}: the checkpoint was written with callbacks {names}, "
                                 f"this fit has {[type(cb).__name__ for cb in callbacks]}")
            for cb, (_, cb_state) in zip(callbacks, saved):
                cb.load_state_dict(cb_state)
            rng = state["rng"]
            loader._order_rng.bit_generator.state = rng["shuffle"]
            loader._augment_rng.bit_generator.state = rng["augment"]
            _layers._rng().bit_generator.state = rng["layers"]
            history.epoch = [int(e) for e in state["history"]["epoch"]]
            history.history = {str(k): list(v) for k, v in state["history"]["history"].items()}
            self.stop_training = bool(state["stop_training"])
            done = int(state["epochs_done"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ValueError) and str(exc).startswith(path):
                raise
            raise ValueError(f"{path}: not a usable training checkpoint: {exc}") from None
        # The optimizer's learning rate is the checkpoint's (schedules included).
        self.optimizer.lr = state["optimizer_lr"]
        return done

    def _batches(self, x, batch_size):
        for start in range(0, len(x), batch_size):
            yield x[start:start + batch_size]

    def evaluate(self, x, y, batch_size=256, verbose=0):
        """{'loss': mean loss, 'accuracy': fraction correct (classification)} in eval mode."""
        if self.loss is None:
            raise RuntimeError("Sequential.evaluate: call model.compile(...) first (the loss)")
        x = self._prepare(x)
        y = np.asarray(y)
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"evaluate: x has {len(x)} samples and y has {len(y)}")
        total_loss, correct = 0.0, 0
        loss_fn = copy.copy(self.loss)   # its own state: evaluate may run in several threads
        with inference_mode():
            for start in range(0, len(x), batch_size):
                xb, yb = x[start:start + batch_size], y[start:start + batch_size]
                out = self.forward(xb)
                total_loss += loss_fn.forward(out, yb) * len(xb)
                if self._classification():
                    correct += int(np.count_nonzero(out.argmax(axis=1) == yb))
        result = {"loss": total_loss / len(x)}
        if self._classification():
            result["accuracy"] = correct / len(x)
        if verbose:
            print("  ".join(f"{k} {v:.4f}" for k, v in result.items()))
        return result

    def predict(self, x, batch_size=256):
        """Outputs for x in eval mode, in batches: softmax probabilities for a classifier.

        Softmax is applied unless the model ends in Softmax or Sigmoid or was compiled with
        MSELoss; ``model(x)`` gives the raw outputs (logits).
        """
        x = self._prepare(x)
        with inference_mode():   # for this thread only: predict may run in several at once
            outs = [self.forward(xb) for xb in self._batches(x, batch_size)]
        out = np.concatenate(outs) if outs else np.zeros((0,), np.float32)
        last = self.layers[-1] if self.layers else None
        if (out.ndim == 2 and not isinstance(last, (Softmax, Sigmoid))
                and not isinstance(self.loss, _losses.MSELoss)):
            out = cconv.softmax(out)
        return out
