"""Threads and interrupts: several Python threads predicting with one model at once get the
serial results; the kernels release the GIL; Ctrl-C during fit stops at a step boundary with a
usable model and nothing half-done reported as done."""
import os
import signal
import threading
import time

import numpy as np
import pytest

import cconv
import fastcnn as fc


def _model():
    fc.manual_seed(3)
    model = fc.Sequential(
        fc.Conv2d(3, 8, 3, padding=1), fc.BatchNorm2d(8), fc.ReLU(), fc.MaxPool2d(2),
        fc.Conv2d(8, 16, 3, padding=1), fc.ReLU(), fc.Dropout(0.25),
        fc.Residual(fc.Sequential(fc.Conv2d(16, 16, 3, padding=1), fc.Tanh())),
        fc.GlobalAvgPool2d(), fc.Flatten(), fc.Linear(16, 10), fc.LeakyReLU(0.1),
        fc.Linear(10, 5), fc.Softmax())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 12, 12, 3)).astype(np.float32)
    model.compile(optimizer=fc.Adam(lr=1e-2), loss=fc.CrossEntropyLoss())
    model.fit(x, rng.integers(0, 5, 64), epochs=2, batch_size=16, verbose=0)
    return model


def test_concurrent_predict_gives_the_serial_results():
    model = _model()
    model.train()   # predict must not depend on (or change) the model's mode
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((n, 12, 12, 3)).astype(np.float32) for n in (5, 17, 33, 40)]
    stats = [b.copy() for _, b in model.named_buffers()]
    expected = [model.predict(x, batch_size=8) for x in inputs]
    errors, results = [], {}
    start = threading.Barrier(4)

    def worker(k):
        try:
            start.wait()
            for rep in range(6):
                for i in range(len(inputs)):
                    j = (i + k) % len(inputs)
                    results.setdefault((k, j), []).append(model.predict(inputs[j], batch_size=8))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (k, j), outs in results.items():
        for out in outs:
            assert out.tobytes() == expected[j].tobytes(), f"thread {k}, input {j}"
    assert model.training   # the model's own mode is untouched
    for before, (_, after) in zip(stats, model.named_buffers()):
        assert before.tobytes() == after.tobytes()   # no running statistics updated


def test_concurrent_evaluate_and_predict():
    model = _model()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 12, 12, 3)).astype(np.float32)
    y = rng.integers(0, 5, 50)
    want = model.evaluate(x, y, batch_size=7)
    got, errors = [], []

    def work():
        try:
            for _ in range(5):
                got.append(model.evaluate(x, y, batch_size=7))
                model.predict(x[:9])
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(g == want for g in got)


# ---------------------------------------------------------------------------------------------
# The kernels release the GIL: a Python thread keeps running during a long call in another.
# ---------------------------------------------------------------------------------------------
def _long_call(name):
    """A call of op ``name`` on one thread that takes milliseconds."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 48, 48, 32)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    if name == "conv2d":
        return lambda: cconv.conv2d(x, w, padding=1, n_threads=1)
    if name == "conv2d_backward_data":
        return lambda: cconv.conv2d_backward_data(x, w, x.shape, padding=1, n_threads=1)
    if name == "conv2d_backward_weight":
        return lambda: cconv.conv2d_backward_weight(x, x, 3, padding=1, n_threads=1)
    if name == "max_pool2d":
        return lambda: cconv.max_pool2d(x, 3, 1, 1, n_threads=1)
    if name == "avg_pool2d":
        return lambda: cconv.avg_pool2d(x, 3, 1, 1, n_threads=1)
    if name == "batch_norm_forward_train":
        ones, zeros = np.ones(32, np.float32), np.zeros(32, np.float32)
        return lambda: cconv.batch_norm_forward_train(x, ones, zeros, n_threads=1)
    big = rng.standard_normal(6_000_000).astype(np.float32)
    if name == "tanh":
        return lambda: cconv.tanh(big, n_threads=1)
    if name == "adam_update":
        p, m, v = big.copy(), np.zeros_like(big), np.zeros_like(big)
        return lambda: cconv.adam_update(p, big, m, v, step=1, lr=1e-3, n_threads=1)
    assert name == "softmax_cross_entropy"
    logits = big.reshape(60_000, 100)
    labels = rng.integers(0, 100, 60_000)
    return lambda: cconv.softmax_cross_entropy(logits, labels, n_threads=1)


LONG_CALLS = ("adam_update", "avg_pool2d", "batch_norm_forward_train", "conv2d",
              "conv2d_backward_data", "conv2d_backward_weight", "max_pool2d",
              "softmax_cross_entropy", "tanh")


def _stillness(call, seconds=0.2):
    """Run ``call`` repeatedly in a worker thread while this thread counts heartbeats; returns
    the median, over the calls, of the longest heartbeat gap inside a call relative to the
    call's duration: near 1 when the call holds the GIL, small when it releases it."""
    call()
    t0 = time.perf_counter()
    call()
    reps = max(5, min(20, int(seconds / max(time.perf_counter() - t0, 1e-4))))
    spans = []

    def worker():
        for _ in range(reps):
            start = time.perf_counter()
            call()
            spans.append((start, time.perf_counter()))

    beats = []
    t = threading.Thread(target=worker)
    t.start()
    while t.is_alive():
        beats.append(time.perf_counter())
        time.sleep(0)   # lets the worker take the GIL whenever it asks (not only every 5 ms)
    t.join()
    beats = np.array(beats)
    ratios = []
    for start, end in spans:
        inside = beats[(beats >= start) & (beats <= end)]
        edges = np.concatenate([[start], inside, [end]])
        ratios.append(float(np.max(np.diff(edges))) / (end - start))
    return float(np.median(ratios))


def test_the_gil_check_sees_a_call_that_holds_the_gil():
    # sum(range(n)) runs in C without letting go of the GIL: the check must see it.
    assert _stillness(lambda: sum(range(300_000))) > 0.7


@pytest.mark.slow_under_emulation
@pytest.mark.parametrize("name", LONG_CALLS)
def test_kernels_release_the_gil(name):
    # Holding the GIL would stop this thread for each whole kernel call, in every attempt; a
    # busy machine can only make a releasing call look stiller, so the best of three counts.
    call = _long_call(name)
    assert min(_stillness(call) for _ in range(3)) < 0.5, f"{name}: the calling thread stood still"


# ---------------------------------------------------------------------------------------------
# Ctrl-C during fit
# ---------------------------------------------------------------------------------------------
def _training_data():
    rng = np.random.default_rng(4)
    return (rng.standard_normal((96, 12, 12, 3)).astype(np.float32), rng.integers(0, 5, 96))


def test_ctrl_c_during_fit_stops_at_a_step_boundary(tmp_path, monkeypatch):
    x, y = _training_data()
    model = _model()
    reference = _model()
    calls = {"steps": 0}
    real_update = fc.Adam._update

    def update(self, p, g, state, h):   # Ctrl-C arrives between two parameters' updates
        real_update(self, p, g, state, h)
        if calls["steps"] == 8 and p is self.params[2]:
            os.kill(os.getpid(), signal.SIGINT)

    real_step = fc.Sequential.train_step

    def counted(self, xb, yb):
        out = real_step(self, xb, yb)
        calls["steps"] += 1
        return out

    monkeypatch.setattr(fc.Adam, "_update", update)
    monkeypatch.setattr(fc.Sequential, "train_step", counted)
    ck = tmp_path / "run.ckpt"
    fc.manual_seed(10)   # dropout masks
    with pytest.raises(KeyboardInterrupt, match="during epoch 2"):
        model.fit(x, y, epochs=5, batch_size=16, shuffle=False, verbose=0, checkpoint=ck)
    monkeypatch.undo()
    assert calls["steps"] == 9                      # the step under way was finished
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert model.history.epoch == [0]               # only the complete epoch is recorded
    assert fc.io.read_checkpoint_info(ck)["epochs_done"] == 1
    assert not model.training

    # The weights are those after exactly 9 whole steps.
    reference.train()
    fc.manual_seed(10)
    for i in range(9):
        b = (i % 6) * 16
        reference.train_step(x[b:b + 16], y[b:b + 16])
    sa, sb = model.state_dict(), reference.state_dict()
    assert all(sa[k].tobytes() == sb[k].tobytes() for k in sa)

    # ... and the model goes on working: predict, and more training.
    assert np.isfinite(model.predict(x[:4])).all()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert model.history.epoch == [0]


def test_a_second_ctrl_c_interrupts_at_once(monkeypatch):
    x, y = _training_data()
    model = _model()
    real_step = fc.Sequential.train_step
    seen = {"n": 0}

    def step(self, xb, yb):
        seen["n"] += 1
        if seen["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
        return real_step(self, xb, yb)

    monkeypatch.setattr(fc.Sequential, "train_step", step)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert seen["n"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_fit_in_a_thread_leaves_signals_alone():
    x, y = _training_data()
    model = _model()
    errors = []

    def train():
        try:
            model.fit(x, y, epochs=1, batch_size=32, verbose=0)
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    t = threading.Thread(target=train)
    t.start()
    t.join()
    assert not errors and model.history.epoch == [0]
