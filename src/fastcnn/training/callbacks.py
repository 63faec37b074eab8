"""Callbacks for ``fit``: History, EarlyStopping, ModelCheckpoint (Keras's meaning)."""
import math
import os
import warnings

from .. import distributed
from ..io import save


class Callback:
    """Hooks called by fit; ``self.model`` is the model being trained."""

    model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def state_dict(self):
        """What a training checkpoint keeps of this callback, as JSON-friendly values."""
        return {}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s values (resuming from a checkpoint)."""


class CallbackList:
    def __init__(self, callbacks, model):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.set_model(model)

    def __getattr__(self, hook):
        def call(*args):
            for cb in self.callbacks:
                getattr(cb, hook)(*args)
        return call


class History(Callback):
    """``history.history`` maps each metric ('loss', 'accuracy', 'val_loss', ...) to its
    per-epoch values; ``history.epoch`` lists the epochs run."""

    def __init__(self):
        self.history = {}
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self):
        last = {k: round(v[-1], 4) for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epoch)}, last={last})"


def _monitor_mode(monitor, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        mode = "max" if "acc" in monitor else "min"
    return mode


class MonitorCallback(Callback):
    """A callback that watches one metric of the epoch logs (``monitor``, ``mode``)."""

    def __init__(self, monitor, mode, min_delta=0.0):
        self.monitor = monitor
        self.mode = _monitor_mode(monitor, mode)
        self.min_delta = abs(float(min_delta))
        self._warned = False

    def _value(self, logs):
        logs = logs or {}
        if self.monitor in logs:
            return logs[self.monitor]
        fallback = self.monitor[4:] if self.monitor.startswith("val_") else None
        if fallback in logs:
            if not self._warned:
                warnings.warn(f"{type(self).__name__}: '{self.monitor}' is not available (no "
                              f"validation data); monitoring '{fallback}' instead", stacklevel=3)
                self._warned = True
            return logs[fallback]
        raise ValueError(f"{type(self).__name__}: metric '{self.monitor}' is not among {sorted(logs)}")

    def _improved(self, value, best):
        if best is None:
            return not math.isnan(value)
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta


class EarlyStopping(MonitorCallback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs in a row (Keras's rule: patience=0 stops at the first epoch without improvement).

    With ``restore_best_weights`` the model gets back the weights (and batch-norm statistics) of
    its best epoch when training ends, whether it stopped early or not.
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto",
                 restore_best_weights=False, verbose=0):
        super().__init__(monitor, mode, min_delta)
        self.patience = int(patience)
        self.restore_best_weights = bool(restore_best_weights)
        self.verbose = verbose
        self.stopped_epoch = None
        self.best_epoch = None

    def on_train_begin(self, logs=None):
        self.best, self.best_weights, self.wait = None, None, 0
        self.stopped_epoch = self.best_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = self._value(logs)
        if self._improved(value, self.best):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def state_dict(self):
        # (best_weights is not kept: after a resume, the best epoch counts from there on)
        return {"best": self.best, "wait": self.wait, "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state):
        self.best, self.wait = state["best"], int(state["wait"])
        self.best_epoch, self.stopped_epoch = state["best_epoch"], state["stopped_epoch"]

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        if self.verbose and self.stopped_epoch is not None:
            print(f"Early stopping at epoch {self.stopped_epoch + 1}; best {self.monitor} "
                  f"{self.best:.4f} at epoch {self.best_epoch + 1}")


class ModelCheckpoint(MonitorCallback):
    """Save the model with ``fastcnn.save`` after each epoch, or only when ``monitor`` improves
    (``save_best_only``). ``filepath`` may contain ``{epoch}`` and metric names, e.g.
    ``"ckpt-{epoch:02d}-{val_loss:.3f}.fcnn"`` (epochs counted from 1)."""

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto",
                 save_optimizer=True, verbose=0):
        super().__init__(monitor, mode)
        self.filepath = os.fspath(filepath)
        self.save_best_only = bool(save_best_only)
        self.save_optimizer = save_optimizer
        self.verbose = verbose
        self.best = None

    def on_train_begin(self, logs=None):
        self.best = None

    def state_dict(self):
        return {"best": self.best}

    def load_state_dict(self, state):
        self.best = state["best"]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = self._value(logs)
            if not self._improved(value, self.best):
                return
            self.best = value
        if distributed.rank() != 0:   # data-parallel: the ranks hold the same model
            return
        path = self.filepath.format(epoch=epoch + 1, **logs)
        save(self.model, path, include_optimizer=self.save_optimizer)
        if self.verbose:
            print(f"saved {path}")


class TerminateOnNaN(Callback):
    """Stop training at the first batch whose loss is NaN or Inf (Keras's). With fit's default
    ``on_nonfinite='raise'`` such a batch already stops fit with an error; with
    ``on_nonfinite='skip'`` this callback turns the skip into a clean stop."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.model.stop_training = True


class CSVLogger(Callback):
    """Write each epoch's metrics as a row of a CSV file (``epoch`` first, then the metrics in
    sorted order), flushed after every epoch. ``append=True`` adds to an existing file. The
    rows are part of a training checkpoint: a resumed run rewrites the file with the rows
    before the checkpoint and goes on from there."""

    def __init__(self, filename, separator=",", append=False):
        self.filename = os.fspath(filename)
        self.separator = str(separator)
        self.append = bool(append)
        self.rows = []
        self._keys = None

    def on_train_begin(self, logs=None):
        self.rows, self._keys = [], None
        if self.append and os.path.exists(self.filename) and os.path.getsize(self.filename):
            with open(self.filename) as f:
                self._keys = f.readline().rstrip("\n").split(self.separator)[1:]
        elif distributed.rank() == 0:
            open(self.filename, "w").close()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if self._keys is None:
            self._keys = sorted(logs)
            self._write(self.separator.join(["epoch"] + self._keys) + "\n", "a")
        row = [epoch] + [logs.get(k, "") for k in self._keys]
        self.rows.append(row)
        self._write(self.separator.join(map(str, row)) + "\n", "a")

    def _write(self, text, mode):
        if distributed.rank() != 0:   # data-parallel: every rank has the same (reduced) logs
            return
        with open(self.filename, mode) as f:
            f.write(text)
            f.flush()

    def state_dict(self):
        return {"rows": self.rows, "keys": self._keys}

    def load_state_dict(self, state):
        self.rows, self._keys = [list(r) for r in state["rows"]], state["keys"]
        text = "" if self._keys is None else self.separator.join(["epoch"] + self._keys) + "\n"
        text += "".join(self.separator.join(map(str, r)) + "\n" for r in self.rows)
        self._write(text, "w")
