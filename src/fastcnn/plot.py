"""Pictures of training and of what a model sees, with matplotlib (``pip install
fastcnn[plot]``).

Each function returns a ``matplotlib.figure.Figure`` and, given ``path``, also writes it as a
PNG. Figures are made without pyplot (no window, no global state, safe in scripts and threads):
show one in a notebook by leaving it as a cell's value.

- :func:`history`: loss and metrics per epoch, training and validation.
- :func:`filters`: a convolution's kernels (the first one's by default).
- :func:`feature_maps`: one image's activations at a layer.
- :func:`heatmap`: an explanation map over its image.
- :func:`adversarial_examples`: clean and attacked images with the model's predictions.
- :func:`confusion_matrix`: counts (or rates) of true against predicted classes.
"""
import math

import numpy as np


def _figure(width, height):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("fastcnn.plot draws with matplotlib: pip install fastcnn[plot] (or "
                          "pip install matplotlib)") from None
    return Figure(figsize=(width, height), layout="constrained")


def _done(fig, path, dpi=100):
    if path is not None:
        fig.savefig(path, dpi=dpi, format="png")
    return fig


def _image(a):
    """(H, W) or (H, W, 3) for imshow: one channel squeezed, any range scaled to [0, 1]."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] != 3:
        raise ValueError(f"plot: an image is (H, W), (H, W, 1) or (H, W, 3), got {a.shape}")
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo and (lo < 0 or hi > 1) else a


def _grid(count, columns):
    columns = max(1, min(columns, count))
    return int(math.ceil(count / columns)), columns


# what a History records beside the loss and the metrics
_NOT_CURVES = ("lr", "images_per_s", "skipped_batches")


def history(history, path=None):
    """Loss and each metric of a ``History`` (or its ``.history`` dict) per epoch: one panel
    per quantity, training solid and validation dashed."""
    logs = getattr(history, "history", history)
    if not isinstance(logs, dict) or not logs:
        raise ValueError("plot.history: takes the History that fit returns (or its .history)")
    names = [k for k in logs if not k.startswith("val_") and k not in _NOT_CURVES]
    names += [k[4:] for k in logs if k.startswith("val_") and k[4:] not in names]
    fig = _figure(4.2 * len(names), 3.2)
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, name in zip(axes, names):
        for key, style, label in ((name, "-", "training"), ("val_" + name, "--", "validation")):
            values = logs.get(key)
            if values:
                ax.plot(np.arange(1, len(values) + 1), values, style, marker="o", markersize=3,
                        label=label)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    return _done(fig, path)


def _conv_weight(model, layer):
    from .backprop import locate
    from .nn import Conv2d
    if layer is None:
        if isinstance(model, Conv2d):
            return model.weight.data, "conv"
        for name, child in _walk(model):
            if isinstance(child, Conv2d):
                return child.weight.data, name
        raise ValueError("plot.filters: the model has no Conv2d")
    _, _, found = locate(model, layer)
    if not isinstance(found, Conv2d):
        raise ValueError(f"plot.filters: layer {layer!r} is a {type(found).__name__}, not a Conv2d")
    return found.weight.data, str(layer)


def _walk(layer, prefix=""):
    for name, child in layer.named_children():
        yield prefix + name, child
        yield from _walk(child, prefix + name + ".")


def filters(model, layer=None, columns=8, path=None):
    """The kernels of a Conv2d (``layer``: index, name or dotted path; default: the model's
    first): RGB for three input channels, else their mean in grey; each scaled to its range."""
    w, name = _conv_weight(model, layer)
    count = w.shape[0]
    rows, columns = _grid(count, columns)
    fig = _figure(1.1 * columns, 1.1 * rows + 0.4)
    axes = np.atleast_1d(fig.subplots(rows, columns)).reshape(-1)
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= count:
            continue
        k = w[i].transpose(1, 2, 0)                # (kh, kw, in)
        k = k if k.shape[-1] == 3 else k.mean(axis=-1)
        lo, hi = float(k.min()), float(k.max())
        ax.imshow((k - lo) / (hi - lo) if hi > lo else np.zeros_like(k),
                  cmap=None if k.ndim == 3 else "gray", interpolation="nearest")
    fig.suptitle(f"filters of {name} ({w.shape[0]} x {w.shape[1]} x {w.shape[2]} x {w.shape[3]})")
    return _done(fig, path)


def feature_maps(model, image, layer, count=16, columns=8, path=None):
    """The first ``count`` channels of ``layer``'s output for one ``image`` (H, W, C)."""
    from .explain import activations
    image = np.asarray(image, dtype=np.float32)
    maps = activations(model, image[None], layer)[0]
    if maps.ndim != 3:
        raise ValueError(f"plot.feature_maps: layer {layer!r} gives outputs of shape "
                         f"{maps.shape}, not feature maps (H, W, C)")
    count = min(int(count), maps.shape[-1])
    rows, columns = _grid(count, columns)
    fig = _figure(1.3 * columns, 1.3 * rows + 0.4)
    axes = np.atleast_1d(fig.subplots(rows, columns)).reshape(-1)
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < count:
            ax.imshow(maps[..., i], cmap="viridis", interpolation="nearest")
            ax.set_title(str(i), fontsize=7)
    fig.suptitle(f"layer {layer}: {count} of {maps.shape[-1]} channels, {maps.shape[0]}x{maps.shape[1]}")
    return _done(fig, path)


def _resize(heat, shape):
    """``heat`` (h, w) bilinearly to ``shape`` (H, W), as the explanations' upsampling."""
    if heat.shape == tuple(shape):
        return heat
    from .nn import Upsample, inference_mode
    with inference_mode():
        return Upsample(size=shape, mode="bilinear").forward(
            np.ascontiguousarray(heat, np.float32)[None, ..., None])[0, ..., 0]


def heatmap(image, heat, alpha=0.5, cmap="jet", title=None, path=None):
    """``heat`` (h, w; resized to the image if smaller, as a Grad-CAM map) over ``image``
    (H, W, C), beside the image alone."""
    image = np.asarray(image, dtype=np.float32)
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim == 3:           # a per-channel attribution: its largest magnitude per pixel
        heat = np.abs(heat).max(axis=-1)
    if heat.ndim != 2:
        raise ValueError(f"plot.heatmap: the map must be (h, w), got {heat.shape}")
    heat = _resize(heat, image.shape[:2])
    fig = _figure(6.4, 3.4)
    left, right = fig.subplots(1, 2)
    shown = _image(image)
    for ax in (left, right):
        ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None)
        ax.axis("off")
    im = right.imshow(heat, cmap=cmap, alpha=alpha)
    fig.colorbar(im, ax=right, shrink=0.8)
    left.set_title("image")
    right.set_title(title or "explanation")
    return _done(fig, path)


def adversarial_examples(model, x, x_adv, y=None, class_names=None, count=8, path=None):
    """Clean images (top row) and their attacked copies (bottom) with the model's prediction
    and its probability; a wrong prediction (given ``y``) in red."""
    n = min(int(count), len(x))
    clean = np.asarray(model.predict(x[:n]))          # a classifier's probabilities
    attacked = np.asarray(model.predict(x_adv[:n]))
    name = (lambda k: class_names[k]) if class_names is not None else str
    fig = _figure(1.5 * n, 3.6)
    axes = np.atleast_2d(fig.subplots(2, n)).reshape(2, n)
    for row, (images, probs, label) in enumerate(((x, clean, "clean"), (x_adv, attacked,
                                                                        "attacked"))):
        for i in range(n):
            ax = axes[row, i]
            shown = _image(images[i])
            ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            k = int(np.argmax(probs[i]))
            wrong = y is not None and k != int(y[i])
            ax.set_title(f"{name(k)} {probs[i, k]:.0%}", fontsize=8,
                         color="red" if wrong else "black")
            if i == 0:
                ax.set_ylabel(label)
    return _done(fig, path)


def confusion_counts(y_true, y_pred, num_classes=None):
    """The (classes, classes) matrix of counts: row the true class, column the predicted."""
    y_true, y_pred = np.asarray(y_true).astype(np.int64), np.asarray(y_pred).astype(np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"plot.confusion_matrix: y_true {y_true.shape} and y_pred "
                         f"{y_pred.shape} must be two vectors of one length")
    k = int(num_classes or max(y_true.max(initial=0), y_pred.max(initial=0)) + 1)
    out = np.zeros((k, k), np.int64)
    np.add.at(out, (y_true, y_pred), 1)
    return out


def confusion_matrix(y_true, y_pred, class_names=None, normalize=False, path=None):
    """True classes (rows) against predicted ones (columns), as counts or, with
    ``normalize``, as the share of each true class."""
    counts = confusion_counts(y_true, y_pred,
                              None if class_names is None else len(class_names))
    values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    k = len(counts)
    fig = _figure(1.0 + 0.45 * k, 0.8 + 0.42 * k)
    ax = fig.subplots()
    im = ax.imshow(values, cmap="Blues")
    fig.colorbar(im, ax=ax, shrink=0.8)
    names = class_names if class_names is not None else [str(i) for i in range(k)]
    ax.set_xticks(range(k), names, rotation=45 if k > 10 else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    high = values.max() / 2 if values.size else 0
    for i in range(k):
        for j in range(k):
            text = f"{values[i, j]:.2f}" if normalize else str(values[i, j])
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if values[i, j] > high else "black")
    ax.set_title(f"accuracy {np.trace(counts) / max(counts.sum(), 1):.1%}")
    return _done(fig, path)
