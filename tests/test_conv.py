"""conv2d, conv_transpose2d, linear and bias gradients against the float64 reference."""
import numpy as np
import pytest

import cconv
from fastcnn import reference as ref

from conftest import assert_close
from gradcheck import directional_check

TOL = 1e-5


def _sweep(count, seed=2024):
    """Seeded random geometries that cover every option and the tails of every register tile:
    channel counts below, at and above 4/8/16/32 (SIMD widths, NR, MR), odd sizes, batch 1."""
    rng = np.random.default_rng(seed)
    channels = [1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 40]
    cases = []
    while len(cases) < count:
        groups = int(rng.choice([1, 1, 1, 2, 3, "dw"], p=[.3, .15, .15, .15, .1, .15])
                     if False else rng.choice([1, 1, 1, 2, 3, 0]))
        cin_g, cout_g = int(rng.choice(channels)), int(rng.choice(channels))
        if groups == 0:  # depthwise
            groups = cin_g * int(rng.choice([1, 2]))
            cin_g, cout_g = 1, 1
        k = (int(rng.choice([1, 2, 3, 3, 5, 7])), int(rng.choice([1, 3, 3, 5])))
        stride = (int(rng.choice([1, 1, 2, 3])), int(rng.choice([1, 1, 2])))
        dilation = (int(rng.choice([1, 1, 2])), int(rng.choice([1, 1, 3])))
        padding = [0, 1, 2, (1, 0), ((0, 2), (1, 0)), "same", "valid"][int(rng.integers(7))]
        if padding == "same" and stride != (1, 1):
            padding = 1
        n = int(rng.choice([1, 1, 2, 3]))
        h, w = int(rng.integers(1, 14)), int(rng.integers(1, 14))
        x_shape = (n, h, w, cin_g * groups)
        w_shape = (cout_g * groups, cin_g, *k)
        try:
            ref._conv_setup(x_shape, w_shape, stride, padding, dilation)
            y_shape = cconv.conv2d(np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32),
                                   None, stride, padding, dilation, groups).shape
        except ValueError:
            continue  # kernel larger than the padded input: covered by the bad-input tests
        cases.append(dict(x_shape=x_shape, w_shape=w_shape, stride=stride, padding=padding,
                          dilation=dilation, groups=groups, y_shape=y_shape))
    return cases


CASES = _sweep(48)
CASE_IDS = [f"x{c['x_shape']}-w{c['w_shape']}-s{c['stride']}-p{c['padding']}-d{c['dilation']}-g{c['groups']}"
            .replace(" ", "") for c in CASES]


def _data(case, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case["x_shape"])
    w = rng.standard_normal(case["w_shape"])
    b = rng.standard_normal(case["w_shape"][0])
    dy = rng.standard_normal(case["y_shape"])
    return x, w, b, dy


def _geom(case):
    return case["stride"], case["padding"], case["dilation"], case["groups"]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_conv2d_matches_reference(isa, case):
    x, w, b, dy = _data(case)
    s, p, d, g = _geom(case)
    expected = ref.conv2d(x, w, b, s, p, d, g)
    assert_close("conv2d", cconv.conv2d(x, w, b, s, p, d, g), expected, TOL)
    assert_close("conv2d+relu", cconv.conv2d(x, w, b, s, p, d, g, activation="relu"),
                 np.maximum(expected, 0), TOL)
    assert_close("conv2d_backward_data", cconv.conv2d_backward_data(dy, w, x.shape, s, p, d, g),
                 ref.conv2d_backward_data(dy, w, x.shape, s, p, d, g), TOL)
    kernel = case["w_shape"][2:]
    assert_close("conv2d_backward_weight", cconv.conv2d_backward_weight(x, dy, kernel, s, p, d, g),
                 ref.conv2d_backward_weight(x, dy, kernel, s, p, d, g), TOL)


@pytest.mark.parametrize("case", CASES[:12], ids=CASE_IDS[:12])
def test_reference_conv2d_gradients_match_finite_differences(case, rng):
    x, w, b, dy = _data(case, seed=1)
    s, p, d, g = _geom(case)
    grads = [ref.conv2d_backward_data(dy, w, x.shape, s, p, d, g),
             ref.conv2d_backward_weight(x, dy, case["w_shape"][2:], s, p, d, g),
             ref.bias_backward(dy)]
    directional_check(lambda x_, w_, b_: ref.conv2d(x_, w_, b_, s, p, d, g), [x, w, b], grads, dy, rng)


def test_large_channel_counts_and_batch_tails(isa):
    """K long enough to matter for accumulation error, M and N tails in the same call."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 11, 13, 70))
    w = rng.standard_normal((45, 70, 3, 3))
    dy = rng.standard_normal((3, 11, 13, 45))
    assert_close("conv2d", cconv.conv2d(x, w, None, 1, 1), ref.conv2d(x, w, None, 1, 1), TOL)
    assert_close("conv2d_backward_data", cconv.conv2d_backward_data(dy, w, x.shape, 1, 1),
                 ref.conv2d_backward_data(dy, w, x.shape, 1, 1), TOL)
    assert_close("conv2d_backward_weight", cconv.conv2d_backward_weight(x, dy, 3, 1, 1),
                 ref.conv2d_backward_weight(x, dy, 3, 1, 1), TOL)


def test_weight_gradient_over_many_chunks(isa):
    """More output pixels than one reduction chunk: partial sums accumulate across chunks."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 20, 20, 5))
    dy = rng.standard_normal((4, 20, 20, 7))
    assert_close("conv2d_backward_weight", cconv.conv2d_backward_weight(x, dy, 3, 1, 1),
                 ref.conv2d_backward_weight(x, dy, 3, 1, 1), TOL)


# First layers (1-3 input channels, one group, stride 1) run the planar kernels: the forward
# pass up to 16 output channels, the weight gradient up to 8. Output channels 1-16 cover every
# register tile (2, 4, 6, 8) and its padding, and the 8 x 8 transposes of full 8-channel tiles
# (runs of 8 valid pixels: widths that are and are not multiples of 8, runs cut by the end of a
# tile); widths 1-40 the pixel vectors and their tails, tall images several row blocks; 17
# output channels are the implicit GEMM's again.
PLANAR_CASES = [
    dict(x=(64, 28, 28, 1), w=(6, 1, 5, 5), padding=2, dilation=1),      # LeNet's first layer
    dict(x=(2, 32, 32, 3), w=(8, 3, 3, 3), padding=1, dilation=1),
    dict(x=(1, 1, 1, 1), w=(1, 1, 1, 1), padding=0, dilation=1),
    dict(x=(3, 5, 4, 2), w=(5, 2, 3, 2), padding=0, dilation=1),
    dict(x=(1, 9, 40, 3), w=(7, 3, 3, 5), padding=((0, 2), (3, 1)), dilation=1),
    dict(x=(2, 11, 13, 1), w=(3, 1, 3, 3), padding=4, dilation=(2, 3)),  # padding > kernel
    dict(x=(1, 70, 3, 2), w=(8, 2, 7, 1), padding=(3, 0), dilation=1),   # many row blocks
    dict(x=(1, 3, 2, 1), w=(2, 1, 5, 5), padding=2, dilation=1),         # out_w below a vector
    dict(x=(2, 6, 17, 3), w=(9, 3, 1, 1), padding=0, dilation=1),        # weight gradient: GEMM
    dict(x=(2, 32, 32, 3), w=(16, 3, 3, 3), padding=1, dilation=1),      # CIFAR stem
    dict(x=(2, 7, 29, 3), w=(16, 3, 3, 3), padding=1, dilation=1),
    dict(x=(1, 5, 13, 2), w=(8, 2, 3, 2), padding=(1, 0), dilation=(1, 2)),
    dict(x=(2, 9, 9, 3), w=(17, 3, 3, 3), padding=1, dilation=1),        # forward: GEMM
]


@pytest.mark.parametrize("case", PLANAR_CASES, ids=[str(c["w"]) for c in PLANAR_CASES])
def test_planar_first_layers_match_reference(isa, case):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(case["x"])
    w = rng.standard_normal(case["w"])
    b = rng.standard_normal(case["w"][0])
    p, d = case["padding"], case["dilation"]
    expected = ref.conv2d(x, w, b, 1, p, d)
    dy = rng.standard_normal(expected.shape)
    assert cconv.conv2d_algorithm(x.shape, w.shape, 1, p, d).startswith("direct-")
    assert_close("conv2d", cconv.conv2d(x, w, b, 1, p, d), expected, TOL)
    assert_close("conv2d+relu", cconv.conv2d(x, w, b, 1, p, d, activation="relu"),
                 np.maximum(expected, 0), TOL)
    plan = cconv.Conv2dPlan(w, b, padding=p, dilation=d, activation="relu")
    assert_close("conv2d", plan(x), np.maximum(expected, 0), TOL)
    dw = cconv.conv2d_backward_weight(x, dy, w.shape[2:], 1, p, d)
    assert_close("conv2d_backward_weight", dw, ref.conv2d_backward_weight(x, dy, w.shape[2:], 1, p, d),
                 TOL)
    x32, dy32 = x.astype(np.float32), dy.astype(np.float32)
    for fn in (lambda n: cconv.conv2d(x32, w, b, 1, p, d, n_threads=n),
               lambda n: cconv.conv2d_backward_weight(x32, dy32, w.shape[2:], 1, p, d, n_threads=n)):
        assert fn(1).tobytes() == fn(2).tobytes() == fn(3).tobytes()


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_planar_weight_gradient_with_non_finite_input(isa, bad):
    """The planar weight gradient computes lanes past the right edge of the image and drops them
    by a zero of dy; an infinite input there must not turn into 0 * inf = NaN: the result is the
    reference's, infinities and NaNs where it has them."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 8, 8, 1))
    x[1, 3, 7, 0] = bad    # the last column: read by dropped lanes of every tap but the last
    dy = rng.standard_normal((2, 8, 6, 3))
    got = cconv.conv2d_backward_weight(x, dy, 3, 1, (1, 0))
    expected = ref.conv2d_backward_weight(x, dy, 3, 1, (1, 0))
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    finite = np.isfinite(expected)
    assert np.array_equal(got[~finite & ~np.isnan(expected)], expected[~finite & ~np.isnan(expected)])
    assert_close("conv2d_backward_weight", np.where(finite, got, 0), np.where(finite, expected, 0), TOL)


TRANSPOSE_CASES = [
    dict(x=(2, 5, 6, 4), w=(4, 3, 3, 3), stride=2, padding=1, output_padding=1, dilation=1, groups=1),
    dict(x=(1, 4, 4, 6), w=(6, 2, 4, 4), stride=2, padding=1, output_padding=0, dilation=1, groups=3),
    dict(x=(3, 3, 5, 5), w=(5, 17, 2, 3), stride=(3, 2), padding=0, output_padding=(2, 1), dilation=1, groups=1),
    dict(x=(1, 6, 6, 8), w=(8, 8, 3, 3), stride=1, padding=2, output_padding=0, dilation=2, groups=1),
    dict(x=(2, 7, 7, 16), w=(16, 1, 3, 3), stride=2, padding=1, output_padding=1, dilation=1, groups=16),
]


@pytest.mark.parametrize("case", TRANSPOSE_CASES)
def test_conv_transpose2d_matches_reference(isa, case):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(case["x"]), rng.standard_normal(case["w"])
    b = rng.standard_normal(case["w"][1] * case["groups"])
    args = (case["stride"], case["padding"], case["output_padding"], case["dilation"], case["groups"])
    y = cconv.conv_transpose2d(x, w, b, *args)
    expected = ref.conv_transpose2d(x, w, b, *args)
    assert_close("conv_transpose2d", y, expected, TOL)
    dy = rng.standard_normal(expected.shape)
    geom = (case["stride"], case["padding"], case["dilation"], case["groups"])
    dx = cconv.conv_transpose2d_backward_data(dy, w, *geom)
    assert_close("conv_transpose2d_backward_data", dx, ref.conv_transpose2d_backward_data(dy, w, *geom), TOL)
    dw = cconv.conv_transpose2d_backward_weight(x, dy, case["w"][2:], *geom)
    assert_close("conv_transpose2d_backward_weight", dw,
                 ref.conv_transpose2d_backward_weight(x, dy, case["w"][2:], *geom), TOL)
    directional_check(lambda x_, w_: ref.conv_transpose2d(x_, w_, None, *args), [x, w],
                      [ref.conv_transpose2d_backward_data(dy, w, *geom),
                       ref.conv_transpose2d_backward_weight(x, dy, case["w"][2:], *geom)], dy, rng)


@pytest.mark.parametrize("n,fin,fout", [(1, 1, 1), (7, 33, 10), (64, 256, 120), (5, 17, 65)])
def test_linear_matches_reference(isa, n, fin, fout, rng):
    x, w, b = rng.standard_normal((n, fin)), rng.standard_normal((fout, fin)), rng.standard_normal(fout)
    dy = rng.standard_normal((n, fout))
    assert_close("linear", cconv.linear(x, w, b), ref.linear(x, w, b), TOL)
    assert_close("linear_backward_data", cconv.linear_backward_data(dy, w), ref.linear_backward_data(dy, w), TOL)
    assert_close("linear_backward_weight", cconv.linear_backward_weight(x, dy),
                 ref.linear_backward_weight(x, dy), TOL)
    directional_check(ref.linear, [x, w, b], [ref.linear_backward_data(dy, w),
                                              ref.linear_backward_weight(x, dy), ref.bias_backward(dy)], dy, rng)


@pytest.mark.parametrize("shape", [(1, 1), (3, 4, 5, 17), (2, 300, 40), (70000, 3)])
def test_bias_backward(shape, rng):
    dy = rng.standard_normal(shape)
    assert_close("bias_backward", cconv.bias_backward(dy), ref.bias_backward(dy), 1e-6)


@pytest.mark.parametrize("case", CASES[::6], ids=CASE_IDS[::6])
def test_results_are_bitwise_identical_for_1_and_2_threads(isa, case):
    x, w, b, dy = [a.astype(np.float32) for a in _data(case, seed=4)]
    s, p, d, g = _geom(case)
    k = case["w_shape"][2:]
    for fn in (lambda n: cconv.conv2d(x, w, b, s, p, d, g, n_threads=n),
               lambda n: cconv.conv2d_backward_data(dy, w, x.shape, s, p, d, g, n_threads=n),
               lambda n: cconv.conv2d_backward_weight(x, dy, k, s, p, d, g, n_threads=n),
               lambda n: cconv.bias_backward(dy, n_threads=n)):
        one, two = fn(1), fn(2)
        assert one.tobytes() == two.tobytes()


@pytest.mark.parametrize("algo,hw,cin,cout", [("direct", 3, 5, 40), ("direct", 5, 16, 16),
                                              ("winograd", 6, 8, 24), ("winograd", 10, 16, 70)])
def test_an_image_gives_the_same_bits_alone_and_in_a_batch(isa, algo, hw, cin, cout):
    """Output pixels that share a register tile with other images in a batch, or sit alone in
    a tile of 2 or 4 rows at batch 1 (the micro-kernels' shorter bodies), give the same bits:
    a row's FMAs do not depend on the tile height that runs them."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, hw, hw, cin)).astype(np.float32)
    w = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    batch = cconv.conv2d(x, w, b, padding=1, algo=algo, n_threads=1)
    for i in range(len(x)):
        alone = cconv.conv2d(x[i:i + 1], w, b, padding=1, algo=algo, n_threads=1)
        assert alone.tobytes() == batch[i:i + 1].tobytes()


def test_big_weight_gradient_is_identical_for_1_and_2_threads(isa):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((16, 16, 16, 16)).astype(np.float32)
    dy = rng.standard_normal((16, 16, 16, 32)).astype(np.float32)
    one = cconv.conv2d_backward_weight(x, dy, 3, 1, 1, n_threads=1)
    two = cconv.conv2d_backward_weight(x, dy, 3, 1, 1, n_threads=2)
    assert one.tobytes() == two.tobytes()


@pytest.mark.parametrize("case", CASES[:24], ids=CASE_IDS[:24])
def test_streaming_stores_give_the_same_bits(isa, case, monkeypatch):
    """Outputs past STREAM_OUTPUT_MIN_BYTES are written with streaming stores (rows whose
    vectors are aligned; the others, and partial vectors, stored normally): with the threshold
    at 0, every direct forward and backward-data streams and must give the bits of the normal
    stores."""
    from cconv import _conv
    x, w, b, dy = _data(case)
    s, p, d, g = _geom(case)
    passes = (lambda: cconv.conv2d(x, w, b, s, p, d, g, algo="direct", activation="relu"),
              lambda: cconv.conv2d_backward_data(dy, w, x.shape, s, p, d, g, algo="direct"))
    normal = [run() for run in passes]
    monkeypatch.setattr(_conv, "STREAM_OUTPUT_MIN_BYTES", 0)
    streamed = [run() for run in passes]
    assert [a.tobytes() for a in streamed] == [a.tobytes() for a in normal]
    assert_close("conv2d", streamed[0], np.maximum(ref.conv2d(x, w, b, s, p, d, g), 0), TOL)
    assert_close("conv2d_backward_data", streamed[1],
                 ref.conv2d_backward_data(dy, w, x.shape, s, p, d, g), TOL)


def test_implicit_gemm_streams_into_cache_line_aligned_rows(monkeypatch):
    """Forward and backward-data both."""
    from cconv import _conv
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 9, 9, 20)).astype(np.float32)
    w = rng.standard_normal((48, 20, 3, 3)).astype(np.float32)
    monkeypatch.setattr(_conv, "STREAM_OUTPUT_MIN_BYTES", 0)
    streamed = cconv.conv2d(x, w, padding=1, algo="direct")
    assert streamed.ctypes.data % 64 == 0
    assert_close("conv2d", streamed, ref.conv2d(x, w, None, 1, 1), TOL)
    dx = cconv.conv2d_backward_data(streamed, w, x.shape, 1, 1, algo="direct")
    assert dx.ctypes.data % 64 == 0
    assert_close("conv2d_backward_data", dx, ref.conv2d_backward_data(streamed, w, x.shape, 1, 1),
                 TOL)


# The direct weight gradient's blocking: slabs of several whole small images (one deep band),
# parts of the rows that end inside an image (many parts: little work per float of dw), a slab
# of one image's tail, and blocks of K when the parts are fewer than the threads (3 threads).
WEIGHT_GRAD_BLOCKING = [
    dict(x=(64, 8, 8, 64), k=3, cout=64, stride=1, padding=1),     # res20-s3: 8 images a band
    dict(x=(201, 7, 7, 4), k=3, cout=8, stride=1, padding=1),      # parts end inside images
    dict(x=(203, 5, 5, 6), k=3, cout=10, stride=1, padding=1),     # and 2 groups below
    dict(x=(150, 9, 9, 3), k=3, cout=5, stride=2, padding=1),
    dict(x=(37, 6, 6, 16), k=3, cout=33, stride=1, padding=1),     # packed last panel
    dict(x=(5, 30, 30, 5), k=3, cout=7, stride=1, padding=1),      # bands inside an image
    dict(x=(9, 6, 6, 9), k=3, cout=9, stride=1, padding=1, groups=3),  # several groups' panels
]                                                                   # packed (3 channels each)


@pytest.mark.parametrize("case", WEIGHT_GRAD_BLOCKING, ids=lambda c: str(c["x"]))
def test_direct_weight_gradient_blocking(isa, case):
    rng = np.random.default_rng(12)
    groups = case.get("groups", 2 if case["x"][3] == 6 else 1)
    x = rng.standard_normal(case["x"]).astype(np.float32)
    h = (case["x"][1] + 2 * case["padding"] - case["k"]) // case["stride"] + 1
    dy = rng.standard_normal((case["x"][0], h, h, case["cout"])).astype(np.float32)
    args = (x, dy, case["k"], case["stride"], case["padding"], 1, groups)
    results = [cconv.conv2d_backward_weight(*args, algo="direct", n_threads=t) for t in (1, 2, 3)]
    assert_close("conv2d_backward_weight", results[0],
                 ref.conv2d_backward_weight(x.astype(np.float64), dy.astype(np.float64),
                                            case["k"], case["stride"], case["padding"], 1,
                                            groups), TOL)
    assert results[1].tobytes() == results[0].tobytes()
    assert results[2].tobytes() == results[0].tobytes()


# A pointwise layer's weight gradient is one GEMM over the pixels (dy^T x, both read in place)
# when in_c is a multiple of the micro-kernel's NR (which depends on the ISA: 24 channels run it
# on AVX2 and scalar, the general path on AVX-512): blocks of pixels, parts that end inside a
# block, a tail of output channels below MR, and blocks of rows when parts are fewer than threads.
POINTWISE_WEIGHT_GRAD = [
    dict(x=(32, 28, 28, 64), cout=128),    # pw-64-128: 16 parts of several blocks
    dict(x=(4, 30, 30, 64), cout=64),
    dict(x=(3, 5, 7, 16), cout=9),         # one part: rows split between threads
    dict(x=(7, 9, 11, 32), cout=40),
    dict(x=(2, 3, 3, 24), cout=5),
]


@pytest.mark.parametrize("case", POINTWISE_WEIGHT_GRAD, ids=lambda c: f"{c['x']}-{c['cout']}")
def test_pointwise_weight_gradient(isa, case):
    rng = np.random.default_rng(14)
    x = rng.standard_normal(case["x"]).astype(np.float32)
    dy = rng.standard_normal(case["x"][:3] + (case["cout"],)).astype(np.float32)
    results = [cconv.conv2d_backward_weight(x, dy, 1, algo="direct", n_threads=t)
               for t in (1, 2, 3)]
    assert_close("conv2d_backward_weight", results[0],
                 ref.conv2d_backward_weight(x.astype(np.float64), dy.astype(np.float64), 1), TOL)
    assert results[1].tobytes() == results[0].tobytes()
    assert results[2].tobytes() == results[0].tobytes()


# The forward and backward-data tiles run only the kernel rows that read something besides the
# padding for some pixel of the tile: output rows whose kernel rows above or below the image are
# skipped (8 x 8 images: a tile is one row), tiles across two rows (the union of theirs), rows
# that see only padding (bias alone), one pointer per tap (groups, dilation) and stride phases.
PADDING_ROW_CASES = [
    dict(x=(2, 8, 8, 64), w=(64, 64, 3, 3), padding=1),                 # res20-s3
    dict(x=(1, 6, 5, 16), w=(24, 16, 3, 3), padding=2),                 # tiles across rows
    dict(x=(2, 3, 9, 8), w=(9, 8, 3, 3), padding=((4, 5), (1, 1))),     # rows of padding only
    dict(x=(1, 7, 6, 6), w=(10, 3, 3, 3), padding=2, dilation=2, groups=2),
    dict(x=(3, 9, 7, 5), w=(7, 5, 5, 3), padding=(3, 1), stride=2),
]


@pytest.mark.parametrize("case", PADDING_ROW_CASES, ids=lambda c: f"{c['x']}-{c['w']}")
def test_direct_tiles_skip_kernel_rows_in_the_padding(isa, case):
    rng = np.random.default_rng(13)
    x, w = rng.standard_normal(case["x"]), rng.standard_normal(case["w"])
    b = rng.standard_normal(case["w"][0])
    geom = (case.get("stride", 1), case["padding"], case.get("dilation", 1), case.get("groups", 1))
    expected = ref.conv2d(x, w, b, *geom)
    got = cconv.conv2d(x, w, b, *geom, activation="relu", algo="direct")
    assert_close("conv2d", got, np.maximum(expected, 0), TOL)
    dy = rng.standard_normal(expected.shape)
    assert_close("conv2d_backward_data",
                 cconv.conv2d_backward_data(dy, w, x.shape, *geom, algo="direct"),
                 ref.conv2d_backward_data(dy, w, x.shape, *geom), TOL)


def test_padding_forms():
    """'same' keeps the size (odd and even kernels), 'valid' is no padding, pairs of pairs are
    asymmetric and equal to an explicit np.pad."""
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((1, 9, 10, 3)), rng.standard_normal((4, 3, 4, 3))
    assert cconv.conv2d(x, w, padding="same").shape == (1, 9, 10, 4)
    assert cconv.conv2d(x, w, padding="valid").shape == (1, 6, 8, 4)
    asym = cconv.conv2d(x, w, padding=((2, 0), (1, 3)))
    explicit = cconv.conv2d(np.pad(x, ((0, 0), (2, 0), (1, 3), (0, 0))), w)
    assert_close("conv2d", asym, explicit.astype(np.float64), TOL)


def test_dtype_and_layout_are_converted():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 6, 5)).transpose(0, 2, 3, 1)  # float64, not contiguous
    w = rng.standard_normal((4, 3, 3, 3))
    expected = cconv.conv2d(np.ascontiguousarray(x, np.float32), w.astype(np.float32), padding=1)
    assert np.array_equal(cconv.conv2d(x, w, padding=1), expected)
    assert cconv.conv2d(x.astype(np.float16), w).dtype == np.float32


def test_nan_in_input_propagates(isa):
    x = np.ones((1, 5, 5, 3), np.float32)
    x[0, 2, 2, 1] = np.nan
    w = np.ones((2, 3, 3, 3), np.float32)
    y = cconv.conv2d(x, w, activation="relu")
    assert np.isnan(y).sum() == 9 * 2 and np.isnan(y[0, 1:4, 1:4]).all()


BAD = [
    (dict(x=(2, 5, 5), w=(4, 3, 3, 3)), "NHWC"),
    (dict(x=(2, 5, 5, 3), w=(4, 3, 3)), "weight"),
    (dict(x=(2, 5, 5, 4), w=(4, 3, 3, 3)), "channels"),
    (dict(x=(0, 5, 5, 3), w=(4, 3, 3, 3)), "empty"),
    (dict(x=(1, 2, 2, 3), w=(4, 3, 3, 3)), "larger than the padded input"),
    (dict(x=(1, 5, 5, 6), w=(4, 2, 3, 3), groups=3), "groups"),
    (dict(x=(1, 5, 5, 3), w=(4, 3, 3, 3), stride=0), "stride"),
    (dict(x=(1, 5, 5, 3), w=(4, 3, 3, 3), padding=-1), "padding"),
    (dict(x=(1, 5, 5, 3), w=(4, 3, 3, 3), padding="full"), "padding"),
    (dict(x=(1, 5, 5, 3), w=(4, 3, 3, 3), b=(5,)), "bias"),
    (dict(x=(1, 5, 5, 3), w=(4, 3, 3, 3), algo="fft"), "algo"),
    (dict(x=(1, 5, 5, 3), w=(4, 3, 3, 3), activation="gelu"), "activation"),
]


@pytest.mark.parametrize("case,match", BAD, ids=[m for _, m in BAD])
def test_bad_conv2d_arguments_raise_value_error(case, match):
    kwargs = {k: v for k, v in case.items() if k not in ("x", "w", "b")}
    b = np.zeros(case["b"], np.float32) if "b" in case else None
    with pytest.raises(ValueError, match=match) as info:
        cconv.conv2d(np.zeros(case["x"], np.float32), np.zeros(case["w"], np.float32), b, **kwargs)
    assert "conv2d" in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_parameters_are_refused(bad):
    x = np.zeros((1, 5, 5, 3), np.float32)
    w = np.zeros((4, 3, 3, 3), np.float32)
    w[1, 2, 0, 0] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        cconv.conv2d(x, w)
    with pytest.raises(ValueError, match="NaN or Inf"):
        cconv.conv2d(x, np.zeros_like(w), np.array([0, bad, 0, 0], np.float32))


def test_bad_backward_and_linear_arguments():
    w = np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="grad_output must have shape"):
        cconv.conv2d_backward_data(np.zeros((1, 4, 4, 4)), w, (1, 5, 5, 3))
    with pytest.raises(ValueError, match="grad_output must have shape"):
        cconv.conv2d_backward_weight(np.zeros((1, 5, 5, 3)), np.zeros((1, 4, 4, 5)), 3)
    with pytest.raises(ValueError, match="linear: input has 5 features"):
        cconv.linear(np.zeros((2, 5)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="linear: empty batch"):
        cconv.linear(np.zeros((0, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="output_padding"):
        cconv.conv_transpose2d(np.zeros((1, 3, 3, 4)), np.zeros((4, 2, 3, 3)), stride=2, output_padding=2)


def test_matches_pytorch_when_installed():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    for (shape, wshape, kw) in [((2, 9, 8, 6), (4, 3, 3, 3), dict(stride=2, padding=1, groups=2)),
                                ((1, 7, 7, 5), (5, 1, 3, 3), dict(padding="same", dilation=2, groups=5)),
                                ((3, 10, 10, 3), (8, 3, 5, 5), dict(stride=(2, 1), padding=(2, 1)))]:
        x, w = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(wshape).astype(np.float32)
        b = rng.standard_normal(wshape[0]).astype(np.float32)
        xt = torch.from_numpy(x).permute(0, 3, 1, 2).requires_grad_()
        wt = torch.from_numpy(w).requires_grad_()
        yt = torch.nn.functional.conv2d(xt, wt, torch.from_numpy(b), **kw)
        y = cconv.conv2d(x, w, b, **kw)
        assert_close("conv2d vs torch", y, yt.permute(0, 2, 3, 1).detach().numpy().astype(np.float64), 1e-5)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        yt.backward(torch.from_numpy(dy).permute(0, 3, 1, 2))
        geom = (kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1), kw.get("groups", 1))
        assert_close("conv2d_backward_data vs torch", cconv.conv2d_backward_data(dy, w, x.shape, *geom),
                     xt.grad.permute(0, 2, 3, 1).numpy().astype(np.float64), 1e-5)
        assert_close("conv2d_backward_weight vs torch", cconv.conv2d_backward_weight(x, dy, wshape[2:], *geom),
                     wt.grad.numpy().astype(np.float64), 1e-5)


# One shape for every path of the direct algorithm: conv2d_algorithm names the path that the
# pass runs (the one table in _conv.pyx), and each path gives the reference's result.
DIRECT_PATHS = [
    ("forward", (2, 13, 11, 3), (8, 3, 3, 3), 1, 1, "direct-planar"),
    ("forward", (2, 9, 9, 16), (24, 16, 3, 3), 2, 1, "direct-igemm"),
    ("backward_data", (2, 9, 9, 4), (16, 4, 3, 3), 1, 1, "direct-col2im"),
    ("backward_data", (2, 9, 9, 16), (16, 16, 3, 3), 2, 1, "direct-igemm"),
    ("backward_weight", (2, 13, 11, 3), (8, 3, 3, 3), 1, 1, "direct-planar"),
    ("backward_weight", (2, 7, 7, 32), (24, 32, 1, 1), 1, 0, "direct-pointwise-gemm"),
    ("backward_weight", (2, 9, 9, 16), (24, 16, 3, 3), 2, 1, "direct-im2col-gemm"),
]


@pytest.mark.parametrize("which,x_shape,w_shape,stride,padding,path", DIRECT_PATHS)
def test_conv2d_algorithm_names_the_direct_path_that_runs(isa, which, x_shape, w_shape, stride,
                                                           padding, path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    geom = dict(stride=stride, padding=padding)
    assert cconv.conv2d_algorithm(x_shape, w_shape, **geom, algo="direct",
                                  backward_data=which == "backward_data",
                                  backward_weight=which == "backward_weight") == path
    y = ref.conv2d(x.astype(np.float64), w.astype(np.float64), None, stride, padding)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    if which == "forward":
        got, want = cconv.conv2d(x, w, None, **geom, algo="direct"), y
    elif which == "backward_data":
        got = cconv.conv2d_backward_data(dy, w, x_shape, **geom, algo="direct")
        want = ref.conv2d_backward_data(dy.astype(np.float64), w.astype(np.float64), x_shape,
                                        stride, padding)
    else:
        got = cconv.conv2d_backward_weight(x, dy, w_shape[2:], **geom, algo="direct")
        want = ref.conv2d_backward_weight(x.astype(np.float64), dy.astype(np.float64),
                                          w_shape[2:], stride, padding)
    assert_close(f"conv2d {which} ({path})", got, want, TOL)
