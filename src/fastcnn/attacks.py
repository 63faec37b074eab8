"""Adversarial examples, and what training and evaluation do with them.

``fc.attacks.fgsm(model, x, y, eps)`` and ``fc.attacks.pgd(model, x, y, eps, ...)`` return the
perturbed images. The attack objects :class:`FGSM` and :class:`PGD` hold their settings and are
what ``model.fit(..., adversarial=PGD(eps=0.1))`` (adversarial training, Madry et al.: every
batch is replaced by its attacked copy before the step) and ``model.evaluate(...,
attack=FGSM(0.1))`` (robust accuracy) take.

The loss attacked is the cross-entropy of the model's output: of its logits, or of its
probabilities when the model ends in a Softmax. Gradients come from the model's own backward
(:mod:`fastcnn.backprop`) in evaluation mode: batch-norm running statistics, no dropout, the
parameters and their gradients untouched, also during ``fit``. Images are clipped to ``clip``
(default (0, 1); None for inputs that are normalised and not bounded).

PGD's random start draws from fastcnn's generator (:func:`fastcnn.manual_seed`), which ``fit``
checkpoints: an adversarial training run resumes bit for bit. ``seed=`` gives an attack its own
generator instead.
"""
import numpy as np

from . import backprop
from .losses import CrossEntropyLoss
from .nn.base import rng as global_rng


def _loss_grad(probabilities, y):
    """``output_grad`` of the summed cross-entropy of each sample's label."""
    def grad(scores):
        labels = backprop.targets_of(scores, y, "attack")
        rows = np.arange(len(scores))
        if probabilities:
            g = np.zeros_like(scores)
            g[rows, labels] = -1.0 / np.maximum(scores[rows, labels], 1e-12)
            return g
        loss = CrossEntropyLoss()   # its backward is of the batch's mean: undo the 1/N
        loss.forward(scores, labels)
        return loss.backward() * np.float32(len(scores))
    return grad


def _probabilities(model):
    check = getattr(model, "outputs_are_probabilities", None)
    return bool(check and check(0))


def _check(eps, clip, what):
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"{what}: eps must be a finite number >= 0, got {eps!r}")
    if clip is not None:
        lo, hi = clip
        if not lo < hi:
            raise ValueError(f"{what}: clip must be (low, high) with low < high, or None; got "
                             f"{clip!r}")


def _clip(x, clip):
    return x if clip is None else np.clip(x, clip[0], clip[1]).astype(np.float32)


def loss_gradient(model, x, y, training=False):
    """d(cross-entropy of each sample's label)/d(input): shaped like ``x``."""
    x = backprop.single_input(model, x, "attack")
    _, dx = backprop.gradient(model, x, _loss_grad(_probabilities(model), np.asarray(y)),
                              training=training, what="attack")
    return dx


class FGSM:
    """The fast gradient sign method (Goodfellow et al.): x + eps * sign(d loss / dx)."""

    def __init__(self, eps, clip=(0.0, 1.0)):
        _check(eps, clip, "FGSM")
        self.eps, self.clip = float(eps), clip

    def __call__(self, model, x, y):
        x = backprop.single_input(model, x, "FGSM")
        if self.eps == 0:
            return _clip(x, self.clip)
        g = loss_gradient(model, x, y)
        return _clip(x + np.float32(self.eps) * np.sign(g).astype(np.float32), self.clip)

    def __repr__(self):
        return f"FGSM(eps={self.eps}, clip={self.clip})"


def _l2_norms(a):
    return np.sqrt(np.sum(a.reshape(len(a), -1).astype(np.float64) ** 2, axis=1)).reshape(
        (len(a),) + (1,) * (a.ndim - 1))


class PGD:
    """Projected gradient descent (Madry et al.): ``steps`` steps of ``step_size`` (default
    2.5 * eps / steps) up the loss, each projected back onto the ``norm`` ball of radius
    ``eps`` around the image ('inf': the sign of the gradient, clipped per pixel; 2: the
    gradient normalised per image, the perturbation rescaled) and onto ``clip``; from a
    uniform random start in the ball with ``random_start``."""

    def __init__(self, eps, steps=10, step_size=None, norm="inf", random_start=True,
                 clip=(0.0, 1.0), seed=None):
        _check(eps, clip, "PGD")
        if norm not in ("inf", 2, "2", "l2", np.inf):
            raise ValueError(f"PGD: norm must be 'inf' or 2, got {norm!r}")
        if int(steps) < 1:
            raise ValueError(f"PGD: steps must be >= 1, got {steps!r}")
        self.eps, self.steps = float(eps), int(steps)
        self.step_size = 2.5 * self.eps / self.steps if step_size is None else float(step_size)
        self.norm = "inf" if norm in ("inf", np.inf) else 2
        self.random_start, self.clip = bool(random_start), clip
        self._rng = None if seed is None else np.random.default_rng(seed)

    def _start(self, x):
        gen = self._rng if self._rng is not None else global_rng()
        if not self.random_start or self.eps == 0:
            return np.zeros_like(x)
        if self.norm == "inf":
            return gen.uniform(-self.eps, self.eps, x.shape).astype(np.float32)
        # uniform in the L2 ball: a Gaussian direction, a radius eps * U^(1/d)
        d = gen.standard_normal(x.shape)
        radius = self.eps * gen.uniform(0, 1, (len(x),) + (1,) * (x.ndim - 1)) ** (
            1.0 / x[0].size)
        return (d / np.maximum(_l2_norms(d), 1e-12) * radius).astype(np.float32)

    def _project(self, delta):
        if self.norm == "inf":
            return np.clip(delta, -self.eps, self.eps)
        return delta * np.minimum(1.0, self.eps / np.maximum(_l2_norms(delta), 1e-12))

    def __call__(self, model, x, y):
        x = backprop.single_input(model, x, "PGD")
        adv = _clip(x + self._start(x), self.clip)
        for _ in range(self.steps):
            g = loss_gradient(model, adv, y)
            if self.norm == "inf":
                step = np.sign(g)
            else:
                step = g / np.maximum(_l2_norms(g), 1e-12)
            delta = self._project(adv + np.float32(self.step_size) * step - x)
            adv = _clip((x + delta).astype(np.float32), self.clip)
        return adv

    def __repr__(self):
        return (f"PGD(eps={self.eps}, steps={self.steps}, step_size={self.step_size:g}, "
                f"norm={self.norm!r}, random_start={self.random_start}, clip={self.clip})")


def fgsm(model, x, y, eps, clip=(0.0, 1.0)):
    """The FGSM images of ``x`` (labels ``y``) at ``eps``."""
    return FGSM(eps, clip)(model, x, y)


def pgd(model, x, y, eps, steps=10, step_size=None, norm="inf", random_start=True,
        clip=(0.0, 1.0), seed=None):
    """The PGD images of ``x`` (labels ``y``): see :class:`PGD`."""
    return PGD(eps, steps, step_size, norm, random_start, clip, seed)(model, x, y)


__all__ = ["FGSM", "PGD", "fgsm", "pgd", "loss_gradient"]
