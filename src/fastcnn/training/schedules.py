"""Learning-rate schedules: per epoch, usable as fit callbacks or stepped by hand (PyTorch style)."""
import math

from .callbacks import Callback


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
