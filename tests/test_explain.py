"""fastcnn.explain: input gradients and attributions against PyTorch (the same formulas on the
same weights) and finite differences; the model, its parameters' gradients and its batch-norm
statistics are left as they were."""
import numpy as np
import pytest

import fastcnn as fc
from fastcnn import explain

from conftest import relative_error


def _randomize_batch_norm(model, rng):
    state = model.state_dict()
    for key in state:
        if key.endswith("running_mean"):
            state[key] = rng.uniform(-0.3, 0.3, state[key].shape).astype(np.float32)
        elif key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 2.0, state[key].shape).astype(np.float32)
    model.load_state_dict(state)
    return model


def _small_graph(rng):
    """A graph model with batch norm, dropout, a branch and a nested Sequential head."""
    fc.manual_seed(3)
    inp = fc.Input((9, 11, 3))
    x = fc.BatchNorm2d(6)(fc.Conv2d(3, 6, 3, padding=1, name="stem")(inp))
    x = fc.Tanh()(x)
    y = fc.Conv2d(6, 6, 3, padding=1, name="branch")(x)
    x = fc.Add()([x, fc.Sigmoid()(y)])
    x = fc.Flatten()(fc.AdaptiveAvgPool2d(2)(fc.Dropout(0.5)(x)))
    out = fc.Sequential(fc.Linear(24, 12), fc.Tanh(), fc.Linear(12, 5), name="head")(x)
    return _randomize_batch_norm(fc.Model(inp, out), rng)


# --- against PyTorch ---------------------------------------------------------------------------
def _torch_pair(make, rng):
    torch = pytest.importorskip("torch")
    from fastcnn._torch_twin import torch_twin
    torch.manual_seed(0)
    model = make()
    twin = torch_twin(model)
    model.load_state_dict(twin.state_dict())
    _randomize_batch_norm(model, rng)
    twin.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    twin.eval()
    return torch, model, twin


MODELS = {"lenet5": (fc.models.lenet5, (28, 28, 1)), "resnet20": (fc.models.resnet20, (32, 32, 3))}
# Grad-CAM layers: (fastcnn's layer argument, the PyTorch module's path)
CAM_LAYERS = {"lenet5": [(0, "0"), (3, "3")],
              "resnet20": [(0, "0"), (9, "9"), ("9.body.3", "9.body.3"), ("19.body.0", "19.body.0")]}


def _walk(layer):
    for _, child in layer.named_children():
        yield child
        yield from _walk(child)


def _module(twin, path):
    for part in path.split("."):
        twin = twin[int(part)] if part.isdigit() else getattr(twin, part)
    return twin


def _torch_grads(torch, twin, x, targets, module=None):
    """(input gradient, module output, gradient at the module output) of the target scores."""
    from fastcnn._torch_twin import to_nchw, to_nhwc
    store = {}
    hooks = []
    if module is not None:
        hooks.append(module.register_forward_hook(lambda m, i, o: store.__setitem__("a", o)))
        hooks.append(module.register_full_backward_hook(
            lambda m, gi, go: store.__setitem__("g", go[0])))
    dtype = next(twin.parameters()).dtype
    xt = torch.tensor(to_nchw(x), dtype=dtype, requires_grad=True)
    out = twin(xt)
    out[torch.arange(len(x)), torch.tensor(targets)].sum().backward()
    for h in hooks:
        h.remove()
    if module is None:
        return to_nhwc(xt.grad)
    return to_nhwc(xt.grad), store["a"].detach(), store["g"].detach()


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_and_attributions_equal_pytorchs(name, rng):
    make, shape = MODELS[name]
    torch, model, twin = _torch_pair(make, rng)
    x = rng.uniform(0, 1, (5,) + shape).astype(np.float32)
    targets = np.array([1, 2, 3, 4, 5])
    expected = _torch_grads(torch, twin, x, targets)
    assert relative_error(explain.input_gradient(model, x, targets), expected) < 1e-4
    assert relative_error(explain.saliency(model, x, targets), np.abs(expected)) < 1e-4
    assert relative_error(explain.gradient_x_input(model, x, targets), expected * x) < 1e-4

    # Integrated gradients sum the gradients of many points on a path, and a ReLU whose input
    # is within rounding of 0 at one of them can go either way: Winograd's rounding (3x3
    # layers under algo='auto') differs from PyTorch's enough to flip one now and then. The
    # formulas are compared on the direct algorithm, whose rounding is PyTorch's order.
    for layer in _walk(model):
        if isinstance(layer, fc.Conv2d):
            layer.algo = "direct"
    # integrated gradients: the same quadrature written out with PyTorch's gradients
    for method, steps in (("gausslegendre", 16), ("riemann_trapezoid", 12)):
        if method == "gausslegendre":
            nodes, weights = np.polynomial.legendre.leggauss(steps)
            alphas, weights = 0.5 * (nodes + 1), 0.5 * weights
        else:
            alphas = np.linspace(0, 1, steps)
            weights = np.full(steps, 1 / (steps - 1))
            weights[[0, -1]] /= 2
        baseline = np.full_like(x, 0.25)
        total = sum(w * _torch_grads(torch, twin, (baseline + a * (x - baseline)).astype(
            np.float32), targets) for a, w in zip(alphas, weights))
        attributions, delta = explain.integrated_gradients(model, x, targets, baseline=0.25,
                                                           steps=steps, method=method)
        assert relative_error(attributions, (x - baseline) * total) < 1e-4
        with torch.no_grad():
            from fastcnn._torch_twin import to_nchw
            f = twin(torch.tensor(to_nchw(x))).numpy()[np.arange(5), targets]
            f0 = twin(torch.tensor(to_nchw(baseline))).numpy()[np.arange(5), targets]
        gap = attributions.reshape(5, -1).sum(1) - (f - f0)
        # within the rounding of the scores themselves
        scale = max(np.abs(f).max(), np.abs(f0).max())
        np.testing.assert_allclose(delta, gap, rtol=1e-3, atol=1e-5 * scale)

    # Grad-CAM and Grad-CAM++ at several layers (convolutions, a residual block's output)
    for layer, path in CAM_LAYERS[name]:
        _, a, g = _torch_grads(torch, twin, x, targets, _module(twin, path))
        cam = torch.relu((g.mean(dim=(2, 3))[:, :, None, None] * a).sum(1)).numpy()
        assert relative_error(explain.grad_cam(model, x, targets, layer=layer), cam) < 1e-4
        g2, g3 = g ** 2, g ** 3
        alpha = g2 / (2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g3 + 1e-30)
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        w = (torch.relu(g) * alpha).sum(dim=(2, 3))
        cam_pp = torch.relu((w[:, :, None, None] * a).sum(1)).numpy()
        assert relative_error(explain.grad_cam_plus_plus(model, x, targets, layer=layer),
                              cam_pp) < 1e-4
        up = explain.grad_cam(model, x, targets, layer=layer, upsample=True)
        expected_up = torch.nn.functional.interpolate(
            torch.tensor(cam)[:, None], size=shape[:2], mode="bilinear",
            align_corners=False)[:, 0].numpy()
        assert relative_error(up, expected_up) < 1e-4


@pytest.mark.torch
def test_training_mode_gradients_equal_pytorchs_and_keep_the_statistics(rng):
    torch, model, twin = _torch_pair(fc.models.resnet20, rng)
    x = rng.uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
    targets = np.array([0, 3, 5, 9])
    before = {k: v.copy() for k, v in model.state_dict().items()}
    # In float64: batch statistics of few pixels (8x8 at batch 4) make this gradient badly
    # conditioned, and PyTorch's float32 result is 5% off its own float64 one here.
    twin.double().train()
    expected = _torch_grads(torch, twin, x, targets)
    got = explain.input_gradient(model, x, targets, training=True)
    assert relative_error(got, expected) < 1e-4
    for key, value in model.state_dict().items():   # running statistics included
        np.testing.assert_array_equal(value, before[key], err_msg=key)


# --- without PyTorch ---------------------------------------------------------------------------
def test_input_gradient_of_a_graph_model_matches_finite_differences(rng):
    model = _small_graph(rng)
    x = rng.standard_normal((3, 9, 11, 3)).astype(np.float32)
    targets = np.array([4, 0, 2])
    g = explain.input_gradient(model, x, targets).astype(np.float64)
    v = rng.standard_normal(x.shape)
    eps = 1e-2

    def score(z):
        with fc.inference_mode():
            return model.forward(z.astype(np.float32)).astype(np.float64)[np.arange(3), targets]

    for i in range(3):   # per sample: a directional derivative
        vi = np.zeros_like(v)
        vi[i] = v[i]
        numeric = (score(x + eps * vi) - score(x - eps * vi))[i] / (2 * eps)
        analytic = float(np.sum(g[i] * v[i]))
        assert abs(numeric - analytic) <= 2e-3 * max(abs(numeric), 1e-3), (i, numeric, analytic)


def test_nothing_of_the_model_changes(rng):
    model = _small_graph(rng)
    model.train()
    x = rng.standard_normal((4, 9, 11, 3)).astype(np.float32)
    for p in model.parameters():
        p.grad = np.full_like(p.data, 7.0)
    model.get_layer("branch").requires_grad_(False)
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    state = {k: v.copy() for k, v in model.state_dict().items()}
    layers = list(model.layers)
    for training in (False, True):
        explain.input_gradient(model, x, 1, training=training)
        explain.grad_cam(model, x, None, layer="branch", training=training)
        explain.activations(model, x, "head.1", training=training)
    with pytest.raises(ValueError, match="no 'nothere'"):
        explain.grad_cam(model, x, layer="head.nothere")
    assert model.layers == layers and model.training
    for key, p in model.named_parameters():
        np.testing.assert_array_equal(p.grad, 7.0)
        assert p.requires_grad == flags[key]
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)


def test_eval_mode_explanations_do_not_depend_on_dropout_and_match_inference(rng):
    model = _small_graph(rng)
    model.train()   # the layers' own mode: explanations run in eval mode all the same
    x = rng.standard_normal((2, 9, 11, 3)).astype(np.float32)
    a = explain.input_gradient(model, x, 3)
    b = explain.input_gradient(model, x, 3)
    np.testing.assert_array_equal(a, b)
    with fc.inference_mode():
        expected = model.forward(x)
    attributions, delta = explain.integrated_gradients(model, x, 3, steps=64)
    base = np.zeros_like(x)
    with fc.inference_mode():
        gap = expected[:, 3] - model.forward(base)[:, 3]
    np.testing.assert_allclose(attributions.reshape(2, -1).sum(1) - gap, delta, atol=1e-5)
    assert np.all(np.abs(delta) < 1e-3 * np.abs(gap).max() + 1e-4)   # completeness


def test_smoothgrad_is_the_mean_gradient_of_noisy_copies(rng):
    model = _small_graph(rng)
    x = rng.standard_normal((2, 9, 11, 3)).astype(np.float32)
    got = explain.smoothgrad(model, x, 1, samples=3, noise_level=0.1, seed=5)
    noise = np.random.default_rng(5)
    sigma = 0.1 * (x.max(axis=(1, 2, 3), keepdims=True) - x.min(axis=(1, 2, 3), keepdims=True))
    expected = np.mean([explain.input_gradient(
        model, (x + sigma * noise.standard_normal(x.shape)).astype(np.float32), 1)
        for _ in range(3)], axis=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_targets_default_to_the_top_class_and_are_checked(rng):
    model = _small_graph(rng)
    x = rng.standard_normal((3, 9, 11, 3)).astype(np.float32)
    with fc.inference_mode():
        top = model.forward(x).argmax(axis=1)
    np.testing.assert_array_equal(explain.input_gradient(model, x),
                                  explain.input_gradient(model, x, top))
    with pytest.raises(ValueError, match="0..4"):
        explain.saliency(model, x, 5)
    with pytest.raises(ValueError, match="one per sample"):
        explain.saliency(model, x, [1, 2])
    with pytest.raises(ValueError, match="single image is x\\[None\\]"):
        explain.saliency(model, np.float32(1.0))


def test_occlusion_of_a_linear_model_is_its_contribution(rng):
    """For f(x) = <w, x> (one class), a 1x1 window gives each pixel's contribution."""
    fc.manual_seed(0)
    model = fc.Sequential(fc.Flatten(), fc.Linear(4 * 5 * 2, 1, bias=True), input_shape=(4, 5, 2))
    x = rng.standard_normal((2, 4, 5, 2)).astype(np.float32)
    w = model.layers[1].weight.data[0].reshape(2, 4, 5).transpose(1, 2, 0)   # (C, H, W) order
    got = explain.occlusion(model, x, 0, window=1, stride=1)
    np.testing.assert_allclose(got, (x * w).sum(axis=-1), rtol=1e-4, atol=1e-5)
    # windows of 2 averaged over the pixels each covers
    got2 = explain.occlusion(model, x, 0, window=2, stride=1)
    assert got2.shape == (2, 4, 5) and np.isfinite(got2).all()
    with pytest.raises(ValueError, match="window must be"):
        explain.occlusion(model, x, 0, window=9)


def test_activations_are_the_layers_output(rng):
    model = fc.models.resnet20()
    x = rng.uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    with fc.inference_mode():
        expected = fc.Sequential(*model.layers[:4]).forward(x)
    np.testing.assert_allclose(explain.activations(model, x, 3), expected, rtol=1e-5, atol=1e-6)
    assert explain.activations(model, x, "5.body.0").shape == (2, 32, 32, 16)


def test_grad_cam_defaults_and_errors(rng):
    model = _small_graph(rng)
    x = rng.standard_normal((2, 9, 11, 3)).astype(np.float32)
    np.testing.assert_array_equal(explain.grad_cam(model, x, 1),
                                  explain.grad_cam(model, x, 1, layer="branch"))
    assert explain.grad_cam(model, x, 1, layer="stem", upsample=True).shape == (2, 9, 11)
    with pytest.raises(ValueError, match="class-activation map needs"):
        explain.grad_cam(model, x, 1, layer="head.1")
    with pytest.raises(ValueError, match="index names a layer of a Sequential"):
        explain.grad_cam(model, x, 1, layer=2)
    inp = fc.Input((6, 6, 2))
    shared = fc.Conv2d(2, 2, 3, padding=1, name="shared")
    out = fc.Linear(72, 3)(fc.Flatten()(shared(shared(inp))))
    with pytest.raises(ValueError, match="more than once"):
        explain.grad_cam(fc.Model(inp, out), x[:, :6, :6, :2], 0, layer="shared")
    with pytest.raises(ValueError, match="no Conv2d"):
        explain.grad_cam(fc.Sequential(fc.Flatten(), fc.Linear(18, 2), input_shape=(3, 3, 2)),
                         x[:, :3, :3, :2], 0)


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(MODELS))
def test_captums_attributions_are_fastcnns(name, rng):
    captum = pytest.importorskip("captum.attr")
    from fastcnn._torch_twin import to_nchw, to_nhwc
    make, shape = MODELS[name]
    torch, model, twin = _torch_pair(make, rng)
    for layer in _walk(model):   # see the integrated-gradients note above
        if isinstance(layer, fc.Conv2d):
            layer.algo = "direct"
    x = rng.uniform(0, 1, (3,) + shape).astype(np.float32)
    targets = np.array([2, 5, 7])
    xt, tt = torch.tensor(to_nchw(x), requires_grad=True), torch.tensor(targets)
    saliency = captum.Saliency(twin).attribute(xt, target=tt)
    assert relative_error(explain.saliency(model, x, targets), to_nhwc(saliency)) < 1e-4
    ixg = captum.InputXGradient(twin).attribute(xt, target=tt)
    assert relative_error(explain.gradient_x_input(model, x, targets), to_nhwc(ixg)) < 1e-4
    ig, delta = captum.IntegratedGradients(twin).attribute(
        xt, target=tt, n_steps=16, method="gausslegendre", return_convergence_delta=True)
    ours, our_delta = explain.integrated_gradients(model, x, targets, steps=16)
    assert relative_error(ours, to_nhwc(ig)) < 1e-4
    np.testing.assert_allclose(our_delta, delta.detach().numpy(), atol=1e-4)
    layer, path = CAM_LAYERS[name][-1]
    cam = captum.LayerGradCam(twin, _module(twin, path)).attribute(
        xt, target=tt, relu_attributions=True)[:, 0].detach().numpy()
    assert relative_error(explain.grad_cam(model, x, targets, layer=layer), cam) < 1e-4
    if name == "lenet5":   # windows that tile the image: captum adds no edge window
        occ = captum.Occlusion(twin).attribute(xt, target=tt, sliding_window_shapes=(1, 4, 4),
                                               strides=(1, 4, 4), baselines=0.0)
        assert relative_error(explain.occlusion(model, x, targets, window=4, stride=4),
                              to_nhwc(occ)[..., 0]) < 1e-4
