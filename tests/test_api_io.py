"""fastcnn.save / fastcnn.load: bit-exact round trips, refusal of damaged or foreign files,
atomic writes, and no pickle anywhere."""
import json
import os
import zipfile

import numpy as np
import pytest

import fastcnn as fc


def _trained_model(optimizer):
    """A small model with every kind of state: conv, BN buffers, linear, optimizer moments."""
    fc.manual_seed(0)
    model = fc.Sequential(fc.Conv2d(1, 4, 3, padding=1), fc.Flatten(), fc.Linear(4 * 6 * 6, 3))
    model.compile(optimizer=optimizer, loss=fc.MSELoss())
    rng = np.random.default_rng(0)
    x = rng.random((16, 6, 6, 1)).astype(np.float32)
    y = rng.random((16, 3)).astype(np.float32)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    return model, x, y


def _assert_same_model(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape
        assert sa[k].tobytes() == sb[k].tobytes(), k


@pytest.mark.parametrize("opt", [lambda: fc.SGD(lr=0.05, momentum=0.9, nesterov=True),
                                 lambda: fc.Adam(lr=1e-2), lambda: fc.AdamW(lr=1e-2)])
def test_round_trip_bit_for_bit(tmp_path, opt):
    model, x, y = _trained_model(opt())
    path = tmp_path / "m.fcnn"
    fc.save(model, path)
    loaded = fc.load(path)
    _assert_same_model(model, loaded)
    assert loaded.input_shape == (6, 6, 1)
    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded.optimizer.hyper == model.optimizer.hyper
    for sa, sb in zip(model.optimizer.state_arrays(), loaded.optimizer.state_arrays()):
        assert sorted(sa) == sorted(sb)
        for k in sa:
            assert np.asarray(sa[k]).tobytes() == np.asarray(sb[k]).tobytes()
    model.eval()
    assert model(x).tobytes() == loaded(x).tobytes()
    # training continues identically from the saved state
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=3)
    loaded.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=3)
    _assert_same_model(model, loaded)


def test_round_trip_resnet_with_buffers(tmp_path):
    fc.manual_seed(1)
    model = fc.models.resnet20()
    sd = model.state_dict()
    rng = np.random.default_rng(0)
    sd = {k: (rng.standard_normal(v.shape).astype(v.dtype) if v.dtype == np.float32
              else np.array(7, np.int64)) for k, v in sd.items()}
    model.load_state_dict(sd)
    fc.save(model, tmp_path / "r.fcnn")
    loaded = fc.load(tmp_path / "r.fcnn")
    _assert_same_model(model, loaded)
    assert repr(loaded) == repr(model)
    assert loaded.optimizer is None


def test_file_is_a_zip_with_json_and_npy(tmp_path):
    model, _, _ = _trained_model(fc.SGD(lr=0.1, momentum=0.9))
    fc.save(model, tmp_path / "m.fcnn")
    with zipfile.ZipFile(tmp_path / "m.fcnn") as z:
        names = z.namelist()
        meta = json.loads(z.read("fastcnn.json"))
    assert meta["format"] == "fastcnn-model" and meta["model"]["class"] == "Sequential"
    assert "weights/0.weight.npy" in names and "optimizer/0.weight/momentum_buffer.npy" in names
    assert all(n == "fastcnn.json" or n.endswith(".npy") for n in names)
    np.load(tmp_path / "m.fcnn", allow_pickle=False)   # numpy reads it as an npz too


def test_truncated_file_is_refused(tmp_path):
    model, _, _ = _trained_model(fc.Adam())
    path = tmp_path / "m.fcnn"
    fc.save(model, path)
    raw = path.read_bytes()
    for cut in (0, 10, len(raw) // 2, len(raw) - 30):
        bad = tmp_path / f"cut{cut}.fcnn"
        bad.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match="fastcnn model file"):
            fc.load(bad)


def test_corrupted_member_is_refused(tmp_path):
    model, _, _ = _trained_model(fc.Adam())
    path = tmp_path / "m.fcnn"
    fc.save(model, path)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("weights/2.weight.npy")
    # flip a byte inside the member's compressed data: the CRC check must catch it
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    raw[offset] ^= 0xFF
    bad = tmp_path / "bad.fcnn"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="damaged"):
        fc.load(bad)


def test_foreign_files_are_refused(tmp_path):
    (tmp_path / "text.fcnn").write_text("hello")
    with pytest.raises(ValueError, match="not a fastcnn model file"):
        fc.load(tmp_path / "text.fcnn")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a fastcnn model file"):
        fc.load(tmp_path / "other.npz")
    with zipfile.ZipFile(tmp_path / "tag.fcnn", "w") as z:
        z.writestr("fastcnn.json", json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a fastcnn model file"):
        fc.load(tmp_path / "tag.fcnn")
    with zipfile.ZipFile(tmp_path / "arch.fcnn", "w") as z:
        z.writestr("fastcnn.json", json.dumps({"format": "fastcnn-model", "format_version": 1,
                                               "model": {"class": "os.system", "config": {}}}))
    with pytest.raises(ValueError, match="unknown layer class"):
        fc.load(tmp_path / "arch.fcnn")
    with pytest.raises(FileNotFoundError):
        fc.load(tmp_path / "missing.fcnn")


def test_pickled_array_member_is_refused(tmp_path):
    model, _, _ = _trained_model(fc.SGD(lr=0.1))
    path = tmp_path / "m.fcnn"
    fc.save(model, path, include_optimizer=False)
    src = zipfile.ZipFile(path)
    out = zipfile.ZipFile(tmp_path / "p.fcnn", "w")
    import io as _io
    for name in src.namelist():
        data = src.read(name)
        if name == "weights/0.bias.npy":
            buf = _io.BytesIO()
            np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
            data = buf.getvalue()
        out.writestr(name, data)
    out.close()
    src.close()
    with pytest.raises(ValueError, match="0.bias"):
        fc.load(tmp_path / "p.fcnn")


def test_save_is_atomic(tmp_path, monkeypatch):
    model, _, _ = _trained_model(fc.Adam())
    path = tmp_path / "m.fcnn"
    fc.save(model, path)
    before = path.read_bytes()
    other, _, _ = _trained_model(fc.SGD(lr=0.5))

    calls = {"n": 0}
    real = np.lib.format.write_array

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("power cut")
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", crash)
    with pytest.raises(KeyboardInterrupt):
        fc.save(other, path)
    monkeypatch.undo()
    assert path.read_bytes() == before                # the previous file is intact
    assert sorted(os.listdir(tmp_path)) == ["m.fcnn"]  # and no temporary file is left behind
    fc.load(path)


def test_model_checkpoint(tmp_path):
    model, x, y = _trained_model(fc.Adam(lr=1e-2))
    cb = fc.ModelCheckpoint(str(tmp_path / "ck-{epoch:02d}.fcnn"), monitor="loss")
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[cb])
    assert sorted(os.listdir(tmp_path)) == ["ck-01.fcnn", "ck-02.fcnn", "ck-03.fcnn"]
    _assert_same_model(model, fc.load(tmp_path / "ck-03.fcnn"))
    best = fc.ModelCheckpoint(tmp_path / "best.fcnn", monitor="val_loss", save_best_only=True)
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, validation_data=(x, y), callbacks=[best])
    assert (tmp_path / "best.fcnn").exists()
