"""Batches and augmentation.

:class:`DataLoader` cuts arrays into (seeded, shuffled) batches; a :class:`Dataset` (a folder of
images: :class:`fastcnn.datasets.ImageFolder`) makes its own loader. The augmentations work on a
whole NHWC batch at once with vectorised numpy (no Python loop over images); each takes
``(x, rng)`` and returns a new array, and :class:`Compose` chains them::

    augment = fc.data.Compose([fc.data.RandomCrop(28, padding=2), fc.data.RandomRotation(10)])
    model.fit(x, y, augment=augment)          # or DataLoader(x, y, transform=augment)
"""
import numpy as np

from .nn.base import rng as global_rng


class DataLoader:
    """Iterate over ``(x_batch, y_batch)`` (or ``x_batch`` when y is None).

    ``shuffle`` draws a new permutation every epoch from a generator seeded with ``seed``, so a
    run is reproducible; ``drop_last`` drops a final batch smaller than ``batch_size``;
    ``transform(x_batch, rng)`` is applied to each batch (augmentation), with its own generator
    derived from the same seed.
    """

    def __init__(self, x, y=None, batch_size=32, shuffle=False, seed=None, drop_last=False,
                 transform=None):
        # a list of arrays: one per input (or per output, for y) of a model with several
        self.x = [np.asarray(a) for a in x] if isinstance(x, (list, tuple)) else np.asarray(x)
        self.y = (None if y is None else
                  [np.asarray(a) for a in y] if isinstance(y, (list, tuple)) else np.asarray(y))
        self.num_samples = check_same_length("DataLoader", self.x, self.y)
        self._init_batching(batch_size, shuffle, seed, drop_last)
        self.transform = transform

    def _init_batching(self, batch_size, shuffle, seed, drop_last):
        """What every loader shares: the batching options and the two generators (order and
        augmentation) whose states fit's checkpoints record."""
        if int(batch_size) < 1:
            raise ValueError(f"{type(self).__name__}: batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), bool(shuffle), bool(drop_last)
        self.seed = seed
        seeds = np.random.SeedSequence(seed).spawn(2)
        self._order_rng = np.random.default_rng(seeds[0])
        self._augment_rng = np.random.default_rng(seeds[1])

    @property
    def sample_shape(self):
        """One sample's shape, which fit records as the model's input_shape (None for several
        inputs)."""
        return None if isinstance(self.x, list) else tuple(self.x.shape[1:])

    def __len__(self):
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        order = self._order_rng.permutation(self.num_samples) if self.shuffle else None
        yield from self._batches(order, training=True)

    def eval_batches(self):
        """Every sample once, in order, without the transform and without drawing from the
        generators: what evaluate and predict read (augmentation is for training, and a
        validation pass inside fit must not change the training run's random stream)."""
        return self._batches(None, training=False)

    _shard = (0, 1)   # (this part, parts): see shard

    def shard(self, rank, size):
        """Yield part ``rank`` of ``size`` of every batch, for data-parallel training: the
        epoch's order is cut into global batches of ``batch_size * size`` samples, each into
        ``size`` parts of ``batch_size`` in rank order (the last global batch's parts are
        shorter, some empty: an empty part is not yielded). eval_batches too. Returns self."""
        rank, size = int(rank), int(size)
        if not 0 <= rank < size:
            raise ValueError(f"{type(self).__name__}.shard: rank {rank} is not in 0..{size - 1}")
        self._shard = (rank, size)
        return self

    def steps(self, training=True):
        """(samples in the global batch, samples in this rank's part) for each step."""
        rank, ranks = self._shard
        n, step = self.num_samples, self.batch_size * ranks
        for lo in range(0, n // step * step if self.drop_last and training else n, step):
            hi = min(lo + step, n)
            yield hi - lo, max(0, min(lo + (rank + 1) * self.batch_size, hi)
                               - min(lo + rank * self.batch_size, hi))

    def _index_batches(self, order, drop_last):
        """The samples of each batch: a slice (in order) or an array of indices (shuffled);
        this rank's part of it when the loader is sharded."""
        n, size = self.num_samples, self.batch_size
        rank, ranks = self._shard
        step = size * ranks
        for lo in range(0, n // step * step if drop_last else n, step):
            hi = min(lo + step, n)
            a, b = min(lo + rank * size, hi), min(lo + (rank + 1) * size, hi)
            if a < b:
                yield slice(a, b) if order is None else order[a:b]

    def _batches(self, order, training):
        for index in self._index_batches(order, self.drop_last and training):
            # which samples the batch holds (fit names them when a batch goes wrong)
            self.batch_indices = range(index.start, index.stop) if isinstance(index, slice) \
                else index
            xb = take(self.x, index)
            yb = None if self.y is None else take(self.y, index)
            if training and self.transform is not None:
                xb = self.transform(xb, self._augment_rng)
            yield xb if yb is None else (xb, yb)


class Dataset:
    """A collection of samples that is not an array in memory (a folder of image files, see
    :class:`fastcnn.datasets.ImageFolder`) and cuts itself into batches.

    fit, evaluate and predict take one where they take arrays: they call :meth:`loader` with
    their own ``batch_size``, ``shuffle``, ``seed``, ``drop_last`` and ``augment``, so those
    arguments mean the same for both.
    """

    def __len__(self):
        raise NotImplementedError

    def loader(self, batch_size=32, shuffle=False, seed=None, drop_last=False, transform=None):
        """A :class:`DataLoader` over the samples (``transform`` as DataLoader's)."""
        raise NotImplementedError


def take(data, index):
    """``data[index]`` for an array, or for each array of a list (several inputs or outputs)."""
    if isinstance(data, list):
        return [a[index] for a in data]
    return data[index]


def check_same_length(op, x, y):
    """The number of samples of x (an array or a list of arrays), checked against every array
    of x and y (None: no targets)."""
    arrays = (x if isinstance(x, list) else [x]) + \
             ([] if y is None else y if isinstance(y, list) else [y])
    lengths = [len(a) for a in arrays]
    if len(set(lengths)) > 1:
        n_x = len(x) if isinstance(x, list) else 1
        xs, ys = lengths[:n_x], lengths[n_x:]
        xs, ys = (xs[0] if len(xs) == 1 else xs), (ys[0] if len(ys) == 1 else ys)
        raise ValueError(f"{op}: x has {xs} samples but y has {ys}" if y is not None
                         else f"{op}: the inputs hold {lengths} samples")
    return lengths[0]


def _rng(rng):
    if rng is None:
        return global_rng()
    return rng


def _nhwc(name, x):
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{name}: expected an NHWC batch (N, H, W, C), got shape {x.shape}")
    return x


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x, rng=None):
        rng = _rng(rng)
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self):
        return f"Compose({self.transforms!r})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability p."""

    def __init__(self, p=0.5):
        self.p = float(p)

    def __call__(self, x, rng=None):
        x = _nhwc("RandomHorizontalFlip", x)
        flip = _rng(rng).random(len(x)) < self.p
        out = x.copy()
        out[flip] = x[flip, :, ::-1]
        return out

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class RandomCrop:
    """Pad each side by ``padding`` (with ``fill``) and cut a random ``size`` window per image."""

    def __init__(self, size, padding=0, fill=0.0):
        self.size = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)
        self.padding, self.fill = int(padding), fill

    def __call__(self, x, rng=None):
        x = _nhwc("RandomCrop", x)
        rng = _rng(rng)
        n, p = len(x), self.padding
        if p:
            x = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=self.fill)
        (h, w), (hp, wp) = self.size, x.shape[1:3]
        if h > hp or w > wp:
            raise ValueError(f"RandomCrop: crop {self.size} is larger than the padded image {(hp, wp)}")
        top = rng.integers(0, hp - h + 1, size=n)
        left = rng.integers(0, wp - w + 1, size=n)
        rows = top[:, None] + np.arange(h)
        cols = left[:, None] + np.arange(w)
        return x[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomRotation:
    """Rotate each image about its centre by an angle drawn uniformly in [-degrees, degrees],
    with bilinear interpolation; pixels from outside the image take ``fill``."""

    def __init__(self, degrees=10.0, fill=0.0):
        self.degrees, self.fill = float(degrees), float(fill)

    def __call__(self, x, rng=None):
        x = _nhwc("RandomRotation", x)
        n, h, w, _ = x.shape
        theta = np.deg2rad(_rng(rng).uniform(-self.degrees, self.degrees, size=n))
        cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        i = np.arange(h, dtype=np.float64)[None, :, None] - cy
        j = np.arange(w, dtype=np.float64)[None, None, :] - cx
        src_y = cos * i - sin * j + cy          # inverse rotation of each output pixel
        src_x = sin * i + cos * j + cx
        y0, x0 = np.floor(src_y).astype(np.int64), np.floor(src_x).astype(np.int64)
        wy, wx = (src_y - y0)[..., None], (src_x - x0)[..., None]
        batch = np.arange(n)[:, None, None]
        src = x.astype(np.float32, copy=False)

        def tap(yy, xx):
            inside = ((yy >= 0) & (yy < h) & (xx >= 0) & (xx < w))[..., None]
            v = src[batch, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
            return np.where(inside, v, np.float32(self.fill))

        out = ((1 - wy) * ((1 - wx) * tap(y0, x0) + wx * tap(y0, x0 + 1))
               + wy * ((1 - wx) * tap(y0 + 1, x0) + wx * tap(y0 + 1, x0 + 1)))
        return out.astype(np.float32)

    def __repr__(self):
        return f"RandomRotation(degrees={self.degrees})"


class GaussianNoise:
    """Add N(0, std^2) noise to every pixel; ``clip=(lo, hi)`` clips the result."""

    def __init__(self, std=0.05, clip=None):
        self.std, self.clip = float(std), clip

    def __call__(self, x, rng=None):
        x = np.asarray(x, dtype=np.float32)
        out = x + _rng(rng).standard_normal(x.shape, dtype=np.float32) * np.float32(self.std)
        if self.clip is not None:
            np.clip(out, self.clip[0], self.clip[1], out=out)
        return out

    def __repr__(self):
        return f"GaussianNoise(std={self.std}, clip={self.clip})"


__all__ = ["DataLoader", "Dataset", "Compose", "RandomHorizontalFlip", "RandomCrop",
           "RandomRotation", "GaussianNoise"]


def stratified_split(labels, test_size, seed=0):
    """Indices (train, test), each class split in proportion, both shuffled with ``seed``."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    per_class = np.floor(counts * test_size / len(labels)).astype(int)
    # hand the remainder to the classes with the largest fractional parts
    rest = test_size - per_class.sum()
    frac = counts * test_size / len(labels) - per_class
    per_class[np.argsort(-frac, kind="stable")[:rest]] += 1
    train, test = [], []
    for c, k in zip(classes, per_class):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:k])
        train.append(idx[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
