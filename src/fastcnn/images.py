"""A folder of image files as a data set: :class:`ImageFolder`, to train on your own images.

The layout is torchvision's and Keras' (``image_dataset_from_directory``): one sub-folder per
class, classes sorted by name::

    root/cat/0001.jpg, root/cat/0002.png, ..., root/dog/0001.jpg, ...

    train = fc.datasets.ImageFolder("root", 224, validation_split=0.2, subset="training",
                                    random_crop=True, horizontal_flip=True, mean="imagenet")
    val = fc.datasets.ImageFolder("root", 224, validation_split=0.2, subset="validation",
                                  mean="imagenet")
    model.fit(train, epochs=5, batch_size=32, validation_data=val)

Images are decoded with Pillow (``pip install fastcnn[images]``) in background threads, a few
batches ahead of the training step: Pillow releases the GIL while it decodes and resamples, so
decoding overlaps the compiled kernels' compute instead of adding to it.
"""
import math
import numbers
import os
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .data import DataLoader, Dataset, stratified_split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# torchvision's ImageNet statistics (of RGB values scaled to [0, 1])
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Only these decoders are tried, whatever the file's extension: a renamed file of another
# format (some of Pillow's plugins call external programs) is a decoding error, not a surprise.
_FORMATS = ("JPEG", "PNG")
# Per image, drawn in the main thread: 10 tries of (area, log aspect ratio) for a
# random-resized crop, then the crop's horizontal and vertical position and the flip.
_DRAWS = 23
_THREAD_PREFIX = "fastcnn-ImageFolder"


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("ImageFolder decodes images with Pillow: pip install fastcnn[images] "
                          "(or pip install pillow)") from None
    return Image


def _decode_errors():
    """What a damaged, unreadable or oversized file raises inside Pillow."""
    import struct
    import zlib
    Image = _pillow()
    return (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, MemoryError,
            Image.DecompressionBombError)


def _default_workers():
    try:
        return len(os.sched_getaffinity(0))   # the cores this process may run on
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _Spec:
    """How each image becomes a sample: crop mode and sizes, flip, normalisation."""

    def __init__(self, size, resize, random_crop, crop_scale, crop_ratio, flip, mean, std):
        self.size, self.resize = size, resize
        self.random_crop, self.crop_scale, self.crop_ratio = random_crop, crop_scale, crop_ratio
        self.flip, self.mean, self.std = flip, mean, std


def _cover_size(width, height, short, out_w, out_h):
    """(width, height) of the image with its shorter side ``short`` (torchvision's
    ``Resize(int)``), enlarged if that is needed for an out_w x out_h crop to fit."""
    if width <= height:
        new_w, new_h = short, int(short * height / width)
    else:
        new_w, new_h = int(short * width / height), short
    if new_w < out_w or new_h < out_h:
        s = max(out_w / width, out_h / height)
        new_w, new_h = max(out_w, int(round(width * s))), max(out_h, int(round(height * s)))
    return new_w, new_h


def _random_resized_box(width, height, u, scale, ratio):
    """torchvision's RandomResizedCrop box (left, top, w, h), from the uniform draws ``u``
    instead of a generator: up to 10 tries of an area fraction in ``scale`` and an aspect ratio
    log-uniform in ``ratio``; if none fits, the centred largest box of an allowed ratio."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for k in range(10):
        target = area * (scale[0] + u[k] * (scale[1] - scale[0]))
        aspect = math.exp(log_lo + u[10 + k] * (log_hi - log_lo))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(u[20] * (width - w + 1)), int(u[21] * (height - h + 1)), w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _load(path, spec, u):
    """The uint8 (H, W, 3) sample of one file. ``u``: the image's random draws (None: the
    centre crop). Runs in a worker thread."""
    Image = _pillow()
    bilinear = getattr(Image, "Resampling", Image).BILINEAR
    out_h, out_w = spec.size
    with Image.open(path, formats=_FORMATS) as im:
        width, height = im.size
        if u is not None and spec.random_crop and spec.crop_scale is not None:
            left, top, w, h = _random_resized_box(width, height, u, spec.crop_scale,
                                                  spec.crop_ratio)
            box, size, crop = (left, top, left + w, top + h), (out_w, out_h), None
        else:
            new_w, new_h = _cover_size(width, height, spec.resize, out_w, out_h)
            if u is not None and spec.random_crop:
                left, top = int(u[20] * (new_w - out_w + 1)), int(u[21] * (new_h - out_h + 1))
            else:   # torchvision's CenterCrop
                left, top = int(round((new_w - out_w) / 2.0)), int(round((new_h - out_h) / 2.0))
            box, size, crop = (0, 0, width, height), (new_w, new_h), (left, top, left + out_w,
                                                                      top + out_h)
        # A JPEG much larger than needed is decoded at 1/2, 1/4 or 1/8 scale by the decoder's
        # own DCT scaling (several times faster), never below the pixels the resize needs.
        need = (math.ceil(width * size[0] / (box[2] - box[0])),
                math.ceil(height * size[1] / (box[3] - box[1])))
        drafted = im.draft("RGB", need)
        if drafted is not None and drafted[1][2] != width:
            f = drafted[1][2] / width
            box = tuple(v * f for v in box)
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")   # Pillow's own advice for palette transparency
        elif im.mode == "I" or im.mode.startswith("I;16"):
            # 16-bit grayscale PNG: Pillow's convert would clip at 255 instead of scaling
            wide = np.asarray(im, dtype=np.float32) / np.float32(257)
            im = Image.fromarray(np.clip(np.rint(wide), 0, 255).astype(np.uint8))
        if im.mode != "RGB":
            im = im.convert("RGB")
        im = im.resize(size, bilinear, box=box)
        if crop is not None:
            im = im.crop(crop)
        arr = np.asarray(im)
    if u is not None and spec.flip and u[22] < 0.5:
        arr = arr[:, ::-1]
    return arr


def _decode_into(out, k, path, spec, u, errors):
    """Decode one file into ``out[k]``, scaled to [0, 1] and normalised; returns None, or the
    decoding error (re-raised or skipped by the main thread, which knows on_error)."""
    try:
        arr = _load(path, spec, u)
    except errors as exc:
        return exc
    dst = out[k]
    np.divide(arr, 255, out=dst, dtype=np.float32)
    if spec.mean is not None:
        np.subtract(dst, spec.mean, out=dst)
    if spec.std is not None:
        np.divide(dst, spec.std, out=dst)
    return None


def _statistic(name, value, default):
    if value is None:
        return None
    if isinstance(value, str):
        if value.lower() != "imagenet":
            raise ValueError(f"ImageFolder: {name} must be 3 numbers, a number or 'imagenet', "
                             f"got {value!r}")
        value = default
    arr = np.broadcast_to(np.asarray(value, dtype=np.float32), (3,)).copy()
    if not np.isfinite(arr).all() or (name == "std" and (arr <= 0).any()):
        raise ValueError(f"ImageFolder: {name} must be finite{' and > 0' if name == 'std' else ''}"
                         f", got {value!r}")
    return arr


def _is_size(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1


def _size_pair(name, value):
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or not all(_is_size(v) for v in pair):
        raise ValueError(f"ImageFolder: {name} must be an int >= 1 or (height, width), got "
                         f"{value!r}")
    return int(pair[0]), int(pair[1])


def _visible(entry):
    # hidden entries are not data: .ipynb_checkpoints, macOS's ._* resource forks, .DS_Store
    return not entry.name.startswith(".")


def _image_files(folder):
    """The image files under ``folder`` (its sub-folders too), sorted."""
    files = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not _visible(entry):
            continue
        if entry.is_dir(follow_symlinks=False):
            files.extend(_image_files(entry.path))
        elif entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file():
            files.append(entry.path)
    return files


class ImageFolder(Dataset):
    """The images under ``root``, one class per sub-folder, as a data set that ``fit``,
    ``evaluate`` and ``predict`` take in place of arrays (batches of float32 NHWC
    ``(N, height, width, 3)`` and int64 class indices).

    - Classes: the sub-folders' names, sorted (hidden ones skipped); ``classes=[...]`` picks
      and orders them, so that a test folder gets the training folder's labels even if it
      lacks a class. Images: ``.jpg``, ``.jpeg``, ``.png`` files at any depth below a class
      folder; other files are ignored.
    - Each image is converted to RGB and, by default, resized so its shorter side is
      ``resize`` (default ``image_size * 8 / 7``: 256 for 224, torchvision's convention) and
      centre-cropped to ``image_size`` (an int or (height, width)). ``random_crop=True``
      (for training) takes instead torchvision's random-resized crop: a box of ``crop_scale``
      of the area and aspect ratio in ``crop_ratio``, resized to ``image_size``;
      ``crop_scale=None`` makes it a plain random ``image_size`` window of the resized image.
      ``horizontal_flip=True`` mirrors half the images. Evaluation and prediction always take
      the centre crop, unflipped. Resampling is bilinear with antialiasing, as torchvision's
      on Pillow images; a JPEG at least twice the size needed is decoded at a reduced scale
      (Pillow's draft mode), which is several times faster and differs from a full decode by
      a few levels of 255. EXIF orientation is not applied (neither torchvision nor Keras do).
    - Pixels are scaled to [0, 1], then normalised: ``(x - mean) / std`` per channel (None:
      not; ``"imagenet"``: torchvision's ImageNet statistics, for both when the other is None).
    - ``validation_split`` with ``subset="training"`` or ``"validation"`` holds out that
      fraction of every class (stratified), chosen by ``seed``: two folders made with the same
      arguments but the subset are disjoint and together the whole folder.
    - ``num_workers`` threads (default: the cores available; 0: decode in the calling thread)
      decode ``prefetch`` batches ahead of the one being used. The samples, crops and flips of
      a loader with a given seed do not depend on either.
    - ``on_error``: a file Pillow cannot read (damaged, not an image, permission denied, over
      Pillow's decompression-bomb limit) is a ValueError naming it ('raise'), or ('skip') is
      left out of its batch with a warning, once per file, and listed in ``skipped`` (predict
      then returns no row for it).

    Attributes: ``root``, ``classes``, ``class_to_idx``, ``samples`` (list of (path, label)),
    ``targets`` (int64 labels), ``num_classes``, ``skipped``; ``len(folder)`` is the number of
    images; ``folder[i]`` is one (image, label), centre-cropped.
    """

    def __init__(self, root, image_size, resize=None, random_crop=False, horizontal_flip=False,
                 crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), mean=None, std=None,
                 classes=None, validation_split=None, subset=None, seed=0, num_workers=None,
                 prefetch=2, on_error="raise"):
        _pillow()
        size = _size_pair("image_size", image_size)
        if resize is None:
            resize = int(round(min(size) * 8 / 7))
        elif not _is_size(resize):
            raise ValueError(f"ImageFolder: resize (the shorter side) must be an int >= 1, got "
                             f"{resize!r}")
        if crop_scale is not None:
            crop_scale = tuple(float(v) for v in crop_scale)
            if len(crop_scale) != 2 or not 0 < crop_scale[0] <= crop_scale[1] <= 1:
                raise ValueError(f"ImageFolder: crop_scale must be (lo, hi) with 0 < lo <= hi "
                                 f"<= 1, got {crop_scale!r}")
        crop_ratio = tuple(float(v) for v in crop_ratio)
        if len(crop_ratio) != 2 or not 0 < crop_ratio[0] <= crop_ratio[1]:
            raise ValueError(f"ImageFolder: crop_ratio must be (lo, hi) with 0 < lo <= hi, got "
                             f"{crop_ratio!r}")
        if isinstance(mean, str) and std is None:
            std = mean
        elif isinstance(std, str) and mean is None:
            mean = std
        self._spec = _Spec(size, int(resize), bool(random_crop), crop_scale, crop_ratio,
                           bool(horizontal_flip), _statistic("mean", mean, IMAGENET_MEAN),
                           _statistic("std", std, IMAGENET_STD))
        if on_error not in ("raise", "skip"):
            raise ValueError(f"ImageFolder: on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.num_workers = _default_workers() if num_workers is None else int(num_workers)
        self.prefetch = int(prefetch)
        if self.num_workers < 0 or self.prefetch < 0:
            raise ValueError(f"ImageFolder: num_workers and prefetch must be >= 0, got "
                             f"{num_workers!r} and {prefetch!r}")
        self.image_size = size
        self.root = str(root)
        self.classes, self.samples = self._find(Path(root), classes)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.subset = subset
        self._split(validation_split, subset, seed)
        self.targets = np.array([label for _, label in self.samples], dtype=np.int64)
        self.skipped = []
        self._warned = set()

    @property
    def num_classes(self):
        return len(self.classes)

    def __len__(self):
        return len(self.samples)

    def __repr__(self):
        h, w = self.image_size
        subset = "" if self.subset is None else f", subset={self.subset!r}"
        return (f"ImageFolder({self.root!r}, {len(self)} images, {self.num_classes} classes, "
                f"{h}x{w}{subset})")

    def __getitem__(self, i):
        """(image float32 (H, W, 3), label) of sample i, centre-cropped (even with
        on_error='skip', a file that cannot be read is a ValueError here)."""
        path, label = self.samples[i]
        out = np.empty((1,) + self.image_size + (3,), np.float32)
        error = _decode_into(out, 0, path, self._spec, None, _decode_errors())
        if error is not None:
            raise self._error(path, error)
        return out[0], label

    def loader(self, batch_size=32, shuffle=False, seed=None, drop_last=False, transform=None):
        """A :class:`~fastcnn.data.DataLoader` over the folder's images: what fit, evaluate and
        predict make with their own arguments. ``seed`` draws the order and the random crops
        and flips; ``transform(x_batch, rng)`` is a batch augmentation of
        :mod:`fastcnn.data`, applied after decoding."""
        return ImageFolderLoader(self, batch_size, shuffle, seed, drop_last, transform)

    # --- construction ------------------------------------------------------------------------
    @staticmethod
    def _find(root, classes):
        if not root.is_dir():
            raise (NotADirectoryError if root.exists() else FileNotFoundError)(
                f"ImageFolder: {root} is not a folder")
        found = sorted(e.name for e in os.scandir(root) if _visible(e) and e.is_dir())
        if classes is None:
            classes = found
            if not classes:
                loose = _image_files(root)
                raise ValueError(f"ImageFolder: {root} has no class sub-folders" +
                                 (f" (its {len(loose)} images must go into one sub-folder per "
                                  f"class)" if loose else ""))
        else:
            classes = [str(c) for c in classes]
            missing = [c for c in classes if c not in found]
            if missing or len(set(classes)) != len(classes) or not classes:
                raise ValueError(f"ImageFolder: classes must be distinct sub-folders of {root}; "
                                 f"{missing or classes} are not (it has {found})")
        samples = []
        for label, name in enumerate(classes):
            files = _image_files(root / name)
            if not files:
                raise ValueError(f"ImageFolder: {root / name} holds no {'/'.join(IMAGE_EXTENSIONS)}"
                                 f" images (every class folder needs at least one)")
            samples.extend((path, label) for path in files)
        return classes, samples

    def _split(self, validation_split, subset, seed):
        if validation_split is None and subset is None:
            return
        if subset not in ("training", "validation"):
            raise ValueError(f"ImageFolder: subset must be 'training' or 'validation' with "
                             f"validation_split, got {subset!r}")
        if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real) \
                or not 0.0 < validation_split < 1.0:
            raise ValueError(f"ImageFolder: validation_split must be a fraction in (0, 1) with "
                             f"subset, got {validation_split!r}")
        if seed is None:
            raise ValueError("ImageFolder: validation_split needs a seed (the same for both "
                             "subsets, or they overlap)")
        labels = np.array([label for _, label in self.samples])
        n_val = int(round(len(labels) * validation_split))
        if not 0 < n_val < len(labels):
            raise ValueError(f"ImageFolder: validation_split={validation_split} of "
                             f"{len(labels)} images leaves no training or no validation image")
        train, val = stratified_split(labels, n_val, seed)
        # the folder's order (sorted by class and file), not the split's shuffle
        keep = np.sort(train if subset == "training" else val)
        self.samples = [self.samples[i] for i in keep]

    def _error(self, path, exc):
        return ValueError(f"ImageFolder: cannot read {path}: {type(exc).__name__}: {exc}")


class ImageFolderLoader(DataLoader):
    """Batches of an :class:`ImageFolder` (made by :meth:`ImageFolder.loader`): order, crops
    and flips drawn in this thread from the seeded generators, decoding in a thread pool."""

    def __init__(self, folder, batch_size=32, shuffle=False, seed=None, drop_last=False,
                 transform=None):
        self.folder = folder
        self.num_samples = len(folder)
        self._init_batching(batch_size, shuffle, seed, drop_last)
        self.transform = transform

    @property
    def sample_shape(self):
        return self.folder.image_size + (3,)

    def _batches(self, order, training):
        folder, spec = self.folder, self.folder._spec
        crop_rng = transform_rng = None
        if training:
            # One draw per epoch from the loader's generator, however far the epoch goes (fit
            # checkpoints that generator between epochs); the epoch's own generators are then
            # drawn in sample order as batches are handed to the workers.
            epoch = np.random.SeedSequence(int(self._augment_rng.integers(2 ** 63)))
            crop_rng, transform_rng = (np.random.default_rng(s) for s in epoch.spawn(2))
        random = training and (spec.random_crop or spec.flip)
        errors = _decode_errors()
        indices = self._index_batches(order, self.drop_last and training)
        pool = (ThreadPoolExecutor(folder.num_workers, thread_name_prefix=_THREAD_PREFIX)
                if folder.num_workers else None)
        pending = deque()

        def submit():
            index = next(indices, None)
            if index is None:
                return False
            index = np.arange(index.start, index.stop) if isinstance(index, slice) else index
            draws = crop_rng.random((len(index), _DRAWS)) if random else None
            out = np.empty((len(index),) + spec.size + (3,), np.float32)
            jobs = [(out, k, folder.samples[i][0], spec, None if draws is None else draws[k],
                     errors) for k, i in enumerate(index)]
            tasks = None if pool is None else [pool.submit(_decode_into, *job) for job in jobs]
            pending.append((index, out, jobs, tasks))
            return True

        seen, failures = 0, 0
        try:
            while True:
                while len(pending) < (1 + folder.prefetch if pool else 1) and submit():
                    pass
                if not pending:
                    break
                index, out, jobs, tasks = pending.popleft()
                results = ([task.result() for task in tasks] if tasks is not None
                           else [_decode_into(*job) for job in jobs])
                bad = [k for k, exc in enumerate(results) if exc is not None]
                for k in bad:
                    path = jobs[k][2]
                    if folder.on_error == "raise":
                        raise folder._error(path, results[k])
                    if path not in folder._warned:
                        folder._warned.add(path)
                        folder.skipped.append(path)
                        warnings.warn(f"ImageFolder: skipping {path}: {type(results[k]).__name__}:"
                                      f" {results[k]}", stacklevel=2)
                failures += len(bad)
                if bad:
                    keep = np.setdiff1d(np.arange(len(index)), bad)
                    index, out = index[keep], out[keep]
                if not len(index):
                    if self._shard[1] > 1:   # data-parallel: the step happens on every rank
                        yield out, folder.targets[index]
                    continue
                self.batch_indices = index
                if training and self.transform is not None:
                    out = self.transform(out, transform_rng)
                seen += len(index)
                yield out, folder.targets[index]
        finally:
            if pool is not None:
                # an early stop (break, exception, Ctrl-C): nothing queued starts, the images
                # under way finish, and no thread outlives the iteration
                pool.shutdown(wait=True, cancel_futures=True)
        if failures and not seen:
            raise ValueError(f"ImageFolder: none of the {failures} images of this pass could be "
                             f"read (see folder.skipped): {folder.skipped[:3]}")


__all__ = ["ImageFolder", "ImageFolderLoader", "IMAGENET_MEAN", "IMAGENET_STD"]
