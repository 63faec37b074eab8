"""Sequential: a stack of layers that is itself a layer, with a Keras-style training loop."""
import copy
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
from .layers import BatchNorm2d, Conv2d, Layer, ReLU, Sigmoid, Softmax, _check_nhwc, inference_mode
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
        self._folded = {}          # layer index -> (source arrays, folded conv weight and bias)
        self._last_forward_folded = False

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

    def forward(self, x):
        """Run the layers. In eval mode a Conv2d followed by BatchNorm2d runs as one convolution
        with the batch norm folded into its weights, and a ReLU after a convolution is fused
        into it: the same outputs (within float32 rounding), one pass over memory."""
        x = self._prepare(x)
        if self.input_shape is None and x.ndim >= 2:
            self.input_shape = tuple(x.shape[1:])
        layers = self.layers
        folding = not self.training
        self._last_forward_folded = False
        i = 0
        try:
            while i < len(layers):
                layer = layers[i]
                nxt = layers[i + 1] if i + 1 < len(layers) else None
                if type(layer) is Conv2d:
                    bn = nxt if folding and type(nxt) is BatchNorm2d and nxt.track_running_stats else None
                    after = layers[i + 2] if bn is not None and i + 2 < len(layers) else nxt
                    relu = type(after) is ReLU
                    if bn is not None:
                        w, b = self._folded_conv_bn(i, layer, bn)
                        x = cconv.conv2d(_check_nhwc(layer, x, layer.in_channels), w, b,
                                         activation="relu" if relu else None, algo=layer.algo,
                                         **layer._args())
                        self._last_forward_folded = True
                        i += 2 + relu
                        continue
                    if relu:
                        # Fused convolution + ReLU: the ReLU keeps the output its backward needs.
                        x = layer.forward(x, activation="relu")
                        nxt._y = x
                        i += 2
                        continue
                x = layer.forward(x)
                i += 1
        except ValueError as exc:  # say where in the model the bad shape arrived
            raise ValueError(f"Sequential layer {i} ({type(layers[i]).__name__}): {exc}") from None
        return x

    def _folded_conv_bn(self, i, conv, bn):
        """Conv weight and bias with the eval-mode batch norm after it folded in, cached until
        any of the arrays they come from is replaced (load_state_dict, a training step) or the
        mode changes. Edit parameters in place in eval mode? Call eval() again."""
        gamma, beta = bn._affine()
        sources = (conv.weight.data, None if conv.bias is None else conv.bias.data, gamma, beta,
                   bn.running_mean, bn.running_var)
        cached = self._folded.get(i)
        if cached is not None and all(a is b for a, b in zip(cached[0], sources)):
            return cached[1]
        scale = gamma.astype(np.float64) / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
        bias = np.zeros(conv.out_channels) if conv.bias is None else conv.bias.data.astype(np.float64)
        w = (conv.weight.data * scale[:, None, None, None]).astype(np.float32)
        b = ((bias - bn.running_mean) * scale + beta).astype(np.float32)
        self._folded[i] = (sources, (w, b))
        return w, b

    def train(self, mode=True):
        self._folded = {}
        return super().train(mode)

    def backward(self, dy, input_grad=True):
        """Backpropagate ``dy``; returns the input gradient, or None with ``input_grad=False``
        (training a model: then its first layer computes its parameter gradients only)."""
        if self._last_forward_folded:
            raise RuntimeError("Sequential.backward: the last forward ran in eval mode with batch "
                               "norm folded into the convolutions; call model.train() before "
                               "the forward pass to backpropagate")
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            if i == 0 and not input_grad:
                if hasattr(layer, "backward_params"):
                    layer.backward_params(dy)
                    return None
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
