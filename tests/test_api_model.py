"""Sequential end to end: PyTorch parity of LeNet-5 and ResNet-20 (outputs, loss, gradients,
optimizer steps), fit / evaluate / predict, callbacks, schedules, summary."""
import io

import numpy as np
import pytest

import fastcnn as fc
from conftest import assert_close
from fastcnn._torch_twin import to_nchw, to_nhwc, torch_twin


@pytest.fixture(scope="module")
def mnist():
    return fc.datasets.load_mnist()


def _pair_with_torch(make, seed=0):
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    model = make()
    twin = torch_twin(model)
    model.load_state_dict(twin.state_dict())   # PyTorch's own initial weights, unchanged
    return torch, model, twin


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_lenet5_matches_pytorch(mnist, smoothing):
    torch, model, twin = _pair_with_torch(fc.models.lenet5)
    (x, y), _ = mnist
    x, y = x[:32], y[:32]
    loss_fn = fc.CrossEntropyLoss(label_smoothing=smoothing)
    logits = model(x)
    loss = loss_fn(logits, y)
    model.zero_grad()
    dx = model.backward(loss_fn.backward())

    xt = torch.tensor(to_nchw(x), requires_grad=True)
    out = twin(xt)
    tloss = torch.nn.functional.cross_entropy(out, torch.tensor(y), label_smoothing=smoothing)
    tloss.backward()
    assert_close("api lenet5 logits vs torch", logits, out.detach().numpy(), 1e-5)
    assert_close("api lenet5 loss vs torch", loss, tloss.item(), 1e-5)
    assert_close("api lenet5 dx vs torch", dx, to_nhwc(xt.grad), 1e-4)
    grads = dict(model.named_parameters())
    for name, p in twin.named_parameters():
        assert_close("api lenet5 grads vs torch", grads[name].grad, p.grad.numpy(), 1e-4)
    probs = model.predict(x)
    np.testing.assert_allclose(probs, torch.softmax(out, 1).detach().numpy(), atol=1e-6)


OPTIMIZERS = [
    ("sgd", lambda p: fc.SGD(p, lr=0.05), lambda t, p: t.optim.SGD(p, lr=0.05)),
    ("sgd-nesterov-wd", lambda p: fc.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
     lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("sgd-dampening", lambda p: fc.SGD(p, lr=0.05, momentum=0.8, dampening=0.3),
     lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.8, dampening=0.3)),
    ("adam", lambda p: fc.Adam(p, lr=1e-3, weight_decay=1e-4),
     lambda t, p: t.optim.Adam(p, lr=1e-3, weight_decay=1e-4)),
    ("adamw", lambda p: fc.AdamW(p, lr=2e-3, betas=(0.8, 0.99)),
     lambda t, p: t.optim.AdamW(p, lr=2e-3, betas=(0.8, 0.99))),
]


@pytest.mark.parametrize("name,make,make_t", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_training_steps_match_pytorch(mnist, name, make, make_t):
    torch, model, twin = _pair_with_torch(fc.models.lenet5, seed=1)
    (x, y), _ = mnist
    opt, topt = make(model.parameters()), make_t(torch, twin.parameters())
    model.compile(optimizer=opt, loss=fc.CrossEntropyLoss())
    for step in range(4):
        xb, yb = x[step * 32:(step + 1) * 32], y[step * 32:(step + 1) * 32]
        model.train_step(xb, yb)
        topt.zero_grad()
        torch.nn.functional.cross_entropy(twin(torch.tensor(to_nchw(xb))), torch.tensor(yb)).backward()
        topt.step()
    ours = model.state_dict()
    for k, v in twin.state_dict().items():
        assert_close(f"api lenet5 4 steps {name} vs torch", ours[k], v.numpy(), 2e-4)


def _all_layers(layer):
    yield layer
    for _, child in layer.named_children():
        yield from _all_layers(child)


# PyTorch runs direct convolutions: with them the port matches to float32 rounding. Winograd
# F(4x4) (algo='auto') adds ~1e-5 relative error per 3x3 layer, which 19 layers and batch norm's
# backward (batch 4) grow to ~1e-3 in the smallest gradients; the loss and logits stay at 1e-4.
@pytest.mark.parametrize("algo,grad_tol", [("direct", 1e-3), ("auto", 5e-3)])
def test_resnet20_matches_pytorch(algo, grad_tol):
    torch, model, twin = _pair_with_torch(fc.models.resnet20)
    for layer in _all_layers(model):
        if isinstance(layer, fc.Conv2d):
            layer.algo = algo
    x = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
    y = np.array([1, 5, 3, 9])
    loss_fn = fc.CrossEntropyLoss()
    model.train()
    twin.train()
    out = model(x)
    loss = loss_fn(out, y)
    model.backward(loss_fn.backward())
    tout = twin(torch.tensor(to_nchw(x)))
    tloss = torch.nn.functional.cross_entropy(tout, torch.tensor(y))
    tloss.backward()
    assert_close("api resnet20 logits (train) vs torch", out, tout.detach().numpy(), 1e-4)
    assert_close("api resnet20 loss vs torch", loss, tloss.item(), 1e-4)
    grads = dict(model.named_parameters())
    for name, p in twin.named_parameters():
        assert_close(f"api resnet20 grads vs torch ({algo})", grads[name].grad, p.grad.numpy(), grad_tol)
    ours = model.state_dict()   # running statistics after one training batch
    for k, v in twin.state_dict().items():
        assert_close("api resnet20 running stats vs torch", ours[k], v.numpy(), 1e-4)
    model.eval()
    twin.eval()
    assert_close("api resnet20 logits (eval) vs torch", model(x),
                 twin(torch.tensor(to_nchw(x))).detach().numpy(), 1e-4)


def test_conv_relu_fusion_is_exact(mnist):
    fc.manual_seed(0)
    model = fc.models.lenet5()
    (x, _), _ = mnist
    x = x[:8]
    h = x
    for layer in model:   # layer by layer: no fusion
        h = layer.forward(h)
    np.testing.assert_array_equal(model(x), h)


def _layer_by_layer(model, x, dy):
    """The output and input gradient of running a model's layers one by one: no fusion."""
    h = x
    for layer in model:
        h = layer.forward(h)
    g = dy
    for layer in reversed(list(model)):
        g = layer.backward(g)
    return h, g


def test_batch_norm_relu_fusion_in_training():
    """Training mode fuses BatchNorm2d + ReLU forward and backward: outputs, input gradients and
    parameter gradients equal to running the layers one by one, bitwise."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 9, 7, 3)).astype(np.float32)
    dy = rng.standard_normal((4, 9, 7, 5)).astype(np.float32)

    def build():
        fc.manual_seed(1)
        return fc.Sequential(fc.Conv2d(3, 5, 3, padding=1), fc.BatchNorm2d(5), fc.ReLU())

    fused, plain = build(), build()
    y = fused.forward(x)
    dx = fused.backward(dy)
    h, g = _layer_by_layer(plain, x, dy)
    np.testing.assert_array_equal(y, h)
    np.testing.assert_array_equal(dx, g)
    for (name, p), (_, q) in zip(fused.named_parameters(), plain.named_parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)
    assert fused[1].running_mean is not None
    np.testing.assert_array_equal(fused[1].running_var, plain[1].running_var)


@pytest.mark.parametrize("shortcut", [False, True])
def test_residual_fusions_are_exact(shortcut):
    """ResNet's blocks in training: the block's sum and the ReLU after it run in the store of
    the body's last BatchNorm2d, and the gradient mask of a ReLU before the block in the
    block's final sum of its two branches. Outputs, input and parameter gradients equal to
    running every layer on its own with plain numpy sums, bitwise."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 6, 5, 4)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)

    def build():
        fc.manual_seed(3)
        body = fc.Sequential(fc.Conv2d(4, 4, 3, padding=1), fc.BatchNorm2d(4), fc.ReLU(),
                             fc.Conv2d(4, 4, 3, padding=1), fc.BatchNorm2d(4))
        block = fc.Residual(body, fc.Sequential(fc.Conv2d(4, 4, 1), fc.BatchNorm2d(4))
                            if shortcut else None)
        return fc.Sequential(fc.Conv2d(4, 4, 1), fc.ReLU(), block, fc.ReLU())

    fused, plain = build(), build()
    y = fused.forward(x)
    dx = fused.backward(dy)
    conv, relu1, block, relu2 = plain.layers
    branches = [block.body] + ([block.shortcut] if shortcut else [])
    h = relu1.forward(conv.forward(x))
    outs = []
    for branch in branches:
        a = h
        for layer in branch:
            a = layer.forward(a)
        outs.append(a)
    expected_y = relu2.forward(outs[0] + (outs[1] if shortcut else h))
    g = relu2.backward(dy)
    grads = []
    for branch in branches:
        gb = g
        for layer in reversed(list(branch)):
            gb = layer.backward(gb)
        grads.append(gb)
    expected_dx = conv.backward(relu1.backward(grads[0] + (grads[1] if shortcut else g)))
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(dx, expected_dx)
    for (name, p), (_, q) in zip(fused.named_parameters(), plain.named_parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)
    for (name, b), (_, c) in zip(fused.named_buffers(), plain.named_buffers()):
        np.testing.assert_array_equal(b, c, err_msg=name)
    # A shortcut whose output does not match the body's: a clear error, naming the shapes.
    bad = fc.Residual(fc.Sequential(fc.Conv2d(4, 5, 1), fc.BatchNorm2d(5)))
    with pytest.raises(ValueError, match=r"residual .*\(3, 6, 5, 4\).*\(3, 6, 5, 5\)"):
        bad.forward(x)


@pytest.mark.parametrize("pool", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                  dict(kernel_size=2, stride=1, dilation=2, ceil_mode=True)])
def test_relu_mask_moved_after_max_pooling_is_exact(pool):
    """Conv2d + ReLU + MaxPool2d in training: the ReLU's gradient mask is applied to the pooled
    gradient (overlapping, padded, dilated windows too); input and parameter gradients equal to
    running the layers one by one, bitwise, with outputs <= 0 and ties in the windows."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 9, 8, 2)).astype(np.float32)
    x[0, :4] = 0.0     # windows whose maximum is 0 (ReLU'(0) = 0) and ties

    def build():
        fc.manual_seed(2)
        return fc.Sequential(fc.Conv2d(2, 4, 3, padding=1, bias=False), fc.ReLU(),
                             fc.MaxPool2d(**pool))

    fused, plain = build(), build()
    y = fused.forward(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = fused.backward(dy)
    h, g = _layer_by_layer(plain, x, dy)
    np.testing.assert_array_equal(y, h)
    np.testing.assert_array_equal(dx, g)
    np.testing.assert_array_equal(fused[0].weight.grad, plain[0].weight.grad)


def test_fit_learns_and_reports(mnist):
    (x, y), (xt, yt) = mnist
    fc.manual_seed(0)
    model = fc.models.lenet5()
    model.compile(optimizer=fc.Adam(lr=2e-3), loss=fc.CrossEntropyLoss())
    history = model.fit(x[:1500], y[:1500], epochs=2, batch_size=64, validation_split=0.2, verbose=0)
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert history.epoch == [0, 1] and len(history.history["loss"]) == 2
    assert history.history["loss"][1] < history.history["loss"][0]
    result = model.evaluate(xt, yt)
    assert set(result) == {"loss", "accuracy"} and result["accuracy"] > 0.7
    probs = model.predict(xt[:10])
    assert probs.shape == (10, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    assert not model.training   # fit leaves the model in evaluation mode


def test_fit_is_reproducible_and_shuffle_false_takes_batches_in_order(mnist):
    (x, y), _ = mnist
    x, y = x[:256], y[:256]

    def run(shuffle, seed):
        fc.manual_seed(0)
        m = fc.models.lenet5()
        m.compile(optimizer=fc.SGD(lr=0.05, momentum=0.9), loss="cross_entropy")
        m.fit(x, y, epochs=1, batch_size=32, shuffle=shuffle, seed=seed, verbose=0)
        return m.state_dict()

    a, b, c = run(True, 1), run(True, 1), run(True, 2)
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert any(a[k].tobytes() != c[k].tobytes() for k in a)
    # shuffle=False: the same as stepping by hand through the batches in order
    ordered = run(False, 0)
    fc.manual_seed(0)
    m = fc.models.lenet5()
    m.compile(optimizer=fc.SGD(lr=0.05, momentum=0.9), loss="cross_entropy")
    m.train()
    for i in range(0, 256, 32):
        m.train_step(x[i:i + 32], y[i:i + 32])
    assert all(ordered[k].tobytes() == m.state_dict()[k].tobytes() for k in ordered)


def test_fit_with_loader_and_augmentation(mnist):
    (x, y), _ = mnist
    fc.manual_seed(0)
    model = fc.models.small_cnn((28, 28, 1))
    model.compile(optimizer="adam", loss="cross_entropy")
    aug = fc.data.Compose([fc.data.RandomCrop(28, padding=2), fc.data.RandomRotation(10),
                           fc.data.GaussianNoise(0.05, clip=(0, 1))])
    h1 = model.fit(x[:256], y[:256], epochs=1, batch_size=64, augment=aug, verbose=0)
    loader = fc.DataLoader(x[:256], y[:256], batch_size=64, shuffle=True, seed=0, transform=aug)
    h2 = model.fit(loader, epochs=1, verbose=0)
    assert np.isfinite(h1.history["loss"][0]) and np.isfinite(h2.history["loss"][0])


def test_input_conversion(mnist):
    (x, _), _ = mnist
    fc.manual_seed(0)
    model = fc.models.lenet5().eval()
    ref = model(x[:4])
    np.testing.assert_array_equal(model(x[:4, :, :, 0]), ref)             # (N, H, W)
    np.testing.assert_allclose(model(x[:4].astype(np.float64)), ref)       # other dtypes
    np.testing.assert_array_equal(model(np.asfortranarray(x[:4])), ref)    # non-contiguous
    with pytest.raises(ValueError, match="Conv2d"):
        model(np.zeros((2, 28, 28, 3), np.float32))


def test_train_eval_modes():
    fc.manual_seed(0)
    model = fc.Sequential(fc.Conv2d(1, 4, 3), fc.BatchNorm2d(4), fc.ReLU(), fc.Dropout(0.5),
                          fc.GlobalAvgPool2d(), fc.Linear(4, 2))
    x = np.random.default_rng(0).random((8, 6, 6, 1)).astype(np.float32)
    model.train()
    assert all(layer.training for layer in model)
    a, b = model(x), model(x)
    assert not np.array_equal(a, b)              # dropout differs from call to call
    model.eval()
    assert not any(layer.training for layer in model)
    np.testing.assert_array_equal(model(x), model(x))
    assert model[1].num_batches_tracked == 2


class _Scripted(fc.Callback):
    """Replaces val_loss with a scripted sequence and snapshots the weights each epoch."""

    def __init__(self, values):
        self.values, self.snapshots = values, []

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = self.values[epoch]
        self.snapshots.append(self.model.state_dict())


def test_early_stopping_stops_and_restores(mnist):
    (x, y), _ = mnist
    fc.manual_seed(0)
    model = fc.models.lenet5()
    model.compile(optimizer=fc.SGD(lr=0.05, momentum=0.9), loss=fc.CrossEntropyLoss())
    script = _Scripted([1.0, 0.5, 0.6, 0.55, 0.4, 0.3, 0.2, 0.1])
    stop = fc.EarlyStopping(monitor="val_loss", patience=2, min_delta=0.01, restore_best_weights=True)
    history = model.fit(x[:128], y[:128], epochs=8, batch_size=64, verbose=0,
                        validation_data=(x[128:256], y[128:256]), callbacks=[script, stop])
    assert history.epoch == [0, 1, 2, 3]   # epochs 3 and 4 (1-based) did not improve: stop
    assert stop.stopped_epoch == 3 and stop.best_epoch == 1
    best = script.snapshots[1]
    final = model.state_dict()
    assert all(best[k].tobytes() == final[k].tobytes() for k in best)
    assert any(script.snapshots[3][k].tobytes() != final[k].tobytes() for k in best)


def test_early_stopping_without_restore_keeps_last(mnist):
    (x, y), _ = mnist
    fc.manual_seed(0)
    model = fc.models.lenet5()
    model.compile(optimizer=fc.SGD(lr=0.05), loss=fc.CrossEntropyLoss())
    script = _Scripted([1.0, 1.0, 1.0, 1.0])
    stop = fc.EarlyStopping(patience=1)
    history = model.fit(x[:64], y[:64], epochs=4, batch_size=64, verbose=0,
                        validation_data=(x[:64], y[:64]), callbacks=[script, stop])
    assert len(history.epoch) == 2
    assert all(script.snapshots[-1][k].tobytes() == v.tobytes() for k, v in model.state_dict().items())


def test_schedules_match_pytorch():
    torch = pytest.importorskip("torch")
    for ours, theirs in [
        (lambda o: fc.StepLR(o, step_size=3, gamma=0.5),
         lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
        (lambda o: fc.CosineAnnealingLR(o, T_max=7, eta_min=1e-4),
         lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=1e-4)),
    ]:
        opt = fc.SGD([fc.Parameter(np.zeros(1))], lr=0.1)
        topt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        s, ts = ours(opt), theirs(topt)
        for _ in range(9):
            assert abs(opt.lr - topt.param_groups[0]["lr"]) < 1e-9
            topt.step()
            s.step()
            ts.step()


def test_schedule_as_fit_callback(mnist):
    (x, y), _ = mnist
    fc.manual_seed(0)
    model = fc.models.lenet5()
    model.compile(optimizer=fc.SGD(lr=0.1, momentum=0.9), loss="cross_entropy")
    h = model.fit(x[:64], y[:64], epochs=4, batch_size=64, verbose=0,
                  callbacks=[fc.StepLR(step_size=2, gamma=0.1)])
    np.testing.assert_allclose(h.history["lr"], [0.1, 0.1, 0.01, 0.01])


def test_l1_l2_penalties():
    w = fc.Parameter(np.array([[1.0, -2.0]], np.float32))
    b = fc.Parameter(np.array([3.0], np.float32))
    for p in (w, b):
        p.grad = np.zeros_like(p.data)
    fc.SGD([w, b], lr=0.1, l1=0.5, l2=0.25).step()
    # grad = l1 * sign(w) + 2 * l2 * w on weights; biases untouched
    np.testing.assert_allclose(w.data, [[1 - 0.1 * (0.5 + 0.5), -2 - 0.1 * (-0.5 - 1.0)]], rtol=1e-6)
    np.testing.assert_array_equal(b.data, [3.0])


def test_optimizer_construction():
    assert fc.SGD(0.3).lr == 0.3
    assert fc.SGD().lr == 1e-3 and fc.AdamW().hyper["weight_decay"] == 1e-2
    with pytest.raises(ValueError, match="nesterov"):
        fc.SGD(lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="unknown optimizer"):
        fc.models.lenet5().compile(optimizer="rmsprop")
    with pytest.raises(RuntimeError, match="compile"):
        fc.models.lenet5().fit(np.zeros((2, 28, 28, 1)), np.zeros(2), verbose=0)


def test_mse_loss_matches_pytorch():
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    loss = fc.MSELoss()
    at = torch.tensor(a, requires_grad=True)
    tl = torch.nn.functional.mse_loss(at, torch.tensor(b))
    tl.backward()
    assert abs(loss(a, b) - tl.item()) < 1e-6
    np.testing.assert_allclose(loss.backward(), at.grad.numpy(), rtol=1e-6)


def test_cross_entropy_errors():
    with pytest.raises(ValueError, match="CrossEntropyLoss"):
        fc.CrossEntropyLoss()(np.zeros((2, 3), np.float32), np.array([0, 3]))
    with pytest.raises(ValueError, match="CrossEntropyLoss"):
        fc.CrossEntropyLoss()(np.zeros((2, 3), np.float32), np.array([0.5, 1]))


def test_summary(capsys):
    fc.models.lenet5().summary()
    out = capsys.readouterr().out
    for text in ("Conv2d", "(28, 28, 6)", "(5, 5, 16)", "48,120", "Total params: 61,706",
                 "FLOPs"):
        assert text in out
    lines = []
    fc.Sequential(fc.Conv2d(3, 8, 3), fc.ReLU()).summary(input_shape=(8, 8, 3), print_fn=lines.append)
    assert "(6, 6, 8)" in lines[0] and "224" in lines[0]
    assert "15,552" in lines[0]   # 2 * 6*6*8 outputs * 27 taps


def test_progress_output(mnist, capsys):
    (x, y), _ = mnist
    fc.manual_seed(0)
    model = fc.models.lenet5()
    model.compile(optimizer="adam", loss="cross_entropy")
    model.fit(x[:128], y[:128], epochs=2, batch_size=64, verbose=0)
    assert capsys.readouterr().out == ""
    model.fit(x[:128], y[:128], epochs=2, batch_size=64, verbose=1)   # not a terminal here
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("Epoch 1/2") and "\r" not in lines[0]
    assert "img/s" in lines[0] and "loss" in lines[0] and "acc" in lines[0]


def test_progress_bar_on_a_terminal():
    from fastcnn.training.progress import ProgressBar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    bar = ProgressBar(100, epoch=0, epochs=3, verbose=1, stream=stream)
    bar.interval = 0.0
    for seen in (25, 50, 100):
        bar.update(seen, {"loss": 0.5, "accuracy": 0.9})
    bar.finish({"loss": 0.5, "accuracy": 0.9, "val_loss": 0.4})
    out = stream.getvalue()
    assert out.count("\r") >= 3 and "ETA" in out and "img/s" in out and "[" in out
    assert out.endswith("\n") and "val_loss 0.4000" in out


def test_training_is_bitwise_identical_for_1_and_2_threads(mnist):
    (x, y), _ = mnist
    x, y = x[:256], y[:256]
    previous = fc.get_num_threads()
    states = []
    try:
        for threads in (1, 2):
            fc.set_num_threads(threads)
            fc.manual_seed(0)
            model = fc.Sequential(
                fc.Conv2d(1, 8, 3, padding=1), fc.BatchNorm2d(8), fc.ReLU(), fc.MaxPool2d(2),
                fc.Residual(fc.Sequential(fc.Conv2d(8, 8, 3, padding=1), fc.ReLU())),
                fc.Dropout(0.2), fc.GlobalAvgPool2d(), fc.Flatten(), fc.Linear(8, 10))
            model.compile(optimizer=fc.Adam(lr=1e-2), loss=fc.CrossEntropyLoss(label_smoothing=0.1))
            model.fit(x, y, epochs=1, batch_size=64, verbose=0)
            states.append(model.state_dict())
    finally:
        fc.set_num_threads(previous)
    assert all(states[0][k].tobytes() == states[1][k].tobytes() for k in states[0])


def test_eval_folds_batch_norm_into_convolutions():
    """eval() runs Conv2d+BatchNorm2d(+ReLU) as one convolution: same outputs within 1e-5."""
    fc.manual_seed(3)
    model = fc.Sequential(   # flat, so that running it layer by layer folds nothing
        fc.Conv2d(3, 16, 3, padding=1), fc.BatchNorm2d(16), fc.ReLU(),
        fc.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), fc.BatchNorm2d(32),
        fc.Conv2d(32, 32, 3, padding=1, groups=32), fc.BatchNorm2d(32), fc.ReLU(),
        fc.GlobalAvgPool2d(), fc.Linear(32, 10))
    model.compile(optimizer=fc.SGD(lr=0.05, momentum=0.9), loss=fc.CrossEntropyLoss())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 32, 32, 3)).astype(np.float32)
    for _ in range(3):   # non-trivial running statistics and affine parameters
        model.train_step(x, rng.integers(0, 10, 8))
    model.eval()
    h = x
    for layer in model:  # layer by layer: BatchNorm2d on its own, nothing folded
        h = layer.forward(h)
    folded = model(x)
    assert_close("eval folded vs unfolded", folded, h.astype(np.float64), 1e-5)
    assert model._last_forward_folded
    with pytest.raises(RuntimeError, match="folded"):
        model.backward(np.ones_like(folded))
    # new statistics (load_state_dict replaces the arrays): the cache follows
    state = model.state_dict()
    state["1.running_var"] = state["1.running_var"] * 4
    model.load_state_dict(state)
    h = x
    for layer in model:
        h = layer.forward(h)
    assert_close("eval folded vs unfolded", model(x), h.astype(np.float64), 1e-5)
    model.train()
    model.backward(np.ones_like(model(x)))  # train mode: no folding, backward works
