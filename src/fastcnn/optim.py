"""Optimizers (SGD, Adam, AdamW) with PyTorch's update rules.

Build an optimizer Keras-style, ``fc.SGD(lr=0.05, momentum=0.9)`` and let ``model.compile`` bind
it to the model's parameters, or PyTorch-style, ``fc.SGD(model.parameters(), lr=0.05)``.

Regularisation:
- ``weight_decay`` is PyTorch's: added to the gradient as ``weight_decay * w`` (SGD, Adam), or
  decoupled, ``w -= lr * weight_decay * w`` (AdamW); it applies to every parameter.
- ``l1`` and ``l2`` are penalties ``l1 * sum|w| + l2 * sum w^2`` (Keras's definition) on the
  weights only (parameters with two or more dimensions, not biases or batch-norm scales); their
  gradients ``l1 * sign(w) + 2 * l2 * w`` are added before the update. The loss that ``fit``
  reports does not include them.

Gradient clipping (every optimizer): ``clip_grad_value=v`` clips each gradient element to
[-v, v], then ``clip_grad_norm=m`` scales all the gradients together so that their global L2
norm is at most m: PyTorch's ``clip_grad_value_`` and ``clip_grad_norm_`` over all the
optimizer's parameters, applied at every step.

A step whose gradients hold NaN or Inf raises :class:`NonFiniteGradientError` before any
parameter or optimizer state is touched (the global norm that clipping needs is the check).

The updates run in compiled code (``cconv.sgd_update``, ``cconv.adam_update``), in place.
"""
import math
import numbers

import numpy as np

import cconv

from .nn.base import parameters_updated


class NonFiniteGradientError(FloatingPointError):
    """The gradients of a step hold NaN or Inf: no parameter was updated."""


def _clip_bound(op, name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not math.isfinite(value) or value <= 0:
        raise ValueError(f"{op}: {name} must be a positive number or None, got {value!r}")
    return float(value)


class Optimizer:
    defaults = {}

    def __init__(self, params=None, clip_grad_norm=None, clip_grad_value=None, **hyper):
        if isinstance(params, numbers.Real):  # fc.SGD(0.1): a learning rate, not parameters
            hyper["lr"] = float(params)
            params = None
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown arguments {sorted(unknown)}")
        self.hyper = {**self.defaults, **hyper}
        op = type(self).__name__
        self.clip_grad_norm = _clip_bound(op, "clip_grad_norm", clip_grad_norm)
        self.clip_grad_value = _clip_bound(op, "clip_grad_value", clip_grad_value)
        self.lr_scale = 1.0      # a factor on every learning rate (warm-up sets it per step)
        self.last_grad_norm = None
        lr = self.hyper["lr"]
        if not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr < 0:
            raise ValueError(f"{type(self).__name__}: lr must be a finite number >= 0, got {lr!r}")
        self.initial_lr = float(self.hyper["lr"])
        self.params = []
        self.state = []
        self.param_groups_given = False
        self._overrides = []   # per parameter: its group's own hyper-parameters
        if params is not None:
            self.bind(params)

    def bind(self, params):
        """Attach the parameters to update (model.compile does this): a list of parameters, or
        PyTorch's parameter groups, ``[{"params": [...], "lr": 1e-4}, {"params": [...]}]``, where
        a group's own values (lr, weight_decay, momentum...) override the optimizer's. A group's
        lr follows the schedules: it is scaled by the same factor as the optimizer's lr."""
        params = list(params)
        overrides = [{}] * len(params)
        if params and isinstance(params[0], dict):
            flat, overrides = [], []
            for group in params:
                group = dict(group)
                if "params" not in group:
                    raise ValueError(f"{type(self).__name__}: a parameter group needs 'params'")
                members = list(group.pop("params"))
                unknown = set(group) - set(self.defaults)
                if unknown:
                    raise TypeError(f"{type(self).__name__}: unknown arguments {sorted(unknown)} "
                                    f"in a parameter group")
                flat += members
                overrides += [group] * len(members)
            params = flat
            self.param_groups_given = True
        if self.params and [id(p) for p in params] == [id(p) for p in self.params]:
            return self
        self.params = params
        self._overrides = overrides
        self.state = [{} for _ in params]
        return self

    def _hyper_for(self, i):
        """The hyper-parameters of parameter i: the optimizer's, with its group's on top."""
        override = self._overrides[i] if i < len(self._overrides) else {}
        if not override and self.lr_scale == 1.0:
            return self.hyper
        h = {**self.hyper, **override}
        if "lr" in override and self.initial_lr:
            h["lr"] = override["lr"] * self.hyper["lr"] / self.initial_lr
        h["lr"] *= self.lr_scale
        return h

    @property
    def lr(self):
        return self.hyper["lr"]

    @lr.setter
    def lr(self, value):
        self.hyper["lr"] = float(value)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @staticmethod
    def _penalties(p, h):
        """(l1, l2) for this parameter: the penalties apply to weights, not biases or scales."""
        if p.data.ndim >= 2:
            return float(h.get("l1", 0.0)), float(h.get("l2", 0.0))
        return 0.0, 0.0

    def step(self):
        """Update every parameter that has a gradient, in place (compiled: cconv.*_update)."""
        if not self.params:
            raise RuntimeError(f"{type(self).__name__}.step: no parameters (pass them, or compile a model)")
        live = [i for i, p in enumerate(self.params) if p.grad is not None and p.requires_grad]
        self._prepare_gradients([self.params[i] for i in live])
        parameters_updated()
        for i in live:
            p, state = self.params[i], self.state[i]
            if not (p.data.flags.c_contiguous and p.data.flags.writeable
                    and p.data.dtype == np.float32):
                p.data = np.array(p.data, dtype=np.float32, order="C")
            state["step"] = state.get("step", 0) + 1
            self._update(p, p.grad, state, self._hyper_for(i))

    def _prepare_gradients(self, params):
        """Clip the gradients (by value, then by global norm) and refuse non-finite ones. The
        squared norm is one pass over the gradients, which the finiteness check shares."""
        if self.clip_grad_value is not None:
            v = self.clip_grad_value
            for p in params:
                p.grad = np.clip(p.grad, -v, v)   # NaN stays NaN: still refused below
        squares = 0.0
        for p in params:
            g = np.ascontiguousarray(p.grad, dtype=np.float32).reshape(-1)
            squares += float(np.dot(g, g))
        if not math.isfinite(squares):
            bad = [k for k, p in enumerate(params) if not np.isfinite(p.grad).all()]
            raise NonFiniteGradientError(
                f"{type(self).__name__}.step: the gradients of {len(bad)} of {len(params)} "
                f"parameters hold NaN or Inf (shapes {[params[k].shape for k in bad[:4]]}); no "
                f"parameter was updated")
        norm = self.last_grad_norm = math.sqrt(squares)
        if self.clip_grad_norm is not None:
            coef = self.clip_grad_norm / (norm + 1e-6)   # PyTorch's clip_grad_norm_
            if coef < 1.0:
                for p in params:
                    p.grad = p.grad * np.float32(coef)

    def _update(self, p, g, state, h):
        raise NotImplementedError

    # --- persistence -----------------------------------------------------------------------------
    def get_config(self):
        return dict(self.hyper, initial_lr=self.initial_lr, clip_grad_norm=self.clip_grad_norm,
                    clip_grad_value=self.clip_grad_value)

    def state_arrays(self):
        """[{slot: array}] per parameter, in parameter order ('step' as an int64 array)."""
        return [{k: (np.array(v, dtype=np.int64) if k == "step" else v) for k, v in s.items()}
                for s in self.state]

    def load_state_arrays(self, states):
        if len(states) != len(self.params):
            raise ValueError(f"{type(self).__name__}: state for {len(states)} parameters, "
                             f"optimizer has {len(self.params)}")
        new = []
        for p, s in zip(self.params, states):
            entry = {}
            for k, v in s.items():
                if k == "step":
                    entry[k] = int(v)
                else:
                    v = np.asarray(v, dtype=np.float32)
                    if v.shape != p.data.shape:
                        raise ValueError(f"{type(self).__name__}: state {k} has shape {v.shape}, "
                                         f"parameter has {p.data.shape}")
                    entry[k] = v.copy()
            new.append(entry)
        self.state = new

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyper.items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening and Nesterov momentum (PyTorch's)."""

    defaults = dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                    l1=0.0, l2=0.0)

    def __init__(self, params=None, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, l1=0.0, l2=0.0, clip_grad_norm=None, clip_grad_value=None):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov momentum requires momentum > 0 and dampening = 0")
        super().__init__(params, clip_grad_norm, clip_grad_value, lr=lr, momentum=momentum,
                         dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                         l1=l1, l2=l2)

    def _update(self, p, g, state, h):
        l1, l2 = self._penalties(p, h)
        buf, first = None, False
        if h["momentum"]:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.empty_like(p.data)
                first = True
        cconv.sgd_update(p.data, g, buf, lr=h["lr"], momentum=h["momentum"],
                         dampening=h["dampening"], weight_decay=h["weight_decay"],
                         nesterov=h["nesterov"], l1=l1, l2=l2, first_step=first)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's bias correction and epsilon placement; ``weight_decay``
    is added to the gradient (L2), as in PyTorch's Adam."""

    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, l1=0.0, l2=0.0)
    _decoupled = False

    def __init__(self, params=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 l1=0.0, l2=0.0, clip_grad_norm=None, clip_grad_value=None):
        super().__init__(params, clip_grad_norm, clip_grad_value, lr=lr,
                         betas=tuple(float(b) for b in betas), eps=eps,
                         weight_decay=weight_decay, l1=l1, l2=l2)

    def _update(self, p, g, state, h):
        l1, l2 = self._penalties(p, h)
        if "exp_avg" not in state:
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
        beta1, beta2 = h["betas"]
        cconv.adam_update(p.data, g, state["exp_avg"], state["exp_avg_sq"], step=state["step"],
                          lr=h["lr"], beta1=beta1, beta2=beta2, eps=h["eps"],
                          weight_decay=h["weight_decay"], decoupled=self._decoupled, l1=l1, l2=l2)

    def get_config(self):
        cfg = super().get_config()
        cfg["betas"] = list(cfg["betas"])
        return cfg


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), default 0.01 as PyTorch."""

    defaults = dict(Adam.defaults, weight_decay=1e-2)
    _decoupled = True

    def __init__(self, params=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 l1=0.0, l2=0.0, clip_grad_norm=None, clip_grad_value=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, l1=l1,
                         l2=l2, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value)


OPTIMIZERS = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}


def get(optimizer):
    """An optimizer from an instance or a name ('sgd', 'adam', 'adamw'; default settings)."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        for name, cls in OPTIMIZERS.items():
            if name.lower() == optimizer.lower():
                return cls()
    raise ValueError(f"unknown optimizer {optimizer!r}: use fastcnn.SGD(...), fastcnn.Adam(...), "
                     f"fastcnn.AdamW(...) or 'sgd' / 'adam' / 'adamw'")


def from_config(name, config):
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}")
    config = dict(config)
    initial_lr = config.pop("initial_lr", None)
    opt = OPTIMIZERS[name](**config)
    if initial_lr is not None:
        opt.initial_lr = float(initial_lr)
    return opt
