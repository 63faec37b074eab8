"""relu6, hard sigmoid, hard swish, silu, gelu; the squeeze-excitation channel gate; nearest and
bilinear upsampling. Every ISA against the float64 reference, the reference's backward against
finite differences, thread-count independence, extreme values, bad input, and PyTorch when it is
installed."""
import numpy as np
import pytest

import cconv
from conftest import assert_close
from fastcnn import reference as ref
from gradcheck import directional_check

SHAPES = [(1,), (7,), (8,), (15,), (16,), (17,), (33,), (3, 5), (1, 1, 1, 16), (1, 5, 5, 15),
          (2, 7, 9, 16), (3, 4, 4, 33), (2, 3, 5, 8), (64, 10), (4, 1001)]
CHANNELS = [1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64]
BIG = 3 * 16384 + 77


def sample(rng, shape, scale=3.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def off_kinks(x, kinks, gap=0.02):
    """Move inputs at least ``gap`` away from the kinks, where finite differences mean nothing."""
    x = np.array(x, dtype=np.float64)
    for k in kinks:
        near = np.abs(x - k) < gap
        x[near] = k + np.where(x[near] >= k, gap, -gap)
    return x


# name: (forward, backward, reference forward, reference backward, saved tensor, kinks)
ACTIVATIONS = {
    "relu6": (cconv.relu6, cconv.relu6_backward, ref.relu6, ref.relu6_backward, "y", (0, 6)),
    "hardsigmoid": (cconv.hardsigmoid, cconv.hardsigmoid_backward, ref.hardsigmoid,
                    ref.hardsigmoid_backward, "x", (-3, 3)),
    "hardswish": (cconv.hardswish, cconv.hardswish_backward, ref.hardswish,
                  ref.hardswish_backward, "x", (-3, 3)),
    "silu": (cconv.silu, cconv.silu_backward, ref.silu, ref.silu_backward, "x", ()),
    "gelu": (cconv.gelu, cconv.gelu_backward, ref.gelu, ref.gelu_backward, "x", ()),
    "gelu_tanh": (lambda x, n_threads=None: cconv.gelu(x, "tanh", n_threads=n_threads),
                  lambda dy, x, n_threads=None: cconv.gelu_backward(dy, x, "tanh",
                                                                     n_threads=n_threads),
                  lambda x: ref.gelu(x, "tanh"), lambda dy, x: ref.gelu_backward(dy, x, "tanh"),
                  "x", ()),
}


# --- activations ---

@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_reference(isa, rng, name):
    fwd, bwd, ref_fwd, ref_bwd, saved, kinks = ACTIVATIONS[name]
    for shape in SHAPES:
        x = off_kinks(sample(rng, shape), kinks).astype(np.float32)
        dy = sample(rng, shape, 1.0)
        y = fwd(x)
        assert y.dtype == np.float32 and y.shape == x.shape
        assert_close(name, y, ref_fwd(x.astype(np.float64)))
        keep = y if saved == "y" else x
        assert_close(f"{name}_backward", bwd(dy, keep),
                     ref_bwd(dy.astype(np.float64), keep.astype(np.float64)))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_reference_backward_matches_finite_differences(rng, name):
    _, _, ref_fwd, ref_bwd, saved, kinks = ACTIVATIONS[name]
    for shape in [(7,), (2, 3, 3, 17), (5, 16)]:
        x = off_kinks(rng.standard_normal(shape) * 3, kinks)
        dy = rng.standard_normal(shape)
        keep = ref_fwd(x) if saved == "y" else x
        directional_check(ref_fwd, [x], [ref_bwd(dy, keep)], dy, rng)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_backward_matches_finite_differences_of_the_kernel(isa, rng, name):
    """The compiled backward against central differences of the compiled forward in float32
    (a loose check: float32 forward values)."""
    fwd, bwd, _, _, saved, kinks = ACTIVATIONS[name]
    x = off_kinks(rng.standard_normal(4001) * 3, kinks, gap=0.05).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    eps = np.float32(1e-2)
    numeric = (fwd(x + eps).astype(np.float64) - fwd(x - eps)) / (2 * eps)
    keep = fwd(x) if saved == "y" else x
    analytic = bwd(dy, keep).astype(np.float64)
    np.testing.assert_allclose(analytic, dy * numeric, rtol=2e-3, atol=2e-3)


def test_gelu_and_silu_are_accurate_elementwise(isa):
    """A few ulp relative to each element (not only to the maximum), tails included."""
    x = np.linspace(-12, 12, 200_001, dtype=np.float32)
    x64 = x.astype(np.float64)
    for name, got, exact, limit in [
            ("silu", cconv.silu(x), ref.silu(x64), 4),
            ("gelu", cconv.gelu(x), ref.gelu(x64), 10),
            ("gelu_backward", cconv.gelu_backward(np.ones_like(x), x),
             ref.gelu_backward(np.ones_like(x64), x64), None)]:
        big = np.abs(exact) > 1e-30
        if limit is None:   # the gradient crosses 0 at -0.75: away from that zero
            big &= np.abs(x64 + 0.7518) > 0.05
            rel = np.abs(got[big] - exact[big]) / np.abs(exact[big])
            assert rel.max() < 1e-5, f"{name}: {rel.max():.3g} relative"
            continue
        ulp = np.spacing(np.abs(exact[big]).astype(np.float32)).astype(np.float64)
        worst = np.max(np.abs(got[big] - exact[big]) / ulp)
        assert worst <= limit, f"{name}: {worst:.2f} ulp"


def test_hardswish_gradient_at_the_kinks_is_pytorchs(isa):
    x = np.float32([-3.5, -3, -2.9, 0, 2.9, 3, 3.5])
    dy = np.ones_like(x)
    np.testing.assert_array_equal(cconv.hardswish_backward(dy, x),
                                  ref.hardswish_backward(dy, x).astype(np.float32))
    assert cconv.hardswish_backward(dy, x)[[1, 5]].tolist() == [0.0, 1.0]
    assert cconv.hardsigmoid_backward(dy, x)[[1, 2, 5]].tolist() == [0.0, np.float32(1 / 6), 0.0]
    y6 = cconv.relu6(np.float32([0, 3, 6, 7]))
    assert cconv.relu6_backward(np.ones(4, np.float32), y6).tolist() == [0, 1, 0, 0]


EXTREMES = np.array([-np.inf, -3e38, -1e30, -1e4, -100, -88.8, -87.4, -20, -13, -9, -3, -1,
                     -1e-3, -1e-30, -0.0, 0.0, 1e-30, 1e-3, 1, 3, 6, 9, 13, 20, 87.4, 100, 1e4,
                     1e30, 3e38, np.inf], dtype=np.float32)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_extreme_values(isa, name):
    fwd, bwd, ref_fwd, ref_bwd, saved, _ = ACTIVATIONS[name]
    y = fwd(EXTREMES)
    dx = bwd(np.ones_like(EXTREMES), y if saved == "y" else EXTREMES)
    assert not np.isnan(y).any() and not np.isnan(dx).any()
    with np.errstate(all="ignore"):
        expected = ref_fwd(EXTREMES.astype(np.float64))
    finite = np.isfinite(expected) & (np.abs(EXTREMES) < 1e4)
    assert_close(name, y[finite], expected[finite])
    # the limits: 0 at -inf (x times a vanishing factor), x itself towards +inf
    if name in ("silu", "gelu", "gelu_tanh", "hardswish"):
        assert y[0] == 0 and y[-1] == np.inf
        assert dx[0] == 0 and dx[-1] == 1
    if name in ("silu", "gelu", "gelu_tanh"):   # hardswish's x * 6 / 6 overflows, as PyTorch's
        assert y[-2] == np.float32(3e38) and y[1] == 0


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_nan_propagates(isa, name):
    fwd, bwd = ACTIVATIONS[name][:2]
    x = np.float32([1.0, np.nan, -1.0, 4.0])
    y = fwd(x)
    assert np.isnan(y[1]) and not np.isnan(y[[0, 2, 3]]).any()
    if name not in ("relu6", "hardsigmoid"):   # their gradients are masks, as PyTorch's
        assert np.isnan(bwd(np.ones_like(x), x)[1])


def test_gelu_approximate_argument():
    x = np.float32([-1, 0.5, 2])
    assert not np.array_equal(cconv.gelu(x), cconv.gelu(x, approximate="tanh"))
    np.testing.assert_array_equal(cconv.gelu(x), cconv.gelu(x, "none"))
    for bad in ("erf", None, "TANH", 1):
        with pytest.raises(ValueError, match="^gelu: approximate"):
            cconv.gelu(x, approximate=bad)
        with pytest.raises(ValueError, match="^gelu_backward: approximate"):
            cconv.gelu_backward(x, x, approximate=bad)


def test_large_activation_arrays_match_reference(isa, rng):
    x = sample(rng, (BIG,))
    for name in sorted(ACTIVATIONS):
        fwd, _, ref_fwd = ACTIVATIONS[name][:3]
        assert_close(name, fwd(x, n_threads=2), ref_fwd(x.astype(np.float64)))


# --- channel gate ---

def gate_shapes():
    for c in CHANNELS:
        yield (1, 1, 1, c)
        yield (2, 3, 5, c)
    yield (3, 7, 9, 70)
    yield (1, 14, 14, 130)


def test_channel_gate_matches_reference(isa, rng):
    for shape in gate_shapes():
        x = sample(rng, shape)
        g = rng.uniform(0, 1, (shape[0], shape[3])).astype(np.float32)
        dy = sample(rng, shape, 1.0)
        for gate in (g, g.reshape(shape[0], 1, 1, shape[3])):
            y = cconv.mul_channel_gate(x, gate)
            assert y.shape == shape and y.dtype == np.float32
            assert_close("mul_channel_gate", y, ref.mul_channel_gate(x, gate))
            dx, dg = cconv.mul_channel_gate_backward(dy, x, gate)
            rdx, rdg = ref.mul_channel_gate_backward(dy, x, gate)
            assert dx.shape == shape and dg.shape == gate.shape
            assert_close("mul_channel_gate_backward.dx", dx, rdx)
            assert_close("mul_channel_gate_backward.dg", dg, rdg, tol=1e-6)


def test_channel_gate_is_exact_where_it_can_be(isa, rng):
    x = sample(rng, (2, 4, 6, 33))
    g = sample(rng, (2, 33))
    assert np.array_equal(cconv.mul_channel_gate(x, g), x * g[:, None, None, :])
    dy = sample(rng, x.shape)
    dx, dg = cconv.mul_channel_gate_backward(dy, x, g)
    assert np.array_equal(dx, dy * g[:, None, None, :])
    # summed in double: the correctly rounded sum
    exact = (dy.astype(np.float64) * x).sum(axis=(1, 2)).astype(np.float32)
    assert np.array_equal(dg, exact)


def test_channel_gate_reference_backward_matches_finite_differences(rng):
    for shape in [(1, 1, 1, 3), (2, 3, 4, 17)]:
        x = rng.standard_normal(shape)
        g = rng.standard_normal((shape[0], shape[3]))
        dy = rng.standard_normal(shape)
        directional_check(ref.mul_channel_gate, [x, g],
                          list(ref.mul_channel_gate_backward(dy, x, g)), dy, rng)


def test_channel_gate_backward_matches_finite_differences_of_the_kernel(isa, rng):
    x = rng.standard_normal((2, 3, 4, 17))
    g = rng.standard_normal((2, 17))
    dy = rng.standard_normal(x.shape)
    dx, dg = cconv.mul_channel_gate_backward(dy, x, g)
    directional_check(lambda a, b: cconv.mul_channel_gate(a, b).astype(np.float64), [x, g],
                      [dx, dg], dy, rng, eps=1e-2, tol=1e-3)


def test_channel_gate_bad_input():
    x = np.ones((2, 3, 3, 4), np.float32)
    g = np.ones((2, 4), np.float32)
    cases = [
        ("mul_channel_gate", lambda: cconv.mul_channel_gate(x, np.ones((2, 5)))),
        ("mul_channel_gate", lambda: cconv.mul_channel_gate(x, np.ones((1, 4)))),
        ("mul_channel_gate", lambda: cconv.mul_channel_gate(x, np.ones((2, 3, 3, 4)))),
        ("mul_channel_gate", lambda: cconv.mul_channel_gate(x, np.ones(4))),
        ("mul_channel_gate", lambda: cconv.mul_channel_gate(x[0], g)),
        ("mul_channel_gate", lambda: cconv.mul_channel_gate(np.ones((0, 3, 3, 4)), g[:0])),
        ("mul_channel_gate", lambda: cconv.mul_channel_gate(x, np.array([["a"] * 4] * 2))),
        ("mul_channel_gate_backward", lambda: cconv.mul_channel_gate_backward(x[:1], x, g)),
        ("mul_channel_gate_backward",
         lambda: cconv.mul_channel_gate_backward(x, x, np.ones((2, 1, 4)))),
        ("mul_channel_gate", lambda: cconv.mul_channel_gate(x, g, n_threads=0)),
    ]
    for op, call in cases:
        with pytest.raises(ValueError, match=f"^{op}:"):
            call()


def test_channel_gate_converts_inputs(rng):
    x64 = rng.standard_normal((2, 3, 8, 5))[:, :, ::2]      # float64, not contiguous
    g = rng.standard_normal((2, 5))
    y = cconv.mul_channel_gate(x64, g)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x64.astype(np.float32) * g.astype(np.float32)[:, None, None])


# --- upsampling ---

def sizes():
    """(in, out) pairs per axis: identity, 2x, shrinking, odd factors, PyTorch's float32
    rounding cases (2 -> 82: its index differs from floor(dst * in / out))."""
    return [(1, 1), (1, 3), (3, 1), (4, 4), (4, 8), (5, 10), (3, 7), (7, 3), (5, 9), (9, 5),
            (6, 4), (2, 82), (10, 6)]


MODES = [("nearest", None), ("bilinear", False), ("bilinear", True)]


def resize(mode, ac, x, out, n_threads=None):
    if mode == "nearest":
        return cconv.upsample_nearest2d(x, out, n_threads=n_threads)
    return cconv.upsample_bilinear2d(x, out, align_corners=ac, n_threads=n_threads)


def resize_backward(mode, ac, dy, size, n_threads=None):
    if mode == "nearest":
        return cconv.upsample_nearest2d_backward(dy, size, n_threads=n_threads)
    return cconv.upsample_bilinear2d_backward(dy, size, align_corners=ac, n_threads=n_threads)


def ref_resize(mode, ac, x, out):
    return ref.upsample_nearest2d(x, out) if mode == "nearest" else \
        ref.upsample_bilinear2d(x, out, ac)


def ref_resize_backward(mode, ac, dy, size):
    return ref.upsample_nearest2d_backward(dy, size) if mode == "nearest" else \
        ref.upsample_bilinear2d_backward(dy, size, ac)


@pytest.mark.parametrize("mode,ac", MODES)
def test_upsample_matches_reference(isa, rng, mode, ac):
    cases = [((hi, ho), (wi, wo)) for hi, ho in sizes() for wi, wo in [(3, 7), (4, 8), (5, 2)]]
    cases += [((5, 9), (4, 4)), ((2, 82), (3, 5))]
    for k, ((hi, ho), (wi, wo)) in enumerate(cases):
        c = CHANNELS[k % len(CHANNELS)]
        n = 1 + k % 2
        x = sample(rng, (n, hi, wi, c))
        y = resize(mode, ac, x, (ho, wo))
        assert y.shape == (n, ho, wo, c) and y.dtype == np.float32
        op = f"upsample_{mode}2d" + ("" if ac is None else f"[align_corners={ac}]")
        assert_close(op, y, ref_resize(mode, ac, x, (ho, wo)))
        dy = sample(rng, y.shape)
        dx = resize_backward(mode, ac, dy, (hi, wi))
        assert dx.shape == x.shape and dx.dtype == np.float32
        assert_close(op + "_backward", dx, ref_resize_backward(mode, ac, dy, (hi, wi)))


@pytest.mark.parametrize("mode,ac", MODES)
def test_upsample_every_channel_count(isa, rng, mode, ac):
    for c in CHANNELS:
        x = sample(rng, (1, 3, 5, c))
        y = resize(mode, ac, x, (7, 9))
        assert_close(f"upsample_{mode}2d", y, ref_resize(mode, ac, x, (7, 9)))
        dy = sample(rng, y.shape)
        assert_close(f"upsample_{mode}2d_backward", resize_backward(mode, ac, dy, (3, 5)),
                     ref_resize_backward(mode, ac, dy, (3, 5)))


def test_nearest_is_an_exact_copy(isa, rng):
    x = sample(rng, (2, 3, 4, 17))
    x[0, 0, 0, :3] = [-0.0, np.nan, np.inf]
    y = cconv.upsample_nearest2d(x, (6, 8))
    expected = x.repeat(2, axis=1).repeat(2, axis=2)
    assert y.tobytes() == expected.tobytes()
    # 4 -> 3 columns: scale 4/3, sources 0, 1, 2; rows unchanged
    assert cconv.upsample_nearest2d(x, 3).tobytes() == np.ascontiguousarray(
        x[:, :, [0, 1, 2]]).tobytes()
    # a bilinear resize to the same size is a copy too, and keeps Inf as Inf
    z = cconv.upsample_bilinear2d(x, (3, 4))
    assert z.tobytes() == x.tobytes()


def test_nearest_index_rule_is_pytorchs_float32_rule():
    # 2 -> 82: floor(41 * 2 / 82) = 1 but PyTorch (float32 scale) picks 0
    idx = ref.nearest_source_index(2, 82)
    assert idx[41] == 0 and idx[42] == 1
    x = np.arange(2, dtype=np.float32).reshape(1, 2, 1, 1)
    y = cconv.upsample_nearest2d(x, (82, 1))
    np.testing.assert_array_equal(y[0, :, 0, 0], idx.astype(np.float32))


@pytest.mark.parametrize("mode,ac", MODES)
def test_upsample_reference_backward_matches_finite_differences(rng, mode, ac):
    for (hi, wi), (ho, wo) in [((3, 4), (7, 9)), ((5, 5), (2, 3)), ((1, 2), (3, 5))]:
        x = rng.standard_normal((2, hi, wi, 3))
        dy = rng.standard_normal((2, ho, wo, 3))
        directional_check(lambda a: ref_resize(mode, ac, a, (ho, wo)), [x],
                          [ref_resize_backward(mode, ac, dy, (hi, wi))], dy, rng)


@pytest.mark.parametrize("mode,ac", MODES)
def test_upsample_backward_matches_finite_differences_of_the_kernel(isa, rng, mode, ac):
    """Linear in x: the compiled backward is the adjoint of the compiled forward."""
    x = rng.standard_normal((2, 5, 3, 9))
    dy = rng.standard_normal((2, 8, 7, 9))
    dx = resize_backward(mode, ac, dy, (5, 3)).astype(np.float64)
    directional_check(lambda a: resize(mode, ac, a, (8, 7)).astype(np.float64), [x], [dx], dy,
                      rng, eps=1e-2, tol=1e-4)


def test_upsample_in_size_forms(rng):
    dy = sample(rng, (2, 6, 8, 5))
    a = cconv.upsample_bilinear2d_backward(dy, (3, 4))
    assert np.array_equal(a, cconv.upsample_bilinear2d_backward(dy, (2, 3, 4, 5)))
    assert np.array_equal(cconv.upsample_nearest2d(dy, 4), cconv.upsample_nearest2d(dy, (4, 4)))


def test_upsample_bad_input():
    x = np.ones((1, 3, 4, 2), np.float32)
    cases = [
        ("upsample_nearest2d", lambda: cconv.upsample_nearest2d(x, (0, 4))),
        ("upsample_nearest2d", lambda: cconv.upsample_nearest2d(x, (2, 3, 4))),
        ("upsample_nearest2d", lambda: cconv.upsample_nearest2d(x, "big")),
        ("upsample_nearest2d", lambda: cconv.upsample_nearest2d(x, (2.5, 3))),
        ("upsample_nearest2d", lambda: cconv.upsample_nearest2d(x[0], (2, 3))),
        ("upsample_nearest2d", lambda: cconv.upsample_nearest2d(np.ones((1, 0, 4, 2)), (2, 3))),
        ("upsample_bilinear2d", lambda: cconv.upsample_bilinear2d(x, (-1, 3))),
        ("upsample_bilinear2d", lambda: cconv.upsample_bilinear2d(np.ones(5), 3)),
        ("upsample_nearest2d_backward", lambda: cconv.upsample_nearest2d_backward(x, (0, 2))),
        ("upsample_nearest2d_backward", lambda: cconv.upsample_nearest2d_backward(x, (2,))),
        ("upsample_nearest2d_backward", lambda: cconv.upsample_nearest2d_backward(x, None)),
        ("upsample_bilinear2d_backward",
         lambda: cconv.upsample_bilinear2d_backward(x, (2, 2, 2, 2))),
        ("upsample_bilinear2d_backward",
         lambda: cconv.upsample_bilinear2d_backward(x[..., 0], (2, 2))),
        ("upsample_bilinear2d", lambda: cconv.upsample_bilinear2d(x, 3, n_threads=-1)),
    ]
    for op, call in cases:
        with pytest.raises(ValueError, match=f"^{op}:"):
            call()


def test_memory_limit_is_checked_before_allocating():
    x = np.ones((1, 4, 4, 8), np.float32)
    previous = cconv.set_memory_limit(1 << 20)
    try:
        for call in [lambda: cconv.upsample_nearest2d(x, (1000, 1000)),
                     lambda: cconv.upsample_bilinear2d_backward(x, (1000, 1000)),
                     lambda: cconv.mul_channel_gate(np.ones((64, 32, 32, 8), np.float32),
                                                    np.ones((64, 8), np.float32))]:
            with pytest.raises(ValueError, match="memory limit"):
                call()
        big = np.ones(300_000, np.float32)
        with pytest.raises(ValueError, match="^gelu: .*memory limit"):
            cconv.gelu(big)
    finally:
        cconv.set_memory_limit(previous)


# --- every op: thread-count independence ---

def all_ops(rng):
    x = sample(rng, (BIG,))
    dy = sample(rng, (BIG,))
    ops = {}
    for name, (fwd, bwd, _, _, saved, _) in ACTIVATIONS.items():
        ops[name] = lambda t, f=fwd: f(x, n_threads=t)
        ops[f"{name}_backward"] = lambda t, b=bwd: b(dy, x, n_threads=t)
    xi = sample(rng, (3, 17, 19, 70))
    g = sample(rng, (3, 70))
    dyi = sample(rng, xi.shape)
    ops["mul_channel_gate"] = lambda t: cconv.mul_channel_gate(xi, g, n_threads=t)
    ops["mul_channel_gate_backward"] = lambda t: cconv.mul_channel_gate_backward(dyi, xi, g,
                                                                                 n_threads=t)
    for mode, ac in MODES:
        up = sample(rng, (3, 23, 29, 17))
        ops[f"{mode}{ac}"] = lambda t, m=mode, a=ac: resize(m, a, xi, (37, 41), n_threads=t)
        ops[f"{mode}{ac}_down"] = lambda t, m=mode, a=ac: resize(m, a, xi, (5, 7), n_threads=t)
        ops[f"{mode}{ac}_backward"] = lambda t, m=mode, a=ac, u=up: resize_backward(
            m, a, u, (9, 11), n_threads=t)
        ops[f"{mode}{ac}_backward_down"] = lambda t, m=mode, a=ac, u=up: resize_backward(
            m, a, u, (61, 70), n_threads=t)
    return ops


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def test_one_two_and_three_threads_are_bitwise_equal(isa, rng):
    for name, op in all_ops(rng).items():
        one = as_tuple(op(1))
        for t in (2, 3):
            for a, b in zip(one, as_tuple(op(t))):
                assert a.tobytes() == b.tobytes(), f"{name}, {t} threads"


# --- optional: PyTorch as a second oracle ---

def test_activations_match_torch(isa, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = sample(rng, (4, 5, 5, 17))
    x.flat[:8] = [-3, 3, 0, 6, -6, -13, 13, 1e-3]
    dy = sample(rng, x.shape)
    for name, tfn in [("relu6", F.relu6), ("hardsigmoid", F.hardsigmoid),
                      ("hardswish", F.hardswish), ("silu", F.silu), ("gelu", F.gelu),
                      ("gelu_tanh", lambda t: F.gelu(t, approximate="tanh"))]:
        fwd, bwd, _, _, saved, _ = ACTIVATIONS[name]
        tx = torch.tensor(x, requires_grad=True)
        ty = tfn(tx)
        (gx,) = torch.autograd.grad(ty, tx, torch.tensor(dy))
        y = fwd(x)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
        # PyTorch's tanh-form gradient computes 1 + tanh(u) (cancellation where u << 0); ours
        # does not: compare that one relative to the largest gradient
        atol = 1e-5 if name == "gelu_tanh" else 1e-6
        np.testing.assert_allclose(bwd(dy, y if saved == "y" else x), gx.numpy(), rtol=1e-4,
                                   atol=atol, err_msg=name)


def test_channel_gate_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = sample(rng, (2, 5, 6, 19))
    g = rng.uniform(0, 1, (2, 19)).astype(np.float32)
    dy = sample(rng, x.shape)
    tx = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    tg = torch.tensor(g[:, :, None, None].copy(), requires_grad=True)
    ty = tx * tg
    gx, gg = torch.autograd.grad(ty, (tx, tg), torch.tensor(dy.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_array_equal(cconv.mul_channel_gate(x, g),
                                  ty.detach().numpy().transpose(0, 2, 3, 1))
    dx, dg = cconv.mul_channel_gate_backward(dy, x, g)
    np.testing.assert_array_equal(dx, gx.numpy().transpose(0, 2, 3, 1))
    np.testing.assert_allclose(dg, gg.numpy()[:, :, 0, 0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode,ac", MODES)
def test_upsample_matches_torch(isa, rng, mode, ac):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for (hi, ho), (wi, wo) in [((3, 7), (4, 8)), ((5, 2), (9, 5)), ((2, 82), (1, 3)),
                               ((10, 6), (4, 4)), ((1, 1), (3, 1)), ((6, 13), (7, 14))]:
        x = sample(rng, (2, hi, wi, 9))
        tx = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
        kw = {} if mode == "nearest" else {"align_corners": ac}
        ty = F.interpolate(tx, size=(ho, wo), mode=mode, **kw)
        y = resize(mode, ac, x, (ho, wo))
        np.testing.assert_allclose(y, ty.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-5,
                                   atol=1e-5)
        dy = sample(rng, y.shape)
        (gx,) = torch.autograd.grad(ty, tx, torch.tensor(dy.transpose(0, 3, 1, 2).copy()))
        # float32 sums of up to 41 terms in two different orders: relative to the largest value
        expected = gx.numpy().transpose(0, 2, 3, 1)
        np.testing.assert_allclose(resize_backward(mode, ac, dy, (hi, wi)), expected, rtol=1e-5,
                                   atol=1e-6 * max(1.0, float(np.abs(expected).max())))
