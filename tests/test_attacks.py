"""fastcnn.attacks: FGSM and PGD against their definitions (and PyTorch's gradients), their
constraints, and what they do to LeNet-5 on the bundled MNIST subset, with and without
adversarial training."""
import numpy as np
import pytest

import fastcnn as fc
from fastcnn import attacks

from conftest import relative_error


def _softmax_model(rng, probabilities=False):
    """A linear classifier: its loss gradient is known in closed form."""
    fc.manual_seed(1)
    layers = [fc.Flatten(), fc.Linear(4 * 4 * 2, 3)] + ([fc.Softmax()] if probabilities else [])
    return fc.Sequential(*layers, input_shape=(4, 4, 2))


def _closed_form_grad(model, x, y):
    w = model.layers[1].weight.data.astype(np.float64)          # (3, C*H*W), (C, H, W) order
    flat = x.transpose(0, 3, 1, 2).reshape(len(x), -1).astype(np.float64)
    z = flat @ w.T + model.layers[1].bias.data
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(x)), y] -= 1
    return (p @ w).reshape(len(x), 2, 4, 4).transpose(0, 2, 3, 1)


@pytest.mark.parametrize("probabilities", [False, True])
def test_loss_gradient_is_the_cross_entropys(probabilities, rng):
    model = _softmax_model(rng, probabilities)
    x = rng.uniform(0, 1, (5, 4, 4, 2)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0])
    expected = _closed_form_grad(model, x, y)
    assert relative_error(attacks.loss_gradient(model, x, y), expected) < 1e-5


def test_fgsm_steps_by_the_sign_and_clips(rng):
    model = _softmax_model(rng)
    x = rng.uniform(0, 1, (6, 4, 4, 2)).astype(np.float32)
    y = np.arange(6) % 3
    adv = attacks.fgsm(model, x, y, 0.1)
    expected = np.clip(x + 0.1 * np.sign(_closed_form_grad(model, x, y)), 0, 1)
    np.testing.assert_allclose(adv, expected, atol=1e-6)
    assert adv.dtype == np.float32 and adv.min() >= 0 and adv.max() <= 1
    unclipped = attacks.fgsm(model, x, y, 0.1, clip=None)
    np.testing.assert_allclose(np.abs(unclipped - x), 0.1, atol=1e-6)
    with pytest.raises(ValueError, match="eps"):
        attacks.FGSM(-1)
    with pytest.raises(ValueError, match="clip"):
        attacks.FGSM(0.1, clip=(1, 0))


@pytest.mark.parametrize("norm", ["inf", 2])
def test_pgd_stays_in_its_ball_and_raises_the_loss(norm, rng):
    fc.manual_seed(0)
    model = fc.Sequential(fc.Conv2d(2, 4, 3, padding=1), fc.ReLU(), fc.Flatten(),
                          fc.Linear(64, 3), input_shape=(4, 4, 2))
    model.compile(optimizer="sgd", loss="cross_entropy")
    x = rng.uniform(0, 1, (16, 4, 4, 2)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    eps = 0.1 if norm == "inf" else 0.5
    attack = attacks.PGD(eps, steps=8, norm=norm, seed=3)
    adv = attack(model, x, y)
    delta = (adv - x).reshape(16, -1)
    size = np.abs(delta).max(1) if norm == "inf" else np.sqrt((delta.astype(np.float64) ** 2).sum(1))
    assert np.all(size <= eps * (1 + 1e-5))
    assert adv.min() >= 0 and adv.max() <= 1
    clean_loss = model.evaluate(x, y)["loss"]
    assert model.evaluate(adv, y)["loss"] > clean_loss
    assert model.evaluate(x, y, attack=attacks.PGD(eps, steps=8, norm=norm, seed=3))["loss"] == \
        pytest.approx(model.evaluate(adv, y)["loss"], rel=1e-6)
    np.testing.assert_array_equal(adv, attacks.PGD(eps, steps=8, norm=norm, seed=3)(model, x, y))
    # without a seed: fastcnn's generator, reproducible through manual_seed
    fc.manual_seed(7)
    a = attacks.pgd(model, x, y, eps, norm=norm)
    fc.manual_seed(7)
    np.testing.assert_array_equal(a, attacks.pgd(model, x, y, eps, norm=norm))


@pytest.mark.torch
def test_fgsm_equals_pytorchs_on_lenet5(rng):
    torch = pytest.importorskip("torch")
    from fastcnn._torch_twin import to_nchw, to_nhwc, torch_twin
    torch.manual_seed(0)
    model = fc.models.lenet5()
    twin = torch_twin(model)
    model.load_state_dict(twin.state_dict())
    twin.eval()
    x = rng.uniform(0, 1, (8, 28, 28, 1)).astype(np.float32)
    y = np.arange(8)
    xt = torch.tensor(to_nchw(x), requires_grad=True)
    torch.nn.functional.cross_entropy(twin(xt), torch.tensor(y), reduction="sum").backward()
    grad = to_nhwc(xt.grad)
    assert relative_error(attacks.loss_gradient(model, x, y), grad) < 1e-4
    adv = attacks.fgsm(model, x, y, 0.1)
    expected = np.clip(x + 0.1 * np.sign(grad), 0, 1)
    clear = np.abs(grad) > 1e-6 * np.abs(grad).max()   # signs of near-zero gradients may differ
    np.testing.assert_allclose(adv[clear], expected[clear], atol=1e-6)


def test_fit_and_evaluate_check_their_attack_arguments(rng):
    model = _softmax_model(rng)
    model.compile(optimizer="sgd", loss="cross_entropy")
    x = rng.uniform(0, 1, (4, 4, 4, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="adversarial must be an attack"):
        model.fit(x, np.zeros(4, int), adversarial=0.1, verbose=0)
    with pytest.raises(ValueError, match="attack must be an attack"):
        model.evaluate(x, np.zeros(4, int), attack="fgsm")


def test_adversarial_training_resumes_bit_for_bit(tmp_path, rng):
    x = rng.uniform(0, 1, (48, 4, 4, 2)).astype(np.float32)
    y = rng.integers(0, 3, 48)

    def run(epochs, resume):
        fc.manual_seed(0)
        model = fc.Sequential(fc.Conv2d(2, 4, 3, padding=1), fc.BatchNorm2d(4), fc.ReLU(),
                              fc.Dropout(0.2), fc.Flatten(), fc.Linear(64, 3),
                              input_shape=(4, 4, 2))
        model.compile(optimizer=fc.Adam(lr=1e-2), loss="cross_entropy")
        model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, checkpoint=tmp_path / "run.ckpt",
                  resume=resume, adversarial=attacks.PGD(0.05, steps=3))
        return model.state_dict()

    whole = run(3, resume=False)
    (tmp_path / "run.ckpt").unlink()
    run(2, resume=False)
    resumed = run(3, resume=True)
    for key, value in whole.items():
        np.testing.assert_array_equal(resumed[key], value, err_msg=key)


@pytest.mark.slow_under_emulation
def test_fgsm_hurts_lenet5_and_pgd_training_makes_it_robust():
    (x, y), (x_test, y_test) = fc.datasets.load_mnist()
    fgsm = attacks.FGSM(0.1)
    results = {}
    for name, adversarial in (("normal", None), ("pgd", attacks.PGD(0.1, steps=3))):
        fc.manual_seed(0)
        model = fc.models.lenet5()
        model.compile(optimizer=fc.Adam(lr=2e-3), loss="cross_entropy")
        model.fit(x, y, epochs=4, batch_size=64, verbose=0, adversarial=adversarial)
        results[name] = (model.evaluate(x_test, y_test)["accuracy"],
                         model.evaluate(x_test, y_test, attack=fgsm)["accuracy"])
    clean, robust = results["normal"]
    assert clean > 0.94 and clean - robust > 0.15, results   # FGSM at 0.1 hurts
    assert results["pgd"][1] - robust >= 0.20, results         # adversarial training helps
    assert results["pgd"][0] > 0.9, results
