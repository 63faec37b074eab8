"""The fastcnn command line: train on a small slice, predict from .npy and images, info, bench."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastcnn as fc
from fastcnn import cli


def _env():
    src = str(Path(fc.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`fastcnn train` for one epoch on 500 digits, in-process."""
    import contextlib
    import io
    out = tmp_path_factory.mktemp("cli") / "m.fcnn"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(["train", "--epochs", "1", "--limit", "500", "--batch-size", "50",
                       "--lr", "0.003", "--threads", "1", "--seed", "3", "--output", str(out)])
    return rc, buf.getvalue(), out


def test_train_runs_and_saves(trained):
    rc, text, out = trained
    assert rc == 0 and out.is_file()
    assert "Epoch 1/1" in text and "img/s" in text
    assert "test accuracy:" in text and "images/s" in text and "wall time" in text
    assert "500 training / 1,000 test" in text
    model = fc.load(out)
    assert isinstance(model, fc.Sequential) and model.input_shape == (28, 28, 1)
    assert isinstance(model.optimizer, fc.Adam) and model.optimizer.initial_lr == 0.003


def test_predict_npy(trained, tmp_path, capsys):
    _, _, model_path = trained
    _, (xt, yt) = fc.datasets.load_mnist()
    np.save(tmp_path / "one.npy", xt[0])                            # (28, 28, 1)
    np.save(tmp_path / "batch.npy", (xt[:3, :, :, 0] * 255).astype(np.uint8))   # (N, 28, 28) uint8
    rc = cli.main(["predict", str(model_path), str(tmp_path / "one.npy"), str(tmp_path / "batch.npy")])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(lines) == 4
    assert lines[0].startswith(f"{tmp_path / 'one.npy'}: class ") and "probability" in lines[0]
    assert lines[1].startswith(f"{tmp_path / 'batch.npy'}[0]: class ")
    model = fc.load(model_path)
    expected = model.predict(xt[:1]).argmax(1)[0]
    assert f"class {expected} " in lines[0]


def test_predict_errors(trained, tmp_path, capsys):
    _, _, model_path = trained
    np.save(tmp_path / "bad.npy", np.zeros((5, 5)))
    assert cli.main(["predict", str(model_path), str(tmp_path / "bad.npy")]) == 1
    assert "(28, 28, 1)" in capsys.readouterr().err
    (tmp_path / "junk.fcnn").write_bytes(b"junk")
    assert cli.main(["predict", str(tmp_path / "junk.fcnn"), str(tmp_path / "bad.npy")]) == 2
    assert "not a fastcnn model file" in capsys.readouterr().err


def test_predict_image(trained, tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    _, _, model_path = trained
    _, (xt, _) = fc.datasets.load_mnist()
    digit = (xt[0, :, :, 0] * 255).astype(np.uint8)
    Image.fromarray(digit).save(tmp_path / "digit.png")
    Image.fromarray(255 - digit).resize((56, 56)).save(tmp_path / "paper.jpg")  # dark on light
    rc = cli.main(["predict", str(model_path), str(tmp_path / "digit.png"), str(tmp_path / "paper.jpg")])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(lines) == 2
    expected = fc.load(model_path).predict(xt[:1]).argmax(1)[0]
    assert f"class {expected} " in lines[0]


def test_console_entry_points(tmp_path):
    for args in (["--help"], ["train", "--help"], ["predict", "--help"], ["bench", "--help"],
                 ["info", "--help"]):
        r = subprocess.run([sys.executable, "-m", "fastcnn"] + args, capture_output=True,
                           text=True, env=_env(), timeout=60)
        assert r.returncode == 0 and "usage: fastcnn" in r.stdout
    r = subprocess.run([sys.executable, "-m", "fastcnn", "info"], capture_output=True, text=True,
                       env=_env(), timeout=60)
    assert r.returncode == 0 and "ISA" in r.stdout


def test_bench_without_suite(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli.bench, "_find_compare", lambda: None)
    monkeypatch.setitem(sys.modules, "fastcnn.benchmark", None)   # import fails
    assert cli.main(["bench"]) == 1
    assert "not installed" in capsys.readouterr().err


def test_bench_runs_compare(monkeypatch, tmp_path):
    script = tmp_path / "compare.py"
    script.write_text("import sys\nprint('compare', sys.argv[1:])\n")
    monkeypatch.setattr(cli.bench, "_find_compare", lambda: script)
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda argv: calls.append(argv) or 0)
    assert cli.main(["bench", "--shapes", "lenet-c1"]) == 0
    assert calls == [[sys.executable, str(script), "--shapes", "lenet-c1"]]


def test_conv_suite_counts_the_best_peak_probe(monkeypatch):
    """'of peak' divides by the best of the probes taken across the run, not the first one."""
    from fastcnn import benchmark

    probes = iter([50.0, 200.0, 100.0])
    monkeypatch.setattr(benchmark.cconv, "measure_peak_gflops", lambda threads: next(probes))
    lines, progress = [], []
    rows = benchmark.run_conv_suite(1, shapes=["lenet-c1", "lenet-c2"], passes=("forward",),
                                    min_time=0.003, with_numpy=False, with_torch=False,
                                    out=lines.append, progress=progress.append)
    assert progress == ["timing lenet-c1 ...", "timing lenet-c2 ..."]
    assert [r["shape"] for r in rows] == ["lenet-c1", "lenet-c2"]
    for row in rows:
        assert row["fastcnn"] > 0 and row["of_peak"] == row["fastcnn"] / 200.0
    assert "measured FMA peak 200 GFLOP/s (best of 3 probes, lowest 50)" in lines[0]
    assert sum(line.startswith("lenet-c") for line in lines) == 2


def test_conv_suite_times_pytorch_in_its_better_format_as_long_as_fastcnn():
    """One round of turns of every call picks PyTorch's better memory format; the other rounds
    take turns between fastcnn and that format only, so each gets the same time."""
    import time
    from fastcnn import benchmark

    calls = []

    def call(label, seconds):
        def fn():
            calls.append(label)
            time.sleep(seconds)
        return fn

    times, torch_times = benchmark._times_against_better_format(
        [call("fastcnn", 0.001)], [call("nchw", 0.003), call("channels_last", 0.0015)], 0.06)
    turns = [label for i, label in enumerate(calls) if i == 0 or calls[i - 1] != label]
    assert turns == ["fastcnn", "nchw", "channels_last", "fastcnn", "channels_last", "fastcnn",
                     "channels_last"]
    assert 0.001 <= times[0] < 0.0015 and torch_times[0] >= 0.003
    assert 0.0015 <= torch_times[1] < 0.003
    assert calls.count("fastcnn") > calls.count("channels_last") > calls.count("nchw")
