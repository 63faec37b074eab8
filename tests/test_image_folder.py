"""fc.datasets.ImageFolder: a folder of images, one sub-folder per class, that fit, evaluate and
predict take in place of arrays; decoding in background threads, deterministic for a seed."""
import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

import fastcnn as fc
from fastcnn import images as fi

Image = pytest.importorskip("PIL.Image")
ImageFolder = fc.datasets.ImageFolder


def _stripes(rng, vertical, size=16):
    """Stripes of random period and phase, with noise: the classes differ in orientation only."""
    period = rng.integers(3, 6)
    t = (np.arange(size) + rng.integers(0, period)) % period < period / 2
    img = np.broadcast_to(t[None, :] if vertical else t[:, None], (size, size)).astype(float)
    img = 0.2 + 0.6 * img + rng.normal(0, 0.05, (size, size))
    colour = rng.uniform(0.5, 1.0, 3)
    return (np.clip(img[..., None] * colour, 0, 1) * 255).astype(np.uint8)


def _stripe_folder(root, per_class=20, size=16):
    rng = np.random.default_rng(0)
    for name, vertical in (("horizontal", False), ("vertical", True)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            ext = "png" if i % 2 else "jpg"
            Image.fromarray(_stripes(rng, vertical, size)).save(root / name / f"{i:03d}.{ext}",
                                                                quality=95)
    return root


def _colour_folder(root, per_class=6, size=(24, 32)):
    """Red and blue images of (height, width) ``size`` with noise, PNG and JPEG."""
    rng = np.random.default_rng(1)
    for name, colour in (("blue", (0, 0, 1)), ("red", (1, 0, 0))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(np.array(colour) * 200 + rng.normal(30, 20, size + (3,)), 0, 255)
            Image.fromarray(img.astype(np.uint8)).save(
                root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def _direct(path, size, resize):
    """The centre crop made with Pillow directly: RGB, shorter side to resize, crop."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        nw, nh = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
        im = im.resize((nw, nh), Image.BILINEAR)
        left, top = int(round((nw - size) / 2)), int(round((nh - size) / 2))
        im = im.crop((left, top, left + size, top + size))
        return np.asarray(im).astype(np.float32) / np.float32(255)


def _workers():
    return [t for t in threading.enumerate() if t.name.startswith("fastcnn-ImageFolder")]


def _tiny_cnn(num_classes=2, size=16):
    fc.manual_seed(0)
    model = fc.Sequential(fc.Conv2d(3, 8, 3, padding=1), fc.ReLU(), fc.MaxPool2d(2),
                          fc.Conv2d(8, 8, 3, padding=1), fc.ReLU(), fc.MaxPool2d(2),
                          fc.Flatten(), fc.Linear(8 * (size // 4) ** 2, num_classes))
    model.compile(optimizer=fc.Adam(lr=5e-3), loss=fc.CrossEntropyLoss())
    return model


def test_classes_samples_and_labels(tmp_path):
    root = _colour_folder(tmp_path / "root", per_class=3)
    (root / "red" / "notes.txt").write_text("not an image")
    (root / "red" / "._0.jpg").write_bytes(b"macOS resource fork")     # hidden: ignored
    (root / ".ipynb_checkpoints").mkdir()                               # hidden: not a class
    (root / "red" / "more").mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(root / "red" / "more" / "X.JPG")  # nested, caps
    (root / "loose.png").write_bytes((root / "red" / "1.png").read_bytes())    # not in a class
    folder = ImageFolder(root, 8, num_workers=0)
    assert folder.classes == ["blue", "red"] and folder.num_classes == 2
    assert folder.class_to_idx == {"blue": 0, "red": 1}
    assert len(folder) == 7
    names = [os.path.relpath(p, root) for p, _ in folder.samples]
    assert names == ["blue/0.jpg", "blue/1.png", "blue/2.jpg", "red/0.jpg", "red/1.png",
                     "red/2.jpg", "red/more/X.JPG"]
    assert [label for _, label in folder.samples] == [0, 0, 0, 1, 1, 1, 1]
    assert folder.targets.dtype == np.int64
    batches = list(folder.loader(batch_size=4))
    assert [len(yb) for _, yb in batches] == [4, 3]
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in batches]), folder.targets)
    # the images match their labels: blue ones have more blue than red
    x = np.concatenate([xb for xb, _ in batches])
    bluer = x[..., 2].mean(axis=(1, 2)) > x[..., 0].mean(axis=(1, 2))
    assert (bluer == (folder.targets == 0)).all()
    # classes= fixes the labels (a test folder that lacks a class keeps the training labels)
    only_red = ImageFolder(root, 8, classes=["red"], num_workers=0)
    assert only_red.classes == ["red"] and len(only_red) == 4
    swapped = ImageFolder(root, 8, classes=["red", "blue"], num_workers=0)
    assert swapped.class_to_idx == {"red": 0, "blue": 1} and swapped.samples[0][1] == 0
    with pytest.raises(ValueError, match="dog"):
        ImageFolder(root, 8, classes=["red", "dog"])
    assert "2 classes" in repr(folder) and "7 images" in repr(folder)


def test_batches_shape_dtype_and_normalisation(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    pixels = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "a" / "x.png")
    Image.fromarray(pixels[:, :, 0]).save(root / "b" / "gray.png")      # grayscale: to RGB
    (root / "c").mkdir()
    Image.fromarray(pixels[:, :, 0].astype(np.uint16) * 257).save(root / "c" / "16bit.png")
    folder = ImageFolder(root, 16, resize=16, mean="imagenet", num_workers=0)
    (xb, yb), = list(folder.loader(batch_size=8))
    assert xb.shape == (3, 16, 16, 3) and xb.dtype == np.float32 and xb.flags.c_contiguous
    assert yb.dtype == np.int64 and yb.tolist() == [0, 1, 2]
    mean = np.array(fi.IMAGENET_MEAN, np.float32)
    std = np.array(fi.IMAGENET_STD, np.float32)
    expected = (pixels.astype(np.float32) / np.float32(255) - mean) / std
    np.testing.assert_array_equal(xb[0], expected)                     # bit for bit
    gray = np.repeat(pixels[:, :, :1], 3, axis=2)
    np.testing.assert_array_equal(xb[1], (gray.astype(np.float32) / np.float32(255) - mean) / std)
    np.testing.assert_array_equal(xb[2], xb[1])              # 16 bits: scaled, not clipped
    plain, label = ImageFolder(root, 16, resize=16, num_workers=0)[0]   # no normalisation
    assert label == 0 and plain.min() >= 0 and plain.max() <= 1
    np.testing.assert_array_equal(plain, pixels.astype(np.float32) / np.float32(255))
    custom = ImageFolder(root, 16, resize=16, mean=0.5, std=(0.5, 0.25, 1.0), num_workers=0)[0][0]
    np.testing.assert_array_equal(
        custom, (pixels.astype(np.float32) / np.float32(255) - np.float32(0.5))
        / np.array([0.5, 0.25, 1.0], np.float32))


def test_centre_crop_is_pillows_resize_and_crop(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / "a" / "wide.jpg")
    Image.fromarray(rng.integers(0, 256, (45, 20, 3), dtype=np.uint8)).save(root / "a" / "tall.png")
    rgba = rng.integers(0, 256, (20, 28, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "a" / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (26, 26, 3), dtype=np.uint8)).convert(
        "P", palette=Image.ADAPTIVE).save(root / "a" / "palette.png")
    folder = ImageFolder(root, 16, num_workers=0)                        # resize 18 = 16 * 8/7
    assert folder._spec.resize == 18
    x = np.concatenate([xb for xb, _ in folder.loader(batch_size=2)])
    for img, (path, _) in zip(x, folder.samples):
        np.testing.assert_array_equal(img, _direct(path, 16, 18), err_msg=path)
    assert ImageFolder(root, 224, num_workers=0)._spec.resize == 256   # torchvision's 256/224
    rect = ImageFolder(root, (12, 20), num_workers=0)[0][0]
    assert rect.shape == (12, 20, 3)


def test_a_large_jpeg_is_decoded_at_reduced_scale_and_still_matches(tmp_path):
    """A photo 10x larger than needed: the JPEG decoder's DCT scaling (draft) does most of
    the downscaling; the result stays close to a full decode and resize."""
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    yy, xx = np.mgrid[0:480, 0:640]
    img = np.stack([xx / 640, yy / 480, 0.5 + 0.5 * np.sin(xx / 40.0)], axis=-1) * 255
    Image.fromarray(img.astype(np.uint8)).save(root / "a" / "big.jpg", quality=95)
    folder = ImageFolder(root, 32, num_workers=0)
    assert folder._spec.resize == 37                                   # round(32 * 8 / 7)
    got, want = folder[0][0], _direct(root / "a" / "big.jpg", 32, 37)
    assert np.abs(got - want).mean() < 0.005 and np.abs(got - want).max() < 0.03


def test_random_crops_and_flips_are_deterministic_for_any_num_workers(tmp_path):
    root = _colour_folder(tmp_path / "root", per_class=5, size=(24, 32))

    def epochs(num_workers, seed, **kw):
        folder = ImageFolder(root, 16, num_workers=num_workers, **kw)
        loader = folder.loader(batch_size=3, shuffle=True, seed=seed)
        return [[(xb.copy(), yb.copy()) for xb, yb in loader] for _ in range(2)]

    for kw in ({"random_crop": True, "horizontal_flip": True},
               {"random_crop": True, "crop_scale": None}):
        serial, threaded = epochs(0, 7, **kw), epochs(2, 7, **kw)
        threaded_more_prefetch = epochs(3, 7, prefetch=5, **kw)
        for a, b, c in zip(serial, threaded, threaded_more_prefetch):
            assert len(a) == len(b) == len(c) == 4
            for (xa, ya), (xb, yb), (xc, yc) in zip(a, b, c):
                assert xa.tobytes() == xb.tobytes() == xc.tobytes()
                np.testing.assert_array_equal(ya, yb)
        first, second = (np.concatenate([x for x, _ in e]) for e in serial)
        assert not np.array_equal(first, second)                        # new crops every epoch
        other = np.concatenate([x for x, _ in epochs(0, 8, **kw)[0]])
        assert not np.array_equal(first, other)
    # evaluation takes the centre crop, unflipped, whatever the training augmentation
    folder = ImageFolder(root, 16, random_crop=True, horizontal_flip=True, num_workers=2)
    centre = ImageFolder(root, 16, num_workers=0)
    ev = np.concatenate([x for x, _ in folder.loader(batch_size=4).eval_batches()])
    np.testing.assert_array_equal(ev, np.stack([centre[i][0] for i in range(len(centre))]))


def test_flip_only_mirrors_the_centre_crop(tmp_path):
    root = _colour_folder(tmp_path / "root", per_class=8)
    folder = ImageFolder(root, 16, horizontal_flip=True, num_workers=2)
    centre = np.stack([folder[i][0] for i in range(len(folder))])
    x = np.concatenate([xb for xb, _ in folder.loader(batch_size=16, seed=0)])
    flipped = [np.array_equal(a, c[:, ::-1]) for a, c in zip(x, centre)]
    same = [np.array_equal(a, c) for a, c in zip(x, centre)]
    assert all(f or s for f, s in zip(flipped, same)) and 2 <= sum(flipped) <= 14


def test_validation_split_is_disjoint_stratified_and_reproducible(tmp_path):
    root = _colour_folder(tmp_path / "root", per_class=10, size=(8, 8))
    whole = ImageFolder(root, 8)
    train = ImageFolder(root, 8, validation_split=0.2, subset="training", seed=3)
    val = ImageFolder(root, 8, validation_split=0.2, subset="validation", seed=3)
    tp, vp = {p for p, _ in train.samples}, {p for p, _ in val.samples}
    assert len(train) == 16 and len(val) == 4 and not tp & vp
    assert tp | vp == {p for p, _ in whole.samples}
    assert sorted(val.targets.tolist()) == [0, 0, 1, 1]                 # stratified
    assert train.classes == val.classes == whole.classes
    assert train.samples == sorted(train.samples, key=lambda s: (s[1], s[0]))  # folder order
    again = ImageFolder(root, 8, validation_split=0.2, subset="validation", seed=3)
    assert again.samples == val.samples
    others = {tuple(ImageFolder(root, 8, validation_split=0.2, subset="validation",
                                seed=s).samples) for s in range(6)}
    assert len(others) > 1
    with pytest.raises(ValueError, match="subset"):
        ImageFolder(root, 8, validation_split=0.2)
    with pytest.raises(ValueError, match="validation_split"):
        ImageFolder(root, 8, subset="training")
    with pytest.raises(ValueError, match="seed"):
        ImageFolder(root, 8, validation_split=0.2, subset="training", seed=None)
    with pytest.raises(ValueError, match="leaves no"):
        ImageFolder(root, 8, validation_split=0.01, subset="validation")


def test_fit_on_a_folder_learns_and_evaluate_predict_take_it(tmp_path):
    root = _stripe_folder(tmp_path / "root", per_class=24)
    train = ImageFolder(root, 16, resize=16, validation_split=0.25, subset="training",
                        horizontal_flip=True, num_workers=2)
    val = ImageFolder(root, 16, resize=16, validation_split=0.25, subset="validation")
    model = _tiny_cnn()
    history = model.fit(train, epochs=10, batch_size=8, validation_data=val, verbose=0)
    assert model.input_shape == (16, 16, 3)
    assert history.history["val_accuracy"][-1] >= 0.9, history.history
    result = model.evaluate(val)
    assert result["accuracy"] == history.history["val_accuracy"][-1]
    probs = model.predict(val, batch_size=5)
    assert probs.shape == (len(val), 2)
    arrays = np.stack([val[i][0] for i in range(len(val))])
    np.testing.assert_allclose(probs, model.predict(arrays), rtol=1e-5, atol=1e-6)
    assert ((probs.argmax(1) == val.targets).mean()) == result["accuracy"]
    np.testing.assert_allclose(model.evaluate(arrays, val.targets)["loss"], result["loss"],
                               rtol=1e-5)
    # a DataLoader works the same way in evaluate and predict
    loader = fc.DataLoader(arrays, val.targets, batch_size=4, shuffle=True, seed=0)
    assert model.evaluate(loader)["accuracy"] == result["accuracy"]
    np.testing.assert_allclose(model.predict(loader), probs, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="targets come from"):
        model.evaluate(val, val.targets)
    with pytest.raises(ValueError, match="targets come from"):
        model.fit(train, train.targets, verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(train, validation_split=0.2, verbose=0)
    with pytest.raises(ValueError, match="pass the targets"):
        model.evaluate(arrays)


def test_checkpoint_resume_with_a_folder_is_bitwise(tmp_path):
    root = _colour_folder(tmp_path / "root", per_class=6, size=(20, 20))
    folder = ImageFolder(root, 16, random_crop=True, horizontal_flip=True, num_workers=2)

    def fit(model, epochs, **kw):
        return model.fit(folder, epochs=epochs, batch_size=4, seed=5, verbose=0,
                         augment=fc.data.GaussianNoise(0.05), **kw)

    reference = _tiny_cnn()
    fit(reference, 3)
    ck = tmp_path / "run.ckpt"
    fit(_tiny_cnn(), 1, checkpoint=ck, resume=True)
    model = _tiny_cnn()
    fc.manual_seed(99)                       # the generators' states come from the checkpoint
    fit(model, 3, checkpoint=ck, resume=True)
    a, b = model.state_dict(), reference.state_dict()
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)


def _broken_folder(root):
    root = _colour_folder(root, per_class=4, size=(16, 16))
    good = (root / "red" / "0.jpg").read_bytes()
    (root / "red" / "truncated.jpg").write_bytes(good[:len(good) // 2])
    (root / "red" / "text.png").write_text("this is not a PNG")
    (root / "blue" / "empty.jpeg").write_bytes(b"")
    return root, ["truncated.jpg", "text.png", "empty.jpeg"]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_files_raise_a_value_error_naming_them(tmp_path, num_workers):
    root, bad = _broken_folder(tmp_path / "root")
    folder = ImageFolder(root, 8, num_workers=num_workers)
    for name in bad:
        i = next(k for k, (p, _) in enumerate(folder.samples) if p.endswith(name))
        with pytest.raises(ValueError, match=name):
            folder[i]
    with pytest.raises(ValueError, match=r"cannot read .*(truncated|text|empty)") as err:
        list(folder.loader(batch_size=3))
    assert "Error" in str(err.value)                                   # Pillow's error type
    assert not _workers()
    model = _tiny_cnn(size=8)
    with pytest.raises(ValueError, match="cannot read"):
        model.fit(folder, epochs=1, batch_size=4, verbose=0)
    assert not _workers()


def test_corrupt_files_are_skipped_with_a_warning_once_each(tmp_path):
    root, bad = _broken_folder(tmp_path / "root")
    folder = ImageFolder(root, 8, on_error="skip", num_workers=2)
    assert len(folder) == 11
    model = _tiny_cnn(size=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(folder, epochs=3, batch_size=4, verbose=0)
    messages = [str(w.message) for w in caught if "ImageFolder" in str(w.message)]
    assert len(messages) == 3                                          # once per file
    assert sorted(os.path.basename(p) for p in folder.skipped) == sorted(bad)
    for name in bad:
        assert any(name in m for m in messages)
    assert np.isfinite(history.history["loss"]).all()
    assert sum(len(yb) for _, yb in folder.loader(batch_size=4)) == 8
    assert len(model.predict(folder)) == 8
    assert folder.skipped == sorted(set(folder.skipped), key=folder.skipped.index)
    # all unreadable: an error, not an empty epoch
    only_bad = tmp_path / "only_bad"
    (only_bad / "x").mkdir(parents=True)
    (only_bad / "x" / "a.png").write_text("no")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of the 1 images"):
        list(ImageFolder(only_bad, 8, on_error="skip").loader())


def test_unreadable_file_is_reported_by_path(tmp_path, monkeypatch):
    root = _colour_folder(tmp_path / "root", per_class=2, size=(8, 8))
    locked = root / "red" / "0.jpg"
    locked.chmod(0)
    if hasattr(os, "geteuid") and os.geteuid() == 0:   # root reads it anyway: refuse it here
        real_open = Image.open

        def refuse(path, *args, **kw):
            if str(path) == str(locked):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kw)
        monkeypatch.setattr(Image, "open", refuse)
    try:
        with pytest.raises(ValueError, match="0.jpg.*PermissionError"):
            list(ImageFolder(root, 8, num_workers=2).loader())
        folder = ImageFolder(root, 8, on_error="skip")
        with pytest.warns(UserWarning, match="0.jpg"):
            assert sum(len(y) for _, y in folder.loader()) == 3
        assert folder.skipped == [str(locked)]
    finally:
        locked.chmod(0o644)


def test_decompression_bomb_limit_is_kept_and_reported_by_path(tmp_path, monkeypatch):
    root = _colour_folder(tmp_path / "root", per_class=1, size=(40, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)               # 1600 px > 2 x 500
    with pytest.raises(ValueError, match=r"blue.0\.jpg.*DecompressionBombError"):
        list(ImageFolder(root, 8, num_workers=2).loader())


def test_stopping_early_leaves_no_worker_thread(tmp_path):
    root = _colour_folder(tmp_path / "root", per_class=12, size=(16, 16))
    folder = ImageFolder(root, 8, num_workers=3, prefetch=2)
    for xb, yb in folder.loader(batch_size=2):
        assert _workers()                              # decoding runs in the pool
        break
    assert not _workers()
    with pytest.raises(KeyboardInterrupt):
        for step, _ in enumerate(folder.loader(batch_size=2)):
            if step == 1:
                raise KeyboardInterrupt
    assert not _workers()
    it = iter(folder.loader(batch_size=2))
    next(it)
    it.close()
    assert not _workers()
    list(folder.loader(batch_size=5))                   # a full pass
    assert not _workers()


def test_an_iteration_left_open_does_not_hold_up_interpreter_exit(tmp_path):
    root = _colour_folder(tmp_path / "root", per_class=20, size=(64, 64))
    code = ("import sys, fastcnn as fc\n"
            "it = iter(fc.datasets.ImageFolder(sys.argv[1], 32, num_workers=2).loader(2))\n"
            "next(it)\n"
            "print('ok')\n")           # exits with the iterator suspended, batches in flight
    done = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_empty_folders_are_value_errors_naming_the_path(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(ValueError, match=f"{root}.*no class sub-folders"):
        ImageFolder(root, 8)
    Image.new("RGB", (8, 8)).save(root / "loose.png")
    with pytest.raises(ValueError, match="one sub-folder per class"):
        ImageFolder(root, 8)
    (root / "cat").mkdir()
    (root / "dog").mkdir()
    Image.new("RGB", (8, 8)).save(root / "cat" / "a.png")
    (root / "dog" / "readme.txt").write_text("no images yet")
    with pytest.raises(ValueError, match=f"{root / 'dog'}.*holds no"):
        ImageFolder(root, 8)
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolder(tmp_path / "missing", 8)


def test_arguments_are_checked(tmp_path):
    root = _colour_folder(tmp_path / "root", per_class=1, size=(8, 8))
    for kw, match in (({"on_error": "ignore"}, "on_error"), ({"mean": "cifar"}, "mean"),
                      ({"std": 0}, "std"), ({"num_workers": -1}, "num_workers"),
                      ({"crop_scale": (0.5, 2)}, "crop_scale"), ({"resize": 2.5}, "resize")):
        with pytest.raises(ValueError, match=match):
            ImageFolder(root, 8, **kw)
    for size in (0, 2.5, (8,), True):
        with pytest.raises(ValueError, match="image_size"):
            ImageFolder(root, size)
    with pytest.raises(ValueError, match="batch_size"):
        ImageFolder(root, 8).loader(batch_size=0)


def test_without_pillow_the_error_says_what_to_install(tmp_path, monkeypatch):
    root = _colour_folder(tmp_path / "root", per_class=1, size=(8, 8))
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"fastcnn\[images\]"):
        ImageFolder(root, 8)
