"""The README's API tour runs as written (in a scratch folder: it saves files)."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _tour_blocks():
    text = README.read_text()
    tour = text[text.index("## API tour"):]
    tour = tour[:tour.index("\n## ", 5)]
    return re.findall(r"```python\n(.*?)```", tour, flags=re.S)


def test_the_tour_has_a_functional_model_and_a_fine_tuning_example():
    blocks = _tour_blocks()
    assert len(blocks) >= 3
    assert any("fc.Model(" in b for b in blocks)
    assert any("requires_grad_(False)" in b and "replace_layer" in b for b in blocks)


def _write_photos(root):
    """The tour's ``photos/`` folder: two classes of eight small images."""
    import numpy as np
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for name, colour in (("cat", (1, 0.5, 0)), ("dog", (0, 0.3, 1))):
        (root / name).mkdir(parents=True)
        for i in range(8):
            pixels = np.clip(np.array(colour) * 200 + rng.normal(30, 20, (72, 80, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.jpg")


@pytest.mark.slow_under_emulation
def test_the_tour_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_photos(tmp_path / "photos")
    scope = {}
    for block in _tour_blocks():
        exec(compile(block, str(README), "exec"), scope)
    assert scope["class_probs"].shape == (4, 10) and scope["score"].shape == (4, 1)
    assert scope["missing"] == ["fc.weight", "fc.bias"] and scope["unexpected"] == []
    assert scope["model"].get_layer("fc").out_features == 3
    assert scope["train"].classes == ["cat", "dog"] and 0 <= scope["accuracy"] <= 1
