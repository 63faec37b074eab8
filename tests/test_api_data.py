"""DataLoader, batch augmentation, and the data-set readers (MNIST bundled and IDX, CIFAR-10)."""
import gzip
import pickle

import numpy as np
import pytest

import fastcnn as fc
from fastcnn import data as fd


def test_dataloader_batches_and_drop_last():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    y = np.arange(10)
    batches = list(fc.DataLoader(x, y, batch_size=4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    loader = fc.data.DataLoader(x, y, batch_size=4, drop_last=True)
    assert len(loader) == 2 and [len(b[1]) for b in loader] == [4, 4]
    assert [len(b) for b in fc.DataLoader(x, batch_size=3)] == [3, 3, 3, 1]   # x only


def test_dataloader_seeded_shuffle():
    x = np.arange(100, dtype=np.float32).reshape(100, 1, 1, 1)
    y = np.arange(100)

    def epochs(seed):
        loader = fc.DataLoader(x, y, batch_size=16, shuffle=True, seed=seed)
        return [np.concatenate([b[1] for b in loader]) for _ in range(2)]

    a, b = epochs(5), epochs(5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])             # a new order every epoch
    assert sorted(a[0]) == list(range(100))           # a permutation
    assert not np.array_equal(a[0], epochs(6)[0])
    for xb, yb in fc.DataLoader(x, y, batch_size=16, shuffle=True, seed=1):
        np.testing.assert_array_equal(xb.ravel(), yb)   # images stay with their labels


def test_random_flip():
    x = np.random.default_rng(0).random((50, 4, 5, 2)).astype(np.float32)
    out = fd.RandomHorizontalFlip(0.5)(x, np.random.default_rng(1))
    flipped = [np.array_equal(o, xi[:, ::-1]) for o, xi in zip(out, x)]
    same = [np.array_equal(o, xi) for o, xi in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 10 < sum(flipped) < 40
    np.testing.assert_array_equal(fd.RandomHorizontalFlip(1.0)(x), x[:, :, ::-1])


def test_random_crop_is_a_shifted_window():
    x = np.random.default_rng(0).random((20, 6, 6, 3)).astype(np.float32)
    out = fd.RandomCrop(6, padding=2)(x, np.random.default_rng(3))
    assert out.shape == x.shape and out.dtype == np.float32
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    for o, p in zip(out, padded):
        assert any(np.array_equal(o, p[i:i + 6, j:j + 6]) for i in range(5) for j in range(5))
    assert fd.RandomCrop(4)(x, np.random.default_rng(0)).shape == (20, 4, 4, 3)


def test_random_rotation():
    x = np.random.default_rng(0).random((8, 9, 9, 1)).astype(np.float32)
    np.testing.assert_allclose(fd.RandomRotation(0)(x, np.random.default_rng(0)), x, atol=1e-6)
    out = fd.RandomRotation(15)(x, np.random.default_rng(0))
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 4, 4], x[:, 4, 4], atol=1e-6)   # the centre stays put
    # 90 degrees is an exact rotation of the pixel grid
    rot = fd.RandomRotation(90)
    rot.degrees = 90.0

    class Fixed:
        def uniform(self, lo, hi, size):
            return np.full(size, 90.0)

    r = rot(x, Fixed())
    assert any(np.allclose(r, np.rot90(x, k, axes=(1, 2)), atol=1e-5) for k in (1, 3))


def test_noise_and_compose_reproducible():
    x = np.zeros((4, 5, 5, 1), np.float32)
    aug = fd.Compose([fd.RandomCrop(5, padding=1), fd.GaussianNoise(0.1, clip=(0, 1))])
    a = aug(x, np.random.default_rng(0))
    b = aug(x, np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 and a.max() > 0
    n = fd.GaussianNoise(0.5)(np.zeros((100, 8, 8, 1), np.float32), np.random.default_rng(0))
    assert abs(n.std() - 0.5) < 0.02


def test_augmentation_leaves_input_untouched():
    x = np.random.default_rng(0).random((6, 5, 5, 1)).astype(np.float32)
    before = x.copy()
    for t in (fd.RandomHorizontalFlip(1.0), fd.RandomCrop(5, 1), fd.RandomRotation(10),
              fd.GaussianNoise(0.1)):
        t(x, np.random.default_rng(0))
    np.testing.assert_array_equal(x, before)


def test_load_mnist_bundled():
    (x, y), (xt, yt) = fc.datasets.load_mnist()
    assert x.shape == (4000, 28, 28, 1) and xt.shape == (1000, 28, 28, 1)
    assert x.dtype == np.float32 and y.dtype == np.int64 and yt.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0
    assert np.bincount(yt).tolist() == [100] * 10 and np.bincount(y).tolist() == [400] * 10
    (x2, y2), (xt2, yt2) = fc.datasets.load_mnist()
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(xt, xt2)
    (_, y3), _ = fc.datasets.load_mnist(seed=1)
    assert not np.array_equal(y, y3)
    # no digit is in both halves
    train = {xi.tobytes() for xi in x}
    assert sum(xi.tobytes() in train for xi in xt) <= 5   # MNIST has a few duplicate images


def _write_idx(path, array, gz):
    dims = np.array(array.shape, ">u4").tobytes()
    raw = bytes([0, 0, 8, array.ndim]) + dims + array.astype(np.uint8).tobytes()
    if gz:
        raw = gzip.compress(raw)
    path.write_bytes(raw)


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_idx_folder(tmp_path, gz):
    rng = np.random.default_rng(0)
    xs = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    ys = rng.integers(0, 10, 7, dtype=np.uint8)
    xt, yt = xs[:3], ys[:3]
    sfx = ".gz" if gz else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{sfx}", xs, gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{sfx}", ys, gz)
    _write_idx(tmp_path / f"t10k-images.idx3-ubyte{sfx}", xt, gz)   # the other common spelling
    _write_idx(tmp_path / f"t10k-labels.idx1-ubyte{sfx}", yt, gz)
    (x, y), (x2, y2) = fc.datasets.load_mnist(tmp_path)
    assert x.shape == (7, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x[..., 0] * 255, xs, atol=1e-4)
    np.testing.assert_array_equal(y, ys)
    np.testing.assert_array_equal(y2, yt)


def test_idx_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")
    with pytest.raises(ValueError, match="IDX header"):
        fc.datasets.read_idx(tmp_path / "bad")
    (tmp_path / "foreign").write_bytes(b"PK\x03\x04 hello")
    with pytest.raises(ValueError, match="not an IDX file"):
        fc.datasets.read_idx(tmp_path / "foreign")
    with pytest.raises(FileNotFoundError, match="train-images"):
        fc.datasets.load_mnist(tmp_path)


def _cifar_folder(folder, protocol=2, n=4):
    rng = np.random.default_rng(0)
    expected = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        batch = {b"batch_label": b"training batch", b"labels": labels, b"data": data,
                 b"filenames": [b"img%d.png" % i for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        expected.append((data, labels))
    return expected


@pytest.mark.parametrize("protocol", [2, 5])
def test_load_cifar10(tmp_path, protocol):
    sub = tmp_path / "cifar-10-batches-py"
    sub.mkdir()
    expected = _cifar_folder(sub, protocol)
    (x, y), (xt, yt) = fc.datasets.load_cifar10(tmp_path)
    assert x.shape == (20, 32, 32, 3) and xt.shape == (4, 32, 32, 3)
    assert x.dtype == np.float32 and y.dtype == np.int64
    data, labels = expected[0]
    img = data[1].reshape(3, 32, 32).transpose(1, 2, 0)   # CIFAR rows are R plane, G, B
    np.testing.assert_allclose(x[1] * 255, img, atol=1e-4)
    assert y[:4].tolist() == labels and yt.tolist() == expected[5][1]


def test_load_cifar10_refuses_code(tmp_path):
    import os
    _cifar_folder(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo should-not-run > %s" % (tmp_path / "ran"),))

    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(ValueError, match="data_batch_3.*refusing to load"):
        fc.datasets.load_cifar10(tmp_path)
    assert not (tmp_path / "ran").exists()
    obj = np.array([1, "a"], dtype=object)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": obj, b"labels": [0, 1]}))
    with pytest.raises(ValueError, match="not allowed"):
        fc.datasets.load_cifar10(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="data_batch_3"):
        fc.datasets.load_cifar10(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        fc.datasets.load_cifar10(tmp_path)
