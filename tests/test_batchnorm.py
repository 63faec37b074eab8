"""Batch norm: every ISA against the float64 reference, the reference's backward against finite
differences, accuracy over a million rows, thread-count independence, bad input."""
import numpy as np
import pytest

import cconv
from conftest import assert_close
from fastcnn import reference as ref
from gradcheck import directional_check

# (N, C) and NHWC; channel counts below/at/above 8, 16 and 32 (the small-channel path); shapes
# that span several row chunks (16384 elements a chunk).
SHAPES = [(2, 3), (5, 1), (7, 16), (64, 10), (1, 5, 5, 15), (2, 7, 9, 16), (3, 4, 4, 33),
          (2, 3, 5, 8), (7, 1, 1, 3), (2, 2, 2, 100), (4, 9, 7, 64), (20, 2049), (3, 20, 20, 16),
          (8, 30, 30, 3), (2, 3, 3, 31), (1, 6, 6, 32), (5, 5, 5, 17)]


def params(rng, c):
    weight = rng.uniform(-2, 2, c).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    return weight, bias


def f64(*arrays):
    return [a.astype(np.float64) for a in arrays]


def test_forward_train_matches_reference(isa, rng):
    for shape in SHAPES:
        c = shape[-1]
        x = (rng.standard_normal(shape) * rng.uniform(0.1, 3, c) + rng.uniform(-2, 2, c))
        x = x.astype(np.float32)
        w, b = params(rng, c)
        y, mean, var = cconv.batch_norm_forward_train(x, w, b)
        assert y.dtype == mean.dtype == var.dtype == np.float32
        assert y.shape == shape and mean.shape == var.shape == (c,)
        yr, mr, vr = ref.batch_norm_forward_train(*f64(x, w, b))
        assert_close("batch_norm_forward_train", y, yr)
        assert_close("batch_norm_forward_train.mean", mean, mr)
        assert_close("batch_norm_forward_train.var", var, vr)


@pytest.mark.parametrize("activation", [None, "relu"])
def test_forward_with_residual_matches_reference(isa, rng, activation):
    """A residual block's join in the store: activation(bn(x) + residual), training and
    evaluation, bitwise the store of the batch norm followed by cconv.add (and the ReLU)."""
    for shape in SHAPES:
        c = shape[-1]
        x = (rng.standard_normal(shape) * rng.uniform(0.1, 3, c)).astype(np.float32)
        r = rng.standard_normal(shape).astype(np.float32)
        w, b = params(rng, c)
        y, mean, var = cconv.batch_norm_forward_train(x, w, b, activation=activation, residual=r)
        yr, _, _ = ref.batch_norm_forward_train(*f64(x, w, b))
        yr = yr + r
        assert_close("batch_norm_forward_train+residual", y,
                     ref.relu(yr) if activation else yr)
        plain = cconv.add(cconv.batch_norm_forward_train(x, w, b)[0], r, activation=activation)
        assert y.tobytes() == plain.tobytes()
        rm, rv = mean, var
        y = cconv.batch_norm_forward_eval(x, w, b, rm, rv, activation=activation, residual=r)
        yr = ref.batch_norm_forward_eval(*f64(x, w, b, rm, rv)) + r
        assert_close("batch_norm_forward_eval+residual", y, ref.relu(yr) if activation else yr)


@pytest.mark.parametrize("eps", [1e-5, 1e-3, 0.1])
def test_forward_eval_matches_reference(isa, rng, eps):
    for shape in SHAPES:
        c = shape[-1]
        x = rng.standard_normal(shape).astype(np.float32)
        w, b = params(rng, c)
        rm = rng.standard_normal(c).astype(np.float32)
        rv = rng.uniform(0, 3, c).astype(np.float32)
        rv[0] = 0.0
        y = cconv.batch_norm_forward_eval(x, w, b, rm, rv, eps=eps)
        assert_close("batch_norm_forward_eval", y,
                     ref.batch_norm_forward_eval(*f64(x, w, b, rm, rv), eps=eps))


@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_backward_matches_reference(isa, rng, eps):
    for shape in SHAPES:
        c = shape[-1]
        x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        w, b = params(rng, c)
        _, mean, var = cconv.batch_norm_forward_train(x, w, b, eps=eps)
        dx, dw, db = cconv.batch_norm_backward(dy, x, w, mean, var, eps=eps)
        assert dx.shape == shape and dw.shape == db.shape == (c,)
        dxr, dwr, dbr = ref.batch_norm_backward(*f64(dy, x, w, mean, var), eps=eps)
        assert_close("batch_norm_backward.dx", dx, dxr)
        assert_close("batch_norm_backward.dweight", dw, dwr)
        assert_close("batch_norm_backward.dbias", db, dbr)


def test_backward_in_float32_from_1024_rows(isa, rng):
    """dx runs in float32 from 1024 rows per channel on, in float64 below (where its terms can
    cancel): both against the reference, with and without the fused ReLU, the mean far from 0
    as well."""
    for shape in [(1023, 5), (1024, 5), (4, 16, 16, 40), (2, 16, 32, 3), (3, 2)]:
        c = shape[-1]
        for offset in (0.0, 300.0):
            x = (rng.standard_normal(shape) * 2 + offset).astype(np.float32)
            dy = rng.standard_normal(shape).astype(np.float32)
            w, b = params(rng, c)
            y, mean, var = cconv.batch_norm_forward_train(x, w, b, activation="relu")
            dx, dw, db = cconv.batch_norm_backward(dy, x, w, mean, var)
            dxr, dwr, dbr = ref.batch_norm_backward(*f64(dy, x, w, mean, var))
            assert_close("batch_norm_backward.dx", dx, dxr)
            assert_close("batch_norm_backward.dweight", dw, dwr)
            dx, _, _ = cconv.batch_norm_backward(dy, x, w, mean, var, y=y)
            dxr, _, _ = ref.batch_norm_backward(*f64(dy, x, w, mean, var), y=y.astype(np.float64))
            assert_close("batch_norm_backward+relu", dx, dxr)


@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_fused_relu_matches_reference(isa, rng, eps):
    """activation='relu' in the forward passes, y= in the backward: the same as batch norm and
    a separate ReLU (forward, and the backward through both), every ISA, 1 and 2 threads."""
    for shape in SHAPES:
        c = shape[-1]
        x = (rng.standard_normal(shape) * 2 + 0.3).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        w, b = params(rng, c)
        y, mean, var = cconv.batch_norm_forward_train(x, w, b, eps=eps, activation="relu")
        yr, _, _ = ref.batch_norm_forward_train(*f64(x, w, b), eps=eps, activation="relu")
        assert_close("batch_norm_forward_train+relu", y, yr)
        assert (y >= 0).all()
        plain, _, _ = cconv.batch_norm_forward_train(x, w, b, eps=eps)
        assert np.array_equal(y, np.maximum(plain, 0))  # the same pre-activation, clamped
        outs = [cconv.batch_norm_backward(dy, x, w, mean, var, eps=eps, y=y, n_threads=t)
                for t in (1, 2)]
        for got, want in zip(outs[0], ref.batch_norm_backward(*f64(dy, x, w, mean, var),
                                                              eps=eps, y=yr)):
            assert_close("batch_norm_backward+relu", got, want)
        for a, b2 in zip(*outs):
            assert np.array_equal(a, b2)
        rm = rng.standard_normal(c).astype(np.float32)
        rv = rng.uniform(0.1, 3, c).astype(np.float32)
        assert_close("batch_norm_forward_eval+relu",
                     cconv.batch_norm_forward_eval(x, w, b, rm, rv, eps=eps, activation="relu"),
                     ref.batch_norm_forward_eval(*f64(x, w, b, rm, rv), eps=eps,
                                                 activation="relu"))


def test_reference_backward_matches_finite_differences(rng):
    for shape in [(6, 3), (2, 3, 3, 5), (1, 4, 4, 17), (9, 1)]:
        c = shape[-1]
        x = rng.standard_normal(shape) * 2 + 0.5
        w, b = rng.uniform(-2, 2, c), rng.standard_normal(c)
        dy = rng.standard_normal(shape)
        for eps in (1e-5, 0.5):
            _, mean, var = ref.batch_norm_forward_train(x, w, b, eps)
            grads = ref.batch_norm_backward(dy, x, w, mean, var, eps)

            def forward(x_, w_, b_, eps=eps):
                return ref.batch_norm_forward_train(x_, w_, b_, eps)[0]

            directional_check(forward, [x, w, b], list(grads), dy, rng)


def test_statistics_of_a_million_rows_stay_accurate(isa):
    """Mean far from zero next to the spread: no E[x^2] - E[x]^2 cancellation, no float32 sums."""
    rng = np.random.default_rng(7)
    x = (1000 + rng.standard_normal((1_000_000, 2)) * [1.0, 0.01]).astype(np.float32)
    w, b = np.ones(2, np.float32), np.zeros(2, np.float32)
    y, mean, var = cconv.batch_norm_forward_train(x, w, b, n_threads=2)
    x64 = x.astype(np.float64)
    mean64 = x64.mean(axis=0)
    var64 = ((x64 - mean64) ** 2).mean(axis=0)
    np.testing.assert_allclose(mean, mean64, rtol=1e-7)
    np.testing.assert_allclose(var, var64, rtol=1e-6)
    assert_close("batch_norm_forward_train", y, (x64 - mean64) / np.sqrt(var64 + 1e-5))


def test_offset_inputs_normalise_accurately(isa, rng):
    """x - mean stays exact even when |mean| is thousands of standard deviations."""
    for shape in [(4, 5, 5, 16), (300, 3)]:
        c = shape[-1]
        x = (5e3 + rng.standard_normal(shape)).astype(np.float32)
        w, b = params(rng, c)
        y, mean, var = cconv.batch_norm_forward_train(x, w, b)
        yr, mr, vr = ref.batch_norm_forward_train(*f64(x, w, b))
        assert_close("batch_norm_forward_train", y, yr)
        assert_close("batch_norm_forward_train.var", var, vr, tol=1e-6)


def test_constant_channel_gives_bias(isa):
    x = np.full((4, 3, 3, 2), 7.5, dtype=np.float32)
    y, mean, var = cconv.batch_norm_forward_train(x, np.float32([2, 3]), np.float32([0.5, -1]))
    assert (var == 0).all() and (mean == 7.5).all()
    assert np.array_equal(y[..., 0], np.full((4, 3, 3), 0.5, np.float32))
    assert np.array_equal(y[..., 1], np.full((4, 3, 3), -1, np.float32))


def test_one_and_two_threads_are_bitwise_equal(isa, rng):
    for shape in [(8, 32, 32, 16), (4, 64, 64, 3), (64, 1000), (3, 9, 9, 40)]:
        c = shape[-1]
        x = (rng.standard_normal(shape) + 3).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        w, b = params(rng, c)
        rv = rng.uniform(0.5, 2, c).astype(np.float32)
        runs = []
        for t in (1, 2, 3):
            y, mean, var = cconv.batch_norm_forward_train(x, w, b, n_threads=t)
            ye = cconv.batch_norm_forward_eval(x, w, b, mean, rv, n_threads=t)
            grads = cconv.batch_norm_backward(dy, x, w, mean, var, n_threads=t)
            runs.append([a.tobytes() for a in (y, mean, var, ye) + grads])
        assert runs[0] == runs[1] == runs[2], shape


def test_inputs_are_converted_not_rejected(rng):
    x = rng.standard_normal((6, 4, 4, 10))[..., ::2]  # float64, not contiguous
    w, b = params(rng, 5)
    y, mean, var = cconv.batch_norm_forward_train(x, w.astype(np.float64), list(b))
    yr = ref.batch_norm_forward_train(x, *f64(w, b))[0]
    assert_close("batch_norm_forward_train", y, yr)
    ro = x.astype(np.float32)
    ro.flags.writeable = False
    cconv.batch_norm_backward(ro, ro, w, mean, var)
    cconv.batch_norm_forward_eval(ro, w, b, mean, var)


def test_bad_input_raises_value_error_naming_the_op():
    x = np.ones((4, 3), dtype=np.float32)
    w, b = np.ones(3, np.float32), np.zeros(3, np.float32)
    m, v = np.zeros(3, np.float32), np.ones(3, np.float32)
    train, evaluate, back = (cconv.batch_norm_forward_train, cconv.batch_norm_forward_eval,
                             cconv.batch_norm_backward)
    cases = [
        ("batch_norm_forward_train", lambda: train(np.ones(5), w, b)),
        ("batch_norm_forward_train", lambda: train(np.ones((0, 3)), w, b)),
        ("batch_norm_forward_train", lambda: train(np.ones((1, 1, 1, 3)), w, b)),
        ("batch_norm_forward_train", lambda: train(x, np.ones(4), b)),
        ("batch_norm_forward_train", lambda: train(x, w, np.ones((3, 1)))),
        ("batch_norm_forward_train", lambda: train(x, w, np.float32([0, np.nan, 0]))),
        ("batch_norm_forward_train", lambda: train(x, np.float32([1, np.inf, 1]), b)),
        ("batch_norm_forward_train", lambda: train(x, w, b, eps=0.0)),
        ("batch_norm_forward_train", lambda: train(x, w, b, eps=-1e-5)),
        ("batch_norm_forward_train", lambda: train(x, w, b, eps=float("nan"))),
        ("batch_norm_forward_train", lambda: train(x, w, b, eps="small")),
        ("batch_norm_forward_eval", lambda: evaluate(x, w, b, m, np.float32([1, -1, 1]))),
        ("batch_norm_forward_eval", lambda: evaluate(x, w, b, np.ones(2), v)),
        ("batch_norm_forward_eval", lambda: evaluate(x, w, b, np.float32([0, np.nan, 0]), v)),
        ("batch_norm_forward_eval", lambda: evaluate(np.ones(3), w, b, m, v)),
        ("batch_norm_backward", lambda: back(np.ones((4, 4)), x, w, m, v)),
        ("batch_norm_backward", lambda: back(x, x, w, m, np.float32([1, -1, 1]))),
        ("batch_norm_backward", lambda: back(x, x, w, np.ones(4), v)),
        ("batch_norm_backward", lambda: back(x, x, w, m, v, eps=0)),
        ("batch_norm_backward", lambda: back(x, x, w, m, v, y=np.ones((4, 4)))),
        ("batch_norm_forward_train", lambda: train(x, w, b, activation="gelu")),
        ("batch_norm_forward_eval", lambda: evaluate(x, w, b, m, v, activation="tanh")),
        ("batch_norm_forward_train", lambda: train(x, w, b, residual=np.ones((4, 4)))),
        ("batch_norm_forward_train", lambda: train(x, w, b, residual=np.ones(3))),
        ("batch_norm_forward_eval", lambda: evaluate(x, w, b, m, v, residual=x.T)),
    ]
    for op, call in cases:
        with pytest.raises(ValueError, match=f"^{op}:"):
            call()


def test_matches_torch(rng):
    torch = pytest.importorskip("torch")
    shape = (4, 6, 5, 12)
    c = shape[-1]
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    w, b = params(rng, c)
    tx = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    tw, tb = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    rm, rv = torch.zeros(c), torch.ones(c)
    ty = torch.nn.functional.batch_norm(tx, rm, rv, tw, tb, training=True, momentum=1.0, eps=1e-5)
    gx, gw, gb = torch.autograd.grad(ty, (tx, tw, tb), torch.tensor(dy.transpose(0, 3, 1, 2).copy()))
    y, mean, var = cconv.batch_norm_forward_train(x, w, b)
    np.testing.assert_allclose(y, ty.detach().permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mean, rm.numpy(), rtol=1e-5, atol=1e-6)
    rows = x.size // c  # torch keeps the unbiased variance as its running one
    np.testing.assert_allclose(var * rows / (rows - 1), rv.numpy(), rtol=1e-5)
    dx, dw, db = cconv.batch_norm_backward(dy, x, w, mean, var)
    np.testing.assert_allclose(dx, gx.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dw, gw.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(db, gb.numpy(), rtol=1e-4, atol=1e-4)
    ye = cconv.batch_norm_forward_eval(x, w, b, mean, var)
    te = torch.nn.functional.batch_norm(torch.tensor(x).permute(0, 3, 1, 2), torch.tensor(mean),
                                        torch.tensor(var), torch.tensor(w), torch.tensor(b),
                                        training=False, eps=1e-5)
    np.testing.assert_allclose(ye, te.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-5)
