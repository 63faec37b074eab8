"""Training never loses a model to bad data, and bad calls get errors that say what to do:
non-finite losses and gradients, gradient clipping, the callbacks for unstable training, and
the checks at the model boundary."""
import csv

import numpy as np
import pytest

import fastcnn as fc


def _model(seed=0):
    fc.manual_seed(seed)
    return fc.Sequential(fc.Conv2d(1, 4, 3, padding=1), fc.BatchNorm2d(4), fc.ReLU(),
                         fc.MaxPool2d(2), fc.Flatten(), fc.Linear(4 * 6 * 6, 3),
                         input_shape=(12, 12, 1))


def _data(n=96, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 12, 12, 1)).astype(np.float32), rng.integers(0, 3, n)


def _compiled(seed=0, **optimizer):
    model = _model(seed)
    model.compile(optimizer=fc.SGD(lr=0.05, momentum=0.9, **optimizer), loss="cross_entropy")
    return model


def _state(model):
    state = model.state_dict()
    for i, s in enumerate(model.optimizer.state_arrays()):
        state.update({f"opt{i}.{k}": v for k, v in s.items()})
    return state


def test_a_nan_batch_mid_epoch_stops_fit_with_the_weights_of_the_steps_before_it():
    x, y = _data()
    x[40, 5, 5, 0] = np.nan          # batch 3 of 16 samples (step 3 of epoch 2 below)
    model = _compiled()
    with pytest.raises(fc.NonFiniteError) as err:
        model.fit(np.concatenate([x, x]), np.concatenate([y, y]), epochs=1, batch_size=16,
                  shuffle=False, verbose=0)
    message = str(err.value)
    assert "epoch 1, step 3" in message and "the loss is nan" in message
    assert "[32, 33, 34" in message and "np.isfinite" in message and "on_nonfinite='skip'" in message
    reference = _compiled()            # a run that stopped just before that batch
    reference.fit(x[:32], y[:32], epochs=1, batch_size=16, shuffle=False, verbose=0)
    got, want = _state(model), _state(reference)
    assert got.keys() == want.keys()
    for k in want:                     # weights, running statistics, momentum: bit for bit
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_skip_goes_on_with_finite_weights_and_counts_the_skipped_batches():
    x, y = _data()
    x[[3, 70]] = np.inf
    model = _compiled()
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, on_nonfinite="skip",
                        shuffle=False)
    assert history.history["skipped_batches"] == [2, 2]
    assert all(np.isfinite(v).all() for v in model.state_dict().values())
    assert np.isfinite(history.history["loss"]).all()


def test_terminate_on_nan_turns_a_skip_into_a_stop():
    x, y = _data()
    x[50] = np.nan
    model = _compiled()
    history = model.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0,
                        on_nonfinite="skip", callbacks=[fc.TerminateOnNaN()])
    assert history.epoch == [0] and history.history["skipped_batches"] == [1]


def test_non_finite_gradients_leave_parameters_and_state_untouched():
    p, q = fc.Parameter(np.ones(4)), fc.Parameter(np.ones((2, 2)))
    opt = fc.Adam([p, q], lr=0.1)
    p.grad, q.grad = np.ones(4, np.float32), np.ones((2, 2), np.float32)
    opt.step()
    before = [p.data.copy(), q.data.copy()] + [v.copy() for s in opt.state_arrays()
                                              for v in s.values()]
    q.grad = np.array([[1, np.nan], [0, 0]], np.float32)
    with pytest.raises(fc.optim.NonFiniteGradientError, match="1 of 2 parameters"):
        opt.step()
    after = [p.data, q.data] + [v for s in opt.state_arrays() for v in s.values()]
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)


def test_gradient_clipping_has_pytorchs_meaning():
    rng = np.random.default_rng(2)
    grads = [rng.standard_normal(s).astype(np.float32) * 3 for s in ((5,), (3, 4))]

    def step(**clip):
        params = [fc.Parameter(np.zeros(g.shape)) for g in grads]
        for p, g in zip(params, grads):
            p.grad = g.copy()
        fc.SGD(params, lr=1.0, **clip).step()
        return [-p.data for p in params]   # lr 1, no momentum: the applied gradient

    norm = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    for got, g in zip(step(clip_grad_norm=1.0), grads):
        np.testing.assert_allclose(got, g * (1.0 / (norm + 1e-6)), rtol=1e-6)
    for got, g in zip(step(clip_grad_value=0.5), grads):
        np.testing.assert_array_equal(got, np.clip(g, -0.5, 0.5))
    for got, g in zip(step(clip_grad_norm=1e6), grads):   # under the bound: unchanged
        np.testing.assert_array_equal(got, g)
    torch = pytest.importorskip("torch")
    tensors = [torch.zeros(g.shape, requires_grad=True) for g in grads]
    for t, g in zip(tensors, grads):
        t.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_norm_(tensors, 1.0)
    for got, t in zip(step(clip_grad_norm=1.0), tensors):
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="clip_grad_norm must be a positive number"):
        fc.SGD(lr=0.1, clip_grad_norm=0)


def test_reduce_lr_on_plateau_csv_logger_and_warm_up_resume_like_an_uninterrupted_run(tmp_path):
    x, y = _data()

    def run(epochs, resume, csv_path):
        model = _compiled(clip_grad_norm=5.0)
        callbacks = [fc.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10),
                     fc.LinearWarmup(steps=8, start_factor=0.1), fc.CSVLogger(csv_path)]
        model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=callbacks,
                  checkpoint=tmp_path / "run.ckpt", resume=resume)
        return model

    whole = run(4, False, tmp_path / "whole.csv")
    # min_delta=10: no epoch after the first counts as an improvement, so each one halves the
    # learning rate of the epoch after it
    assert whole.history.history["lr"] == pytest.approx([0.05, 0.05, 0.025, 0.0125])
    assert whole.optimizer.lr_scale == 1.0
    (tmp_path / "run.ckpt").unlink()
    run(2, False, tmp_path / "resumed.csv")
    resumed = run(4, True, tmp_path / "resumed.csv")
    for k, v in whole.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[k], v)
    rows = lambda p: [r[:2] + r[3:] for r in csv.reader(open(p))]   # all but images/s
    assert rows(tmp_path / "resumed.csv") == rows(tmp_path / "whole.csv")
    assert rows(tmp_path / "whole.csv")[0] == ["epoch", "accuracy", "loss", "lr"]
    assert len(rows(tmp_path / "whole.csv")) == 5


def test_warm_up_scales_the_first_steps():
    x, y = _data(32)
    model = _compiled()
    warm = fc.LinearWarmup(steps=4, start_factor=0.0)
    before = model.state_dict()["5.weight"].copy()
    model.fit(x[:16], y[:16], epochs=1, batch_size=16, verbose=0, shuffle=False,
              callbacks=[warm])
    np.testing.assert_array_equal(model.state_dict()["5.weight"], before)  # lr 0 at step 1
    assert warm.done == 1


def test_the_model_boundary_says_what_the_input_probably_is():
    model = _compiled()
    with pytest.raises(ValueError, match=r"got \(12, 12, 1\): a single sample\? pass x\[None\]"):
        model.predict(np.zeros((12, 12, 1)))
    with pytest.raises(ValueError, match=r"channels first \(NCHW\)\?.*x.transpose\(0, 2, 3, 1\)"):
        model.predict(np.zeros((2, 1, 12, 12)))
    assert model.predict(np.zeros((2, 12, 12))).shape == (2, 3)   # digits without a channel axis
    inp = fc.Input((10, 3))
    seq_model = fc.Model(inp, fc.Conv1d(3, 2, 3)(inp))
    with pytest.raises(ValueError, match=r"NCL.*x.transpose\(0, 2, 1\)"):
        seq_model(np.zeros((4, 3, 10)))
    images = np.full((2, 12, 12, 1), 255, np.uint8)       # integers are taken as they are
    scaled = fc.Sequential(fc.Rescaling(1 / 255), *_model().layers)
    assert scaled(images).shape == (2, 3)
    np.testing.assert_allclose(fc.Rescaling(1 / 255).forward(images), 1.0, rtol=1e-6)


@pytest.mark.parametrize("kwargs,message", [
    (dict(epochs=-1), "epochs must be an int >= 0"),
    (dict(epochs=2.5), "epochs must be an int"),
    (dict(batch_size="32"), "batch_size must be an int >= 1"),
    (dict(batch_size=0), "batch_size must be an int >= 1"),
    (dict(verbose=3), "verbose must be 0, 1 or 2"),
    (dict(on_nonfinite="ignore"), "on_nonfinite must be 'raise' or 'skip'"),
    (dict(validation_data=np.zeros(3)), r"validation_data must be a pair"),
    (dict(validation_data=(np.zeros((4, 12, 12, 1)), np.zeros(3))),
     "validation_data: x has 4 samples but y has 3"),
])
def test_fit_refuses_bad_arguments_by_name(kwargs, message):
    x, y = _data(16)
    with pytest.raises(ValueError, match=message):
        _compiled().fit(x, y, **{"verbose": 0, **kwargs})


def test_evaluate_reports_no_accuracy_for_outputs_that_are_not_finite():
    x, y = _data(16)
    x[0] = np.nan
    result = _compiled().evaluate(x, y)
    assert np.isnan(result["loss"]) and np.isnan(result["accuracy"])
