"""Softmax cross-entropy: every ISA against the float64 reference, the reference's backward
against finite differences, extreme logits, thread-count independence, bad input."""
import numpy as np
import pytest

import cconv
from conftest import assert_close
from fastcnn import reference as ref
from gradcheck import directional_check

SHAPES = [(1, 1), (1, 2), (1, 10), (2, 7), (5, 8), (3, 15), (4, 16), (3, 17), (8, 33), (64, 10),
          (2, 1000), (1, 4099), (200, 3)]
SMOOTHING = [0.0, 0.1, 0.5, 1.0]


def sample(rng, shape, scale=4.0):
    logits = (scale * rng.standard_normal(shape)).astype(np.float32)
    labels = rng.integers(0, shape[1], shape[0])
    return logits, labels


def assert_loss_close(op, loss, expected, tol=1e-6):
    """The loss is a scalar: its error relative to its own magnitude (floored at 1e-3)."""
    assert isinstance(loss, float)
    scale = max(abs(expected), 1e-3)
    assert_close(op, np.array(loss / scale), np.array(expected / scale), tol)


@pytest.mark.parametrize("smoothing", SMOOTHING)
def test_matches_reference(isa, rng, smoothing):
    for shape in SHAPES:
        logits, labels = sample(rng, shape)
        loss, probs = cconv.softmax_cross_entropy(logits, labels, smoothing)
        assert probs.dtype == np.float32 and probs.shape == shape
        loss_r, probs_r = ref.softmax_cross_entropy(logits.astype(np.float64), labels, smoothing)
        assert_loss_close("softmax_cross_entropy", loss, loss_r)
        assert_close("softmax_cross_entropy.probs", probs, probs_r)
        d = cconv.softmax_cross_entropy_backward(probs, labels, smoothing)
        d_r = ref.softmax_cross_entropy_backward(probs.astype(np.float64), labels, smoothing)
        assert d.dtype == np.float32 and d.shape == shape
        assert_close("softmax_cross_entropy_backward", d, d_r)


@pytest.mark.parametrize("smoothing", SMOOTHING)
def test_reference_backward_matches_finite_differences(rng, smoothing):
    for shape in [(1, 1), (1, 4), (3, 7), (8, 17)]:
        logits = rng.standard_normal(shape) * 3
        labels = rng.integers(0, shape[1], shape[0])
        probs = ref.softmax_cross_entropy(logits, labels, smoothing)[1]
        grad = ref.softmax_cross_entropy_backward(probs, labels, smoothing)

        def forward(z):
            return np.array(ref.softmax_cross_entropy(z, labels, smoothing)[0])

        directional_check(forward, [logits], [grad], np.array(1.0), rng)


def test_known_values(isa):
    # uniform logits: loss log(C), with or without smoothing
    loss, probs = cconv.softmax_cross_entropy(np.zeros((3, 10)), [0, 5, 9], 0.3)
    assert loss == pytest.approx(np.log(10), rel=1e-7)
    assert np.allclose(probs, 0.1)
    # a confident correct prediction has (almost) no loss; a confident wrong one loses the gap
    logits = np.float32([[100, 0, 0], [0, 100, 0]])
    assert cconv.softmax_cross_entropy(logits[:1], [0])[0] == pytest.approx(2 * np.exp(-100))
    assert cconv.softmax_cross_entropy(logits[1:], [0])[0] == pytest.approx(100, rel=1e-7)


def test_extreme_logits_are_stable(isa):
    logits = np.array([[1000, -1000, 0, 999], [-1e30, 0, 1e30, 3e38], [-5e4, -5e4, -5e4, -5e4],
                       [88, 89, 90, -90], [-100, -200, -300, -87.4], [1e4, 1e4, -1e4, 0]],
                      dtype=np.float32)
    labels = np.array([1, 0, 2, 3, 2, 3])
    for smoothing in (0.0, 0.2):
        loss, probs = cconv.softmax_cross_entropy(logits, labels, smoothing)
        loss_r, probs_r = ref.softmax_cross_entropy(logits.astype(np.float64), labels, smoothing)
        assert np.isfinite(loss) and np.isfinite(probs).all()
        assert_loss_close("softmax_cross_entropy", loss, loss_r)
        assert_close("softmax_cross_entropy.probs", probs, probs_r)
        d = cconv.softmax_cross_entropy_backward(probs, labels, smoothing)
        assert_close("softmax_cross_entropy_backward", d,
                     ref.softmax_cross_entropy_backward(probs.astype(np.float64), labels,
                                                        smoothing))


def test_one_and_two_threads_are_bitwise_equal(isa, rng):
    for shape in [(3000, 10), (64, 1000), (5, 20000)]:
        logits, labels = sample(rng, shape)
        runs = []
        for t in (1, 2, 3):
            loss, probs = cconv.softmax_cross_entropy(logits, labels, 0.1, n_threads=t)
            d = cconv.softmax_cross_entropy_backward(probs, labels, 0.1, n_threads=t)
            runs.append((loss, probs.tobytes(), d.tobytes()))
        assert runs[0] == runs[1] == runs[2], shape


def test_inputs_are_converted_not_rejected(rng):
    logits = rng.standard_normal((6, 20))[:, ::2]  # float64, not contiguous
    labels = [0, 1, 2, 9, 4, 5]
    loss, probs = cconv.softmax_cross_entropy(logits, labels)
    loss_r, _ = ref.softmax_cross_entropy(logits, np.array(labels))
    assert_loss_close("softmax_cross_entropy", loss, loss_r)
    for lab in (np.array(labels, np.int32), np.array(labels, np.uint8),
                np.array(labels, np.float64), tuple(labels)):
        assert cconv.softmax_cross_entropy(logits, lab)[0] == loss
        cconv.softmax_cross_entropy_backward(probs, lab)


def test_bad_input_raises_value_error_naming_the_op():
    x = np.zeros((3, 4), dtype=np.float32)
    fwd, bwd = cconv.softmax_cross_entropy, cconv.softmax_cross_entropy_backward
    cases = [
        ("softmax_cross_entropy", lambda: fwd(np.zeros(4), [0])),
        ("softmax_cross_entropy", lambda: fwd(np.zeros((2, 3, 4)), [0, 1])),
        ("softmax_cross_entropy", lambda: fwd(np.zeros((0, 4)), [])),
        ("softmax_cross_entropy", lambda: fwd(np.zeros((3, 0)), [0, 0, 0])),
        ("softmax_cross_entropy", lambda: fwd(x, [0, 1])),
        ("softmax_cross_entropy", lambda: fwd(x, [[0, 1, 2]])),
        ("softmax_cross_entropy", lambda: fwd(x, [0, 1, 4])),
        ("softmax_cross_entropy", lambda: fwd(x, [0, -1, 2])),
        ("softmax_cross_entropy", lambda: fwd(x, [0, 1.5, 2])),
        ("softmax_cross_entropy", lambda: fwd(x, ["a", "b", "c"])),
        ("softmax_cross_entropy", lambda: fwd(x, [0, 1, 2], label_smoothing=-0.1)),
        ("softmax_cross_entropy", lambda: fwd(x, [0, 1, 2], label_smoothing=1.5)),
        ("softmax_cross_entropy", lambda: fwd(x, [0, 1, 2], label_smoothing=float("nan"))),
        ("softmax_cross_entropy", lambda: fwd(x, [0, 1, 2], label_smoothing="some")),
        ("softmax_cross_entropy_backward", lambda: bwd(x, [0, 1, 7])),
        ("softmax_cross_entropy_backward", lambda: bwd(x, [0, 1])),
        ("softmax_cross_entropy_backward", lambda: bwd(np.zeros(3), [0, 1, 2])),
        ("softmax_cross_entropy_backward", lambda: bwd(x, [0, 1, 2], label_smoothing=2)),
    ]
    for op, call in cases:
        with pytest.raises(ValueError, match=f"^{op}:"):
            call()


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.7])
def test_matches_torch(rng, smoothing):
    torch = pytest.importorskip("torch")
    logits, labels = sample(rng, (16, 11))
    t = torch.tensor(logits, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(t, torch.tensor(labels), label_smoothing=smoothing)
    (g,) = torch.autograd.grad(tl, t)
    loss, probs = cconv.softmax_cross_entropy(logits, labels, smoothing)
    assert loss == pytest.approx(tl.item(), rel=1e-5)
    d = cconv.softmax_cross_entropy_backward(probs, labels, smoothing)
    np.testing.assert_allclose(d, g.numpy(), rtol=1e-4, atol=1e-7)
