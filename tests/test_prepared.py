"""Prepared execution: cconv.Conv2dPlan, the eval-mode steps of Sequential, the fused
activations (add, linear) and the small-op thread rule give the results of the plain ops."""
import numpy as np
import pytest

import cconv
import fastcnn as fc

from conftest import assert_close
from test_conv import BAD, CASE_IDS, CASES, _data, _geom


def _f32(*arrays):
    return [np.asarray(a, np.float32) for a in arrays]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_plan_gives_the_bits_of_conv2d(isa, case):
    x, w, b, _ = _f32(*_data(case))
    s, p, d, g = _geom(case)
    for bias, activation in ((b, None), (None, "relu")):
        plan = cconv.Conv2dPlan(w, bias, s, p, d, g, activation=activation)
        want = cconv.conv2d(x, w, bias, s, p, d, g, activation=activation)
        for threads in (1, 2, 1):   # the second and third calls run the prepared weights
            assert plan(x, n_threads=threads).tobytes() == want.tobytes()


@pytest.mark.parametrize("algo", ["direct", "winograd", "auto"])
def test_plan_follows_new_input_shapes_and_isas(algo, rng):
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    plan = cconv.Conv2dPlan(w, b, padding=1, algo=algo)
    previous = cconv.get_isa()
    try:
        for isa in cconv.available_isas():
            cconv.set_isa(isa)
            for shape in [(1, 9, 9, 16), (3, 9, 9, 16), (2, 2, 17, 16), (1, 9, 9, 16)]:
                x = rng.standard_normal(shape).astype(np.float32)
                want = cconv.conv2d(x, w, b, padding=1, algo=algo)
                assert plan(x).tobytes() == want.tobytes(), (isa, shape)
                assert plan.algorithm(shape) == cconv.conv2d_algorithm(shape, w.shape, padding=1,
                                                                       algo=algo)
    finally:
        cconv.set_isa(previous)
    for n in range(1, 12):   # many shapes: the plan keeps a few, and stays right
        x = rng.standard_normal((n, 5, 4, 16)).astype(np.float32)
        assert plan(x).tobytes() == cconv.conv2d(x, w, b, padding=1, algo=algo).tobytes()


def test_plan_keeps_its_own_read_only_weights(rng):
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    x = rng.standard_normal((2, 6, 6, 4)).astype(np.float32)
    plan = cconv.Conv2dPlan(w, b)
    want = plan(x)
    w *= 2   # the caller's arrays change: the plan does not
    b += 1
    assert plan(x).tobytes() == want.tobytes()
    assert not plan.weight.flags.writeable and not plan.bias.flags.writeable
    with pytest.raises(ValueError):
        plan.weight[0, 0, 0, 0] = 1
    # other dtypes and layouts are converted, as by conv2d
    x64 = np.asfortranarray(x.astype(np.float64))
    assert plan(x64).tobytes() == want.tobytes()
    assert "Conv2dPlan" in repr(plan)


@pytest.mark.parametrize("case,match", BAD, ids=[m for _, m in BAD])
def test_plan_raises_the_errors_of_conv2d(case, match):
    kwargs = {k: v for k, v in case.items() if k not in ("x", "w", "b")}
    b = np.zeros(case["b"], np.float32) if "b" in case else None
    with pytest.raises(ValueError, match=match) as info:
        plan = cconv.Conv2dPlan(np.zeros(case["w"], np.float32), b, **kwargs)
        plan(np.zeros(case["x"], np.float32))
    assert "conv2d" in str(info.value)


def test_plan_checks_every_new_shape_and_refuses_non_finite_weights():
    plan = cconv.Conv2dPlan(np.ones((4, 3, 3, 3), np.float32))
    plan(np.ones((1, 5, 5, 3), np.float32))
    for shape, match in [((1, 5, 5, 4), "channels"), ((0, 5, 5, 3), "empty"),
                         ((1, 2, 5, 3), "larger than the padded input"), ((5, 5, 3), "NHWC")]:
        with pytest.raises(ValueError, match=match):
            plan(np.ones(shape, np.float32))
    for bad in (np.nan, np.inf):
        w = np.ones((4, 3, 3, 3), np.float32)
        w[2, 1, 0, 0] = bad
        with pytest.raises(ValueError, match="conv2d: weight contains NaN or Inf"):
            cconv.Conv2dPlan(w)
        with pytest.raises(ValueError, match="conv2d: bias contains NaN or Inf"):
            cconv.Conv2dPlan(np.ones((4, 3, 3, 3)), np.array([0, bad, 0, 0]))


def test_plan_obeys_the_memory_limit():
    plan = cconv.Conv2dPlan(np.ones((16, 16, 3, 3), np.float32), padding=1)
    x = np.ones((4, 32, 32, 16), np.float32)
    plan(x)
    previous = cconv.set_memory_limit("64K")
    try:
        assert cconv.get_memory_limit() == 64 * 1024
        with pytest.raises(ValueError, match="conv2d: .*memory limit"):
            plan(x)
        with pytest.raises(ValueError, match="conv2d: .*memory limit"):
            cconv.conv2d(x, plan.weight, padding=1)
    finally:
        cconv.set_memory_limit(previous)
    plan(x)


def test_memory_limit_default_is_read_again_when_restored(monkeypatch):
    previous = cconv.set_memory_limit(None)
    try:
        monkeypatch.setenv("FASTCNN_MAX_WORKSPACE", "3M")
        assert cconv.get_memory_limit() != 3 * 2**20   # the default was read before
        cconv.set_memory_limit(None)                   # ... and is read again now
        assert cconv.get_memory_limit() == 3 * 2**20
        monkeypatch.delenv("FASTCNN_MAX_WORKSPACE")
        cconv.set_memory_limit(None)
        assert cconv.get_memory_limit() > 3 * 2**20
    finally:
        cconv.set_memory_limit(previous)


def test_add_and_linear_fuse_relu(rng):
    a = rng.standard_normal((3, 50, 70, 9)).astype(np.float32)   # several chunks
    b = rng.standard_normal(a.shape).astype(np.float32)
    for threads in (1, 2):
        y = cconv.add(a, b, activation="relu", n_threads=threads)
        assert y.tobytes() == cconv.relu(cconv.add(a, b)).tobytes()
    with pytest.raises(ValueError, match="add: activation"):
        cconv.add(a, b, activation="tanh")
    x = rng.standard_normal((5, 7)).astype(np.float32)
    w = rng.standard_normal((4, 7)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    assert (cconv.linear(x, w, bias, activation="relu").tobytes()
            == cconv.relu(cconv.linear(x, w, bias)).tobytes())


def test_small_ops_run_on_fewer_threads_with_the_same_bits(rng):
    x = rng.standard_normal((2, 12, 12, 16)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    every = cconv.conv2d(x, w, padding=1, n_threads=2)   # the tests run with the rule off
    previous = cconv.min_parallel_work(None)
    assert previous == 0
    try:
        cconv.min_parallel_work(4e6)
        assert cconv.conv2d(x, w, padding=1, n_threads=2).tobytes() == every.tobytes()
        for bad in (-1, "many", True, float("nan")):
            with pytest.raises(ValueError, match="min_parallel_work"):
                cconv.min_parallel_work(bad)
    finally:
        cconv.min_parallel_work(previous)


# --- Sequential in eval mode ---------------------------------------------------------------------
def _resnet_like():
    fc.manual_seed(5)
    block = fc.Residual(fc.Sequential(fc.Conv2d(8, 8, 3, padding=1, bias=False),
                                      fc.BatchNorm2d(8), fc.ReLU(),
                                      fc.Conv2d(8, 8, 3, padding=1)),
                        fc.Sequential(fc.Conv2d(8, 8, 1), fc.BatchNorm2d(8)))
    model = fc.Sequential(fc.Conv2d(3, 8, 3, padding=1), fc.BatchNorm2d(8), fc.ReLU(),
                          block, fc.ReLU(), fc.Residual(fc.Conv2d(8, 8, 3, padding=1)),
                          fc.MaxPool2d(2), fc.Flatten(), fc.Linear(8 * 5 * 5, 12), fc.ReLU(),
                          fc.Linear(12, 4))
    model.compile(optimizer=fc.SGD(lr=0.05, momentum=0.9), loss=fc.CrossEntropyLoss())
    return model


def _layer_by_layer(layer, x):
    """The model run one layer at a time, in eval mode, nothing folded or fused."""
    if isinstance(layer, fc.Sequential):
        for inner in layer:
            x = _layer_by_layer(inner, x)
        return x
    if isinstance(layer, fc.Residual):
        s = x if layer.shortcut is None else _layer_by_layer(layer.shortcut, x)
        return _layer_by_layer(layer.body, x) + s
    return layer.forward(x)


def test_eval_steps_match_the_layers_and_follow_parameter_changes(rng):
    model = _resnet_like()
    x = rng.standard_normal((6, 10, 10, 3)).astype(np.float32)
    y = rng.integers(0, 4, 6)
    for _ in range(2):
        model.train_step(x, y)
    model.eval()
    for batch in (6, 1, 6):   # new input shapes
        assert_close("eval steps vs layers", model(x[:batch]),
                     _layer_by_layer(model, x[:batch]).astype(np.float64), 1e-5)
    # an optimizer step in eval mode updates the weights in place: the steps follow
    out = model(x)
    for layer in model.layers[-3:]:   # Linear, ReLU, Linear: no batch norm, backward works
        layer.train(False)
    g = np.ones_like(out)
    for layer in reversed(model.layers[-3:]):
        g = layer.backward(g)
    model.optimizer.step()
    assert_close("eval steps vs layers", model(x), _layer_by_layer(model, x).astype(np.float64),
                 1e-5)
    # load_state_dict replaces the arrays: the steps follow
    state = model.state_dict()
    state["5.body.weight"] = np.ascontiguousarray(state["5.body.weight"][::-1])
    state["3.body.1.running_var"] = state["3.body.1.running_var"] * 3
    model.load_state_dict(state)
    assert_close("eval steps vs layers", model(x), _layer_by_layer(model, x).astype(np.float64),
                 1e-5)
    # layers appended: the program is made again
    model.append(fc.Softmax())
    out = model(x)
    assert np.allclose(out.sum(axis=1), 1, atol=1e-5)


def test_eval_mode_errors_name_the_layer():
    model = _resnet_like()
    model.eval()
    model(np.zeros((2, 10, 10, 3), np.float32))
    with pytest.raises(ValueError, match=r"Sequential layer 0 \(Conv2d\): Conv2d: expected input"):
        model(np.zeros((2, 10, 10, 4), np.float32))
    with pytest.raises(ValueError, match=r"Sequential layer 8 \(Linear\): Linear: expected input"):
        model(np.zeros((2, 12, 12, 3), np.float32))


def test_eval_backward_of_an_unfolded_model_still_works(rng):
    """Without batch norm, eval mode folds nothing: backward after an eval forward works."""
    fc.manual_seed(1)
    model = fc.models.lenet5()
    x = rng.standard_normal((3, 28, 28, 1)).astype(np.float32)
    model.eval()
    out = model(x)
    dx_eval = model.backward(np.ones_like(out))
    grads_eval = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    model.train()
    out_train = model(x)
    dx_train = model.backward(np.ones_like(out_train))
    assert_close("eval steps vs layers", out, out_train.astype(np.float64), 1e-6)
    assert_close("eval steps vs layers", dx_eval, dx_train.astype(np.float64), 1e-6)
    for a, b in zip(grads_eval, model.parameters()):
        assert_close("eval steps vs layers", a, b.grad.astype(np.float64), 1e-6)


def test_default_small_op_threshold_follows_the_runtime():
    """4 MFLOP a thread where OpenMP threads soon sleep while they wait (cconv's short spin),
    1 MFLOP where they spin without bound; measured at import."""
    import os
    import subprocess
    import sys
    code = ("import cconv; from cconv._runtime import _region_cost; "
            "print(cconv.min_parallel_work(), _region_cost())")
    for env in ({}, {"OMP_NUM_THREADS": "1"}):   # cconv as this process imports it
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env=dict(os.environ, **env)).stdout
        work, cost = map(float, out.split())
        assert work in (1e6, 4e6)
        if env:   # one thread: nothing to wake
            assert work == 4e6 and cost == 0
        else:
            assert cost > 0
