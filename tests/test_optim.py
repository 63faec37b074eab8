"""Compiled optimizer updates against the float64 reference and against torch.optim."""
import numpy as np
import pytest

import cconv
from fastcnn import reference as ref

from conftest import assert_close

SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    dict(lr=0.01, momentum=0.5, dampening=0.3, l1=1e-3, l2=1e-2),
]
ADAM_CONFIGS = [
    dict(lr=1e-3),
    dict(lr=3e-3, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=1e-2),
    dict(lr=3e-3, weight_decay=1e-2, decoupled=True),
    dict(lr=1e-3, l1=1e-4, l2=1e-3),
]
SIZES = [1, 15, 17, 1000, 70001]


@pytest.mark.parametrize("config", SGD_CONFIGS)
@pytest.mark.parametrize("size", SIZES)
def test_sgd_matches_reference_over_steps(isa, config, size, rng):
    p = rng.standard_normal(size).astype(np.float32)
    p64 = p.astype(np.float64)
    buf, buf64 = np.zeros_like(p), np.zeros_like(p64)
    for step in range(4):
        g = rng.standard_normal(size).astype(np.float32)
        cconv.sgd_update(p, g, buf, first_step=step == 0, **config)
        ref.sgd_update(p64, g.astype(np.float64), buf64, first_step=step == 0, **config)
    assert_close("sgd_update", p, p64, 1e-5)


@pytest.mark.parametrize("config", ADAM_CONFIGS)
@pytest.mark.parametrize("size", SIZES)
def test_adam_matches_reference_over_steps(isa, config, size, rng):
    p = rng.standard_normal(size).astype(np.float32)
    p64 = p.astype(np.float64)
    m, v = np.zeros_like(p), np.zeros_like(p)
    m64, v64 = np.zeros_like(p64), np.zeros_like(p64)
    for step in range(1, 5):
        g = rng.standard_normal(size).astype(np.float32)
        cconv.adam_update(p, g, m, v, step=step, **config)
        ref.adam_update(p64, g.astype(np.float64), m64, v64, step=step, **config)
    assert_close("adam_update", p, p64, 1e-5)


def test_updates_are_identical_for_1_and_2_threads(rng):
    p0 = rng.standard_normal(200001).astype(np.float32)
    g = rng.standard_normal(200001).astype(np.float32)
    results = []
    for threads in (1, 2):
        p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
        cconv.adam_update(p, g, m, v, step=1, lr=1e-3, n_threads=threads)
        buf = np.zeros_like(p0)
        cconv.sgd_update(p, g, buf, lr=0.1, momentum=0.9, first_step=True, n_threads=threads)
        results.append(p.tobytes() + buf.tobytes() + m.tobytes() + v.tobytes())
    assert results[0] == results[1]


def test_bad_arguments():
    p = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="sgd_update: param must be a writeable C-contiguous float32"):
        cconv.sgd_update(np.zeros(4), np.zeros(4), lr=0.1)
    with pytest.raises(ValueError, match="gradient has shape"):
        cconv.sgd_update(p, np.zeros(5), lr=0.1)
    with pytest.raises(ValueError, match="needs a momentum_buffer"):
        cconv.sgd_update(p, np.zeros(4), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="exp_avg has shape"):
        cconv.adam_update(p, np.zeros(4), np.zeros(3, np.float32), np.zeros(4, np.float32), step=1, lr=1e-3)
    with pytest.raises(ValueError, match="step counts from 1"):
        cconv.adam_update(p, np.zeros(4), np.zeros(4, np.float32), np.zeros(4, np.float32), step=0, lr=1e-3)
    view = np.zeros(8, np.float32)[::2]
    with pytest.raises(ValueError, match="in place"):
        cconv.sgd_update(view, np.zeros(4), lr=0.1)


@pytest.mark.parametrize("kind", ["sgd", "sgd_nesterov", "adam", "adamw"])
def test_matches_torch_optim_when_installed(kind, rng):
    torch = pytest.importorskip("torch")
    p0 = rng.standard_normal(1000).astype(np.float32)
    grads = [rng.standard_normal(1000).astype(np.float32) for _ in range(5)]
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    if kind == "sgd":
        opt, cfg = torch.optim.SGD([tp], lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3), \
            dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3)
    elif kind == "sgd_nesterov":
        opt, cfg = torch.optim.SGD([tp], lr=0.05, momentum=0.9, nesterov=True), \
            dict(lr=0.05, momentum=0.9, nesterov=True)
    elif kind == "adam":
        opt, cfg = torch.optim.Adam([tp], lr=1e-2, weight_decay=1e-2), dict(lr=1e-2, weight_decay=1e-2)
    else:
        opt, cfg = torch.optim.AdamW([tp], lr=1e-2, weight_decay=1e-1), \
            dict(lr=1e-2, weight_decay=1e-1, decoupled=True)
    p, a, b = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for step, g in enumerate(grads, start=1):
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
        if kind.startswith("sgd"):
            cconv.sgd_update(p, g, a, first_step=step == 1, **cfg)
        else:
            cconv.adam_update(p, g, a, b, step=step, **cfg)
    assert_close(f"{kind} vs torch", p, tp.detach().numpy().astype(np.float64), 1e-5)
