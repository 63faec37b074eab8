"""Crash-safe training: fit(checkpoint=...) writes the whole training state atomically after
every epoch; a run killed at any point (SIGKILL, mid-epoch) and resumed ends with the weights of
an uninterrupted run, bit for bit, through fit(resume=True) and `fastcnn train --resume`."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastcnn as fc
from fastcnn import cli


def _data():
    (x, y), _ = fc.datasets.load_mnist()
    return x[:240], y[:240]


def _model():
    """Every kind of state a resume must restore: dropout's generator, batch-norm buffers,
    Adam's moments and step counts."""
    fc.manual_seed(1)
    model = fc.Sequential(fc.Conv2d(1, 4, 3), fc.BatchNorm2d(4), fc.ReLU(), fc.MaxPool2d(2),
                          fc.Flatten(), fc.Dropout(0.3), fc.Linear(4 * 13 * 13, 10))
    model.compile(optimizer=fc.Adam(lr=3e-3), loss=fc.CrossEntropyLoss())
    return model


def _fit(model, epochs, **kw):
    x, y = _data()
    callbacks = [fc.CosineAnnealingLR(T_max=4),
                 fc.EarlyStopping(monitor="val_loss", patience=10)]
    return model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, validation_split=0.125,
                     augment=fc.data.Compose([fc.data.RandomCrop(28, padding=2),
                                              fc.data.GaussianNoise(0.05)]),
                     callbacks=callbacks, **kw)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(sa[k].tobytes() == sb[k].tobytes() for k in sa)


def test_resumed_fit_is_bitwise_an_uninterrupted_one(tmp_path):
    reference = _model()
    full = _fit(reference, 4)
    ck = tmp_path / "run.ckpt"
    for stop in (1, 3):          # interrupted after epoch 1, then again after epoch 3
        model = _model()
        if ck.exists():
            fc.manual_seed(777)  # a resumed process starts from other generator states
        _fit(model, stop, checkpoint=ck, resume=True)
        assert fc.io.read_checkpoint_info(ck)["epochs_done"] == stop
    model = _model()
    fc.manual_seed(778)
    history = _fit(model, 4, checkpoint=ck, resume=True)
    assert _same_weights(model, reference)
    assert history.epoch == full.epoch == [0, 1, 2, 3]
    assert history.history["loss"] == full.history["loss"]
    assert history.history["val_loss"] == full.history["val_loss"]
    assert model.optimizer.lr == reference.optimizer.lr
    for sa, sb in zip(model.optimizer.state_arrays(), reference.optimizer.state_arrays()):
        assert all(np.asarray(sa[k]).tobytes() == np.asarray(sb[k]).tobytes() for k in sa)
    # resuming a finished run trains no further
    again = _model()
    _fit(again, 4, checkpoint=ck, resume=True)
    assert _same_weights(again, reference)


def test_checkpoint_is_written_every_epoch_and_is_a_model_file(tmp_path):
    ck = tmp_path / "run.ckpt"
    seen = []

    class Watch(fc.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(fc.io.read_checkpoint_info(ck)["epochs_done"] if ck.exists() else None)

    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=3, batch_size=60, verbose=0, checkpoint=ck, callbacks=[Watch()])
    assert seen == [None, 1, 2] and fc.io.read_checkpoint_info(ck)["epochs_done"] == 3
    assert sorted(os.listdir(tmp_path)) == ["run.ckpt"]       # no temporary file left
    assert _same_weights(fc.load(ck), model)                 # fc.load reads it as a model


def test_resume_refuses_another_architecture_or_optimizer(tmp_path):
    ck = tmp_path / "run.ckpt"
    x, y = _data()
    _model().fit(x, y, epochs=1, batch_size=60, verbose=0, checkpoint=ck)
    other = fc.Sequential(fc.Flatten(), fc.Linear(784, 10))
    other.compile(optimizer=fc.Adam(), loss=fc.CrossEntropyLoss())
    with pytest.raises(ValueError, match="architecture differs"):
        other.fit(x, y, epochs=2, verbose=0, checkpoint=ck, resume=True)
    sgd = _model()
    sgd.compile(optimizer=fc.SGD(lr=0.1), loss=fc.CrossEntropyLoss())
    with pytest.raises(ValueError, match="optimizer is Adam"):
        sgd.fit(x, y, epochs=2, verbose=0, checkpoint=ck, resume=True)
    plain = tmp_path / "plain.fcnn"
    fc.save(_model(), plain)
    with pytest.raises(ValueError, match="not a training checkpoint"):
        _model().fit(x, y, epochs=2, verbose=0, checkpoint=plain, resume=True)


# ---------------------------------------------------------------------------------------------
# `fastcnn train` killed with SIGKILL in the middle of an epoch, then `fastcnn train --resume`
# ---------------------------------------------------------------------------------------------
TRAIN = ["train", "--epochs", "3", "--limit", "600", "--batch-size", "50", "--threads", "1",
         "--seed", "5", "--lr", "0.003", "-q"]
STEPS_PER_EPOCH = 12
KILL_AT_STEP = STEPS_PER_EPOCH + 5          # the middle of the second epoch

# The child: `fastcnn train`, reporting each finished step on stdout and stopping (asleep) in
# the middle of its second epoch, where the parent kills it.
CHILD = textwrap.dedent(f"""
    import sys, time
    import fastcnn as fc
    from fastcnn import cli
    step = fc.Sequential.train_step
    count = [0]
    def reporting_step(self, x, y):
        out = step(self, x, y)
        count[0] += 1
        print("step", count[0], flush=True)
        if count[0] == {KILL_AT_STEP}:
            time.sleep(600)
        return out
    fc.Sequential.train_step = reporting_step
    sys.exit(cli.main(sys.argv[1:]))
""")


def _env():
    src = str(Path(fc.__file__).resolve().parents[1])
    return dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""),
                OMP_NUM_THREADS="1")


@pytest.mark.slow_under_emulation
def test_training_killed_mid_epoch_resumes_bitwise(tmp_path, capsys):
    out = tmp_path / "killed.fcnn"
    ck = Path(str(out) + ".ckpt")
    child = subprocess.Popen([sys.executable, "-c", CHILD, *TRAIN, "--output", str(out)],
                             stdout=subprocess.PIPE, text=True, env=_env())
    try:
        for line in child.stdout:
            if line.strip() == f"step {KILL_AT_STEP}":
                break
        else:
            pytest.fail(f"the child ended early with status {child.wait()}")
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert not out.exists() and ck.exists()
    assert fc.io.read_checkpoint_info(ck)["epochs_done"] == 1    # killed within epoch 2

    resumed = subprocess.run([sys.executable, "-m", "fastcnn", *TRAIN, "--output", str(out),
                              "--resume"], capture_output=True, text=True, env=_env(),
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {ck} after epoch 1" in resumed.stdout
    assert out.exists() and not ck.exists()                      # done: checkpoint removed

    clean = tmp_path / "clean.fcnn"
    assert cli.main([*TRAIN, "--output", str(clean)]) == 0      # never interrupted
    capsys.readouterr()
    a, b = fc.load(out), fc.load(clean)
    assert _same_weights(a, b)
    for sa, sb in zip(a.optimizer.state_arrays(), b.optimizer.state_arrays()):
        assert all(np.asarray(sa[k]).tobytes() == np.asarray(sb[k]).tobytes() for k in sa)
    print(f"resume after SIGKILL at step {KILL_AT_STEP} (epoch 2 of 3): final weights "
          f"bit-identical to an uninterrupted run ({len(a.state_dict())} tensors)")


def test_resume_with_other_options_is_refused(tmp_path, capsys):
    out = tmp_path / "m.fcnn"
    ck = tmp_path / "m.fcnn.ckpt"
    model = _model()
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=60, verbose=0,
              checkpoint=fc.io.Checkpoint(ck, {"fastcnn train": {"epochs": 9, "seed": 5}}))
    rc = cli.main([*TRAIN, "--output", str(out), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and "--epochs 9" in err and "cannot resume" in err
