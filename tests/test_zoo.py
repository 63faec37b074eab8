"""The model zoo against PyTorch: torchvision's ResNet-18/34/50, MobileNetV2, EfficientNet-B0,
VGG-11-BN and VGG-16, and the U-Net, each against its plain-torch.nn twin in torch_zoo.py
(torchvision's module structure and attribute names, so its state-dict keys).

For each model: the same state-dict keys, in order, and shapes, and PyTorch's state dict loads
unchanged; eval-mode outputs (batch norm folded into the convolutions) and train-mode outputs
(batch statistics) match, and so do the input gradient, every parameter gradient and the
running statistics after a backward of one upstream gradient; three SGD steps (momentum 0.9)
give the same weights. The worst errors seen are printed at the end of the run (conftest's
ledger: "zoo <model> ..."). Without torch: every model builds on a small input with the right
output shape, torchvision's parameter counts, and fastcnn.save / load round trips.

The twins run in float64: PyTorch's own float32 CPU results are further from the exact values
than fastcnn's in places (ResNet-18's input gradient: 9e-3 of its magnitude from the float64
result, fastcnn's 2e-5), and each check should measure fastcnn's error only.

Inputs are small (64x64, VGG and U-Net 32x32, batch 2) to keep the CPU time low; the batch
norm of the last stages then normalises over 8 values, which these checks include.
"""
import copy

import numpy as np
import pytest

import fastcnn as fc
from conftest import _case_count, _worst_error
from fastcnn._torch_twin import to_nchw, to_nhwc
from fastcnn.models.resnet import all_layers

# whole models: minutes each under qemu-aarch64
pytestmark = pytest.mark.slow_under_emulation

NUM_CLASSES = 10

# name: (fastcnn builder, keyword arguments without dropout, the input (H, W, C), batch)
MODELS = {
    "resnet18": (fc.models.resnet18, {"num_classes": NUM_CLASSES}, (64, 64, 3), 2),
    "resnet34": (fc.models.resnet34, {"num_classes": NUM_CLASSES}, (64, 64, 3), 4),
    "resnet50": (fc.models.resnet50, {"num_classes": NUM_CLASSES}, (64, 64, 3), 2),
    "mobilenet_v2": (fc.models.mobilenet_v2, {"num_classes": NUM_CLASSES, "dropout": 0.0},
                     (64, 64, 3), 2),
    "efficientnet_b0": (fc.models.efficientnet_b0,
                        {"num_classes": NUM_CLASSES, "dropout": 0.0, "stochastic_depth_prob": 0.0},
                        (64, 64, 3), 2),
    "vgg11_bn": (fc.models.vgg11_bn, {"num_classes": NUM_CLASSES, "dropout": 0.0}, (32, 32, 3), 2),
    "vgg16": (fc.models.vgg16, {"num_classes": NUM_CLASSES, "dropout": 0.0}, (32, 32, 3), 2),
    # 35x45: not multiples of 16, so the upsampled maps are padded to the skips' sizes
    "unet": (fc.models.unet, {"in_channels": 3, "num_classes": 2, "base": 8}, (35, 45, 3), 2),
}

# torchvision's parameter counts (1000 classes), the U-Net's for base=64 (the paper's widths)
PARAMETER_COUNTS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "mobilenet_v2": 3_504_872, "efficientnet_b0": 5_288_548,
    "vgg11_bn": 132_868_840, "vgg16": 138_357_544, "unet": 31_037_698,
}


def _input(name, seed=0):
    _, _, shape, batch = MODELS[name]
    return np.random.default_rng(seed).standard_normal((batch,) + shape).astype(np.float32)


def _build(name, **overrides):
    make, kwargs, shape, _ = MODELS[name]
    return make(**{**kwargs, **overrides, "input_shape": shape})


# --- without torch ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_builds_and_round_trips(name, tmp_path):
    fc.manual_seed(0)
    model = _build(name)
    x = _input(name)
    model.eval()
    y = model(x)
    _, kwargs, shape, batch = MODELS[name]
    expected = ((batch,) + shape[:2] + (kwargs["num_classes"],) if name == "unet"
                else (batch, kwargs["num_classes"]))
    assert y.shape == expected
    assert np.all(np.isfinite(y))
    if name == "vgg16":
        return   # its file is 0.5 GB (30 s to write here) and vgg11_bn has the same layers
    path = tmp_path / f"{name}.fcnn"
    fc.save(model, path)
    loaded = fc.load(path)
    assert list(loaded.state_dict()) == list(model.state_dict())
    loaded.eval()
    np.testing.assert_array_equal(loaded(x), y)


@pytest.mark.parametrize("name", [n for n in MODELS if not n.startswith("vgg")])
def test_parameter_counts(name):
    """torchvision's parameter counts with the default 1000 classes (VGG's are checked in
    test_vgg_parameter_counts without building a 138 M parameter model)."""
    make = MODELS[name][0]
    model = make(base=64) if name == "unet" else make()
    assert model.num_parameters() == PARAMETER_COUNTS[name]


def test_vgg_parameter_counts():
    """The 1000-class VGGs differ from the 10-class ones only in the last Linear layer."""
    for name in ("vgg11_bn", "vgg16"):
        small = _build(name).num_parameters()
        assert small + 4097 * (1000 - NUM_CLASSES) == PARAMETER_COUNTS[name]


def test_other_input_sizes():
    """Any input size the architecture allows: the classifiers pool adaptively, the U-Net pads."""
    for make, shape in ((fc.models.resnet18, (40, 56, 3)), (fc.models.mobilenet_v2, (33, 47, 3)),
                        (fc.models.efficientnet_b0, (48, 32, 3))):
        model = make(num_classes=7, input_shape=shape)
        assert model.output_shape(shape) == (7,)
    model = fc.models.unet(in_channels=1, num_classes=3, base=4, input_shape=(17, 23))
    assert model.output_shape((17, 23, 1)) == (17, 23, 3)
    model.eval()
    assert model(np.zeros((1, 17, 23, 1), np.float32)).shape == (1, 17, 23, 3)


# --- against PyTorch ---------------------------------------------------------------------------
# The reference is the twin in float64. Where a check is ill-conditioned (a ReLU or max-pool
# input within rounding of its kink flipping in float32, then a batch norm over 8 values spreading
# it over the channel; a gradient that is zero in exact arithmetic, such as a conv bias before
# batch norm; the SGD steps of the deeper models, whose losses change by 1e-2 when the initial
# weights change by 1e-7), PyTorch's own float32 result is as far from the float64 one as
# fastcnn's. So each group of checks allows, besides its tolerance, a multiple of the worst error
# PyTorch's float32 run shows in that group. The ledger prints both ("... [torch f32]").


class _Checks:
    """Compare fastcnn's arrays with the float64 results, relative to each one's magnitude (at
    least ``floor``), once all of a group are in: each within ``tol`` or within ``allowance``
    times PyTorch float32's worst error in the group."""

    def __init__(self, label, tol, allowance=3.0, floor=0.0):
        self.label, self.tol, self.allowance, self.floor = label, tol, allowance, floor
        self.rows = []

    def add(self, key, ours, exact, torch32):
        ours, exact, torch32 = (np.asarray(a, np.float64) for a in (ours, exact, torch32))
        assert ours.shape == exact.shape, f"{self.label} {key}: {ours.shape} != {exact.shape}"
        assert np.all(np.isfinite(ours)), f"{self.label} {key}: non-finite values"
        scale = max(float(np.max(np.abs(exact), initial=0.0)), self.floor, 1e-30)
        self.rows.append((key, float(np.max(np.abs(ours - exact), initial=0.0)) / scale,
                          float(np.max(np.abs(torch32 - exact), initial=0.0)) / scale))

    def check(self):
        if not self.rows:
            return
        worst32 = max(r[2] for r in self.rows)
        for suffix, col in (("", 1), (" [torch f32]", 2)):
            label = self.label + suffix
            _worst_error[label] = max(_worst_error[label], max(r[col] for r in self.rows))
            _case_count[label] += len(self.rows)
        allowed = max(self.tol, self.allowance * worst32)
        bad = [r for r in self.rows if r[1] > allowed]
        assert not bad, (f"{self.label}: {len(bad)} of {len(self.rows)} beyond {allowed:.2g} "
                         f"(tolerance {self.tol:.0e}, PyTorch float32's worst {worst32:.2g}): "
                         + ", ".join(f"{k} {e:.3g} (torch f32 {e32:.3g})" for k, e, e32 in bad[:5]))


def _check(label, ours, exact, torch32, tol, floor=0.0):
    checks = _Checks(label, tol, floor=floor)
    checks.add("", ours, exact, torch32)
    checks.check()


@pytest.fixture(scope="module", params=list(MODELS))
def pair(request):
    """(name, fastcnn model, the torch twin in float32 and in float64, the initial state) for
    one model. The twin's batch norms get random weights, biases and running statistics, so
    that eval mode's folding of them into the convolutions is checked with values other than
    1 and 0."""
    torch = pytest.importorskip("torch")
    import torch_zoo

    name = request.param
    torch.manual_seed(0)
    twin = torch_zoo.MODELS[name](**MODELS[name][1])
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in twin.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(1 + 0.2 * (torch.rand(c, generator=gen) - 0.5))
                m.bias.copy_(0.2 * (torch.rand(c, generator=gen) - 0.5))
                m.running_mean.copy_(0.2 * (torch.rand(c, generator=gen) - 0.5))
                m.running_var.copy_(0.6 + 0.8 * torch.rand(c, generator=gen))
    state = {k: v.clone() for k, v in twin.state_dict().items()}
    twin64 = copy.deepcopy(twin).double()
    model = _build(name)
    yield name, model, (twin, twin64), state


def _reset(pair, algo=None):
    """The pair with the initial state; ``algo`` for every fastcnn convolution."""
    name, model, twins, state = pair
    for twin in twins:
        twin.load_state_dict(state)
    model.load_state_dict(state)
    for layer in all_layers(model):
        if type(layer) is fc.Conv2d:
            layer.algo = algo or "auto"
    return name, model, twins


def _t(a, twin):
    import torch
    return torch.tensor(to_nchw(a), dtype=next(twin.parameters()).dtype)


def _np(t):
    return to_nhwc(t) if t.ndim == 4 else t.detach().numpy()


@pytest.mark.torch
def test_state_dict_keys_and_loading(pair):
    name, model, (twin, _), state = pair
    ours = model.state_dict()
    assert list(ours) == list(state)
    for k, v in state.items():
        assert ours[k].shape == tuple(v.shape), k
    result = model.load_state_dict(state)          # torch tensors, unchanged
    assert not result.missing_keys and not result.unexpected_keys
    loaded = model.state_dict()
    for k, v in state.items():
        np.testing.assert_array_equal(loaded[k], v.numpy(), err_msg=k)
    assert [k for k, _ in model.named_parameters()] == [k for k, _ in twin.named_parameters()]


@pytest.mark.torch
def test_eval_outputs_match(pair):
    """Eval mode as it runs by default: batch norm folded, Winograd where it applies."""
    import torch
    name, model, twins = _reset(pair)
    x = _input(name)
    model.eval()
    with torch.no_grad():
        expected = [_np(t.eval()(_t(x, t))) for t in twins]
    _check(f"zoo {name} eval outputs", model(x), expected[1], expected[0], 1e-4)
    model.train()


def _torch_backward(twin, x, dy):
    twin.train()
    twin.zero_grad()
    xt = _t(x, twin).requires_grad_()
    out = twin(xt)
    out.backward(_t(dy, twin))
    grads = {k: p.grad.numpy().copy() for k, p in twin.named_parameters()}
    running = {k: v.numpy().copy() for k, v in twin.state_dict().items() if "running" in k}
    return _np(out), _np(xt.grad), grads, running


@pytest.mark.torch
def test_train_outputs_and_gradients_match(pair):
    """Training mode with direct convolutions (as PyTorch's): batch statistics, then the
    backward of one upstream gradient: the input gradient, every parameter's gradient and the
    running statistics."""
    name, model, twins = _reset(pair, algo="direct")
    x = _input(name, seed=1)
    model.train()
    out = model(x)
    dy = np.random.default_rng(2).standard_normal(out.shape).astype(np.float32)
    model.zero_grad()
    dx = model.backward(dy)
    (out32, dx32, g32, r32), (out64, dx64, g64, r64) = [_torch_backward(t, x, dy) for t in twins]
    _check(f"zoo {name} train outputs", out, out64, out32, 1e-4)
    _check(f"zoo {name} input gradient", dx, dx64, dx32, 1e-3)
    grads = dict(model.named_parameters())
    # a gradient that is zero in exact arithmetic is compared on the scale of the largest
    largest = max(float(np.max(np.abs(g))) for g in g64.values())
    checks = _Checks(f"zoo {name} parameter gradients", 1e-3, floor=1e-6 * largest)
    for key in g64:
        assert grads[key].grad is not None, f"{key}: no gradient"
        checks.add(key, grads[key].grad, g64[key], g32[key])
    checks.check()
    ours = model.state_dict()   # the running statistics after one training batch
    checks = _Checks(f"zoo {name} running stats", 1e-4)
    for key in r64:
        checks.add(key, ours[key], r64[key], r32[key])
    checks.check()


@pytest.mark.torch
def test_sgd_steps_match(pair):
    """Three steps of SGD (momentum 0.9) with train_step, direct convolutions: the same losses
    and the same weights and running statistics as torch.optim.SGD's."""
    import torch
    name, model, twins = _reset(pair, algo="direct")
    segmentation = name == "unet"
    loss = fc.MSELoss() if segmentation else fc.CrossEntropyLoss()
    model.compile(optimizer=fc.SGD(lr=0.01, momentum=0.9), loss=loss)
    model.train()
    opts = [torch.optim.SGD(t.parameters(), lr=0.01, momentum=0.9) for t in twins]
    rng = np.random.default_rng(3)
    loss_checks = _Checks(f"zoo {name} SGD losses", 1e-4, allowance=10.0)
    for step in range(3):
        x = _input(name, seed=10 + step)
        if segmentation:
            y = rng.standard_normal(x.shape[:3] + (MODELS[name][1]["num_classes"],)) \
                .astype(np.float32)
        else:
            y = rng.integers(0, NUM_CLASSES, len(x))
        loss_value, _ = model.train_step(x, y)
        losses = []
        for twin, opt in zip(twins, opts):
            twin.train()
            opt.zero_grad()
            out = twin(_t(x, twin))
            if segmentation:
                tloss = torch.nn.functional.mse_loss(out, _t(y, twin))
            else:
                tloss = torch.nn.functional.cross_entropy(out, torch.tensor(y))
            tloss.backward()
            opt.step()
            losses.append(tloss.item())
        loss_checks.add(f"step {step}", loss_value, losses[1], losses[0])
    ours = model.state_dict()
    s32, s64 = (t.state_dict() for t in twins)
    # weights that stay zero in exact arithmetic (conv biases before batch norm): absolute
    checks = _Checks(f"zoo {name} weights after 3 SGD steps", 1e-4, allowance=10.0, floor=1e-3)
    for key, v in s64.items():
        if key.endswith("num_batches_tracked"):
            assert int(ours[key]) == int(v), key
        else:
            checks.add(key, ours[key], v.numpy(), s32[key].numpy())
    loss_checks.check()
    checks.check()
