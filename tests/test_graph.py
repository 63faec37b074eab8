"""Graph models (fc.Input / fc.Model): construction and its errors, forward and backward
through branches, merges, shared layers and nested models, training with several outputs,
files, fine-tuning (frozen parameters, parameter groups, strict=False, a new head)."""
import threading

import numpy as np
import pytest

import fastcnn as fc


def _two_headed(seed=0):
    fc.manual_seed(seed)
    inp = fc.Input((12, 12, 3))
    x = fc.Conv2d(3, 8, 3, padding=1, name="stem")(inp)
    a, b = fc.ReLU()(x), fc.MaxPool2d(2)(x)
    b = fc.Conv2d(8, 8, 3, padding=1, name="branch")(b)
    y = fc.Concatenate(name="cat")([fc.Upsample(scale_factor=2)(b), a])
    y = fc.Flatten()(fc.AdaptiveAvgPool2d(1)(y))
    return fc.Model(inp, [fc.Linear(16, 5, name="head1")(y), fc.Linear(16, 3, name="head2")(y)])


def _data(n=16, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 12, 12, 3)).astype(np.float32),
            [rng.integers(0, 5, n), rng.integers(0, 3, n)])


def test_the_issue_example_builds_runs_and_names_its_parameters():
    model = _two_headed()
    x, _ = _data(4)
    out = model(x)
    assert [o.shape for o in out] == [(4, 5), (4, 3)]
    assert list(model.state_dict()) == ["stem.weight", "stem.bias", "branch.weight",
                                        "branch.bias", "head1.weight", "head1.bias",
                                        "head2.weight", "head2.bias"]
    lines = []
    model.summary(print_fn=lines.append)
    text = lines[0]
    assert "cat (Concatenate)" in text and "upsample, relu" in text   # the graph's edges


def test_construction_errors_name_the_layers_and_shapes():
    inp = fc.Input((8, 8, 3))
    a = fc.Conv2d(3, 4, 3)(inp)
    b = fc.Conv2d(3, 4, 3, padding=1)(inp)
    with pytest.raises(ValueError, match=r"Add.*\(6, 6, 4\).*\(8, 8, 4\)"):
        fc.Add()([a, b])
    with pytest.raises(ValueError, match=r"Conv2d 'c'.*\(8, 8, 3\).*\(H, W, 5\)"):
        fc.Conv2d(5, 4, 3, name="c")(inp)
    other = fc.Input((8, 8, 3), name="other")
    with pytest.raises(ValueError, match="not among the model's inputs"):
        fc.Model(inp, fc.Add()([a, fc.Conv2d(3, 4, 3)(other)]))
    with pytest.raises(ValueError, match="two different layers are named 'x'"):
        fc.Model(inp, fc.Add()([fc.ReLU(name="x")(a), fc.ReLU(name="x")(a)]))
    with pytest.raises(ValueError, match="takes a list"):
        fc.Add()(a)
    with pytest.raises(ValueError, match="name must be"):
        fc.ReLU(name="a.b")


def test_a_chain_model_is_the_sequential_model_bit_for_bit():
    fc.manual_seed(3)
    seq = fc.models.lenet5()
    inp = fc.Input((28, 28, 1))
    x = inp
    for layer in seq.layers:
        x = layer(x)
    graph = fc.Model(inp, x)
    xs = np.random.default_rng(0).random((8, 28, 28, 1)).astype(np.float32)
    dy = np.random.default_rng(1).standard_normal((8, 10)).astype(np.float32)
    y_seq = seq.forward(xs)
    seq.zero_grad()
    dx_seq = seq.backward(dy)
    g_seq = [p.grad.copy() for p in seq.parameters()]
    y_graph = graph.forward(xs)
    graph.zero_grad()
    dx_graph = graph.backward(dy)
    np.testing.assert_array_equal(y_graph, y_seq)
    np.testing.assert_array_equal(dx_graph, dx_seq)
    for g, p in zip(g_seq, graph.parameters()):
        np.testing.assert_array_equal(p.grad, g)
    seq.eval(), graph.eval()
    np.testing.assert_array_equal(graph(xs), seq(xs))


def test_gradients_through_branches_merges_and_a_shared_layer_match_pytorch():
    torch = pytest.importorskip("torch")
    fc.manual_seed(4)
    inp = fc.Input((6, 6, 4))
    shared = fc.Conv2d(4, 4, 3, padding=1, name="shared")
    se = fc.Conv2d(4, 4, 1, name="se")
    a = shared(inp)
    b = shared(fc.Tanh()(a))                      # the same weights called twice
    gate = fc.Sigmoid()(se(fc.AdaptiveAvgPool2d(1)(b)))
    y = fc.Add()([fc.Multiply()([b, gate]), inp])
    model = fc.Model(inp, fc.Concatenate()([y, fc.SiLU()(a)]))   # a feeds two layers
    assert [n for n, _ in model.named_parameters()] == ["shared.weight", "shared.bias",
                                                        "se.weight", "se.bias"]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 6, 4)).astype(np.float32)
    out = model.forward(x)
    dy = rng.standard_normal(out.shape).astype(np.float32)
    model.zero_grad()
    dx = model.backward(dy)

    conv, c2 = torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 1)
    for module, layer in ((conv, shared), (c2, se)):
        module.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    at = conv(xt)
    bt = conv(torch.tanh(at))
    gt = torch.sigmoid(c2(bt.mean(dim=(2, 3), keepdim=True)))
    yt = torch.cat([bt * gt + xt, torch.nn.functional.silu(at)], 1)
    yt.backward(torch.tensor(dy.transpose(0, 3, 1, 2).copy()))

    def rel(a, b):
        return np.abs(a - b).max() / np.abs(b).max()

    assert rel(out, yt.detach().numpy().transpose(0, 2, 3, 1)) < 1e-5
    assert rel(dx, xt.grad.numpy().transpose(0, 2, 3, 1)) < 1e-4
    for module, layer in ((conv, shared), (c2, se)):
        for (name, p), q in zip(layer.named_parameters(), module.parameters()):
            assert rel(p.grad, q.grad.numpy()) < 1e-3, name   # winograd's weight gradient


def test_nested_models_prefix_their_keys():
    def block(name):
        i = fc.Input((8, 8, 4))
        y = fc.BatchNorm2d(4, name="bn")(fc.Conv2d(4, 4, 3, padding=1, name="conv")(i))
        return fc.Model(i, fc.ReLU()(fc.Add()([y, i])), name=name)

    inp = fc.Input((8, 8, 4))
    y = block("1")(block("0")(inp))
    model = fc.Model(inp, fc.Flatten()(fc.AdaptiveAvgPool2d(1)(y)))
    keys = list(model.state_dict())
    assert keys[:2] == ["0.conv.weight", "0.conv.bias"] and "1.bn.running_mean" in keys
    x = np.random.default_rng(0).standard_normal((3, 8, 8, 4)).astype(np.float32)
    model.train()
    out = model.forward(x)
    model.zero_grad()
    assert model.backward(np.ones_like(out)).shape == x.shape
    model.eval()
    assert model(x).shape == (3, 4)


def test_fit_with_two_outputs_weights_the_losses_and_saves_and_resumes(tmp_path):
    x, ys = _data(32)
    model = _two_headed()
    model.compile(optimizer=fc.SGD(lr=0.05, momentum=0.9), loss=["cross_entropy", "cross_entropy"],
                  loss_weights=[1.0, 0.25])
    first = model.evaluate(x, ys)["loss"]
    l1, l2 = fc.CrossEntropyLoss(), fc.CrossEntropyLoss()
    out = model(x)
    assert first == pytest.approx(l1.forward(out[0], ys[0]) + 0.25 * l2.forward(out[1], ys[1]),
                                  rel=1e-6)
    history = model.fit(x, ys, epochs=4, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    probs = model.predict(x)
    np.testing.assert_allclose([p.sum(axis=1) for p in probs], 1.0, rtol=1e-5)
    fc.save(model, tmp_path / "m.fcnn")
    loaded = fc.load(tmp_path / "m.fcnn")
    for a, b in zip(loaded.predict(x), probs):
        np.testing.assert_array_equal(a, b)
    assert loaded.loss_weights == [1.0, 0.25]

    # a run killed after 2 epochs and resumed ends where an uninterrupted one does
    def run(epochs, resume):
        m = _two_headed()
        m.compile(optimizer=fc.SGD(lr=0.05, momentum=0.9), loss="cross_entropy")
        m.fit(x, ys, epochs=epochs, batch_size=8, verbose=0, checkpoint=tmp_path / "run.ckpt",
              resume=resume)
        return m.state_dict()

    whole = run(4, False)
    (tmp_path / "run.ckpt").unlink()
    run(2, False)
    resumed = run(4, True)
    for k in whole:
        np.testing.assert_array_equal(resumed[k], whole[k])


def test_frozen_parameters_get_no_gradient_and_do_not_move():
    x, ys = _data(16)
    model = _two_headed()
    model.get_layer("stem").requires_grad_(False)
    model.get_layer("branch").requires_grad_(False)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    model.compile(optimizer=fc.SGD(lr=0.1), loss="cross_entropy")
    model.fit(x, ys, epochs=1, batch_size=8, verbose=0)
    after = model.state_dict()
    for k in before:
        moved = not np.array_equal(before[k], after[k])
        assert moved == k.startswith("head"), k
    assert model.get_layer("stem").weight.grad is None


def test_parameter_groups_have_their_own_learning_rate():
    x, ys = _data(8)
    model = _two_headed()
    head = model.get_layer("head1").parameters() + model.get_layer("head2").parameters()
    body = [p for p in model.parameters() if all(p is not h for h in head)]
    before = {k: v.copy() for k, v in model.state_dict().items()}
    opt = fc.SGD([{"params": body, "lr": 0.0}, {"params": head}], lr=0.1)
    model.compile(optimizer=opt, loss="cross_entropy")
    model.train_step(x, ys)
    after = model.state_dict()
    assert np.array_equal(before["stem.weight"], after["stem.weight"])
    assert not np.array_equal(before["head1.weight"], after["head1.weight"])


def test_a_new_head_by_name_and_a_partial_state_dict():
    model = _two_headed()
    state = model.state_dict()
    old = model.replace_layer("head1", fc.Linear(16, 7))
    assert old.out_features == 5 and model.get_layer("head1").out_features == 7
    x, _ = _data(2)
    assert model(x)[0].shape == (2, 7)
    result = model.load_state_dict({k: v for k, v in state.items() if not k.startswith("head1")},
                                   strict=False)
    assert result.missing_keys == ["head1.weight", "head1.bias"]
    assert result.unexpected_keys == []
    with pytest.raises(ValueError, match="missing keys"):
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("head1")})
    with pytest.raises(ValueError, match=r"head1.weight has shape \(7, 16\)"):
        model.load_state_dict(state)
    with pytest.raises(ValueError, match="replace_layer"):
        model.replace_layer("head2", fc.Linear(15, 3))


def test_predict_from_several_threads_gives_the_same_outputs():
    model = _two_headed()
    model.compile(optimizer="sgd", loss="cross_entropy")
    x, _ = _data(32)
    expected = model.predict(x)
    results = [None] * 4

    def work(i):
        results[i] = model.predict(x)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        for a, b in zip(r, expected):
            np.testing.assert_array_equal(a, b)


def test_the_model_boundary_names_the_inputs_it_takes():
    model = _two_headed()
    with pytest.raises(ValueError, match="takes one input array"):
        model([np.zeros((1, 12, 12, 3), np.float32)] * 2)
    inp1, inp2 = fc.Input((4,)), fc.Input((4,))
    two = fc.Model([inp1, inp2], fc.Add()([inp1, inp2]))
    with pytest.raises(ValueError, match="list of 2 input arrays"):
        two(np.zeros((1, 4), np.float32))
    np.testing.assert_array_equal(two([np.ones((1, 4)), np.ones((1, 4))]), 2 * np.ones((1, 4)))
