"""The layers that graph models brought (merge, 1-D, adaptive pooling, normalisation,
resampling, dropout variants, activations): each against PyTorch with the same parameters,
forward and backward (input and parameter gradients), on odd sizes and channel counts around
the SIMD widths, and against finite differences where no PyTorch is installed."""
import numpy as np
import pytest

import fastcnn as fc



@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _nchw(a):
    return np.ascontiguousarray(np.moveaxis(a, -1, 1))


def _nhwc(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _compare(layer, module, x, channels_last_in_torch=False, tol=1e-5, gtol=1e-4):
    import torch
    """Forward and backward of a fastcnn layer and a torch module with the same state dict on
    the same data (fastcnn channels last, torch channels first unless told otherwise)."""
    rng = np.random.default_rng(0)
    module.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    to_t = (lambda a: a) if channels_last_in_torch else _nchw
    from_t = (lambda a: a) if channels_last_in_torch else _nhwc
    xt = torch.tensor(to_t(x), requires_grad=True)
    yt = module(xt)
    y = layer.forward(x)
    assert y.shape == from_t(yt.detach().numpy()).shape
    assert _rel(y, from_t(yt.detach().numpy())) <= tol
    dy = rng.standard_normal(y.shape).astype(np.float32)
    yt.backward(torch.tensor(to_t(dy)))
    dx = layer.backward(dy)
    assert _rel(dx, from_t(xt.grad.numpy())) <= gtol
    params = dict(module.named_parameters())
    for name, p in layer.named_parameters():
        assert _rel(p.grad, params[name].grad.numpy()) < gtol, name


@pytest.mark.parametrize("c", [1, 7, 8, 16, 17, 33])
@pytest.mark.parametrize("kind", ["relu6", "hardswish", "hardsigmoid", "silu", "gelu",
                                  "gelu_tanh"])
def test_activations_match_pytorch(kind, c, isa, torch):
    rng = np.random.default_rng(c)
    x = (rng.standard_normal((2, 5, 3, c)) * 4).astype(np.float32)
    layers = {"relu6": (fc.ReLU6(), torch.nn.ReLU6()),
              "hardswish": (fc.Hardswish(), torch.nn.Hardswish()),
              "hardsigmoid": (fc.Hardsigmoid(), torch.nn.Hardsigmoid()),
              "silu": (fc.SiLU(), torch.nn.SiLU()),
              "gelu": (fc.GELU(), torch.nn.GELU()),
              "gelu_tanh": (fc.GELU(approximate="tanh"), torch.nn.GELU(approximate="tanh"))}
    layer, module = layers[kind]
    _compare(layer, module, x, tol=2e-6, gtol=2e-5)


@pytest.mark.parametrize("n,l,cin,cout,k,stride,pad,dil,groups", [
    (1, 17, 3, 8, 3, 1, 1, 1, 1), (2, 32, 16, 17, 5, 2, 2, 1, 1), (3, 9, 8, 8, 3, 1, 2, 2, 8),
    (2, 20, 6, 9, 1, 1, 0, 1, 3)])
def test_conv1d_matches_pytorch(n, l, cin, cout, k, stride, pad, dil, groups, isa, torch):
    fc.manual_seed(1)
    layer = fc.Conv1d(cin, cout, k, stride=stride, padding=pad, dilation=dil, groups=groups)
    assert layer.weight.shape == (cout, cin // groups, k)
    module = torch.nn.Conv1d(cin, cout, k, stride=stride, padding=pad, dilation=dil,
                             groups=groups)
    x = np.random.default_rng(2).standard_normal((n, l, cin)).astype(np.float32)
    _compare(layer, module, x, tol=1e-5, gtol=1e-4)


@pytest.mark.parametrize("make", [
    lambda torch: (fc.MaxPool1d(3, 2, 1), torch.nn.MaxPool1d(3, 2, 1)),
    lambda torch: (fc.AvgPool1d(4, 3), torch.nn.AvgPool1d(4, 3)),
    lambda torch: (fc.AdaptiveAvgPool1d(5), torch.nn.AdaptiveAvgPool1d(5)),
])
def test_pool1d_matches_pytorch(make, torch):
    layer, module = make(torch)
    x = np.random.default_rng(3).standard_normal((2, 23, 9)).astype(np.float32)
    _compare(layer, module, x)


@pytest.mark.parametrize("size,out", [((7, 7), 1), ((8, 12), (4, 3)), ((7, 10), (3, 4)),
                                      ((5, 5), (5, 2)), ((9, 6), (None, 4))])
@pytest.mark.parametrize("kind", ["avg", "max"])
def test_adaptive_pool2d_matches_pytorch(kind, size, out, torch):
    cls = {"avg": (fc.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool2d),
           "max": (fc.AdaptiveMaxPool2d, torch.nn.AdaptiveMaxPool2d)}[kind]
    layer, module = cls[0](out), cls[1](out)
    x = np.random.default_rng(4).standard_normal((2,) + size + (17,)).astype(np.float32)
    _compare(layer, module, x)
    assert layer.output_shape(size + (17,)) == layer.forward(x).shape[1:]


@pytest.mark.parametrize("groups,c", [(1, 8), (4, 16), (3, 9), (17, 17)])
def test_group_norm_matches_pytorch(groups, c, torch):
    fc.manual_seed(0)
    layer, module = fc.GroupNorm(groups, c), torch.nn.GroupNorm(groups, c)
    layer.weight.data[:] = np.linspace(0.5, 2, c)
    layer.bias.data[:] = np.linspace(-1, 1, c)
    x = (np.random.default_rng(5).standard_normal((2, 5, 7, c)) * 3 + 1).astype(np.float32)
    _compare(layer, module, x, tol=1e-5, gtol=1e-4)


@pytest.mark.parametrize("c", [3, 8, 33])
def test_layer_norm_over_channels_matches_pytorch(c, torch):
    layer, module = fc.LayerNorm(c), torch.nn.LayerNorm(c)
    layer.weight.data[:] = np.linspace(0.5, 2, c)
    x = (np.random.default_rng(6).standard_normal((2, 3, 5, c)) * 2).astype(np.float32)
    _compare(layer, module, x, channels_last_in_torch=True, tol=1e-5, gtol=1e-4)


@pytest.mark.parametrize("shape", [(5, 16), (4, 9, 16)])
def test_batch_norm1d_matches_pytorch(shape, torch):
    layer, module = fc.BatchNorm1d(16), torch.nn.BatchNorm1d(16)
    x = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    to_t = (lambda a: a) if len(shape) == 2 else _nchw
    _compare(layer, module, x, channels_last_in_torch=len(shape) == 2, tol=1e-5, gtol=1e-4)
    assert _rel(layer.running_var, module.running_var.numpy()) < 1e-5
    del to_t


@pytest.mark.parametrize("mode,align,size,scale", [
    ("nearest", None, None, 2), ("nearest", None, (7, 5), None), ("nearest", None, (3, 11), None),
    ("bilinear", False, None, 2), ("bilinear", True, None, 2), ("bilinear", False, (9, 4), None),
    ("bilinear", True, (13, 7), None)])
def test_upsample_matches_pytorch(mode, align, size, scale, isa, torch):
    layer = fc.Upsample(size=size, scale_factor=scale, mode=mode, align_corners=align)
    module = torch.nn.Upsample(size=size, scale_factor=scale, mode=mode, align_corners=align)
    x = np.random.default_rng(8).standard_normal((2, 5, 6, 17)).astype(np.float32)
    _compare(layer, module, x, tol=1e-6, gtol=1e-5)


def test_zero_pad_matches_pytorch(torch):
    layer, module = fc.ZeroPad2d((1, 2, 0, 3)), torch.nn.ZeroPad2d((1, 2, 0, 3))
    x = np.random.default_rng(9).standard_normal((2, 4, 5, 3)).astype(np.float32)
    _compare(layer, module, x, tol=0, gtol=0)
    assert layer.output_shape((4, 5, 3)) == (7, 8, 3)


def test_merge_layers_forward_and_backward():
    rng = np.random.default_rng(10)
    a, b = (rng.standard_normal((2, 3, 4, 17)).astype(np.float32) for _ in range(2))
    gate = rng.standard_normal((2, 1, 1, 17)).astype(np.float32)
    dy = rng.standard_normal((2, 3, 4, 17)).astype(np.float32)
    add = fc.Add()
    np.testing.assert_array_equal(add.forward([a, b]), a + b)
    da, db = add.backward(dy)
    np.testing.assert_array_equal(da, dy)
    assert not da.flags.writeable        # one gradient handed to two branches
    mul = fc.Multiply()
    np.testing.assert_allclose(mul.forward([a, gate]), a * gate, rtol=1e-6)
    dx, dg = mul.backward(dy)
    np.testing.assert_allclose(dx, dy * gate, rtol=1e-6)
    np.testing.assert_allclose(dg, (dy * a).sum(axis=(1, 2), keepdims=True), rtol=1e-4,
                               atol=1e-5)
    cat = fc.Concatenate()
    y = cat.forward([a, gate.repeat(3, 1).repeat(4, 2)[..., :5]])
    assert y.shape == (2, 3, 4, 22)
    parts = cat.backward(np.arange(y.size, dtype=np.float32).reshape(y.shape))
    assert [p.shape[-1] for p in parts] == [17, 5]


def test_dropout2d_and_drop_path_drop_whole_channels_and_samples():
    fc.manual_seed(3)
    x = np.ones((64, 4, 4, 32), np.float32)
    d2 = fc.Dropout2d(0.25)
    y = d2.forward(x)
    per_channel = y.reshape(64, 16, 32)
    assert np.all(per_channel.min(axis=1) == per_channel.max(axis=1))   # whole channels
    kept = per_channel[:, 0] > 0
    assert 0.65 < kept.mean() < 0.85
    np.testing.assert_allclose(per_channel[:, 0][kept], 1 / 0.75, rtol=1e-6)
    np.testing.assert_array_equal(d2.backward(x), y)
    dp = fc.DropPath(0.5)
    y = dp.forward(x)
    per_sample = y.reshape(64, -1)
    assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1))
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    d2.eval(), dp.eval()
    np.testing.assert_array_equal(d2.forward(x), x)
    np.testing.assert_array_equal(dp.forward(x), x)


@pytest.mark.parametrize("bad", [
    lambda: fc.GroupNorm(3, 8), lambda: fc.Upsample(), lambda: fc.Upsample(size=2, mode="cubic"),
    lambda: fc.ZeroPad2d((1, 2)), lambda: fc.AdaptiveAvgPool2d(0), lambda: fc.Concatenate(axis=0),
    lambda: fc.Conv1d(3, 4, 0), lambda: fc.GELU(approximate="erf")])
def test_bad_arguments_are_value_errors(bad):
    with pytest.raises(ValueError):
        bad()


def test_layers_refuse_the_wrong_rank_with_the_expected_shape():
    with pytest.raises(ValueError, match=r"Conv1d: expected input of shape \(N, L, 3\)"):
        fc.Conv1d(3, 4, 3).forward(np.zeros((2, 5, 5, 3), np.float32))
    with pytest.raises(ValueError, match="GroupNorm"):
        fc.GroupNorm(2, 8).forward(np.zeros((2, 5, 4), np.float32))
