"""Finite-difference checks of backward functions, in float64.

A directional check: for a random direction v, (f(x + eps v) - f(x - eps v)) / 2 eps, contracted
with the upstream gradient dy, must equal <grad_x, v>. One forward pair per input checks the whole
gradient at once, so it is cheap enough to run on every shape of a sweep.
"""
import numpy as np


def directional_check(forward, inputs, grads, dy, rng, eps=1e-6, tol=1e-6):
    """``forward(*inputs) -> y``; ``grads[i]`` is the claimed dL/d inputs[i] for L = <y, dy>.

    Checks every input whose grad is not None; returns the worst relative mismatch.
    """
    worst = 0.0
    for i, grad in enumerate(grads):
        if grad is None:
            continue
        v = rng.standard_normal(inputs[i].shape)
        plus = list(inputs)
        minus = list(inputs)
        plus[i] = inputs[i] + eps * v
        minus[i] = inputs[i] - eps * v
        numeric = np.sum((forward(*plus) - forward(*minus)) * dy) / (2 * eps)
        analytic = float(np.sum(grad * v))
        scale = max(abs(numeric), abs(analytic), 1e-12)
        mismatch = abs(numeric - analytic) / scale
        worst = max(worst, mismatch)
        assert mismatch <= tol, (f"input {i}: finite difference {numeric:.9g} != "
                                 f"analytic {analytic:.9g} (relative {mismatch:.2g})")
    return worst
