"""Activations, softmax, dropout and add: every ISA against the float64 reference, the reference's
backward against finite differences, extreme values, thread-count independence, bad input."""
import numpy as np
import pytest

import cconv
from conftest import assert_close
from fastcnn import reference as ref
from gradcheck import directional_check

# Sizes around the SIMD widths (8, 16), odd sizes, batch 1, NHWC and 2-D shapes.
SHAPES = [(1,), (7,), (8,), (15,), (16,), (17,), (33,), (3, 5), (1, 1, 1, 16), (1, 5, 5, 15),
          (2, 7, 9, 16), (3, 4, 4, 33), (2, 3, 5, 8), (64, 10), (4, 1001)]
BIG = 3 * 16384 + 77  # several chunks: exercises the threaded path

UNARY = {
    "relu": (cconv.relu, ref.relu, cconv.relu_backward, ref.relu_backward, "y"),
    "sigmoid": (cconv.sigmoid, ref.sigmoid, cconv.sigmoid_backward, ref.sigmoid_backward, "y"),
    "tanh": (cconv.tanh, ref.tanh, cconv.tanh_backward, ref.tanh_backward, "y"),
    "leaky_relu": (cconv.leaky_relu, ref.leaky_relu, cconv.leaky_relu_backward,
                   ref.leaky_relu_backward, "x"),
}


def away_from_zero(x, gap=0.01):
    """Keep inputs off the kinks of relu/leaky relu, where finite differences are meaningless."""
    return np.where(x >= 0, x + gap, x - gap)


def sample(rng, shape, scale=3.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_forward_and_backward_match_reference(isa, rng, name):
    fwd, ref_fwd, bwd, ref_bwd, saved = UNARY[name]
    for shape in SHAPES:
        x = away_from_zero(sample(rng, shape))
        dy = sample(rng, shape, 1.0)
        x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
        y = fwd(x)
        assert y.dtype == np.float32 and y.shape == x.shape
        y64 = ref_fwd(x64)
        assert_close(name, y, y64)
        # backward from the same saved tensor the layer would keep (output y or input x)
        keep, keep64 = (y, y.astype(np.float64)) if saved == "y" else (x, x64)
        assert_close(f"{name}_backward", bwd(dy, keep), ref_bwd(dy64, keep64))


@pytest.mark.parametrize("slope", [0.0, 0.01, 0.2, 1.0, -0.5, 3.0])
def test_leaky_relu_slopes(isa, rng, slope):
    x = sample(rng, (3, 5, 5, 17))
    dy = sample(rng, x.shape)
    assert_close("leaky_relu", cconv.leaky_relu(x, slope),
                 ref.leaky_relu(x.astype(np.float64), slope))
    assert_close("leaky_relu_backward", cconv.leaky_relu_backward(dy, x, slope),
                 ref.leaky_relu_backward(dy.astype(np.float64), x.astype(np.float64), slope))


@pytest.mark.parametrize("name", sorted(UNARY))
def test_reference_backward_matches_finite_differences(rng, name):
    _, ref_fwd, _, ref_bwd, saved = UNARY[name]
    for shape in [(7,), (2, 3, 3, 17), (5, 16)]:
        x = away_from_zero(rng.standard_normal(shape) * 2)
        dy = rng.standard_normal(shape)
        keep = ref_fwd(x) if saved == "y" else x
        directional_check(ref_fwd, [x], [ref_bwd(dy, keep)], dy, rng)


def test_sigmoid_and_tanh_are_accurate_elementwise(isa):
    """A few ulp over the whole range, relative to each element (not only to the maximum)."""
    x = np.linspace(-87, 30, 400_003, dtype=np.float32)
    x64 = x.astype(np.float64)
    for name, fn, exact in [("sigmoid", cconv.sigmoid, ref.sigmoid(x64)),
                            ("tanh", cconv.tanh, np.tanh(x64))]:
        got = fn(x).astype(np.float64)
        ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
        normal = np.abs(exact) > np.finfo(np.float32).tiny
        worst = np.max(np.abs(got - exact)[normal] / ulp[normal])
        assert worst <= 4, f"{name}: {worst:.2f} ulp"


EXTREMES = np.array([-np.inf, -3e38, -1e30, -1e4, -100, -88.8, -87.4, -87.3, -50, -20, -9, -1,
                     -1e-3, -1e-30, -0.0, 0.0, 1e-30, 1e-3, 1, 9, 20, 50, 87.3, 88.8, 89, 100,
                     1e4, 1e30, 3e38, np.inf], dtype=np.float32)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_extreme_values_saturate_without_nan(isa, name):
    fwd, ref_fwd = UNARY[name][:2]
    y = fwd(EXTREMES)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = ref_fwd(EXTREMES.astype(np.float64))
    assert not np.isnan(y).any()
    finite = np.isfinite(expected)
    assert np.array_equal(y[~finite], expected[~finite])  # relu/leaky relu pass +-inf through
    assert_close(name, y[finite], expected[finite])


def test_saturation_points(isa):
    assert cconv.sigmoid(np.float32([-100, 100, -np.inf, np.inf])).tolist() == [0, 1, 0, 1]
    assert cconv.tanh(np.float32([20, -20, np.inf, -np.inf, 1e30])).tolist() == [1, -1, 1, -1, 1]
    assert cconv.sigmoid(np.float32([0]))[0] == 0.5
    assert 0 < cconv.sigmoid(np.float32([-80]))[0] < 1e-34


@pytest.mark.parametrize("fn", [cconv.relu, cconv.leaky_relu, cconv.sigmoid, cconv.tanh])
def test_nan_propagates(isa, fn):
    y = fn(np.float32([1.0, np.nan, -1.0]))
    assert np.isnan(y[1]) and not np.isnan(y[[0, 2]]).any()


# --- softmax ---

SOFTMAX_SHAPES = [(1, 1), (1, 10), (2, 7), (5, 8), (3, 15), (4, 16), (3, 17), (8, 33), (64, 10),
                  (2, 1000), (1, 4099)]


def test_softmax_matches_reference(isa, rng):
    for shape in SOFTMAX_SHAPES:
        x = sample(rng, shape, 5.0)
        dy = sample(rng, shape, 1.0)
        y = cconv.softmax(x)
        assert_close("softmax", y, ref.softmax(x.astype(np.float64)))
        assert_close("softmax_backward", cconv.softmax_backward(dy, y),
                     ref.softmax_backward(dy.astype(np.float64), y.astype(np.float64)))


def test_softmax_reference_backward_matches_finite_differences(rng):
    for shape in [(1, 3), (4, 17), (2, 33)]:
        x = rng.standard_normal(shape) * 3
        dy = rng.standard_normal(shape)
        directional_check(ref.softmax, [x], [ref.softmax_backward(dy, ref.softmax(x))], dy, rng)


def test_softmax_is_stable_for_extreme_logits(isa):
    x = np.array([[1000, -1000, 0, 999], [-1e30, 0, 1e30, 3e38], [-5e4, -5e4, -5e4, -5e4],
                  [0, -np.inf, -np.inf, 1], [88, 89, 90, -90], [-100, -200, -300, -87.4]],
                 dtype=np.float32)
    y = cconv.softmax(x)
    assert np.isfinite(y).all()
    assert_close("softmax", y, ref.softmax(x.astype(np.float64)))
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-6)
    assert y[3, 1] == 0 and y[2, 0] == 0.25


# --- dropout ---

@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.999])
def test_dropout_matches_reference_mask(isa, rng, p):
    for shape in [(1,), (17,), (3, 5, 5, 16), (64, 33)]:
        x = sample(rng, shape)
        y, mask = cconv.dropout(x, p, seed=123)
        yr, mr = ref.dropout(x.astype(np.float64), p, 123)
        assert mask.dtype == np.uint8 and mask.shape == x.shape
        assert np.array_equal(mask, mr)
        assert_close("dropout", y, yr)
        dy = sample(rng, shape)
        assert_close("dropout_backward", cconv.dropout_backward(dy, mask, p),
                      ref.dropout_backward(dy.astype(np.float64), mr, p))


def test_dropout_keep_rate_and_seeds():
    x = np.ones(200_000, dtype=np.float32)
    for p in (0.1, 0.5, 0.8):
        y, mask = cconv.dropout(x, p, seed=7)
        assert abs(mask.mean() - (1 - p)) < 0.005
        np.testing.assert_allclose(y[mask == 1], 1 / (1 - p), rtol=1e-6)
        assert (y[mask == 0] == 0).all()
    a = cconv.dropout(x, 0.5, seed=1)[1]
    assert np.array_equal(a, cconv.dropout(x, 0.5, seed=1)[1])
    assert not np.array_equal(a, cconv.dropout(x, 0.5, seed=2)[1])
    # consecutive seeds give uncorrelated masks
    b = cconv.dropout(x, 0.5, seed=2)[1]
    assert abs(np.mean(a == b) - 0.5) < 0.01
    # the mask depends on (seed, flat index) only
    assert np.array_equal(cconv.dropout(x[:1000], 0.5, seed=1)[1], a[:1000])
    assert np.array_equal(cconv.dropout(x.reshape(400, 500), 0.5, 1)[1].ravel(), a)


def test_dropout_p_zero_is_identity(isa, rng):
    x = sample(rng, (3, 4, 5))
    y, mask = cconv.dropout(x, 0.0, seed=5)
    assert np.array_equal(y, x) and y is not x
    assert mask.dtype == np.uint8 and (mask == 1).all()
    assert np.array_equal(cconv.dropout_backward(x, mask, 0.0), x)


def test_dropout_keeps_nan_and_inf_visible():
    x = np.full(64, np.inf, dtype=np.float32)
    y, mask = cconv.dropout(x, 0.5, seed=3)
    assert np.isnan(y[mask == 0]).all() and np.isinf(y[mask == 1]).all()


def test_dropout_backward_accepts_bool_mask(rng):
    dy = sample(rng, (5, 7))
    y, mask = cconv.dropout(dy, 0.3, seed=9)
    assert np.array_equal(cconv.dropout_backward(dy, mask.astype(bool), 0.3),
                          cconv.dropout_backward(dy, mask, 0.3))


# --- add ---

def test_add_and_backward(isa, rng):
    for shape in SHAPES:
        a, b = sample(rng, shape), sample(rng, shape)
        assert_close("add", cconv.add(a, b), a.astype(np.float64) + b)
        dy = sample(rng, shape)
        da, db = cconv.add_backward(dy)
        assert np.array_equal(da, dy) and np.array_equal(db, dy)
        assert da is not db and not np.shares_memory(da, db)
        y = cconv.relu(sample(rng, shape))   # zeros where the ReLU cut: the mask
        assert_close("add_relu_backward", cconv.add_relu_backward(a, b, y),
                     ref.relu_backward(a.astype(np.float64) + b, y))
    a, b = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    dy = rng.standard_normal((4, 5))
    da, db = ref.add_backward(dy)
    directional_check(ref.add, [a, b], [da, db], dy, rng)


# --- every op: thread-count independence, conversions, bad input ---

def all_ops(rng, n):
    x = away_from_zero(sample(rng, (n,)))
    dy = sample(rng, (n,))
    x2 = x[: (n // 100) * 100].reshape(-1, 100)
    dy2 = dy[: x2.size].reshape(x2.shape)
    y2 = cconv.softmax(x2)
    mask = cconv.dropout(x, 0.3, 11)[1]
    return {
        "relu": lambda t: cconv.relu(x, n_threads=t),
        "relu_backward": lambda t: cconv.relu_backward(dy, x, n_threads=t),
        "leaky_relu": lambda t: cconv.leaky_relu(x, 0.1, n_threads=t),
        "leaky_relu_backward": lambda t: cconv.leaky_relu_backward(dy, x, 0.1, n_threads=t),
        "sigmoid": lambda t: cconv.sigmoid(x, n_threads=t),
        "sigmoid_backward": lambda t: cconv.sigmoid_backward(dy, x, n_threads=t),
        "tanh": lambda t: cconv.tanh(x, n_threads=t),
        "tanh_backward": lambda t: cconv.tanh_backward(dy, x, n_threads=t),
        "softmax": lambda t: cconv.softmax(x2, n_threads=t),
        "softmax_backward": lambda t: cconv.softmax_backward(dy2, y2, n_threads=t),
        "dropout": lambda t: cconv.dropout(x, 0.3, 11, n_threads=t),
        "dropout_backward": lambda t: cconv.dropout_backward(dy, mask, 0.3, n_threads=t),
        "add": lambda t: cconv.add(x, dy, n_threads=t),
        "add_backward": lambda t: cconv.add_backward(dy, n_threads=t),
        "add_relu_backward": lambda t: cconv.add_relu_backward(x, dy, x, n_threads=t),
    }


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def test_one_and_two_threads_are_bitwise_equal(isa, rng):
    for name, op in all_ops(rng, BIG).items():
        for a, b in zip(as_tuple(op(1)), as_tuple(op(2))):
            assert a.tobytes() == b.tobytes(), name
        for a, b in zip(as_tuple(op(1)), as_tuple(op(3))):
            assert a.tobytes() == b.tobytes(), name


def test_large_arrays_match_reference(isa, rng):
    """The threaded path (several chunks, vector bodies and tails) matches the reference too."""
    x = away_from_zero(sample(rng, (BIG,)))
    for name in sorted(UNARY):
        fwd, ref_fwd = UNARY[name][:2]
        assert_close(name, fwd(x, n_threads=2), ref_fwd(x.astype(np.float64)))


def test_inputs_are_converted_not_rejected(rng):
    x64 = rng.standard_normal((6, 10))
    strided = x64[:, ::2]
    np.testing.assert_array_equal(cconv.relu(strided), ref.relu(strided.astype(np.float32)))
    assert cconv.sigmoid(x64).dtype == np.float32
    assert cconv.softmax(x64[::2]).shape == (3, 10)
    assert cconv.tanh([0.0, 1.0]).shape == (2,)
    assert cconv.relu(np.float32(-3)).shape == ()
    readonly = x64.astype(np.float32)
    readonly.flags.writeable = False
    assert cconv.relu(readonly).shape == (6, 10)
    empty = np.zeros((0, 4), dtype=np.float32)
    assert cconv.relu(empty).shape == (0, 4)
    assert cconv.dropout(empty, 0.5, 1)[1].shape == (0, 4)


def test_bad_input_raises_value_error_naming_the_op():
    x = np.ones((2, 3), dtype=np.float32)
    cases = [
        ("relu_backward", lambda: cconv.relu_backward(x, np.ones((3, 2)))),
        ("sigmoid_backward", lambda: cconv.sigmoid_backward(x, np.ones(6))),
        ("tanh_backward", lambda: cconv.tanh_backward(x, np.ones((2, 3, 1)))),
        ("leaky_relu_backward", lambda: cconv.leaky_relu_backward(x, np.ones((2, 4)))),
        ("leaky_relu", lambda: cconv.leaky_relu(x, float("nan"))),
        ("leaky_relu", lambda: cconv.leaky_relu(x, "steep")),
        ("relu", lambda: cconv.relu(np.array(["a", "b"]))),
        ("softmax", lambda: cconv.softmax(np.ones(5))),
        ("softmax", lambda: cconv.softmax(np.ones((2, 3, 4)))),
        ("softmax", lambda: cconv.softmax(np.ones((0, 4)))),
        ("softmax_backward", lambda: cconv.softmax_backward(x, np.ones((2, 4)))),
        ("dropout", lambda: cconv.dropout(x, 1.0, 0)),
        ("dropout", lambda: cconv.dropout(x, -0.1, 0)),
        ("dropout", lambda: cconv.dropout(x, float("nan"), 0)),
        ("dropout", lambda: cconv.dropout(x, 0.5, 1.5)),
        ("dropout", lambda: cconv.dropout(x, 0.5, None)),
        ("dropout_backward", lambda: cconv.dropout_backward(x, np.ones((3, 2), np.uint8), 0.5)),
        ("dropout_backward", lambda: cconv.dropout_backward(x, np.ones((2, 3), np.uint8), 1.0)),
        ("add", lambda: cconv.add(x, np.ones((2, 4)))),
        ("add", lambda: cconv.add(x, np.ones(3))),
        ("add_relu_backward", lambda: cconv.add_relu_backward(x, x, np.ones((2, 4)))),
        ("add_relu_backward", lambda: cconv.add_relu_backward(x, np.ones(3), x)),
    ]
    for op, call in cases:
        with pytest.raises(ValueError, match=f"^{op}:"):
            call()
    with pytest.raises(ValueError, match="n_threads"):
        cconv.relu(x, n_threads=0)


# --- optional: PyTorch as a second oracle ---

def test_activations_match_torch(rng):
    torch = pytest.importorskip("torch")
    x = sample(rng, (4, 5, 5, 17))
    dy = sample(rng, x.shape)
    tx = torch.tensor(x, requires_grad=True)
    for name, fn, tfn in [("relu", cconv.relu, torch.relu), ("sigmoid", cconv.sigmoid, torch.sigmoid),
                          ("tanh", cconv.tanh, torch.tanh)]:
        ty = tfn(tx)
        (gx,) = torch.autograd.grad(ty, tx, torch.tensor(dy))
        y = fn(x)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
        back = getattr(cconv, f"{name}_backward")(dy, y)
        np.testing.assert_allclose(back, gx.numpy(), rtol=1e-4, atol=1e-6)
    ty = torch.nn.functional.leaky_relu(tx, 0.2)
    (gx,) = torch.autograd.grad(ty, tx, torch.tensor(dy))
    np.testing.assert_allclose(cconv.leaky_relu(x, 0.2), ty.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(cconv.leaky_relu_backward(dy, x, 0.2), gx.numpy(), rtol=1e-6)
    x2, dy2 = x.reshape(-1, 17), dy.reshape(-1, 17)
    tx2 = torch.tensor(x2, requires_grad=True)
    ty2 = torch.softmax(tx2, dim=1)
    (gx2,) = torch.autograd.grad(ty2, tx2, torch.tensor(dy2))
    y2 = cconv.softmax(x2)
    np.testing.assert_allclose(y2, ty2.detach().numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(cconv.softmax_backward(dy2, y2), gx2.numpy(), rtol=1e-4, atol=1e-6)
