"""fastcnn.plot: each picture is drawn and written as a PNG; bad input is a clear error. The
explain and attack commands draw theirs, and train --plot its curves."""
import subprocess
import sys

import numpy as np
import pytest

import fastcnn as fc
from fastcnn import plot

pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def lenet():
    (x, y), (x_test, y_test) = fc.datasets.load_mnist()
    fc.manual_seed(0)
    model = fc.models.lenet5()
    model.compile(optimizer=fc.Adam(lr=2e-3), loss="cross_entropy")
    history = model.fit(x[:1000], y[:1000], epochs=2, batch_size=64, verbose=0,
                        validation_data=(x_test[:200], y_test[:200]))
    return model, history, x_test[:16], y_test[:16]


def _written(fig, path):
    assert isinstance(fig, Figure)
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 1000
    return data


def test_history(lenet, tmp_path):
    _, history, _, _ = lenet
    fig = plot.history(history, tmp_path / "curves.png")
    _written(fig, tmp_path / "curves.png")
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    assert len(fig.axes[0].lines) == 2                      # training and validation
    plot.history(history.history)                           # the dict works too
    with pytest.raises(ValueError, match="History"):
        plot.history({})


def test_filters_and_feature_maps(lenet, tmp_path):
    model, _, x, _ = lenet
    _written(plot.filters(model, path=tmp_path / "filters.png"), tmp_path / "filters.png")
    assert sum(ax.images != [] for ax in plot.filters(model, layer=3).axes) == 16
    with pytest.raises(ValueError, match="not a Conv2d"):
        plot.filters(model, layer=1)
    fig = plot.feature_maps(model, x[0], 0, count=6, path=tmp_path / "maps.png")
    _written(fig, tmp_path / "maps.png")
    assert sum(bool(ax.images) for ax in fig.axes) == 6
    with pytest.raises(ValueError, match="not feature maps"):
        plot.feature_maps(model, x[0], 7)


def test_heatmap_of_an_explanation(lenet, tmp_path):
    model, _, x, _ = lenet
    cam = fc.explain.grad_cam(model, x[:1], layer=3)[0]         # 10x10: resized to 28x28
    _written(plot.heatmap(x[0], cam, path=tmp_path / "cam.png"), tmp_path / "cam.png")
    attributions, _ = fc.explain.integrated_gradients(model, x[:1], steps=8)
    plot.heatmap(x[0], attributions[0])                          # per channel: |.| max
    with pytest.raises(ValueError, match="must be \\(h, w\\)"):
        plot.heatmap(x[0], np.zeros(5))


def test_adversarial_examples_and_confusion_matrix(lenet, tmp_path):
    model, _, x, y = lenet
    adv = fc.attacks.fgsm(model, x, y, 0.2)
    fig = plot.adversarial_examples(model, x, adv, y, count=6, path=tmp_path / "adv.png")
    _written(fig, tmp_path / "adv.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 12 and all("%" in t for t in titles)
    predictions = model.predict(x).argmax(1)
    fig = plot.confusion_matrix(y, predictions, class_names=[str(i) for i in range(10)],
                                path=tmp_path / "cm.png")
    _written(fig, tmp_path / "cm.png")
    counts = plot.confusion_counts(y, predictions, 10)
    assert counts.sum() == len(y) and np.trace(counts) == np.sum(predictions == y)
    assert fig.axes[0].get_title() == f"accuracy {np.mean(predictions == y):.1%}"
    plot.confusion_matrix(y, predictions, normalize=True)
    with pytest.raises(ValueError, match="two vectors"):
        plot.confusion_matrix(y, predictions[:3])


# --- the commands ------------------------------------------------------------------------------
def _run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fastcnn", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


@pytest.mark.slow_under_emulation
@pytest.mark.processes
def test_the_commands_draw_curves_explanations_and_attacks(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    run = _run("train", "--epochs", "2", "--quiet", "--limit", "1500", "--plot", "curves.png",
               cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG)
    _, (x, y) = fc.datasets.load_mnist()
    Image.fromarray((x[0, ..., 0] * 255).astype(np.uint8)).save(tmp_path / "digit.png")
    for method in ("gradcam", "gradcam++", "saliency", "smoothgrad", "ig", "occlusion"):
        run = _run("explain", "lenet5.fcnn", "digit.png", "--method", method, "--steps", "8",
                   "--output", f"{method}.png", cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert f"explaining class" in run.stdout
        assert (tmp_path / f"{method}.png").read_bytes().startswith(PNG)
    run = _run("explain", "lenet5.fcnn", "digit.png", "--layer", "0", "--output", "map.npy",
               cwd=tmp_path)
    assert run.returncode == 0 and np.load(tmp_path / "map.npy").shape == (28, 28)
    run = _run("explain", "lenet5.fcnn", "digit.png", "--layer", "nothere", cwd=tmp_path)
    assert run.returncode == 2 and "nothere" in run.stderr and "Traceback" not in run.stderr

    run = _run("attack", "lenet5.fcnn", "--eps", "0.1", "--limit", "200", "--plot", "adv.png",
               cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    clean = float(run.stdout.split("clean accuracy:")[1].split("%")[0])
    robust = float(run.stdout.split("robust accuracy:")[1].split("%")[0])
    assert robust < clean
    assert (tmp_path / "adv.png").read_bytes().startswith(PNG)
    run = _run("attack", "lenet5.fcnn", "--method", "pgd", "--steps", "3", "--limit", "100",
               cwd=tmp_path)
    assert run.returncode == 0 and "PGD(eps=0.1, steps=3" in run.stdout, run.stderr
