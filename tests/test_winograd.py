"""Winograd F(2x2,3x3) and F(4x4,3x3), forward and backward-data, and the weight gradient
F(3x3, 2x2) and F(3x3, 4x4), against the float64 reference.

Winograd's transforms round differently from a direct convolution: the tolerance is 1e-4 of the
output's largest magnitude (DESIGN.md, section 3); the summary prints the worst error seen.
"""
import numpy as np
import pytest

import cconv
from cconv._winograd import (WinogradWeights, _gemm_rows, _tuning, winograd_backward_data,
                             winograd_backward_weight, winograd_choose, winograd_forward,
                             winograd_supported, winograd_transform_weights)
from fastcnn import reference as ref

from conftest import assert_close

TOL = 1e-4
TILES = (2, 4)
CHANNELS = (1, 3, 8, 16, 17, 32, 64, 70)
PADDINGS = (0, 1, 2, ((0, 2), (1, 0)), ((2, 1), (0, 1)), ((1, 2), (2, 0)), ((2, 0), (0, 2)))


def _pads(padding):
    if isinstance(padding, int):
        return (padding, padding), (padding, padding)
    return tuple(padding[0]), tuple(padding[1])


def _sweep(count, seed=3):
    """Seeded geometries: every channel count of CHANNELS (below, at and above the 8/16 SIMD
    widths and the 8/16/32 register tiles), sizes 1..30 (odd, and not multiples of 2 or 4),
    symmetric and asymmetric padding 0..2, batch 1 and 3, with and without bias and ReLU."""
    rng = np.random.default_rng(seed)
    cases = [  # fixed corners first: a 1x1 image, exact tile multiples, one long row
        dict(n=1, h=1, w=1, cin=3, cout=8, padding=1, bias=True, relu=False),
        dict(n=3, h=8, w=8, cin=64, cout=64, padding=1, bias=True, relu=True),
        dict(n=1, h=30, w=3, cin=17, cout=70, padding=((2, 0), (0, 2)), bias=False, relu=False),
        dict(n=3, h=16, w=12, cin=16, cout=16, padding=0, bias=True, relu=True),
    ]
    while len(cases) < count:
        padding = PADDINGS[int(rng.integers(len(PADDINGS)))]
        (pt, pb), (pl, pr) = _pads(padding)
        h, w = int(rng.integers(1, 31)), int(rng.integers(1, 31))
        if h + pt + pb < 3 or w + pl + pr < 3:
            continue  # kernel larger than the padded input
        cases.append(dict(n=int(rng.choice([1, 3])), h=h, w=w,
                          cin=int(rng.choice(CHANNELS)), cout=int(rng.choice(CHANNELS)),
                          padding=padding, bias=bool(rng.integers(2)), relu=bool(rng.integers(2))))
    return cases


CASES = _sweep(28)
CASE_IDS = [f"n{c['n']}-{c['h']}x{c['w']}-{c['cin']}to{c['cout']}-p{c['padding']}"
            f"{'-b' if c['bias'] else ''}{'-relu' if c['relu'] else ''}".replace(" ", "")
            for c in CASES]


def _data(case, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case["n"], case["h"], case["w"], case["cin"]))
    w = rng.standard_normal((case["cout"], case["cin"], 3, 3))
    b = rng.standard_normal(case["cout"]) if case["bias"] else None
    return x, w, b


def _forward(x, w, b, padding, relu, tile, **kw):
    (pt, pb), (pl, pr) = _pads(padding)
    oh, ow = x.shape[1] + pt + pb - 2, x.shape[2] + pl + pr - 2
    cmin = 0.0 if relu else -np.inf
    return winograd_forward(x, w, b, pt, pl, oh, ow, cmin, np.inf, tile, **kw)


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_reference(isa, tile, case):
    x, w, b = _data(case)
    p = case["padding"]
    expected = ref.conv2d(x, w, b, padding=p, activation="relu" if case["relu"] else None)
    y = _forward(x, w, b, p, case["relu"], tile)
    assert y.dtype == np.float32
    assert_close(f"winograd_f{tile}_forward", y, expected, TOL)
    dy = np.random.default_rng(1).standard_normal(expected.shape)
    (pt, _), (pl, _) = _pads(p)
    assert_close(f"winograd_f{tile}_backward_data",
                 winograd_backward_data(dy, w, x.shape, pt, pl, tile),
                 ref.conv2d_backward_data(dy, w, x.shape, padding=p), TOL)
    dw = winograd_backward_weight(x, dy, pt, pl, tile)
    assert dw.shape == w.shape and dw.dtype == np.float32 and dw.flags.c_contiguous
    assert_close(f"winograd_f{tile}_backward_weight", dw,
                 ref.conv2d_backward_weight(x, dy, 3, padding=p), TOL)


@pytest.mark.parametrize("tile", TILES)
def test_large_channels_and_padding_beyond_the_kernel(isa, tile):
    """Many input channels (error grows with the GEMMs' K), padding 3 (whole tiles of padding
    forward, a negative padding in the backward-data convolution)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 11, 10, 160))
    w = rng.standard_normal((24, 160, 3, 3))
    b = rng.standard_normal(24)
    for p in (((3, 0), (1, 3)), 3):
        expected = ref.conv2d(x, w, b, padding=p)
        assert_close(f"winograd_f{tile}_forward", _forward(x, w, b, p, False, tile), expected, TOL)
        dy = rng.standard_normal(expected.shape)
        (pt, _), (pl, _) = _pads(p)
        assert_close(f"winograd_f{tile}_backward_data",
                     winograd_backward_data(dy, w, x.shape, pt, pl, tile),
                     ref.conv2d_backward_data(dy, w, x.shape, padding=p), TOL)
        assert_close(f"winograd_f{tile}_backward_weight",
                     winograd_backward_weight(x, dy, pt, pl, tile),
                     ref.conv2d_backward_weight(x, dy, 3, padding=p), TOL)


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("part_tiles", [None, 32])
def test_weight_gradient_many_tiles(isa, tile, part_tiles):
    """Several blocks per part, channel counts off the register tiles, and either one part
    (threads split the input channels) or several (each summing its own partial M): against
    the reference, and bitwise the same for 1, 2 and 3 threads."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((5, 23, 21, 19)).astype(np.float32)
    dy = rng.standard_normal((5, 23, 21, 35)).astype(np.float32)
    previous = _tuning(wgrad_part_tiles=part_tiles)
    try:
        dws = [winograd_backward_weight(x, dy, 1, 1, tile, n_threads=t) for t in (1, 2, 3)]
    finally:
        _tuning(*previous)
    assert_close(f"winograd_f{tile}_backward_weight", dws[0],
                 ref.conv2d_backward_weight(x.astype(np.float64), dy.astype(np.float64), 3,
                                            padding=1), TOL)
    for dw in dws[1:]:
        assert np.array_equal(dw, dws[0])
    # auto runs it from 8 input channels on (fewer fill too few rows of a register tile).
    assert cconv.conv2d_algorithm(x.shape, (35, 19, 3, 3), padding=1,
                                  backward_weight=True) == "winograd-f4"
    assert cconv.conv2d_algorithm((5, 23, 21, 3), (35, 3, 3, 3), padding=1,
                                  backward_weight=True) == "direct-im2col-gemm"
    # The forward pass from 4 input channels on (first layers' input transform costs more).
    assert cconv.conv2d_algorithm((5, 23, 21, 3), (35, 3, 3, 3), padding=1) == "direct-igemm"
    assert cconv.conv2d_algorithm((5, 23, 21, 4), (35, 4, 3, 3), padding=1) == "winograd-f4"
    # The same through conv2d_backward_weight, against its direct algorithm.
    wino = cconv.conv2d_backward_weight(x, dy, 3, padding=1, algo="winograd")
    direct = cconv.conv2d_backward_weight(x, dy, 3, padding=1, algo="direct")
    assert np.abs(wino - direct).max() <= TOL * np.abs(direct).max()


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("weights", ["per-thread", "shared", "cached"])
def test_threads_bitwise_identical(isa, tile, weights):
    """Blocks of tiles split the work; each output comes from one block in a fixed order. The
    weights are transformed by every thread (small), once for all threads (large) or before."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 29, 27, 40)).astype(np.float32)
    w = rng.standard_normal((70, 40, 3, 3)).astype(np.float32)
    b = rng.standard_normal(70).astype(np.float32)
    wf, wb = w, w
    if weights == "cached":
        wf, wb = winograd_transform_weights(w, tile), winograd_transform_weights(w, tile, True)
    previous = _tuning(private_weight_bytes=0 if weights == "shared" else None)
    try:
        ys = [_forward(x, wf, b, 1, True, tile, n_threads=t) for t in (1, 2, 3)]
        dy = rng.standard_normal(ys[0].shape).astype(np.float32)
        dxs = [winograd_backward_data(dy, wb, x.shape, 1, 1, tile, n_threads=t) for t in (1, 2, 3)]
    finally:
        _tuning(*previous)
    expected = ref.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                          padding=1, activation="relu")
    assert_close(f"winograd_f{tile}_forward", ys[0], expected, TOL)
    for y in ys[1:]:
        assert np.array_equal(y, ys[0])
    for dx in dxs[1:]:
        assert np.array_equal(dx, dxs[0])


@pytest.mark.parametrize("tile", TILES)
def test_transformed_weights_reused(isa, tile):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 9, 9, 17)).astype(np.float32)
    w = rng.standard_normal((19, 17, 3, 3)).astype(np.float32)
    u = winograd_transform_weights(w, tile)
    ub = winograd_transform_weights(w, tile, backward_data=True)
    assert isinstance(u, WinogradWeights) and ub.backward_data
    y = winograd_forward(x, w, None, 1, 1, 9, 9, tile=tile)
    assert np.array_equal(winograd_forward(x, u, None, 1, 1, 9, 9, tile=tile), y)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = winograd_backward_data(dy, w, x.shape, 1, 1, tile)
    assert np.array_equal(winograd_backward_data(dy, ub, x.shape, 1, 1, tile), dx)
    with pytest.raises(ValueError, match="winograd_forward"):
        winograd_forward(x, ub, None, 1, 1, 9, 9, tile=tile)  # backward-data weights
    with pytest.raises(ValueError, match="winograd_forward"):
        winograd_forward(x, u, None, 1, 1, 9, 9, tile=6 - tile)  # other tile


def test_transformed_weights_follow_the_isa():
    """Weights packed under one ISA still give the right answer after the ISA cap changes."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 7, 7, 5))
    w = rng.standard_normal((70, 5, 3, 3))
    expected = ref.conv2d(x, w, padding=1)
    previous = cconv.get_isa()
    try:
        cconv.set_isa(cconv.available_isas()[0])
        u = winograd_transform_weights(w, 4)
        for isa in cconv.available_isas():
            cconv.set_isa(isa)
            assert_close("winograd_f4_forward", winograd_forward(x, u, None, 1, 1, 7, 7),
                         expected, TOL)
    finally:
        cconv.set_isa(previous)


def test_nan_propagates(isa):
    """The fused clamp keeps NaN (max(lo, x) / min(hi, x)). A NaN input reaches at least every
    output that a direct convolution would make NaN (Winograd spreads it over its tile)."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((1, 9, 9, 16)).astype(np.float32)
    x[0, 4, 5, 3] = np.nan
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    direct = np.isnan(ref.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1))
    for tile in TILES:
        for cmin in (-np.inf, 0.0):
            y = winograd_forward(x, w, None, 1, 1, 9, 9, cmin, np.inf, tile)
            assert np.isnan(y)[direct].all()
            assert not np.isnan(y[0, :2, :2]).any()  # far from the NaN


def test_small_model_training_matches_direct():
    """A few SGD steps of a two-conv model, Winograd vs direct convolution, stay close."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((8, 12, 12, 3)).astype(np.float32)
    target = rng.standard_normal((8, 12, 12, 4)).astype(np.float32)
    params0 = [rng.standard_normal((16, 3, 3, 3)).astype(np.float32) * 0.3,
               np.zeros(16, np.float32),
               rng.standard_normal((4, 16, 3, 3)).astype(np.float32) * 0.15,
               np.zeros(4, np.float32)]

    def train(tile):
        w1, b1, w2, b2 = (p.copy() for p in params0)
        losses = []
        for _ in range(6):
            if tile:
                h = winograd_forward(x, w1, b1, 1, 1, 12, 12, 0.0, np.inf, tile)
                y = winograd_forward(h, w2, b2, 1, 1, 12, 12, tile=tile)
            else:
                h = cconv.conv2d(x, w1, b1, padding=1, activation="relu")
                y = cconv.conv2d(h, w2, b2, padding=1)
            diff = y - target
            losses.append(float(np.mean(diff ** 2)))
            dy = (2.0 / diff.size) * diff
            gw2 = cconv.conv2d_backward_weight(h, dy, 3, padding=1)
            gb2 = cconv.bias_backward(dy)
            if tile:
                dh = winograd_backward_data(dy, w2, h.shape, 1, 1, tile)
            else:
                dh = cconv.conv2d_backward_data(dy, w2, h.shape, padding=1)
            dh = dh * (h > 0)
            gw1 = cconv.conv2d_backward_weight(x, dh, 3, padding=1)
            gb1 = cconv.bias_backward(dh)
            for p, g in ((w1, gw1), (b1, gb1), (w2, gw2), (b2, gb2)):
                p -= 0.5 * g
        return losses, (w1, b1, w2, b2)

    direct_losses, direct_params = train(None)
    assert direct_losses[-1] < 0.9 * direct_losses[0]
    for tile in TILES:
        losses, params = train(tile)
        np.testing.assert_allclose(losses, direct_losses, rtol=1e-4)
        for p, q in zip(params, direct_params):
            assert np.max(np.abs(p - q)) <= 1e-4 * np.max(np.abs(q))


def test_converts_dtype_and_layout():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 6, 7, 9))
    w = rng.standard_normal((5, 9, 3, 3))
    y64 = winograd_forward(x, w, None, 1, 1, 6, 7)
    xf = np.asfortranarray(x.astype(np.float32))
    assert np.array_equal(winograd_forward(xf, w.astype(np.float32), None, 1, 1, 6, 7), y64)
    assert_close("winograd_f4_forward", y64, ref.conv2d(x, w, padding=1), TOL)


def test_supported():
    assert winograd_supported((8, 4, 3, 3), 1, 1, 1)
    assert winograd_supported((8, 4, 3, 3), (1, 1), (1, 1), 1)
    assert not winograd_supported((8, 4, 5, 5), 1, 1, 1)
    assert not winograd_supported((8, 4, 3, 1), 1, 1, 1)
    assert not winograd_supported((8, 4, 3, 3), 2, 1, 1)
    assert not winograd_supported((8, 4, 3, 3), (1, 2), 1, 1)
    assert not winograd_supported((8, 4, 3, 3), 1, 2, 1)
    assert not winograd_supported((8, 2, 3, 3), 1, 1, 2)
    assert not winograd_supported((8, 4, 3), 1, 1, 1)
    assert not winograd_supported("abc", 1, 1, 1)


def test_choose():
    """F(4x4) on most images, F(2x2) where F(4x4) tiles would be mostly padding (2x2, 5x5, 6x6,
    two rows), direct for outputs one pixel high or wide and for unsupported geometries."""
    w = (16, 16, 3, 3)
    assert winograd_choose(w, 32, 32) == 4
    assert winograd_choose(w, 56, 56) == 4
    assert winograd_choose(w, 7, 7) == 4
    assert winograd_choose(w, 3, 3) == 4
    assert winograd_choose(w, 5, 5) == 2
    assert winograd_choose(w, 6, 6) == 2
    assert winograd_choose(w, 2, 2) == 2
    assert winograd_choose(w, 2, 32) == 2
    assert winograd_choose(w, 1, 32) == 0
    assert winograd_choose(w, 1, 1) == 0
    assert winograd_choose(w, 32, 32, stride=2) == 0
    assert winograd_choose((16, 8, 3, 3), 32, 32, groups=2) == 0
    assert winograd_choose((16, 16, 5, 5), 32, 32) == 0
    # A batch: tiles counted in the rows the GEMMs compute: whole 8-row register tiles, the last
    # one 2, 4 or 8 rows high. One 8x8 image: 4 F(4x4) tiles (a 4-row tile) against 16 F(2x2)
    # tiles; one 6x6 image: 4 F(4x4) tiles against 9 F(2x2) tiles (8 + 2 rows), where the
    # count without the batch is a tie (F(2x2)).
    assert [_gemm_rows(t) for t in (0, 1, 2, 3, 4, 5, 8, 9, 11, 13)] == [0, 2, 2, 4, 4, 8, 8,
                                                                         10, 12, 16]
    assert winograd_choose(w, 8, 8, batch=1) == 4
    assert winograd_choose(w, 6, 6, batch=1) == 4
    assert winograd_choose(w, 8, 8, batch=2) == 4
    assert winograd_choose(w, 32, 32, batch=1) == 4
    assert winograd_choose(w, 1, 32, batch=4) == 0


def test_bad_input():
    x = np.zeros((2, 6, 6, 4), np.float32)
    w = np.zeros((5, 4, 3, 3), np.float32)
    dy = np.zeros((2, 6, 6, 5), np.float32)
    fwd = "winograd_forward"
    bad_forward = [
        dict(x=np.zeros((6, 6, 4), np.float32)),                    # rank
        dict(x=np.zeros((0, 6, 6, 4), np.float32)),                 # empty batch
        dict(x=np.zeros((2, 6, 6, 3), np.float32)),                 # channel mismatch
        dict(w=np.zeros((5, 4, 5, 5), np.float32)),                 # not 3x3
        dict(w=np.zeros((5, 4, 3), np.float32)),                    # rank of w
        dict(w=np.full((5, 4, 3, 3), np.nan, np.float32)),          # NaN weights
        dict(b=np.zeros(4, np.float32)),                            # bias shape
        dict(b=np.full(5, np.inf, np.float32)),                     # Inf bias
        dict(tile=3), dict(tile=6),
        dict(pad_top=-1), dict(out_h=0), dict(out_w=3),             # right padding < 0
        dict(pad_top=1.5),
        dict(cmin=1.0, cmax=0.0), dict(cmin=np.nan),
        dict(n_threads=0),
    ]
    for change in bad_forward:
        args = dict(x=x, w=w, b=None, pad_top=1, pad_left=1, out_h=6, out_w=6, cmin=-np.inf,
                    cmax=np.inf, tile=4, n_threads=None)
        args.update(change)
        with pytest.raises(ValueError, match=fwd):
            winograd_forward(**args)
    bwd = "winograd_backward_data"
    bad_backward = [
        dict(dy=np.zeros((2, 6, 6, 4), np.float32)),                # channels of dy
        dict(dy=np.zeros((1, 6, 6, 5), np.float32)),                # batch of dy
        dict(dy=np.zeros((2, 3, 6, 5), np.float32)),                # bottom padding < 0
        dict(input_shape=(2, 6, 6, 3)),                             # channels of the input
        dict(input_shape=(2, 6, 6)), dict(input_shape=(2, 0, 6, 4)), dict(input_shape="abcd"),
        dict(w=np.zeros((5, 4, 1, 1), np.float32)),
        dict(tile=5), dict(pad_left=-2),
    ]
    for change in bad_backward:
        args = dict(dy=dy, w=w, input_shape=x.shape, pad_top=1, pad_left=1, tile=2)
        args.update(change)
        with pytest.raises(ValueError, match=bwd):
            winograd_backward_data(**args)
    with pytest.raises(ValueError, match="winograd_transform_weights"):
        winograd_transform_weights(np.zeros((5, 4, 2, 2)), 4)
    wgt = "winograd_backward_weight"
    bad_weight_grad = [
        dict(x=np.zeros((6, 6, 4), np.float32)),                    # rank
        dict(x=np.zeros((0, 6, 6, 4), np.float32)),                 # empty batch
        dict(dy=np.zeros((1, 6, 6, 5), np.float32)),                # batch of dy
        dict(dy=np.zeros((2, 3, 6, 5), np.float32)),                # bottom padding < 0
        dict(tile=3), dict(pad_top=-1), dict(pad_left=0.5), dict(n_threads=0),
    ]
    for change in bad_weight_grad:
        args = dict(x=x, dy=dy, pad_top=1, pad_left=1, tile=4)
        args.update(change)
        with pytest.raises(ValueError, match=wgt):
            winograd_backward_weight(**args)
