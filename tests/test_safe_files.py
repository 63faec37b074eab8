"""Loading never executes code and never trusts a size: crafted files (pickle payloads, wrong
magic numbers, truncated arrays, absurd shapes in headers, compression bombs, malformed
descriptions) given to fc.load, fc.datasets.load_mnist(folder) and load_cifar10(folder) raise a
clear ValueError, quickly, without allocating what the file claims."""
import gzip
import io
import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

import cconv
import fastcnn as fc


class Payload:
    """Unpickling this runs os.mkdir(marker): the proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "code from a data file was executed"


@pytest.fixture
def small_limit():
    previous = cconv.set_memory_limit("64M")
    yield
    cconv.set_memory_limit(previous)


# ---------------------------------------------------------------------------------------------
# fc.load
# ---------------------------------------------------------------------------------------------
def _model_file(tmp_path):
    fc.manual_seed(0)
    model = fc.Sequential(fc.Conv2d(1, 2, 3), fc.Flatten(), fc.Linear(2 * 4 * 4, 3))
    model.compile(optimizer=fc.Adam(lr=1e-2), loss=fc.CrossEntropyLoss())
    x = np.random.default_rng(0).random((8, 6, 6, 1)).astype(np.float32)
    model.fit(x, np.arange(8) % 3, epochs=1, batch_size=4, verbose=0)
    path = tmp_path / "good.fcnn"
    fc.save(model, path)
    return path


def _rewrite(src, dst, replace=None, drop=(), add=None):
    """Copy a model zip, replacing members (name -> bytes or a function of the old bytes)."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            if name in drop:
                continue
            data = zin.read(name)
            if name in replace:
                data = replace[name](data) if callable(replace[name]) else replace[name]
            zout.writestr(name, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dst


def _npy_header(shape, dtype="<f4"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def _meta(path, edit):
    def change(data):
        meta = json.loads(data)
        edit(meta)
        return json.dumps(meta).encode()
    return change


def test_load_refuses_crafted_model_files(tmp_path, marker, small_limit):
    good = _model_file(tmp_path)
    fc.load(good)
    evil = pickle.dumps(Payload(marker))
    obj_array = io.BytesIO()
    np.save(obj_array, np.array([Payload(marker)], dtype=object), allow_pickle=True)

    cases = {
        # a pickle (or a PyTorch-style zip holding one) instead of a model
        "pickle.fcnn": (lambda p: p.write_bytes(evil), "not a zip archive"),
        "torch.fcnn": (lambda p: zipfile.ZipFile(p, "w").writestr("archive/data.pkl", evil),
                       "no fastcnn.json"),
        # an object array whose elements are pickles
        "object.fcnn": (lambda p: _rewrite(good, p, {"weights/0.weight.npy": obj_array.getvalue()}),
                        "not a plain numeric type"),
        "wrong-magic.fcnn": (lambda p: _rewrite(good, p, {"weights/0.weight.npy": b"\x93NUMPZ" + b"\0" * 80}),
                             "not an .npy array"),
        "truncated-array.fcnn": (lambda p: _rewrite(good, p, {"weights/0.weight.npy": lambda d: d[:-7]}),
                                 "its header says shape"),
        "absurd-shape.fcnn": (lambda p: _rewrite(good, p, {"weights/0.weight.npy":
                                                           _npy_header((10**12, 10**6)) + b"\0" * 64}),
                              "its header says shape"),
        "string-weights.fcnn": (lambda p: _rewrite(good, p, {"weights/2.bias.npy": _npy_header((3,), "<U3") + "1.01.52.0".encode("utf-32-le")}),
                                "not a plain numeric type"),
        "missing-member.fcnn": (lambda p: _rewrite(good, p, drop=("weights/2.bias.npy",)),
                                "member weights/2.bias.npy is missing"),
        "bad-json.fcnn": (lambda p: _rewrite(good, p, {"fastcnn.json": b"{\"format\": "}),
                          "damaged fastcnn model file"),
        "binary-json.fcnn": (lambda p: _rewrite(good, p, {"fastcnn.json": b"\xff\xfe\x00garbage"}),
                             "damaged fastcnn model file"),
        "version.fcnn": (lambda p: _rewrite(good, p, {"fastcnn.json": _meta(p, lambda m: m.update(format_version=99))}),
                         "version 99 is not supported"),
        "code-layer.fcnn": (lambda p: _rewrite(good, p, {"fastcnn.json": _meta(p, lambda m: m["model"]["config"]["layers"].__setitem__(0, {"class": "os.system", "config": {"command": "touch x"}}))}),
                            "unknown layer class"),
        "huge-layer.fcnn": (lambda p: _rewrite(good, p, {"fastcnn.json": _meta(p, lambda m: m["model"]["config"]["layers"][2]["config"].update(in_features=10**9, out_features=10**9))}),
                            "memory limit"),
        "negative-layer.fcnn": (lambda p: _rewrite(good, p, {"fastcnn.json": _meta(p, lambda m: m["model"]["config"]["layers"][0]["config"].update(out_channels=-4))}),
                                "out_channels must be a positive int"),
        "odd-argument.fcnn": (lambda p: _rewrite(good, p, {"fastcnn.json": _meta(p, lambda m: m["model"]["config"]["layers"][0]["config"].update(evil=1))}),
                              "bad architecture description"),
        "deep.fcnn": (lambda p: _rewrite(good, p, {"fastcnn.json": _deep_json}),
                      "damaged fastcnn model file|bad architecture description"),
        "bad-loss.fcnn": (lambda p: _rewrite(good, p, {"fastcnn.json": _meta(p, lambda m: m["loss"].update(config={"weight": [1, 2]}))}),
                          "bad loss or optimizer description"),
        "bad-optimizer.fcnn": (lambda p: _rewrite(good, p, {"fastcnn.json": _meta(p, lambda m: m["optimizer"]["config"].update(lr="fast"))}),
                               "bad loss or optimizer description"),
        "nan-lr.fcnn": (lambda p: _rewrite(good, p, {"fastcnn.json": _meta(p, lambda m: m["optimizer"]["config"].update(lr=float("nan")))}),
                        "lr must be a finite number"),
        "bad-step.fcnn": (lambda p: _rewrite(good, p, {"optimizer/0.weight/step.npy": _npy_header((2,), "<i8") + b"\0" * 16}),
                          "a step count must be one non-negative int"),
        "nan-weights.fcnn": (lambda p: _rewrite(good, p, {"weights/0.bias.npy": _npy_header((2,)) + np.array([np.nan, 1], "<f4").tobytes()}),
                             "contains NaN or Inf"),
        "wrong-shape.fcnn": (lambda p: _rewrite(good, p, {"weights/0.bias.npy": _npy_header((5,)) + b"\0" * 20}),
                             "has shape"),
    }
    for name, (make, message) in cases.items():
        path = tmp_path / name
        make(path)
        with pytest.raises(ValueError, match=message):
            fc.load(path)
    for cut in (0, 1, 22, 100, good.stat().st_size // 3, good.stat().st_size - 1):
        path = tmp_path / f"cut-{cut}.fcnn"
        path.write_bytes(good.read_bytes()[:cut])
        with pytest.raises(ValueError, match="fastcnn model file"):
            fc.load(path)


def _deep_json(data, depth=50_000):
    """The model description with the model nested ``depth`` Sequentials deep."""
    meta = json.loads(data)
    meta["model"] = "MODEL"
    inner = '{"class": "ReLU", "config": {}}'
    deep = '{"class": "Sequential", "config": {"layers": [' * depth + inner + "]}}" * depth
    return json.dumps(meta).replace('"MODEL"', deep).encode()


def test_load_refuses_a_compression_bomb(tmp_path, small_limit):
    # A member that inflates to 80 MiB (could be terabytes) from 80 KiB: refused from its
    # declared size, before inflating.
    good = _model_file(tmp_path)
    bomb = tmp_path / "bomb.fcnn"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in zin.namelist():
            if name != "weights/0.weight.npy":
                zout.writestr(name, zin.read(name))
        with zout.open("weights/0.weight.npy", "w", force_zip64=True) as f:
            f.write(_npy_header((2**28,)))
            block = bytes(2**24)
            for _ in range(5):     # 80 MiB inflated, above the 64 MiB limit
                f.write(block)
    assert bomb.stat().st_size < 2**20
    with pytest.raises(ValueError, match="member weights/0.weight.npy .* more than the memory limit"):
        fc.load(bomb)


# ---------------------------------------------------------------------------------------------
# MNIST IDX files
# ---------------------------------------------------------------------------------------------
def _idx(array, type_code=0x08):
    array = np.asarray(array)
    return (bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            + array.astype(array.dtype.newbyteorder(">")).tobytes())


def _mnist_folder(folder, images=None, labels=None, gz=False):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    files = {"train-images-idx3-ubyte": images or _idx(rng.integers(0, 256, (5, 28, 28), np.uint8)),
             "train-labels-idx1-ubyte": labels or _idx(rng.integers(0, 10, 5, np.uint8)),
             "t10k-images-idx3-ubyte": _idx(rng.integers(0, 256, (2, 28, 28), np.uint8)),
             "t10k-labels-idx1-ubyte": _idx(rng.integers(0, 10, 2, np.uint8))}
    for name, data in files.items():
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


def test_load_mnist_refuses_crafted_idx_files(tmp_path, marker, small_limit):
    (x, y), (xt, yt) = fc.datasets.load_mnist(_mnist_folder(tmp_path / "good"))
    assert x.shape == (5, 28, 28, 1) and y.shape == (5,)
    rng = np.random.default_rng(1)
    good_images = _idx(rng.integers(0, 256, (5, 28, 28), np.uint8))
    cases = {
        "pickle": (pickle.dumps(Payload(marker)), None, "not an IDX file"),
        "magic": (b"\x08\x03\x00\x00" + good_images[4:], None, "not an IDX file"),
        "type": (bytes([0, 0, 0x42, 3]) + good_images[4:], None, "not an IDX file"),
        "header": (good_images[:9], None, "truncated IDX header"),
        "no-dims": (bytes([0, 0, 8, 0]), None, "truncated IDX header"),
        "truncated": (good_images[:-100], None, r"header says \(5, 28, 28\)"),
        "padded": (good_images + b"\0", None, r"or more"),
        "absurd": (bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1)
                   + b"\0" * 100, None, "memory limit"),
        "floats": (_idx(rng.random((5, 28, 28)).astype(np.float32), 0x0D), None, "unsigned bytes"),
        "count": (None, _idx(np.zeros(4, np.uint8)), "do not match"),
    }
    for name, (images, labels, message) in cases.items():
        folder = _mnist_folder(tmp_path / name, images, labels)
        with pytest.raises(ValueError, match=message):
            fc.datasets.load_mnist(folder)

    # gzip: a bomb is refused from its header before it is inflated; damaged data is named
    bomb = io.BytesIO()
    with gzip.GzipFile(fileobj=bomb, mode="wb") as g:
        g.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**20, 2**10, 2**10))   # 1 TiB
        g.write(bytes(2**20))
    folder = _mnist_folder(tmp_path / "gz-bomb", gz=True)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(bomb.getvalue())
    with pytest.raises(ValueError, match="memory limit"):
        fc.datasets.load_mnist(folder)
    folder = _mnist_folder(tmp_path / "gz-cut", gz=True)
    data = (folder / "train-images-idx3-ubyte.gz").read_bytes()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="damaged gzip data|header says"):
        fc.datasets.load_mnist(folder)
    folder = _mnist_folder(tmp_path / "gz-flip", gz=True)
    data = bytearray((folder / "t10k-images-idx3-ubyte.gz").read_bytes())
    data[20] ^= 0xFF
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="t10k-images"):
        fc.datasets.load_mnist(folder)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 python batches
# ---------------------------------------------------------------------------------------------
def _batch(n=4, labels=None, data=None):
    rng = np.random.default_rng(n)
    return {b"data": rng.integers(0, 256, (n, 3072), np.uint8) if data is None else data,
            b"labels": rng.integers(0, 10, n).tolist() if labels is None else labels}


def _cifar_folder(folder, first=None):
    folder.mkdir(exist_ok=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(_batch(3 + i), protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(_batch(2), protocol=2))
    if first is not None:
        (folder / "data_batch_1").write_bytes(first)
    return folder


def _deep_list(depth):
    """A pickle of a list nested ``depth`` deep (EMPTY_LIST x depth, APPEND x depth - 1): too
    deep for pickle.dumps itself to write."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def _shared_list(depth):
    node = [0]
    for _ in range(depth):
        node = [node, node]   # 2^depth paths to the bottom, depth + 1 objects
    return node


def _huge_bytes_claim():
    # BINBYTES8 announcing 2^60 bytes, followed by a few
    return b"\x80\x04\x8e" + struct.pack("<Q", 2**60) + b"abc"


def _absurd_array():
    """A batch whose data array claims shape (10^12, 3072) over 4 x 3072 bytes."""
    raw = pickle.dumps(_batch(), protocol=2)
    shape = b"K\x04M\x00\x0c\x86"                       # the tuple (4, 3072)
    assert raw.count(shape) == 1
    return raw.replace(shape, pickle.dumps((10**12, 3072), protocol=2)[2:-3])


def test_load_cifar10_refuses_crafted_batches(tmp_path, marker, small_limit):
    (x, y), (xt, yt) = fc.datasets.load_cifar10(_cifar_folder(tmp_path / "good"))
    assert x.shape == (4 + 5 + 6 + 7 + 8, 32, 32, 3) and xt.shape == (2, 32, 32, 3)
    evil_array = _batch()
    evil_array[b"extra"] = np.array([Payload(marker)], dtype=object)
    cases = {
        "payload": (pickle.dumps(Payload(marker)), "refusing to load posix.mkdir|refusing to load os.mkdir"),
        "in-dict": (pickle.dumps({b"data": Payload(marker), b"labels": [1]}), "refusing to load"),
        "object-array": (pickle.dumps(evil_array, protocol=2), "dtype .O8. is not allowed"),
        "class": (pickle.dumps(np.random.default_rng(0)), "refusing to load"),
        "truncated": (pickle.dumps(_batch(), protocol=2)[:-50], "not a plain-data pickle"),
        "garbage": (b"\x80\x02garbage", "not a plain-data pickle"),
        "bytes-claim": (_huge_bytes_claim(), "not a plain-data pickle"),
        "absurd-shape": (_absurd_array(), "not a plain-data pickle"),
        "deep": (_deep_list(100_000), "not a plain-data pickle"),
        "shared": (pickle.dumps({b"data": _shared_list(200), b"labels": [0]}),
                   "no 'data' array"),
        "not-dict": (pickle.dumps([1, 2, 3]), "expected a dict"),
        "width": (pickle.dumps(_batch(data=np.zeros((4, 1000), np.uint8)), protocol=2), "not CIFAR-10"),
        "labels": (pickle.dumps(_batch(labels=[0, 1, 2, 12]), protocol=2), r"labels must lie in \[0, 9\]"),
        "float-data": (pickle.dumps(_batch(data=np.zeros((4, 3072))), protocol=2), "not CIFAR-10"),
    }
    for name, (first, message) in cases.items():
        folder = _cifar_folder(tmp_path / name, first)
        with pytest.raises(ValueError, match=message):
            fc.datasets.load_cifar10(folder)
