"""Learning-rate schedules: per epoch, usable as fit callbacks or stepped by hand (PyTorch style)."""
import math

from .callbacks import Callback, MonitorCallback


class LRScheduler(Callback):
    """Sets ``optimizer.lr`` from the epoch count. Pass it in ``fit(callbacks=[...])`` (it binds
    to the model's optimizer and steps after every epoch) or call ``step()`` after each epoch."""

    def __init__(self, optimizer=None):
        self.optimizer = None
        self.last_epoch = 0
        if optimizer is not None:
            self._bind(optimizer)

    def _bind(self, optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.initial_lr
        optimizer.lr = self.get_lr(self.last_epoch)

    def on_train_begin(self, logs=None):
        if self.optimizer is None:
            self._bind(self.model.optimizer)

    def on_epoch_end(self, epoch, logs=None):
        self.step()

    def step(self):
        self.last_epoch += 1
        self.optimizer.lr = self.get_lr(self.last_epoch)

    def state_dict(self):
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state):
        self.last_epoch = int(state["last_epoch"])
        if self.optimizer is not None:
            self.optimizer.lr = self.get_lr(self.last_epoch)

    def get_lr(self, epoch):
        raise NotImplementedError


class StepLR(LRScheduler):
    """lr = initial_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer=None, step_size=10, gamma=0.1):
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer)

    def get_lr(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2 (past T_max
    the cosine goes on, rising again, as in PyTorch)."""

    def __init__(self, optimizer=None, T_max=10, eta_min=0.0):
        self.T_max, self.eta_min = int(T_max), float(eta_min)
        super().__init__(optimizer)

    def get_lr(self, epoch):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


class ReduceLROnPlateau(MonitorCallback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved by more than
    ``min_delta`` for ``patience`` epochs, then wait ``cooldown`` epochs before counting again;
    never below ``min_lr`` (Keras's rule and arguments)."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0, verbose=0):
        if not 0.0 < float(factor) < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor!r}")
        super().__init__(monitor, mode, min_delta)
        self.factor, self.patience = float(factor), int(patience)
        self.cooldown, self.min_lr, self.verbose = int(cooldown), float(min_lr), verbose
        self.best, self.wait, self.cooldown_counter = None, 0, 0

    def on_train_begin(self, logs=None):
        self.best, self.wait, self.cooldown_counter = None, 0, 0

    def on_epoch_end(self, epoch, logs=None):
        value = self._value(logs)
        optimizer = self.model.optimizer
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(value, self.best):
            self.best, self.wait = value, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                new_lr = max(optimizer.lr * self.factor, self.min_lr)
                if optimizer.lr - new_lr > 1e-12:
                    optimizer.lr = new_lr
                    if self.verbose:
                        print(f"ReduceLROnPlateau: epoch {epoch + 1}: learning rate {new_lr:.3g}")
                self.cooldown_counter, self.wait = self.cooldown, 0

    def state_dict(self):
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state):
        self.best, self.wait = state["best"], int(state["wait"])
        self.cooldown_counter = int(state["cooldown_counter"])


class LinearWarmup(Callback):
    """Learning-rate warm-up: over the first ``steps`` training steps the learning rate rises
    linearly from ``start_factor`` times its value to its value (it multiplies whatever the
    other schedules set). Counted in steps, saved in checkpoints."""

    def __init__(self, steps, start_factor=0.0):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"LinearWarmup: steps must be an int >= 1, got {steps!r}")
        if not 0.0 <= float(start_factor) <= 1.0:
            raise ValueError(f"LinearWarmup: start_factor must be in [0, 1], got {start_factor!r}")
        self.steps, self.start_factor, self.done = steps, float(start_factor), 0

    def _apply(self):
        progress = min(1.0, self.done / self.steps)
        self.model.optimizer.lr_scale = self.start_factor + (1.0 - self.start_factor) * progress

    def on_train_begin(self, logs=None):
        self.done = 0
        self._apply()

    def on_train_batch_end(self, batch, logs=None):
        if not (logs or {}).get("skipped"):
            self.done += 1
        self._apply()

    def on_train_end(self, logs=None):
        self.model.optimizer.lr_scale = 1.0

    def state_dict(self):
        return {"done": self.done}

    def load_state_dict(self, state):
        self.done = int(state["done"])
        if self.model is not None:
            self._apply()
