"""The training loop every model has: compile, fit (callbacks, validation, checkpoints and
resume, Ctrl-C), evaluate and predict (Keras's meaning and arguments).

:class:`Trainer` is a mixin: it drives any model through ``forward``, ``backward``,
``parameters``, ``train`` / ``eval``, ``state_dict`` and the few hooks below, and knows nothing
of the model's structure. Models with several inputs or outputs take lists of arrays (one per
input, one target per output) and one loss per output, summed with ``loss_weights``.
"""
import copy
import math
import numbers
import os
import signal
import threading

import numpy as np

import cconv

from .. import distributed as _distributed
from .. import losses as _losses
from .. import optim as _optim
from ..data import DataLoader, Dataset, check_same_length, take
from ..io import Checkpoint, load_training_state, save
from ..nn.base import inference_mode, rng
from . import callbacks as callbacks_module
from .progress import ProgressBar


class NonFiniteError(FloatingPointError):
    """A training step's loss or gradients were NaN or Inf; the model was left as it was
    before that step."""


def _count(op, name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{op}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


class DeferredInterrupt:
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




class Trainer:
    """compile / fit / evaluate / predict for a model (see the module's docstring).

    What it asks of the model besides the Layer interface: ``num_outputs``, ``prepare_inputs``
    (converts the arrays given at the boundary), ``outputs_are_probabilities(i)`` and the
    attributes ``optimizer``, ``loss``, ``loss_weights``, ``history``, ``stop_training`` and
    ``input_shape``.
    """

    optimizer = loss = loss_weights = history = None
    stop_training = False

    def compile(self, optimizer="adam", loss="cross_entropy", loss_weights=None):
        """Choose the optimizer (an instance, or 'sgd' / 'adam' / 'adamw') and the loss (an
        instance, or 'cross_entropy' / 'mse'). Accuracy is reported with CrossEntropyLoss.

        A model with several outputs takes a list of losses, one per output (or one loss for
        all), and ``loss_weights``: the loss trained on is their weighted sum, as in Keras.
        An optimizer made with parameter groups (``fc.SGD([{"params": ..., "lr": ...}])``)
        keeps them; any other is bound to all of the model's parameters.
        """
        n = self.num_outputs
        self.optimizer = _optim.get(optimizer)
        if not self.optimizer.param_groups_given:
            self.optimizer.bind(self.parameters())
        if n == 1:
            if isinstance(loss, (list, tuple)):
                if len(loss) != 1:
                    raise ValueError(f"compile: the model has 1 output, got {len(loss)} losses")
                loss = loss[0]
            self.loss, self.loss_weights = _losses.get(loss), None
            return self
        losses = list(loss) if isinstance(loss, (list, tuple)) else [loss] * n
        if len(losses) != n:
            raise ValueError(f"compile: the model has {n} outputs, got {len(losses)} losses")
        # each output its own loss object: a loss keeps its last forward for its backward
        self.loss = [copy.copy(_losses.get(fn)) for fn in losses]
        weights = [1.0] * n if loss_weights is None else [float(w) for w in loss_weights]
        if len(weights) != n:
            raise ValueError(f"compile: the model has {n} outputs, got {len(weights)} "
                             f"loss_weights")
        self.loss_weights = weights
        return self

    def _classification(self):
        return isinstance(self.loss, _losses.CrossEntropyLoss)

    def _total_loss(self, losses, out, y):
        """The (weighted) loss of the outputs and the gradient(s) to backpropagate."""
        if self.loss_weights is None:
            value = losses.forward(out, y)
            return value, losses.backward()
        value, grads = 0.0, []
        for fn, weight, o, t in zip(losses, self.loss_weights, out, y):
            value += weight * fn.forward(o, t)
            g = fn.backward()
            grads.append(g if weight == 1.0 else (g * np.float32(weight)))
        return value, grads

    def train_step(self, x, y):
        """One optimisation step on a batch; returns (loss, number of correct predictions).

        A loss or gradients that are not finite raise :class:`NonFiniteError` and leave the
        model as it was before the step: parameters, optimizer state and batch-norm running
        statistics (which the forward pass had updated) all unchanged."""
        saved = self._buffers()
        out = self.forward(x)
        loss, dy = self._total_loss(self.loss, out, y)
        try:
            if not math.isfinite(loss):
                raise NonFiniteError(f"the loss is {loss}")
            self.zero_grad()
            self.backward(dy, input_grad=False)
            self.optimizer.step()
        except (NonFiniteError, _optim.NonFiniteGradientError) as exc:
            for owner, name, value in saved:
                setattr(owner, name, value)   # buffers are replaced, never written in place
            raise NonFiniteError(str(exc)) from None
        correct = int(np.count_nonzero(out.argmax(axis=1) == y)) if self._classification() else 0
        return loss, correct

    def _data_parallel_step(self, reducer, x, y, n_global):
        """train_step on this rank's part of a global batch of ``n_global`` samples (``x``
        None: this rank has none in it); the gradients are summed across ranks while backward
        runs, and every rank takes the same step. Returns the global (mean loss, correct)."""
        saved = self._buffers()
        n = 0 if x is None else len(y[0] if isinstance(y, list) else y)
        reducer.begin(n, n_global)   # n_global as planned: SyncBatchNorm's share
        self.zero_grad()
        loss, correct = 0.0, 0
        if n:
            out = self.forward(x)
            loss, dy = self._total_loss(self.loss, out, y)
            self.on_gradients_ready = reducer.ready
            try:
                self.backward(dy, input_grad=False)
            finally:
                self.on_gradients_ready = None
            if self._classification():
                correct = int(np.count_nonzero(out.argmax(axis=1) == y))
        loss_sum, correct_sum, total = reducer.finish([loss * n, correct, n])
        loss = float(loss_sum) / max(total, 1.0)
        try:   # the same decision on every rank: the loss and the gradients are global
            if not math.isfinite(loss):
                raise NonFiniteError(f"the loss is {loss}")
            self.optimizer.step()
        except (NonFiniteError, _optim.NonFiniteGradientError) as exc:
            for owner, name, value in saved:
                setattr(owner, name, value)
            raise NonFiniteError(str(exc)) from None
        return loss, int(correct_sum)

    def _step_batches(self, loader, reducer):
        """(x, y, samples in the global batch) per step: the loader's batches, or with
        ``reducer`` this rank's parts of the global batches (x None where it has none)."""
        if reducer is None:
            for xb, yb in loader:
                yield xb, yb, len(yb[0] if isinstance(yb, list) else yb)
            return
        batches = iter(loader)
        for n_global, n_here in loader.steps():
            xb, yb = next(batches) if n_here else (None, None)
            yield xb, yb, n_global

    def _sharded_evaluate(self, world, data, batch_size):
        """evaluate over this rank's share of ``data``, reduced across ranks."""
        if isinstance(data, (DataLoader, Dataset)):
            loader = data if isinstance(data, DataLoader) else data.loader(batch_size=batch_size)
            n = sum(here for _, here in loader.shard(world.rank, world.size).steps(False))
            result = self.evaluate(loader) if n else {}
            loader.shard(0, 1)
        else:
            x, y = data
            total = len(y[0] if isinstance(y, list) else y)
            lo, hi = (total * world.rank) // world.size, (total * (world.rank + 1)) // world.size
            n = hi - lo
            result = self.evaluate(take(x, slice(lo, hi)), take(y, slice(lo, hi)),
                                   batch_size=batch_size) if n else {}
        keys = ["loss"] + (["accuracy"] if self._classification() else [])
        sums = world.sum([result.get(k, 0.0) * n for k in keys] + [n], "the validation")
        return {k: float(v / sums[-1]) for k, v in zip(keys, sums)}

    _buffer_slots = None   # fit sets it for its run: the structure does not change meanwhile

    def _buffers(self):
        """The model's buffers (running statistics) as (owner, attribute, current array)."""
        slots = self._buffer_slots
        if slots is None:
            slots = [(owner, name) for _, owner, name, is_param in self._state_items()
                     if not is_param]
        return [(owner, name, getattr(owner, name)) for owner, name in slots]

    def _targets(self, y, op):
        """The targets as arrays: one per output."""
        if self.num_outputs == 1:
            return np.asarray(y)
        if not isinstance(y, (list, tuple)) or len(y) != self.num_outputs:
            raise ValueError(f"{op}: the model has {self.num_outputs} outputs: pass y as a list "
                             f"of {self.num_outputs} arrays")
        return [np.asarray(t) for t in y]

    def fit(self, x, y=None, epochs=1, batch_size=32, shuffle=True, seed=0, validation_split=0.0,
            validation_data=None, callbacks=(), verbose=1, augment=None, drop_last=False,
            checkpoint=None, resume=False, on_nonfinite="raise", adversarial=None):
        """Train for ``epochs`` passes over (x, y); returns a :class:`~fastcnn.callbacks.History`.

        ``x`` may also be a :class:`~fastcnn.data.DataLoader` (then ``y``, ``batch_size``,
        ``shuffle``, ``seed`` and ``augment`` are the loader's) or a
        :class:`~fastcnn.data.Dataset` such as :class:`~fastcnn.datasets.ImageFolder` (its
        labels are y; fit cuts it into batches with these arguments, as it does arrays).
        ``shuffle`` draws a new permutation each epoch from a generator seeded with ``seed``;
        ``shuffle=False`` takes the batches in order. ``validation_split`` holds out the last
        fraction of (x, y) (before shuffling, as Keras); ``validation_data=(x_val, y_val)`` (or
        a DataLoader or a Dataset) gives them explicitly. ``augment`` is a batch transform (see
        :mod:`fastcnn.data`). ``verbose``: 0 silent, 1 a progress bar (plain lines when the
        output is not a terminal), 2 one line per epoch.

        ``checkpoint``: a file (or a :class:`fastcnn.io.Checkpoint`, to record metadata of
        your own with it) that, after every epoch, receives atomically what it takes to
        continue: weights and buffers, the optimizer's state, the epochs done, the history, the
        callbacks' state (learning-rate schedules...) and the random generators' states
        (shuffling, augmentation, dropout). With ``resume=True`` an existing checkpoint is
        loaded first and training goes on from the epoch after it: a run killed at any point
        and resumed ends with the weights, bit for bit, of a run that was never interrupted
        (same data, arguments and seed). Without the file, training starts from scratch.

        ``on_nonfinite``: a step whose loss or gradients are NaN or Inf (a corrupt sample, a
        learning rate too high) leaves the model as it was before that step; with 'raise' (the
        default) fit then stops with a :class:`NonFiniteError` that names the epoch, the step
        and the batch's samples; with 'skip' it goes on with the next batch and counts the
        skipped ones in the history ('skipped_batches').

        ``adversarial``: an attack (``fc.attacks.PGD(eps=...)``, or any ``attack(model, x, y)``
        returning a batch like x) that replaces every training batch by its attacked copy
        before the step: adversarial training. Validation stays on the clean data.

        After ``fc.distributed.init()`` under ``mpiexec`` with several ranks, fit is
        data-parallel (``batch_size`` per rank; see :mod:`fastcnn.distributed`), and
        ``model.data_parallel`` then holds the gradient sum's timings of the run.

        Ctrl-C: the step under way is finished, then fit stops and raises KeyboardInterrupt;
        the model holds the weights after the last full step, ``model.history`` the epochs
        completed (the partial epoch is neither recorded nor checkpointed).
        """
        if self.optimizer is None or self.loss is None:
            raise RuntimeError(f"{type(self).__name__}.fit: call model.compile(optimizer=..., "
                               f"loss=...) first")
        epochs, batch_size = _count("fit", "epochs", epochs, 0), _count("fit", "batch_size", batch_size, 1)
        if verbose not in (0, 1, 2):
            raise ValueError(f"fit: verbose must be 0, 1 or 2, got {verbose!r}")
        if adversarial is not None and not callable(adversarial):
            raise ValueError(f"fit: adversarial must be an attack (such as fc.attacks.PGD(eps="
                             f"0.1)), got {adversarial!r}")
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"fit: on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
        if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real):
            raise ValueError(f"fit: validation_split must be a fraction in [0, 1), got "
                             f"{validation_split!r}")
        if validation_data is not None and not isinstance(validation_data, (DataLoader, Dataset)):
            if not isinstance(validation_data, (list, tuple)) or len(validation_data) != 2:
                raise ValueError("fit: validation_data must be a pair (x_val, y_val), a "
                                 "DataLoader or a Dataset")
            validation_data = (self.prepare_inputs(validation_data[0]),
                               self._targets(validation_data[1], "fit (validation_data)"))
            check_same_length("fit: validation_data", *validation_data)
        if isinstance(x, (DataLoader, Dataset)):
            kind = type(x).__name__
            if y is not None:
                raise ValueError(f"fit: the targets come from the {kind}: pass y=None")
            if validation_split:
                hint = ("" if isinstance(x, DataLoader) else " (an ImageFolder splits itself: "
                        "ImageFolder(..., validation_split=..., subset='training' or "
                        "'validation'))")
                raise ValueError(f"fit: validation_split needs arrays; with a {kind} pass "
                                 f"validation_data{hint}")
            loader = x if isinstance(x, DataLoader) else x.loader(
                batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                transform=augment)
        else:
            x, y = self.prepare_inputs(x), self._targets(y, "fit")
            n = check_same_length("fit", x, y)
            if validation_data is None and validation_split:
                if not 0.0 < validation_split < 1.0:
                    raise ValueError(f"fit: validation_split must be in (0, 1), got {validation_split}")
                n_val = int(round(n * validation_split))
                if n_val == 0 or n_val == n:
                    raise ValueError(f"fit: validation_split={validation_split} leaves no "
                                     f"training or no validation samples out of {n}")
                validation_data = (take(x, slice(n - n_val, n)), take(y, slice(n - n_val, n)))
                x, y = take(x, slice(0, n - n_val)), take(y, slice(0, n - n_val))
            loader = DataLoader(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed,
                                drop_last=drop_last, transform=augment)
        if self.input_shape is None and loader.sample_shape is not None:
            self.input_shape = loader.sample_shape

        history = callbacks_module.History()
        callbacks = list(callbacks)
        cbs = callbacks_module.CallbackList([history] + callbacks, self)
        self.stop_training = False
        self.train()
        cbs.on_train_begin({})
        start = 0
        if checkpoint is not None:
            if not isinstance(checkpoint, Checkpoint):
                checkpoint = Checkpoint(checkpoint)
            if resume and os.path.exists(checkpoint.path):
                start = self._restore_checkpoint(checkpoint.path, loader, history, callbacks)
        world = _distributed.world()
        reducer = None
        if world.size > 1:   # data-parallel: see fastcnn.distributed
            _distributed.check_same_model(world, self)
            _distributed.broadcast_state(world, self)
            loader.shard(world.rank, world.size)
            _distributed.check_every_rank_has_samples(world, self, loader)
            reducer = _distributed.GradientReducer(world, self)
            verbose = verbose if world.rank == 0 else 0
        interrupt = DeferredInterrupt()
        with interrupt:
            self._buffer_slots = [(owner, name) for _, owner, name, is_param
                                  in self._state_items() if not is_param]
            try:
                self._epochs(loader, start, epochs, batch_size, validation_data, verbose, history,
                             cbs, callbacks, checkpoint, interrupt, on_nonfinite, adversarial,
                             reducer)
            except NonFiniteError:   # every rank decides alike: the loss and gradients are global
                self.eval()
                self.history = history
                raise
            except Exception as exc:
                if reducer is not None:   # the other ranks would wait for this one forever
                    world.abort(f"rank {world.rank} of {world.size}: fit failed: "
                                f"{type(exc).__name__}: {exc}; stopping every rank")
                raise
            finally:
                self._buffer_slots = None
                self.data_parallel = reducer
                if reducer is not None:
                    loader.shard(0, 1)
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
                callbacks, checkpoint, interrupt, on_nonfinite, adversarial=None, reducer=None):
        for epoch in range(start, epochs):
            if self.stop_training:
                break
            cbs.on_epoch_begin(epoch, {})
            bar = ProgressBar(sum(n_global for n_global, _ in loader.steps()),
                              epoch=epoch, epochs=epochs, verbose=verbose,
                              accuracy=self._classification())
            total_loss, total_correct, seen, skipped = 0.0, 0, 0, 0
            self.train()
            for step, (xb, yb, n) in enumerate(self._step_batches(loader, reducer)):
                if adversarial is not None and xb is not None:
                    xb = adversarial(self, xb, yb)
                try:
                    loss, correct = (self.train_step(xb, yb) if reducer is None else
                                     self._data_parallel_step(reducer, xb, yb, n))
                except NonFiniteError as exc:
                    samples = [int(i) for i in loader.batch_indices] if xb is not None else []
                    if on_nonfinite == "raise":
                        shown = samples if len(samples) <= 16 else samples[:16] + ["..."]
                        raise NonFiniteError(
                            f"fit: epoch {epoch + 1}, step {step + 1}: {exc} (the batch of "
                            f"samples {shown}). The model holds the weights from before this "
                            f"step. Check those samples for NaN or Inf (np.isfinite(x[i]).all())"
                            f", or lower the learning rate or clip the gradients "
                            f"(clip_grad_norm=...); fit(..., on_nonfinite='skip') skips such "
                            f"batches") from None
                    skipped += 1
                    cbs.on_train_batch_end(step, {"loss": float("nan"), "size": n,
                                                  "skipped": True})
                    if interrupt.requested or self.stop_training:
                        break
                    continue
                total_loss += loss * n
                total_correct += correct
                seen += n
                logs = {"loss": total_loss / seen}
                if self._classification():
                    logs["accuracy"] = total_correct / seen
                bar.update(seen, logs)
                cbs.on_train_batch_end(step, {"loss": loss, "size": n})
                if interrupt.requested or self.stop_training:
                    break
            if interrupt.requested:
                return
            logs = {"loss": total_loss / seen if seen else float("nan")}
            if self._classification() and seen:
                logs["accuracy"] = total_correct / seen
            if on_nonfinite == "skip":
                logs["skipped_batches"] = skipped
            if validation_data is not None and reducer is not None:
                logs.update({f"val_{k}": v for k, v in self._sharded_evaluate(
                    reducer.world, validation_data, max(batch_size, 256)).items()})
                self.train()
            elif validation_data is not None:
                # a loader decodes its batches: fit's batch size bounds that memory
                val = (self.evaluate(validation_data, batch_size=batch_size)
                       if isinstance(validation_data, (DataLoader, Dataset))
                       else self.evaluate(*validation_data, batch_size=max(batch_size, 256)))
                logs.update({f"val_{k}": v for k, v in val.items()})
                self.train()
            logs["lr"] = self.optimizer.lr
            logs["images_per_s"] = bar.rate()
            bar.finish(logs)
            cbs.on_epoch_end(epoch, logs)
            if checkpoint is not None and (reducer is None or reducer.world.rank == 0):
                self._write_checkpoint(checkpoint, loader, history, callbacks, epoch + 1)
            if interrupt.requested:
                return

    # --- checkpoints ---------------------------------------------------------------------------
    def _write_checkpoint(self, checkpoint, loader, history, callbacks, epochs_done):
        state = {
            "metadata": checkpoint.metadata,
            "epochs_done": epochs_done,
            "stop_training": bool(self.stop_training),
            "history": {"epoch": list(history.epoch), "history": history.history},
            "rng": {"shuffle": loader._order_rng.bit_generator.state,
                    "augment": loader._augment_rng.bit_generator.state,
                    "layers": rng().bit_generator.state},
            "callbacks": [[type(cb).__name__, cb.state_dict()] for cb in callbacks],
        }
        save(self, checkpoint.path, training_state=state)

    def _restore_checkpoint(self, path, loader, history, callbacks):
        """Load a checkpoint written by fit into this model and the loop's state; returns the
        number of epochs it had completed."""
        state = load_training_state(path, self)
        try:
            saved = state["callbacks"]
            names = [name for name, _ in saved]
            if names != [type(cb).__name__ for cb in callbacks]:
                raise ValueError(f"{path}: the checkpoint was written with callbacks {names}, "
                                 f"this fit has {[type(cb).__name__ for cb in callbacks]}")
            for cb, (_, cb_state) in zip(callbacks, saved):
                cb.load_state_dict(cb_state)
            generators = state["rng"]
            loader._order_rng.bit_generator.state = generators["shuffle"]
            loader._augment_rng.bit_generator.state = generators["augment"]
            rng().bit_generator.state = generators["layers"]
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

    def _inference_batches(self, x, y, batch_size, op):
        """(x_batch, y_batch) pairs for evaluate and predict (y_batch None without targets):
        slices of arrays, or a loader's eval_batches (every sample once, in order, without
        augmentation). The arguments are checked here, before the first batch."""
        if isinstance(x, Dataset):
            x = x.loader(batch_size=batch_size)
        if isinstance(x, DataLoader):
            if y is not None:
                raise ValueError(f"{op}: the targets come from the {type(x).__name__}: pass "
                                 f"y=None")
            return ((b if isinstance(b, tuple) else (b, None)) for b in x.eval_batches())
        x = self.prepare_inputs(x)
        y = None if y is None else self._targets(y, op)
        n = check_same_length(op, x, y)
        if n == 0 and y is not None:
            raise ValueError(f"{op}: x and y hold no samples")
        return ((take(x, s), None if y is None else take(y, s))
                for s in (slice(lo, lo + batch_size) for lo in range(0, n, batch_size)))

    def evaluate(self, x, y=None, batch_size=256, verbose=0, attack=None):
        """{'loss': mean loss, 'accuracy': fraction correct (classification)} in eval mode.

        ``x`` may be a :class:`~fastcnn.data.DataLoader` or a :class:`~fastcnn.data.Dataset`
        (an ImageFolder), which hold the targets: every sample once, without augmentation.
        ``attack`` (``fc.attacks.FGSM(0.1)``, or any ``attack(model, x, y)``): the loss and
        accuracy on each batch's attacked copy, robust accuracy."""
        if self.loss is None:
            raise RuntimeError(f"{type(self).__name__}.evaluate: call model.compile(...) first "
                               f"(the loss)")
        if y is None and not isinstance(x, (DataLoader, Dataset)):
            raise ValueError("evaluate: pass the targets y (or a DataLoader or Dataset that "
                             "holds them)")
        if attack is not None and not callable(attack):
            raise ValueError(f"evaluate: attack must be an attack (such as fc.attacks.FGSM(0.1))"
                             f", got {attack!r}")
        batches = self._inference_batches(x, y, batch_size, "evaluate")
        total_loss, correct, n = 0.0, 0, 0
        # their own state: evaluate may run in several threads
        losses = ([copy.copy(fn) for fn in self.loss] if isinstance(self.loss, list)
                  else copy.copy(self.loss))
        with inference_mode():
            for xb, yb in batches:
                if yb is None:
                    raise ValueError(f"evaluate: the {type(x).__name__} has no targets (y)")
                if attack is not None:
                    xb = attack(self, xb, yb)
                out = self.forward(xb)
                size = len(xb[0] if isinstance(xb, list) else xb)
                total_loss += self._total_loss(losses, out, yb)[0] * size
                if self._classification():
                    correct += int(np.count_nonzero(out.argmax(axis=1) == yb))
                n += size
        if n == 0:
            raise ValueError("evaluate: x and y hold no samples")
        result = {"loss": total_loss / n}
        if self._classification():   # no accuracy of outputs that are not finite
            result["accuracy"] = correct / n if math.isfinite(total_loss) else float("nan")
        if verbose:
            print("  ".join(f"{k} {v:.4f}" for k, v in result.items()))
        return result

    def predict(self, x, batch_size=256):
        """Outputs for x in eval mode, in batches: softmax probabilities for a classifier
        (a list of arrays for a model with several outputs).

        ``x`` may be a :class:`~fastcnn.data.DataLoader` or a :class:`~fastcnn.data.Dataset`:
        one row per sample, in their order (an ImageFolder's ``samples``), targets unused.
        Softmax is applied to a 2-D output unless the model ends in Softmax or Sigmoid there or
        was compiled with MSELoss for it; ``model(x)`` gives the raw outputs (logits).
        """
        batches = self._inference_batches(x, None, batch_size, "predict")
        with inference_mode():   # for this thread only: predict may run in several at once
            outs = [self.forward(xb) for xb, _ in batches]
        several = self.num_outputs > 1
        results = []
        for i in range(self.num_outputs):
            parts = [o[i] for o in outs] if several else outs
            out = np.concatenate(parts) if parts else np.zeros((0,), np.float32)
            loss = self.loss[i] if isinstance(self.loss, list) else self.loss
            if (out.ndim == 2 and not self.outputs_are_probabilities(i)
                    and not isinstance(loss, _losses.MSELoss)):
                out = cconv.softmax(out)
            results.append(out)
        return results if several else results[0]
