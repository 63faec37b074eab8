"""Layers: PyTorch parity of forward, backward and initialisation; shapes, errors, state dicts."""
import numpy as np
import pytest

import fastcnn as fc
from conftest import assert_close
from fastcnn._torch_twin import rel_err, to_nchw, to_nhwc, torch_twin


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


LAYER_CASES = [
    ("conv", lambda: fc.Conv2d(3, 8, 3, stride=2, padding=1), (2, 9, 9, 3)),
    ("conv-same-dil", lambda: fc.Conv2d(4, 6, 3, padding="same", dilation=2, bias=False), (2, 7, 8, 4)),
    ("conv-depthwise", lambda: fc.Conv2d(8, 8, 3, padding=1, groups=8), (2, 6, 6, 8)),
    ("conv-groups", lambda: fc.Conv2d(4, 6, (3, 1), stride=(1, 2), padding=(1, 0), groups=2), (1, 5, 7, 4)),
    ("convT", lambda: fc.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1), (2, 5, 5, 4)),
    ("maxpool", lambda: fc.MaxPool2d(2), (2, 8, 8, 3)),
    ("maxpool-ceil", lambda: fc.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 8, 7, 5)),
    ("avgpool", lambda: fc.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 7, 7, 4)),
    ("sumpool", lambda: fc.SumPool2d(2), (2, 6, 6, 3)),
    ("gap", lambda: fc.GlobalAvgPool2d(), (3, 5, 4, 6)),
    ("linear", lambda: fc.Linear(12, 5), (4, 12)),
    ("bn", lambda: fc.BatchNorm2d(5), (4, 3, 3, 5)),
    ("relu", lambda: fc.ReLU(), (2, 4, 4, 3)),
    ("leaky", lambda: fc.LeakyReLU(0.2), (2, 4, 4, 3)),
    ("sigmoid", lambda: fc.Sigmoid(), (2, 4, 4, 3)),
    ("tanh", lambda: fc.Tanh(), (2, 4, 4, 3)),
    ("softmax", lambda: fc.Softmax(dim=1), (4, 7)),
    ("flatten", lambda: fc.Flatten(), (2, 3, 4, 5)),
    ("residual", lambda: fc.Residual(fc.Sequential(fc.Conv2d(4, 4, 3, padding=1), fc.ReLU())), (2, 5, 5, 4)),
    ("residual-proj", lambda: fc.Residual(fc.Sequential(fc.Conv2d(4, 6, 3, stride=2, padding=1)),
                                          fc.Sequential(fc.Conv2d(4, 6, 1, stride=2))), (2, 6, 6, 4)),
]


@pytest.mark.parametrize("name,make,shape", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_layer_matches_pytorch(name, make, shape):
    torch = pytest.importorskip("torch")
    fc.manual_seed(3)
    layer = make()
    twin = torch_twin(layer)
    twin.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    x = _x(shape)
    y = layer.forward(x)
    xt = torch.tensor(to_nchw(x), dtype=torch.float32, requires_grad=True)
    yt = twin(xt)
    assert y.shape == to_nhwc(yt).shape
    assert_close(f"api {type(layer).__name__} vs torch", y, to_nhwc(yt), 1e-5)
    dy = _x(y.shape, 1)
    dx = layer.backward(dy)
    yt.backward(torch.tensor(to_nchw(dy)))
    assert_close(f"api {type(layer).__name__}.backward vs torch", dx, to_nhwc(xt.grad), 1e-5)
    grads = {n: p.grad for n, p in layer.named_parameters()}
    for n, p in twin.named_parameters():
        assert_close(f"api {type(layer).__name__}.backward vs torch", grads[n], p.grad.numpy(), 1e-5)
    # shape arithmetic of summary() agrees with the real output
    assert tuple(layer.output_shape(shape[1:])) == y.shape[1:]


def test_init_follows_pytorch_bounds():
    fc.manual_seed(0)
    conv = fc.Conv2d(16, 32, 3)
    bound = 1 / np.sqrt(16 * 9)
    assert conv.weight.data.dtype == np.float32 and conv.weight.shape == (32, 16, 3, 3)
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.weight.data).max() > 0.9 * bound
    assert np.abs(conv.bias.data).max() <= bound
    lin = fc.Linear(100, 10)
    assert np.abs(lin.weight.data).max() <= 0.1 and np.abs(lin.bias.data).max() <= 0.1
    convt = fc.ConvTranspose2d(4, 6, 3)
    assert convt.weight.shape == (4, 6, 3, 3) and np.abs(convt.weight.data).max() <= 1 / np.sqrt(54)
    bn = fc.BatchNorm2d(3)
    assert (bn.weight.data == 1).all() and (bn.bias.data == 0).all()
    assert bn.num_batches_tracked.dtype == np.int64


def test_manual_seed_reproducible():
    fc.manual_seed(7)
    a = fc.models.lenet5().state_dict()
    fc.manual_seed(7)
    b = fc.models.lenet5().state_dict()
    fc.manual_seed(8)
    c = fc.models.lenet5().state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["0.weight"], c["0.weight"])


def test_batchnorm_running_stats_match_pytorch():
    torch = pytest.importorskip("torch")
    bn = fc.BatchNorm2d(3)
    tbn = torch.nn.BatchNorm2d(3)
    for seed in range(3):
        x = _x((4, 5, 5, 3), seed) * 2 + 1
        bn.forward(x)
        tbn(torch.tensor(to_nchw(x)))
    sd = bn.state_dict()
    for k, v in tbn.state_dict().items():
        np.testing.assert_allclose(sd[k], v.numpy(), rtol=1e-5, atol=1e-6)
    bn.eval()
    tbn.eval()
    x = _x((2, 5, 5, 3), 9)
    np.testing.assert_allclose(bn.forward(x), to_nhwc(tbn(torch.tensor(to_nchw(x)))), atol=1e-5)


def test_batchnorm_eval_backward():
    torch = pytest.importorskip("torch")
    bn = fc.BatchNorm2d(3)
    bn.running_mean = np.array([0.5, -1, 2], np.float32)
    bn.running_var = np.array([2, 0.5, 1], np.float32)
    bn.weight.data = np.array([1.5, 0.5, -1], np.float32)
    tbn = torch_twin(bn)
    tbn.load_state_dict({k: torch.tensor(v) for k, v in bn.state_dict().items()})
    bn.eval()
    tbn.eval()
    x = _x((2, 4, 4, 3))
    xt = torch.tensor(to_nchw(x), requires_grad=True)
    dy = _x((2, 4, 4, 3), 1)
    bn.forward(x)
    dx = bn.backward(dy)
    tbn(xt).backward(torch.tensor(to_nchw(dy)))
    assert rel_err(dx, to_nhwc(xt.grad)) < 1e-5
    assert rel_err(bn.weight.grad, tbn.weight.grad.numpy()) < 1e-5


def test_dropout_train_and_eval():
    fc.manual_seed(0)
    d = fc.Dropout(0.5)
    x = np.ones((64, 4, 4, 8), np.float32)
    y = d.forward(x)
    kept = y != 0
    assert 0.4 < kept.mean() < 0.6
    np.testing.assert_allclose(y[kept], 2.0)
    dx = d.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx != 0, kept)
    d.eval()
    np.testing.assert_array_equal(d.forward(x), x)


def test_gradients_accumulate_until_zero_grad():
    fc.manual_seed(0)
    lin = fc.Linear(3, 2)
    x = _x((4, 3))
    lin.forward(x)
    lin.backward(np.ones((4, 2), np.float32))
    g1 = lin.weight.grad.copy()
    lin.forward(x)
    lin.backward(np.ones((4, 2), np.float32))
    np.testing.assert_allclose(lin.weight.grad, 2 * g1, rtol=1e-6)
    lin.zero_grad()
    assert lin.weight.grad is None


@pytest.mark.parametrize("layer,x,words", [
    (fc.Conv2d(3, 4, 3), np.zeros((2, 8, 8, 1)), ["Conv2d", "(N, H, W, 3)", "(2, 8, 8, 1)"]),
    (fc.Conv2d(3, 4, 3), np.zeros((8, 8, 3)), ["Conv2d", "(8, 8, 3)"]),
    (fc.Linear(10, 2), np.zeros((2, 11)), ["Linear", "(N, 10)", "(2, 11)"]),
    (fc.BatchNorm2d(4), np.zeros((2, 3, 3, 5)), ["BatchNorm2d", "(2, 3, 3, 5)"]),
    (fc.MaxPool2d(2), np.zeros((2, 3, 3)), ["MaxPool2d", "(2, 3, 3)"]),
    (fc.Conv2d(3, 4, 3), np.zeros((0, 8, 8, 3)), ["Conv2d", "empty"]),
    (fc.Conv2d(3, 4, 5), np.zeros((1, 3, 3, 3)), ["conv2d", "larger"]),
])
def test_bad_input_names_the_layer_and_shapes(layer, x, words):
    with pytest.raises(ValueError) as info:
        layer.forward(x)
    for w in words:
        assert w in str(info.value)


def test_sequential_state_dict_keys_and_load():
    pytest.importorskip("torch")
    fc.manual_seed(0)
    model = fc.models.resnet20()
    twin = torch_twin(model)
    assert list(model.state_dict()) == list(twin.state_dict())
    model.load_state_dict(twin.state_dict())   # torch tensors load as they are
    for k, v in twin.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k], v.numpy())
    with pytest.raises(ValueError, match="missing"):
        model.load_state_dict({"0.weight": model.state_dict()["0.weight"]})
    sd = model.state_dict()
    sd["0.weight"] = np.zeros((16, 3, 5, 5), np.float32)
    with pytest.raises(ValueError, match="0.weight"):
        model.load_state_dict(sd)


def test_sequential_container_and_repr():
    model = fc.models.lenet5()
    assert len(model) == 12 and isinstance(model[0], fc.Conv2d)
    assert isinstance(model[:3], fc.Sequential) and len(model[:3]) == 3
    assert "Conv2d" in repr(model) and "kernel_size" in repr(model)
    assert len(model.parameters()) == 10
    assert model.num_parameters() == 61706
