"""Fine-tuning: a classifier trained on one task adapts to a folder of new classes, through
fastcnn.finetune and the ``fastcnn finetune`` command, and its output runs in ONNX Runtime."""
import re
import subprocess
import sys

import numpy as np
import pytest

import fastcnn as fc
from fastcnn import finetune

Image = pytest.importorskip("PIL.Image")

SIZE = 16


def _pattern(rng, kind, size=SIZE):
    """A random-period, random-phase, random-colour pattern with noise."""
    yy, xx = np.mgrid[0:size, 0:size]
    p = rng.integers(3, 7)
    u, v = yy + rng.integers(0, p), xx + rng.integers(0, p)
    on = {"horizontal": u % p < p / 2, "vertical": v % p < p / 2,
          "diagonal": (u + v) % p < p / 2, "antidiagonal": (u - v) % p < p / 2,
          "checks": (u // p + v // p) % 2 == 0}[kind]
    grey = 0.2 + 0.6 * on + rng.normal(0, 0.05, (size, size))
    return np.clip(grey[..., None] * rng.uniform(0.4, 1.0, 3), 0, 1).astype(np.float32)


SOURCE = ("horizontal", "vertical", "diagonal", "antidiagonal")
TARGET = ("checks", "horizontal", "vertical")


@pytest.fixture(scope="module")
def pretrained():
    """A small graph CNN trained on the four stripe orientations (its head is inside a
    ``classifier`` Sequential, as in MobileNet)."""
    rng = np.random.default_rng(0)
    y = np.arange(400) % len(SOURCE)
    x = np.stack([_pattern(rng, SOURCE[k]) for k in y])
    fc.manual_seed(0)
    inp = fc.Input((SIZE, SIZE, 3))
    h = fc.ReLU()(fc.BatchNorm2d(8)(fc.Conv2d(3, 8, 3, padding=1, bias=False)(inp)))
    h = fc.MaxPool2d(2)(h)
    h = fc.ReLU()(fc.BatchNorm2d(16)(fc.Conv2d(8, 16, 3, padding=1, bias=False)(h)))
    h = fc.Flatten()(fc.AdaptiveAvgPool2d(1)(h))
    out = fc.Sequential(fc.Dropout(0.1), fc.Linear(16, len(SOURCE)), name="classifier")(h)
    model = fc.Model(inp, out)
    model.compile(optimizer=fc.Adam(lr=1e-2), loss=fc.CrossEntropyLoss())
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    assert model.evaluate(x, y, verbose=0)["accuracy"] > 0.9   # it learned the source task
    return model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Forty PNG and JPEG images of each target class."""
    root = tmp_path_factory.mktemp("target")
    rng = np.random.default_rng(1)
    for name in TARGET:
        (root / name).mkdir()
        for i in range(40):
            pixels = (_pattern(rng, name) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.{'png' if i % 2 else 'jpg'}",
                                         quality=95)
    return root


def _held_out(folder):
    return fc.datasets.ImageFolder(folder, SIZE, validation_split=0.25, subset="validation",
                                   seed=0)


def _images_and_labels(dataset):
    xs, ys = zip(*dataset.loader(batch_size=64).eval_batches())
    return np.concatenate(xs), np.concatenate(ys)


# --- the head ---------------------------------------------------------------------------------
def test_replace_classifier_in_graph_nested_and_sequential_models():
    fc.manual_seed(0)
    seq = fc.Sequential(fc.Flatten(), fc.Linear(12, 5), fc.Softmax(), input_shape=(2, 2, 3))
    head = finetune.replace_classifier(seq, 3)
    assert seq.layers[1] is head and head.out_features == 3
    assert seq.forward(np.zeros((2, 2, 2, 3), np.float32)).shape == (2, 3)

    inp = fc.Input((2, 2, 3))
    out = fc.Sequential(fc.Dropout(0.2), fc.Linear(12, 5), name="classifier")(fc.Flatten()(inp))
    graph = fc.Model(inp, fc.Softmax()(out))
    head = finetune.replace_classifier(graph, 7)
    assert finetune.find_classifier(graph) is head
    assert graph.outputs[0].shape == (7,)
    assert graph.forward(np.ones((4, 2, 2, 3), np.float32)).shape == (4, 7)
    keys = [k for k, _ in graph.named_parameters()]
    assert "classifier.1.weight" in keys and "classifier.1.bias" in keys

    backbone, found = finetune.backbone_and_head(graph)
    assert found is head and backbone.outputs[0].shape == (12,)


def test_a_model_without_a_linear_head_is_refused_clearly():
    inp = fc.Input((4, 4, 3))
    model = fc.Model(inp, fc.Conv2d(3, 2, 1)(inp))
    with pytest.raises(ValueError, match="Linear classifier"):
        finetune.replace_classifier(model, 2)
    with pytest.raises(ValueError, match="Linear classifier"):
        finetune.replace_classifier(fc.Sequential(fc.Linear(3, 2), fc.ReLU()), 2)


# --- fine_tune --------------------------------------------------------------------------------
def test_frozen_fine_tuning_changes_only_the_head_and_beats_chance(pretrained, folder, tmp_path):
    fc.save(pretrained, tmp_path / "m.fcnn")
    model = fc.load(tmp_path / "m.fcnn")
    before = {k: v.copy() for k, v in model.state_dict().items()}
    train = fc.datasets.ImageFolder(folder, SIZE, validation_split=0.25, subset="training",
                                    seed=0)
    head = finetune.replace_classifier(model, len(train.classes))
    fc.manual_seed(0)
    acc, history = finetune.fine_tune(model, train, _held_out(folder), epochs=40, lr=1e-2,
                                      verbose=0)
    assert acc >= 0.7, f"held-out accuracy {acc:.2f} (chance 0.33)"
    assert history.history["loss"][-1] < history.history["loss"][0]
    after = model.state_dict()
    for key, value in before.items():
        if not key.startswith("classifier.1."):   # weights and batch-norm statistics alike
            np.testing.assert_array_equal(after[key], value, err_msg=key)
    assert not np.array_equal(after["classifier.1.weight"][:3], before["classifier.1.weight"][:3])
    assert after["classifier.1.weight"].shape == (3, 16) and head.out_features == 3


def test_unfrozen_fine_tuning_trains_every_layer(pretrained, folder, tmp_path):
    fc.save(pretrained, tmp_path / "m.fcnn")
    model = fc.load(tmp_path / "m.fcnn")
    first = next(k for k in model.state_dict() if k.endswith("weight"))
    conv = model.state_dict()[first].copy()
    train = fc.datasets.ImageFolder(folder, SIZE, validation_split=0.25, subset="training",
                                    seed=0)
    finetune.replace_classifier(model, 3)
    acc, _ = finetune.fine_tune(model, train, _held_out(folder), epochs=8, unfreeze=True,
                                lr=3e-3, verbose=0)
    assert acc >= 0.6, f"held-out accuracy {acc:.2f} (chance 0.33)"
    assert not np.array_equal(model.state_dict()[first], conv)


# --- the command ------------------------------------------------------------------------------
@pytest.mark.processes
@pytest.mark.parametrize("kind", ["fcnn", "onnx"])
def test_the_finetune_command_beats_chance_and_its_output_runs_in_onnx_runtime(
        pretrained, folder, tmp_path, kind):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    source = tmp_path / f"pretrained.{kind}"
    if kind == "fcnn":
        fc.save(pretrained, source)
    else:
        fc.onnx.export(pretrained, source)
    output = tmp_path / "finetuned.onnx"
    run = subprocess.run([sys.executable, "-m", "fastcnn", "finetune", str(source), str(folder),
                          "--epochs", "40", "--lr", "1e-2", "--validation-split", "0.25",
                          "--normalize", "none", "--output", str(output), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "3 classes (checks, horizontal, vertical)" in run.stdout
    printed = float(re.search(r"held-out accuracy: ([\d.]+)%", run.stdout).group(1)) / 100
    assert printed >= 0.7, run.stdout

    x, y = _images_and_labels(_held_out(folder))
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x.transpose(0, 3, 1, 2)})[0]
    assert logits.shape == (len(y), 3)
    assert abs(np.mean(np.argmax(logits, 1) == y) - printed) < 1e-6
    ours = fc.onnx.load(output, layout="nhwc").predict(x)
    np.testing.assert_array_equal(np.argmax(ours, 1), np.argmax(logits, 1))
    np.testing.assert_allclose(ours, logits, rtol=1e-4, atol=1e-5)


@pytest.mark.processes
def test_the_finetune_command_reports_bad_input(tmp_path, folder):
    run = subprocess.run([sys.executable, "-m", "fastcnn", "finetune", str(tmp_path / "none.onnx"),
                          str(folder)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "fastcnn finetune:" in run.stderr
    assert "Traceback" not in run.stderr
    fc.manual_seed(0)
    conv_only = fc.Sequential(fc.Conv2d(3, 2, 3), input_shape=(SIZE, SIZE, 3))
    fc.save(conv_only, tmp_path / "conv.fcnn")
    run = subprocess.run([sys.executable, "-m", "fastcnn", "finetune", str(tmp_path / "conv.fcnn"),
                          str(folder)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Linear classifier" in run.stderr, run.stderr
