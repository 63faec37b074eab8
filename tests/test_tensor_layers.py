"""The layers over tensors of any rank (fastcnn/nn/tensor.py): forward against NumPy written
out by hand, backward against finite differences, on odd shapes, batch 1 and broadcasting."""
import numpy as np
import pytest

import fastcnn as fc
from gradcheck import directional_check


def _check_backward(layer, xs, rng, several=False, params=()):
    """Finite differences of <layer(x), dy> in float64 around float32 inputs (eps 1e-3: the
    layers compute in float32), for the inputs and for ``params``."""
    y = layer.forward(xs if several else xs[0])
    dy = rng.standard_normal(y.shape).astype(np.float32)
    for p in params:
        p.grad = None
    grads = layer.backward(dy)
    grads = list(grads) if several else [grads]

    def f(*values):
        out = layer.forward(list(values) if several else values[0])
        return out.astype(np.float64)

    directional_check(f, [x.astype(np.float64) for x in xs], grads, dy, rng, eps=1e-3, tol=2e-3)
    for p in params:
        analytic = p.grad.copy()
        original = p.data.copy()

        def g(value, p=p, original=original):
            p.data = value.astype(np.float32)
            out = layer.forward(xs if several else xs[0]).astype(np.float64)
            p.data = original
            return out

        directional_check(g, [original.astype(np.float64)], [analytic], dy, rng, eps=1e-3,
                          tol=2e-3)


def _away_from_zero(a, margin=0.05):
    return np.where(np.abs(a) < margin, margin * np.sign(a) + (a == 0) * margin, a)


@pytest.mark.parametrize("shape,dims", [((2, 3, 4, 5), (3, 1, 2)), ((1, 7, 9), (2, 1)),
                                        ((3, 2, 3, 4, 5), (4, 2, 1, 3))])
def test_permute_and_reshape(shape, dims, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    p = fc.Permute(dims)
    np.testing.assert_array_equal(p.forward(x), x.transpose((0,) + dims))
    assert p.output_shape(shape[1:]) == x.transpose((0,) + dims).shape[1:]
    _check_backward(p, [x], rng)
    r = fc.Reshape((-1, shape[-1]))
    np.testing.assert_array_equal(r.forward(x), x.reshape(shape[0], -1, shape[-1]))
    _check_backward(r, [x], rng)
    with pytest.raises(ValueError, match="permutation"):
        fc.Permute((0, 1))
    with pytest.raises(ValueError, match="cannot reshape"):
        fc.Reshape((7, 7, 7)).output_shape(shape[1:])


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("a_shape,b_shape", [((3, 4, 5), (3, 4, 5)), ((2, 3, 5), (1, 1, 5)),
                                             ((1, 6, 7, 9), (1, 6, 1, 1)), ((4, 17), (4, 1))])
def test_arithmetic_broadcasts_as_numpy(op, a_shape, b_shape, rng):
    a = rng.standard_normal(a_shape).astype(np.float32)
    b = (rng.uniform(0.5, 2, b_shape) * rng.choice([-1, 1], b_shape)).astype(np.float32)
    expected = {"add": a + b, "sub": a - b, "mul": a * b, "div": a / b}[op]
    layer = fc.Arithmetic(op)
    np.testing.assert_allclose(layer.forward([a, b]), expected, rtol=1e-6)
    _check_backward(layer, [a, b], rng, several=True)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("a_shape,b_shape", [((3, 4, 5), (3, 5)), ((2, 6), (2, 4, 1, 6)),
                                             ((1, 3), (1, 2, 3))])
def test_samples_of_different_ranks_broadcast_by_their_trailing_axes(op, a_shape, b_shape, rng):
    """Shapes are (batch, *sample): the batch axes meet, the samples align at the right."""
    a = rng.standard_normal(a_shape).astype(np.float32)
    b = (rng.uniform(0.5, 2, b_shape) * rng.choice([-1, 1], b_shape)).astype(np.float32)
    rank = max(a.ndim, b.ndim)
    a_, b_ = (x.reshape(x.shape[:1] + (1,) * (rank - x.ndim) + x.shape[1:]) for x in (a, b))
    expected = {"add": a_ + b_, "sub": a_ - b_, "mul": a_ * b_, "div": a_ / b_}[op]
    layer = fc.Arithmetic(op)
    assert layer.output_shape([a_shape[1:], b_shape[1:]]) == expected.shape[1:]
    np.testing.assert_allclose(layer.forward([a, b]), expected, rtol=1e-6)
    grads = layer.backward(np.ones_like(expected))
    assert [g.shape for g in grads] == [a_shape, b_shape]
    _check_backward(layer, [a, b], rng, several=True)


@pytest.mark.parametrize("op,reverse", [(op, r) for op in ("add", "sub", "mul", "div")
                                        for r in (False, True)] + [("prelu", False)])
@pytest.mark.parametrize("x_shape,c_shape", [((2, 5, 6, 3), (1, 1, 1, 3)), ((1, 9), (9,)),
                                             ((3, 4, 5), (3, 4, 5)), ((2, 3, 3), ())])
def test_constant_arithmetic(op, reverse, x_shape, c_shape, rng):
    x = _away_from_zero(rng.standard_normal(x_shape)).astype(np.float32)
    c = (rng.uniform(0.5, 2, c_shape) * rng.choice([-1, 1], c_shape)).astype(np.float32)
    layer = fc.ConstantArithmetic(op, c.shape, reverse=reverse)
    layer.value.data = c
    a, b = (c, x) if reverse else (x, c)
    expected = {"add": a + b, "sub": a - b, "mul": a * b, "div": a / b,
                "prelu": np.where(x > 0, x, c * x)}[op]
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-6)
    if op == "div" and reverse:
        x = np.where(np.abs(x) < 0.5, 0.5, x).astype(np.float32)
    _check_backward(layer, [x], rng, params=[layer.value])
    layer.value.requires_grad = False   # frozen: no gradient
    layer.value.grad = None
    layer.forward(x)
    layer.backward(np.ones(expected.shape, np.float32))
    assert layer.value.grad is None


@pytest.mark.parametrize("channels", [1, 7, 16, 17])
def test_prelu_per_channel(channels, rng):
    x = _away_from_zero(rng.standard_normal((2, 3, 5, channels))).astype(np.float32)
    layer = fc.PReLU(channels)
    layer.weight.data = rng.uniform(0.05, 0.5, channels).astype(np.float32)
    np.testing.assert_allclose(layer.forward(x), np.where(x > 0, x, x * layer.weight.data))
    _check_backward(layer, [x], rng, params=[layer.weight])
    single = fc.PReLU()
    _check_backward(single, [x], rng, params=[single.weight])


@pytest.mark.parametrize("lo,hi", [(None, 0.5), (-0.5, None), (-1.0, 1.0)])
def test_clip(lo, hi, rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    x = np.where(np.abs(np.abs(x) - 0.5) < 0.05, 0.3, x)
    x = np.where(np.abs(np.abs(x) - 1.0) < 0.05, 0.3, x).astype(np.float32)
    layer = fc.Clip(lo, hi)
    np.testing.assert_array_equal(layer.forward(x), np.clip(x, -np.inf if lo is None else lo,
                                                            np.inf if hi is None else hi))
    _check_backward(layer, [x], rng)


@pytest.mark.parametrize("axis", [1, 2, 3])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_along_any_axis(axis, log, rng):
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32) * 3
    layer = fc.SoftmaxAxis(axis, log=log)
    e = np.exp(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
    expected = e / e.sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(layer.forward(x), np.log(expected) if log else expected,
                               rtol=1e-5, atol=1e-6)
    _check_backward(layer, [x], rng)


@pytest.mark.parametrize("op", ["mean", "sum"])
@pytest.mark.parametrize("axes,keepdims", [((1, 2), True), ((2,), False), ((1, 3), False),
                                           ((3,), True)])
def test_reduce(op, axes, keepdims, rng):
    x = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
    layer = fc.Reduce(op, axes, keepdims)
    f = np.mean if op == "mean" else np.sum
    expected = f(x.astype(np.float64), axis=axes, keepdims=keepdims)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-5, atol=1e-6)
    assert layer.output_shape(x.shape[1:]) == expected.shape[1:]
    _check_backward(layer, [x], rng)
    with pytest.raises(ValueError, match="batch"):
        fc.Reduce(op, (0, 1))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad(mode, rng):
    x = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
    pads = ((1, 2), (0, 3), (0, 0))
    layer = fc.Pad(pads, mode=mode, value=1.5)
    kw = dict(constant_values=1.5) if mode == "constant" else {}
    np.testing.assert_array_equal(layer.forward(x), np.pad(x, ((0, 0),) + pads, mode=mode, **kw))
    assert layer.output_shape(x.shape[1:]) == (8, 9, 3)
    _check_backward(layer, [x], rng)


@pytest.mark.parametrize("x_shape,w_shape", [((4, 7), (7, 3)), ((2, 5, 7), (7, 4)),
                                             ((2, 3, 5, 7), (3, 7, 2))])
def test_matmul(x_shape, w_shape, rng):
    x = rng.standard_normal(x_shape).astype(np.float32)
    layer = fc.MatMul(w_shape)
    layer.weight.data = rng.standard_normal(w_shape).astype(np.float32)
    np.testing.assert_allclose(layer.forward(x), np.matmul(x, layer.weight.data), rtol=1e-5,
                               atol=1e-5)
    assert layer.output_shape(x_shape[1:]) == np.matmul(x, layer.weight.data).shape[1:]
    _check_backward(layer, [x], rng, params=[layer.weight])


@pytest.mark.parametrize("axis", [1, 2, -1])
def test_concatenate_along_any_sample_axis(axis, rng):
    a = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    shape_b = list(a.shape)
    shape_b[axis] = 2
    b = rng.standard_normal(shape_b).astype(np.float32)
    layer = fc.Concatenate(axis=axis)
    np.testing.assert_array_equal(layer.forward([a, b]), np.concatenate([a, b], axis=axis))
    _check_backward(layer, [a, b], rng, several=True)
    with pytest.raises(ValueError, match="differ"):
        layer.output_shape([(3, 4, 5), (2, 2, 2)])


def test_tensor_layers_save_and_load(tmp_path, rng):
    inp = fc.Input((4, 6, 3))
    x = fc.Permute((3, 1, 2))(inp)
    x = fc.ConstantArithmetic("mul", (1, 3, 1, 1))(x)
    x = fc.Pad(((0, 0), (1, 1), (2, 0)), mode="reflect")(x)
    x = fc.Reduce("mean", (3,), keepdims=False)(x)
    x = fc.Reshape((-1,))(x)
    model = fc.Model(inp, fc.SoftmaxAxis(1, log=True)(x))
    model.get_layer("constant_arithmetic").value.data = rng.standard_normal((1, 3, 1, 1)).astype(
        np.float32)
    xs = rng.standard_normal((2, 4, 6, 3)).astype(np.float32)
    expected = model.predict(xs)
    fc.save(model, tmp_path / "m.fcnn")
    np.testing.assert_array_equal(fc.load(tmp_path / "m.fcnn").predict(xs), expected)
