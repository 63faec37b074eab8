"""Pooling: max (with argmax), average, sum, global average; forward and backward.

Every ISA against the float64 reference over a seeded sweep of shapes and options, the
reference's backward against finite differences, 1-vs-2-thread bitwise equality, PyTorch's
semantics on the edge cases (ties, NaN, ceil_mode, divisors, empty dilated windows), bad input.
"""
import numpy as np
import pytest

import cconv
from cconv._validation import pool_output_size
from conftest import assert_close
from fastcnn import reference as ref
from gradcheck import directional_check

# Channel counts below, at and above every SIMD width (8, 16) and channel block (32, 64).
CHANNELS = (1, 3, 8, 9, 16, 17, 31, 33, 64, 70)


def _sweep(seed, count, dilation):
    """Seeded random pooling configurations: (N, H, W, C, kernel, stride, padding, dilation, ceil)."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        kernel = tuple(int(k) for k in rng.integers(1, 5, size=2))
        stride = None if rng.random() < 0.25 else tuple(int(s) for s in rng.integers(1, 4, size=2))
        dil = tuple(int(d) for d in rng.integers(1, 3, size=2)) if dilation else (1, 1)
        padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
        H, W = (int(v) for v in rng.integers(1, 12, size=2))
        N = int(rng.choice([1, 2, 3]))
        C = int(rng.choice(CHANNELS))
        ceil = bool(rng.random() < 0.5)
        try:
            pool_output_size("sweep", (H, W), kernel, stride or kernel, padding, dil, ceil, ())
        except ValueError:
            continue
        cases.append((N, H, W, C, kernel, stride, padding, dil, ceil))
    return cases


FIXED = [  # hand-picked: defaults, square and rectangular kernels, ceil windows past the edge
    (1, 4, 4, 16, (2, 2), None, (0, 0), (1, 1), False),
    (2, 5, 5, 3, (2, 2), (2, 2), (0, 0), (1, 1), True),
    (1, 7, 9, 17, (3, 3), (2, 2), (1, 1), (1, 1), False),
    (1, 7, 9, 33, (3, 3), (2, 2), (1, 1), (1, 1), True),
    (3, 6, 5, 8, (3, 2), (1, 2), (1, 0), (1, 1), True),
    (1, 5, 5, 64, (3, 3), (3, 3), (1, 1), (1, 1), True),
    (2, 8, 8, 70, (5, 5), (1, 1), (2, 2), (1, 1), False),
    (1, 3, 3, 9, (3, 3), (1, 1), (1, 1), (1, 1), False),
    (1, 1, 1, 5, (1, 1), None, (0, 0), (1, 1), False),
    (1, 2, 2, 4, (5, 5), (5, 5), (0, 0), (1, 1), True),  # kernel past the input, one window
]
SUM_CASES = FIXED + _sweep(1, 30, dilation=False)
MAX_CASES = FIXED + [
    (1, 9, 9, 16, (3, 3), (1, 1), (1, 1), (2, 2), False),
    (2, 7, 8, 17, (2, 3), (2, 1), (1, 1), (2, 2), True),
] + _sweep(2, 30, dilation=True)


def _ids(cases):
    return [f"n{c[0]}h{c[1]}w{c[2]}c{c[3]}k{c[4][0]}{c[4][1]}s{c[5] and ''.join(map(str, c[5]))}"
            f"p{c[6][0]}{c[6][1]}d{c[7][0]}{c[7][1]}{'ceil' if c[8] else ''}-{i}"
            for i, c in enumerate(cases)]


def _data(rng, shape, ties=False):
    if ties:  # few distinct values: many ties inside each window
        return rng.integers(-2, 3, size=shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------------- max pooling

@pytest.mark.parametrize("case", MAX_CASES, ids=_ids(MAX_CASES))
def test_max_pool2d_matches_reference(isa, rng, case):
    N, H, W, C, kernel, stride, padding, dilation, ceil = case
    for ties in (False, True):
        x = _data(rng, (N, H, W, C), ties)
        y, idx = cconv.max_pool2d(x, kernel, stride, padding, dilation, ceil)
        y_ref, idx_ref = ref.max_pool2d(x.astype(np.float64), kernel, stride, padding, dilation,
                                        ceil)
        assert y.dtype == np.float32 and idx.dtype == np.int32
        assert y.shape == y_ref.shape == idx.shape
        np.testing.assert_array_equal(idx, idx_ref)
        np.testing.assert_array_equal(y, y_ref)  # a selection: exact, -inf included
        finite = idx_ref >= 0
        if finite.all():
            assert_close("max_pool2d", y, y_ref)

        dy = _data(rng, y.shape)
        dx = cconv.max_pool2d_backward(dy, idx, x.shape)
        dx_ref = ref.max_pool2d_backward(dy.astype(np.float64), idx_ref, x.shape)
        assert dx.shape == x.shape and dx.dtype == np.float32
        assert_close("max_pool2d_backward", dx, dx_ref)


def test_max_pool2d_ties_take_the_first_maximum(isa):
    x = np.zeros((1, 2, 2, 20), np.float32)
    y, idx = cconv.max_pool2d(x, 2)
    assert (idx == 0).all() and (y == 0).all()
    x[0, 1, 0, :] = 1.0
    x[0, 1, 1, :] = 1.0
    y, idx = cconv.max_pool2d(x, 2)
    assert (idx == 2).all() and (y == 1).all()


def test_max_pool2d_nan_propagates(isa):
    x = np.arange(4 * 4 * 19, dtype=np.float32).reshape(1, 4, 4, 19)
    x[0, 0, 1, 3] = np.nan           # window (0, 0)
    x[0, 3, 3, 18] = np.nan          # window (1, 1), last tap
    x[0, 2, 2, :5] = np.nan          # window (1, 1), first tap: later values must not replace it
    y, idx = cconv.max_pool2d(x, 2)
    y_ref, idx_ref = ref.max_pool2d(x.astype(np.float64), 2)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(y, y_ref)
    assert np.isnan(y[0, 0, 0, 3]) and idx[0, 0, 0, 3] == 1
    assert np.isnan(y[0, 1, 1, 18]) and idx[0, 1, 1, 18] == 15
    assert np.isnan(y[0, 1, 1, :5]).all() and (idx[0, 1, 1, :5] == 10).all()
    assert not np.isnan(y[0, 0, 1]).any()


def test_max_pool2d_minus_infinity_and_padding(isa):
    x = np.full((1, 3, 3, 18), -np.inf, np.float32)
    y, idx = cconv.max_pool2d(x, 3, stride=1, padding=1)
    # Padding is -inf too, but the index always names a real input pixel: the first valid tap.
    np.testing.assert_array_equal(idx[0, :, :, 0], [[0, 0, 1], [0, 0, 1], [3, 3, 4]])
    assert np.isneginf(y).all()
    y_ref, idx_ref = ref.max_pool2d(x.astype(np.float64), 3, stride=1, padding=1)
    np.testing.assert_array_equal(idx, idx_ref)


def test_max_pool2d_dilated_window_of_padding_only(isa):
    # H = W = 1, kernel 2, dilation 2, padding 1: taps at -1 and 1, both outside the input.
    x = np.ones((1, 1, 1, 17), np.float32)
    y, idx = cconv.max_pool2d(x, 2, stride=1, padding=1, dilation=2)
    assert y.shape == (1, 1, 1, 17)
    assert np.isneginf(y).all() and (idx == -1).all()
    dx = cconv.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    assert (dx == 0).all()


def test_max_pool2d_backward_accumulates_overlapping_windows(isa):
    x = np.zeros((1, 3, 3, 21), np.float32)
    x[0, 1, 1] = 5.0  # the centre is the maximum of all four 2x2 windows (stride 1)
    y, idx = cconv.max_pool2d(x, 2, stride=1)
    assert (idx == 4).all()
    dy = np.arange(1, 1 + y.size, dtype=np.float32).reshape(y.shape)
    dx = cconv.max_pool2d_backward(dy, idx, x.shape)
    np.testing.assert_array_equal(dx[0, 1, 1], dy[0].sum(axis=(0, 1)))
    assert dx.sum() == dy.sum()


def test_max_pool2d_backward_takes_int64_indices(isa, rng):
    x = _data(rng, (2, 6, 6, 10))
    y, idx = cconv.max_pool2d(x, 3, 2, 1)
    dy = _data(rng, y.shape)
    dx32 = cconv.max_pool2d_backward(dy, idx, x.shape)
    dx64 = cconv.max_pool2d_backward(dy.astype(np.float64), idx.astype(np.int64), list(x.shape))
    np.testing.assert_array_equal(dx32, dx64)


# ------------------------------------------------------------------------ average and sum pooling

@pytest.mark.parametrize("case", SUM_CASES, ids=_ids(SUM_CASES))
def test_avg_and_sum_pool2d_match_reference(isa, rng, case):
    N, H, W, C, kernel, stride, padding, _, ceil = case
    x = _data(rng, (N, H, W, C))
    x64 = x.astype(np.float64)
    for include_pad in (True, False):
        y = cconv.avg_pool2d(x, kernel, stride, padding, ceil, include_pad)
        y_ref = ref.avg_pool2d(x64, kernel, stride, padding, ceil, include_pad)
        assert y.dtype == np.float32
        assert_close("avg_pool2d", y, y_ref)
        dy = _data(rng, y.shape)
        dx = cconv.avg_pool2d_backward(dy, x.shape, kernel, stride, padding, ceil, include_pad)
        dx_ref = ref.avg_pool2d_backward(dy.astype(np.float64), x.shape, kernel, stride, padding,
                                         ceil, include_pad)
        assert dx.shape == x.shape
        assert_close("avg_pool2d_backward", dx, dx_ref)

    y = cconv.sum_pool2d(x, kernel, stride, padding, ceil)
    y_ref = ref.sum_pool2d(x64, kernel, stride, padding, ceil)
    assert_close("sum_pool2d", y, y_ref)
    dy = _data(rng, y.shape)
    dx = cconv.sum_pool2d_backward(dy, x.shape, kernel, stride, padding, ceil)
    dx_ref = ref.sum_pool2d_backward(dy.astype(np.float64), x.shape, kernel, stride, padding, ceil)
    assert_close("sum_pool2d_backward", dx, dx_ref)


def test_avg_pool2d_divisor_follows_pytorch(isa):
    x = np.ones((1, 5, 5, 20), np.float32)
    # Zero padding counted: the corner window of a 3x3/pad-1 pool holds 4 ones out of 9.
    y = cconv.avg_pool2d(x, 3, stride=1, padding=1)
    np.testing.assert_allclose(y[0, 0, 0], 4 / 9, rtol=1e-6)
    np.testing.assert_allclose(y[0, 2, 2], 1.0, rtol=1e-6)
    assert np.allclose(cconv.avg_pool2d(x, 3, 1, 1, count_include_pad=False), 1.0)
    # ceil_mode: the last window (start 4) runs past the input and is clipped for the divisor.
    y = cconv.avg_pool2d(x, 2, ceil_mode=True)
    assert y.shape == (1, 3, 3, 20)
    assert np.allclose(y, 1.0)
    # ...but only at the padded edge: padding inside the window still counts.
    y = cconv.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)
    assert y.shape == (1, 3, 3, 20)
    np.testing.assert_allclose(y[0, :, :, 0], [[4 / 9, 6 / 9, 4 / 9], [6 / 9, 1, 6 / 9],
                                               [4 / 9, 6 / 9, 4 / 9]], rtol=1e-6)
    assert np.allclose(cconv.sum_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)[0, 0, 0], 4)


def test_output_size_follows_pytorch():
    # (size, kernel, stride, padding, dilation, ceil) -> PyTorch's output size
    known = [(5, 3, 3, 1, 1, True, 2), (5, 3, 3, 1, 1, False, 2), (5, 2, 2, 0, 1, True, 3),
             (5, 2, 2, 0, 1, False, 2), (6, 3, 2, 1, 1, True, 4), (7, 3, 2, 0, 1, True, 3),
             (8, 3, 2, 1, 2, False, 3), (2, 5, 5, 0, 1, True, 1), (32, 2, 2, 0, 1, False, 16),
             (1, 2, 1, 1, 2, False, 1)]
    for size, k, s, p, d, ceil, expected in known:
        out = pool_output_size("op", (size, size), (k, k), (s, s), (p, p), (d, d), ceil, ())
        assert out == (expected, expected), (size, k, s, p, d, ceil)


# ---------------------------------------------------------------------- global average pooling

@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 3), (3, 7, 7, 17), (1, 8, 9, 64),
                                   (2, 4, 4, 70), (1, 32, 33, 129), (2, 2, 1, 9)])
def test_global_avg_pool2d_matches_reference(isa, rng, shape):
    x = _data(rng, shape) + 3.0  # a mean far from zero: the sum's rounding shows
    y = cconv.global_avg_pool2d(x)
    assert y.shape == (shape[0], shape[3]) and y.dtype == np.float32
    assert_close("global_avg_pool2d", y, ref.global_avg_pool2d(x.astype(np.float64)))
    dy = _data(rng, y.shape)
    dx = cconv.global_avg_pool2d_backward(dy, shape)
    assert dx.shape == shape
    assert_close("global_avg_pool2d_backward", dx,
                 ref.global_avg_pool2d_backward(dy.astype(np.float64), shape))


# ------------------------------------------------------------ reference against finite differences

@pytest.mark.parametrize("case", SUM_CASES[::2], ids=_ids(SUM_CASES[::2]))
def test_reference_backward_matches_finite_differences(rng, case):
    N, H, W, C, kernel, stride, padding, _, ceil = case
    C = min(C, 9)
    x = rng.standard_normal((N, H, W, C))
    for include_pad in (True, False):
        y = ref.avg_pool2d(x, kernel, stride, padding, ceil, include_pad)
        dy = rng.standard_normal(y.shape)
        dx = ref.avg_pool2d_backward(dy, x.shape, kernel, stride, padding, ceil, include_pad)
        directional_check(lambda v: ref.avg_pool2d(v, kernel, stride, padding, ceil, include_pad),
                          [x], [dx], dy, rng)
    y = ref.sum_pool2d(x, kernel, stride, padding, ceil)
    dy = rng.standard_normal(y.shape)
    dx = ref.sum_pool2d_backward(dy, x.shape, kernel, stride, padding, ceil)
    directional_check(lambda v: ref.sum_pool2d(v, kernel, stride, padding, ceil), [x], [dx], dy,
                      rng)
    y = ref.global_avg_pool2d(x)
    dy = rng.standard_normal(y.shape)
    directional_check(ref.global_avg_pool2d, [x], [ref.global_avg_pool2d_backward(dy, x.shape)],
                      dy, rng)


def test_reference_max_backward_matches_finite_differences(rng):
    # Distinct, well-separated values: the argmax does not move under a small perturbation.
    x = rng.permutation(5 * 7 * 6 * 4).reshape(5, 7, 6, 4).astype(np.float64)
    for args in [(2,), (3, 2, 1), ((3, 2), (1, 2), (1, 1), (2, 1), True)]:
        y, idx = ref.max_pool2d(x, *args)
        dy = rng.standard_normal(y.shape)
        dx = ref.max_pool2d_backward(dy, idx, x.shape)
        directional_check(lambda v: ref.max_pool2d(v, *args)[0], [x], [dx], dy, rng)


# --------------------------------------------------------------------------------- determinism

def _bits(a):
    return a.view(np.uint32) if a.dtype == np.float32 else a


def test_one_and_two_threads_are_bitwise_equal(isa, rng):
    x = _data(rng, (3, 13, 11, 37)) + 1.0
    shape = x.shape
    for args in [(3, 2, 1, 1, True), ((2, 3), (1, 2), (1, 1), (2, 1), False)]:
        one = cconv.max_pool2d(x, *args, n_threads=1)
        two = cconv.max_pool2d(x, *args, n_threads=2)
        for a, b in zip(one, two):
            np.testing.assert_array_equal(_bits(a), _bits(b))
        dy = _data(rng, one[0].shape)
        np.testing.assert_array_equal(
            _bits(cconv.max_pool2d_backward(dy, one[1], shape, n_threads=1)),
            _bits(cconv.max_pool2d_backward(dy, one[1], shape, n_threads=2)))
    for args in [(3, 2, 1, True), ((3, 2), 1, (1, 0), False)]:
        for fwd, bwd in [(cconv.avg_pool2d, cconv.avg_pool2d_backward),
                         (cconv.sum_pool2d, cconv.sum_pool2d_backward)]:
            one = fwd(x, *args, n_threads=1)
            np.testing.assert_array_equal(_bits(one), _bits(fwd(x, *args, n_threads=2)))
            dy = _data(rng, one.shape)
            np.testing.assert_array_equal(_bits(bwd(dy, shape, *args, n_threads=1)),
                                          _bits(bwd(dy, shape, *args, n_threads=2)))
    one = cconv.global_avg_pool2d(x, n_threads=1)
    np.testing.assert_array_equal(_bits(one), _bits(cconv.global_avg_pool2d(x, n_threads=2)))
    dy = _data(rng, one.shape)
    np.testing.assert_array_equal(_bits(cconv.global_avg_pool2d_backward(dy, shape, n_threads=1)),
                                  _bits(cconv.global_avg_pool2d_backward(dy, shape, n_threads=2)))


def test_every_isa_gives_the_same_bits(rng):
    # Each channel sees the same additions and divisions in the same order on every ISA.
    x = _data(rng, (2, 9, 11, 37))
    dy = _data(rng, (2, 5, 6, 37))
    previous = cconv.get_isa()
    results = []
    try:
        for isa in cconv.available_isas():
            cconv.set_isa(isa)
            y, idx = cconv.max_pool2d(x, 3, 2, 1, 2, True)
            results.append([y, idx, cconv.max_pool2d_backward(y, idx, x.shape),
                            cconv.avg_pool2d(x, 3, 2, 1, True, False),
                            cconv.avg_pool2d_backward(dy, x.shape, 3, 2, 1, True, False),
                            cconv.sum_pool2d_backward(dy, x.shape, 3, 2, 1, True),
                            cconv.global_avg_pool2d(x)])
    finally:
        cconv.set_isa(previous)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(_bits(a), _bits(b))


def test_other_dtypes_and_strided_inputs_are_converted(isa, rng):
    x = _data(rng, (2, 9, 9, 12))
    strided = np.asfortranarray(x.astype(np.float64))[:, ::1, :, :]
    np.testing.assert_array_equal(cconv.max_pool2d(strided, 3)[0], cconv.max_pool2d(x, 3)[0])
    np.testing.assert_array_equal(cconv.avg_pool2d(strided, 3), cconv.avg_pool2d(x, 3))
    np.testing.assert_array_equal(cconv.global_avg_pool2d(x[:, ::2, ::3]),
                                  cconv.global_avg_pool2d(np.ascontiguousarray(x[:, ::2, ::3])))


# ---------------------------------------------------------------------------------- bad input

def test_bad_input_raises_value_error_naming_the_op():
    x = np.zeros((2, 6, 6, 4), np.float32)
    for op, call in [
        ("max_pool2d", lambda: cconv.max_pool2d(x[0], 2)),                         # rank 3
        ("max_pool2d", lambda: cconv.max_pool2d(x[:0], 2)),                        # empty batch
        ("max_pool2d", lambda: cconv.max_pool2d(x, 0)),                            # kernel 0
        ("max_pool2d", lambda: cconv.max_pool2d(x, 2, stride=0)),
        ("max_pool2d", lambda: cconv.max_pool2d(x, 2, padding=-1)),
        ("max_pool2d", lambda: cconv.max_pool2d(x, 3, padding=2)),                 # > k // 2
        ("max_pool2d", lambda: cconv.max_pool2d(x, 2, padding=2, dilation=3)),      # > k // 2
        ("max_pool2d", lambda: cconv.max_pool2d(x, 2, dilation=0)),
        ("max_pool2d", lambda: cconv.max_pool2d(x, 7)),                            # > input
        ("max_pool2d", lambda: cconv.max_pool2d(x, "a")),
        ("max_pool2d", lambda: cconv.max_pool2d(x, (2, 2, 2))),
        ("max_pool2d", lambda: cconv.max_pool2d(x, 2, n_threads=0)),
        ("avg_pool2d", lambda: cconv.avg_pool2d(x, 4, padding=3)),
        ("avg_pool2d", lambda: cconv.avg_pool2d(x, (7, 2))),
        ("avg_pool2d", lambda: cconv.avg_pool2d(x[..., 0], 2)),
        ("sum_pool2d", lambda: cconv.sum_pool2d(x, 2, padding=(0, 2))),
        ("sum_pool2d", lambda: cconv.sum_pool2d(np.zeros((1, 0, 4, 3)), 1)),
        ("global_avg_pool2d", lambda: cconv.global_avg_pool2d(x[0])),
        ("global_avg_pool2d", lambda: cconv.global_avg_pool2d(np.zeros((1, 2, 2, 0)))),
        ("global_avg_pool2d", lambda: cconv.global_avg_pool2d("text")),
    ]:
        with pytest.raises(ValueError, match=op):
            call()


def test_bad_backward_input_raises_value_error_naming_the_op():
    x = np.ones((2, 6, 6, 4), np.float32)
    y, idx = cconv.max_pool2d(x, 2)
    dy = np.ones_like(y)
    bad_idx = idx.copy()
    bad_idx[0, 0, 0, 0] = 36
    for op, call in [
        ("max_pool2d_backward", lambda: cconv.max_pool2d_backward(dy, idx[:1], x.shape)),
        ("max_pool2d_backward", lambda: cconv.max_pool2d_backward(dy, bad_idx, x.shape)),
        ("max_pool2d_backward", lambda: cconv.max_pool2d_backward(dy, idx - 2, x.shape)),
        ("max_pool2d_backward", lambda: cconv.max_pool2d_backward(dy, idx * 0.5, x.shape)),
        ("max_pool2d_backward", lambda: cconv.max_pool2d_backward(dy, idx, (2, 6, 6, 5))),
        ("max_pool2d_backward", lambda: cconv.max_pool2d_backward(dy, idx, (3, 6, 6, 4))),
        ("max_pool2d_backward", lambda: cconv.max_pool2d_backward(dy, idx, (2, 6, 6))),
        ("max_pool2d_backward", lambda: cconv.max_pool2d_backward(dy, idx, (2, 0, 6, 4))),
        ("max_pool2d_backward", lambda: cconv.max_pool2d_backward(dy[0], idx[0], x.shape)),
        ("avg_pool2d_backward", lambda: cconv.avg_pool2d_backward(dy, x.shape, 3)),
        ("avg_pool2d_backward", lambda: cconv.avg_pool2d_backward(dy, (2, 6, 6, 3), 2)),
        ("avg_pool2d_backward", lambda: cconv.avg_pool2d_backward(dy, "shape", 2)),
        ("avg_pool2d_backward", lambda: cconv.avg_pool2d_backward(dy, x.shape, 2, padding=2)),
        ("sum_pool2d_backward", lambda: cconv.sum_pool2d_backward(dy, x.shape, 2, ceil_mode=True,
                                                                  stride=4)),
        ("sum_pool2d_backward", lambda: cconv.sum_pool2d_backward(dy[:, :0], x.shape, 2)),
        ("global_avg_pool2d_backward", lambda: cconv.global_avg_pool2d_backward(
            np.ones((2, 5)), x.shape)),
        ("global_avg_pool2d_backward", lambda: cconv.global_avg_pool2d_backward(
            np.ones((2, 1, 1, 4)), x.shape)),
        ("global_avg_pool2d_backward", lambda: cconv.global_avg_pool2d_backward(
            np.ones((2, 4)), (2, 6, 6, 4, 1))),
    ]:
        with pytest.raises(ValueError, match=op):
            call()


# ---------------------------------------------------------------------- PyTorch, when installed

def test_pooling_matches_pytorch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    def nchw(a):
        return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))

    def nhwc(t):
        return t.detach().numpy().transpose(0, 2, 3, 1)

    for N, H, W, C, kernel, stride, padding, dilation, ceil in MAX_CASES[:24]:
        x = _data(rng, (N, H, W, C), ties=bool(H % 2))
        stride_t = kernel if stride is None else stride
        xt = nchw(x).requires_grad_(True)
        yt, it = F.max_pool2d(xt, kernel, stride_t, padding, dilation, ceil, return_indices=True)
        y, idx = cconv.max_pool2d(x, kernel, stride, padding, dilation, ceil)
        np.testing.assert_array_equal(y, nhwc(yt))
        # Where a dilated window holds no input pixel PyTorch's index points past the image;
        # ours is -1.
        np.testing.assert_array_equal(idx[idx >= 0], nhwc(it)[idx >= 0])
        dy = _data(rng, y.shape)
        yt.backward(nchw(dy))
        np.testing.assert_allclose(cconv.max_pool2d_backward(dy, idx, x.shape), nhwc(xt.grad),
                                   rtol=1e-5, atol=1e-5)

    for N, H, W, C, kernel, stride, padding, _, ceil in SUM_CASES[:24]:
        x = _data(rng, (N, H, W, C))
        stride_t = kernel if stride is None else stride
        for include_pad in (True, False):
            for op, divisor in [("avg", None), ("sum", 1)]:
                if op == "sum" and not include_pad:
                    continue
                xt = nchw(x).requires_grad_(True)
                yt = F.avg_pool2d(xt, kernel, stride_t, padding, ceil, include_pad,
                                  divisor_override=divisor)
                if op == "avg":
                    y = cconv.avg_pool2d(x, kernel, stride, padding, ceil, include_pad)
                else:
                    y = cconv.sum_pool2d(x, kernel, stride, padding, ceil)
                np.testing.assert_allclose(y, nhwc(yt), rtol=1e-5, atol=1e-5)
                dy = _data(rng, y.shape)
                yt.backward(nchw(dy))
                if op == "avg":
                    dx = cconv.avg_pool2d_backward(dy, x.shape, kernel, stride, padding, ceil,
                                                   include_pad)
                else:
                    dx = cconv.sum_pool2d_backward(dy, x.shape, kernel, stride, padding, ceil)
                np.testing.assert_allclose(dx, nhwc(xt.grad), rtol=1e-5, atol=1e-5)

    x = _data(rng, (3, 7, 5, 19))
    xt = nchw(x).requires_grad_(True)
    yt = F.adaptive_avg_pool2d(xt, 1).flatten(1)
    np.testing.assert_allclose(cconv.global_avg_pool2d(x), yt.detach().numpy(), rtol=1e-5,
                               atol=1e-6)
    dy = _data(rng, (3, 19))
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(cconv.global_avg_pool2d_backward(dy, x.shape), nhwc(xt.grad),
                               rtol=1e-5, atol=1e-6)
