"""Depthwise convolution (groups == channels) against the float64 reference, every ISA.

Both the private kernels (cconv._depthwise) and the public conv2d functions with groups ==
channels are checked, on a seeded sweep that covers channel counts below, at and above every
SIMD width, kernel sizes 1/3/5/(3,5), strides 1/2/(2,1), dilation 1/2, symmetric and
asymmetric padding, batch 1 and 3, odd and wide images (register-tile remainders).
"""
import numpy as np
import pytest

import cconv
from cconv._depthwise import (depthwise_backward_data, depthwise_backward_weight,
                              depthwise_forward)
from fastcnn import reference as ref

from conftest import assert_close
from gradcheck import directional_check

TOL = 1e-5
INF = float("inf")

CHANNELS = [1, 3, 8, 15, 16, 17, 33, 64, 70]
KERNELS = [(1, 1), (3, 3), (5, 5), (3, 5)]
STRIDES = [(1, 1), (2, 2), (2, 1)]
DILATIONS = [(1, 1), (2, 2)]
PADDINGS = [((0, 0), (0, 0)), ((1, 1), (1, 1)), ((2, 2), (2, 2)), ((0, 2), (1, 0)),
            ((2, 1), (0, 1))]


def _out(size, k, s, d, pads):
    return (size + pads[0] + pads[1] - d * (k - 1) - 1) // s + 1


def _sweep(count, seed=7):
    """Every value of every option appears (the lists are walked with different periods);
    the image sizes are random, odd ones and ones wider than several register tiles included."""
    rng = np.random.default_rng(seed)
    cases = []
    i = 0
    while len(cases) < count:
        c = CHANNELS[i % len(CHANNELS)]
        k = KERNELS[i % len(KERNELS)]
        s = STRIDES[(i // 2) % len(STRIDES)]
        d = DILATIONS[(i // 3) % len(DILATIONS)]
        p = PADDINGS[(i // 5) % len(PADDINGS)]
        n = (1, 3)[(i // 7) % 2]
        i += 1
        if i % 4 == 0:  # wide rows: several full tiles plus a remainder
            h, w = int(rng.integers(3, 9)), int(rng.integers(19, 41))
        else:
            h, w = int(rng.integers(1, 14)), int(rng.integers(1, 14))
        oh, ow = (_out(h, k[0], s[0], d[0], p[0]), _out(w, k[1], s[1], d[1], p[1]))
        if oh < 1 or ow < 1:
            continue  # kernel larger than the padded input
        cases.append(dict(x_shape=(n, h, w, c), kernel=k, stride=s, dilation=d, padding=p,
                          y_shape=(n, oh, ow, c)))
    return cases


def _case(x_shape, kernel, stride, dilation, padding):
    y_shape = (x_shape[0], _out(x_shape[1], kernel[0], stride[0], dilation[0], padding[0]),
               _out(x_shape[2], kernel[1], stride[1], dilation[1], padding[1]), x_shape[3])
    return dict(x_shape=x_shape, kernel=kernel, stride=stride, dilation=dilation,
                padding=padding, y_shape=y_shape)


# The common layers (3x3, stride 1 and 2, padding 1: the 9-tap paths) on rows of several tiles.
COMMON = [_case((2, 9, 29, 64), (3, 3), (1, 1), (1, 1), ((1, 1), (1, 1))),
          _case((1, 12, 31, 33), (3, 3), (2, 2), (1, 1), ((1, 1), (1, 1))),
          _case((3, 8, 26, 17), (3, 3), (2, 2), (1, 1), ((0, 1), (0, 1))),
          _case((1, 7, 23, 70), (3, 3), (1, 1), (2, 2), ((2, 2), (2, 2)))]
CASES = _sweep(40) + COMMON
CASE_IDS = [f"x{c['x_shape']}-k{c['kernel']}-s{c['stride']}-d{c['dilation']}-p{c['padding']}"
            .replace(" ", "") for c in CASES]


def _data(case, seed=0):
    rng = np.random.default_rng(seed)
    c = case["x_shape"][3]
    x = rng.standard_normal(case["x_shape"])
    w = rng.standard_normal((c, 1) + case["kernel"])
    b = rng.standard_normal(c)
    dy = rng.standard_normal(case["y_shape"])
    return x, w, b, dy


def _f32(*arrays):
    return [np.asarray(a, np.float32) for a in arrays]


def _fwd(case, x, w, b, cmin=-INF, cmax=INF, n_threads=None):
    p = case["padding"]
    return depthwise_forward(x, w, b, case["stride"], case["dilation"], p[0][0], p[1][0],
                             case["y_shape"][1], case["y_shape"][2], cmin, cmax, n_threads)


def _bwd_data(case, dy, w, n_threads=None):
    p = case["padding"]
    return depthwise_backward_data(dy, w, case["x_shape"], case["stride"], case["dilation"],
                                   p[0][0], p[1][0], n_threads)


def _bwd_weight(case, x, dy, n_threads=None):
    p = case["padding"]
    return depthwise_backward_weight(x, dy, case["kernel"], case["stride"], case["dilation"],
                                     p[0][0], p[1][0], n_threads)


def _ref_args(case):
    return dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                groups=case["x_shape"][3])


# ------------------------------------------------------------------ kernels vs the reference

@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward(case, isa):
    x, w, b, _ = _data(case)
    x32, w32, b32 = _f32(x, w, b)
    expected = ref.conv2d(x, w, b, **_ref_args(case))
    assert_close("depthwise_forward", _fwd(case, x32, w32, b32), expected, TOL)
    # no bias, and a fused ReLU
    expected = ref.conv2d(x, w, None, **_ref_args(case))
    assert_close("depthwise_forward", _fwd(case, x32, w32, None), expected, TOL)
    assert_close("depthwise_forward", _fwd(case, x32, w32, None, 0.0, INF),
                 np.maximum(expected, 0), TOL)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_backward_data(case, isa):
    x, w, _, dy = _data(case)
    dy32, w32 = _f32(dy, w)
    expected = ref.conv2d_backward_data(dy, w, case["x_shape"], **_ref_args(case))
    assert_close("depthwise_backward_data", _bwd_data(case, dy32, w32), expected, TOL)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_backward_weight(case, isa):
    x, w, _, dy = _data(case)
    x32, dy32 = _f32(x, dy)
    expected = ref.conv2d_backward_weight(x, dy, case["kernel"], **_ref_args(case))
    assert_close("depthwise_backward_weight", _bwd_weight(case, x32, dy32), expected, TOL)


# ------------------------------------------------ the public conv2d with groups == channels

@pytest.mark.parametrize("case", CASES[::3], ids=CASE_IDS[::3])
def test_conv2d_groups_equal_channels(case, isa):
    x, w, b, dy = _data(case, seed=1)
    x32, w32, b32, dy32 = _f32(x, w, b, dy)
    args = _ref_args(case)
    assert_close("conv2d[depthwise]", cconv.conv2d(x32, w32, b32, **args),
                 ref.conv2d(x, w, b, **args), TOL)
    assert_close("conv2d_backward_data[depthwise]",
                 cconv.conv2d_backward_data(dy32, w32, case["x_shape"], **args),
                 ref.conv2d_backward_data(dy, w, case["x_shape"], **args), TOL)
    assert_close("conv2d_backward_weight[depthwise]",
                 cconv.conv2d_backward_weight(x32, dy32, case["kernel"], **args),
                 ref.conv2d_backward_weight(x, dy, case["kernel"], **args), TOL)


@pytest.mark.parametrize("case", CASES[::5], ids=CASE_IDS[::5])
def test_reference_gradients(case):
    """The reference's depthwise backward passes against finite differences."""
    x, w, b, dy = _data(case, seed=2)
    args = _ref_args(case)
    dx = ref.conv2d_backward_data(dy, w, case["x_shape"], **args)
    dw = ref.conv2d_backward_weight(x, dy, case["kernel"], **args)
    directional_check(lambda x_, w_: ref.conv2d(x_, w_, b, **args), [x, w], [dx, dw], dy,
                      np.random.default_rng(3))


# ---------------------------------------------------------------------------- determinism

THREAD_CASES = [
    _case((3, 13, 21, 70), (3, 3), (1, 1), (1, 1), ((1, 1), (1, 1))),
    _case((2, 11, 17, 8), (3, 3), (1, 1), (1, 1), ((1, 1), (1, 1))),
    _case((5, 1, 6, 3), (1, 3), (1, 1), (1, 1), ((0, 0), (1, 1))),  # fewer rows than chunks
    _case((2, 15, 15, 33), (5, 5), (2, 2), (1, 1), ((2, 1), (0, 2))),
    _case((1, 9, 12, 17), (3, 5), (2, 1), (2, 1), ((1, 1), (2, 2))),
]


@pytest.mark.parametrize("case", THREAD_CASES)
def test_threads_bitwise(case, isa):
    x, w, b, dy = _f32(*_data(case, seed=4))
    for n in (2, 3, 4):
        np.testing.assert_array_equal(_fwd(case, x, w, b, n_threads=1),
                                      _fwd(case, x, w, b, n_threads=n))
        np.testing.assert_array_equal(_bwd_data(case, dy, w, n_threads=1),
                                      _bwd_data(case, dy, w, n_threads=n))
        np.testing.assert_array_equal(_bwd_weight(case, x, dy, n_threads=1),
                                      _bwd_weight(case, x, dy, n_threads=n))


# ------------------------------------------------------------------------ NaN propagation

@pytest.mark.parametrize("channels", [5, 16, 37])
def test_nan_propagates(channels, isa):
    case = _case((1, 9, 19, channels), (3, 3), (1, 1), (1, 1), ((1, 1), (1, 1)))
    x, w, b, dy = _f32(*_data(case, seed=5))
    x[0, 4, 9, channels - 1] = np.nan
    nan_y = np.zeros(case["y_shape"], bool)
    nan_y[0, 3:6, 8:11, channels - 1] = True
    for cmin in (-INF, 0.0):  # a fused ReLU must not swallow the NaN
        y = _fwd(case, x, w, b, cmin, INF)
        np.testing.assert_array_equal(np.isnan(y), nan_y)
    dy[0, 0, 18, 0] = np.nan
    nan_dx = np.zeros(case["x_shape"], bool)
    nan_dx[0, 0:2, 17:19, 0] = True
    np.testing.assert_array_equal(np.isnan(_bwd_data(case, dy, w)), nan_dx)
    dw = _bwd_weight(case, x, dy)
    assert np.isnan(dw[channels - 1]).all() and np.isnan(dw[0]).any()
    assert np.isfinite(dw[1:channels - 1]).all()


# --------------------------------------------------------------------------- bad input

def test_bad_input():
    x = np.zeros((1, 5, 5, 4), np.float32)
    w = np.zeros((4, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="depthwise_forward"):
        depthwise_forward(x, np.zeros((3, 1, 3, 3), np.float32), None, 1, 1, 1, 1, 5, 5, -INF,
                          INF)
    with pytest.raises(ValueError, match="depthwise_forward"):
        depthwise_forward(x, w, np.zeros(3, np.float32), 1, 1, 1, 1, 5, 5, -INF, INF)
    with pytest.raises(ValueError, match="depthwise_forward"):
        depthwise_forward(x[0], w, None, 1, 1, 1, 1, 5, 5, -INF, INF)
    with pytest.raises(ValueError, match="depthwise_backward_data"):
        depthwise_backward_data(x, w, (1, 5, 5, 3), 1, 1, 1, 1)
    with pytest.raises(ValueError, match="depthwise_backward_weight"):
        depthwise_backward_weight(x, np.zeros((2, 5, 5, 4), np.float32), 3, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="depthwise_backward_weight"):
        depthwise_backward_weight(x, x, (0, 3), 1, 1, 1, 1)


def test_converts_dtype_and_layout():
    """float64 or non-contiguous inputs are converted, not rejected."""
    case = CASES[1]
    x, w, b, dy = _data(case, seed=6)
    xs = np.asfortranarray(x)
    assert_close("depthwise_forward", _fwd(case, xs, w, b), ref.conv2d(x, w, b, **_ref_args(case)),
                 TOL)
