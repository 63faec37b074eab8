"""Why a model decided what it did: gradients, attributions and class-activation maps.

Every function takes a model of one input and a batch ``x`` in the model's layout (NHWC for
fastcnn's own models), and a ``target``: the class whose score is explained, an int, one per
sample, or None for each sample's top class. The score is the model's output as it is (logits
for a model without a final Softmax), as captum takes it. Models run in evaluation mode (batch
norm with running statistics, no dropout) unless ``training=True``; parameters and their
gradients are never touched. Batches are split into chunks of ``batch_size``.

- :func:`input_gradient`: d score / d x (captum's ``Saliency`` with ``abs=False``).
- :func:`saliency` (|gradient|), :func:`gradient_x_input`, :func:`smoothgrad`.
- :func:`integrated_gradients`, with its completeness gap.
- :func:`grad_cam`, :func:`grad_cam_plus_plus` at any layer with an (N, h, w, C) output.
- :func:`activations` of any layer (feature maps), :func:`occlusion` sensitivity.
"""
import numpy as np

from . import backprop
from .nn import Conv2d, Upsample, inference_mode


def _chunks(n, batch_size):
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def _scores(model, x, output=0, training=False, batch_size=64):
    """The model's outputs (of ``output``) for ``x`` in the explanations' mode."""
    parts = []
    for s in _chunks(len(x), batch_size):
        with backprop.differentiable(model, training):
            y = model.forward(x[s])
        parts.append(np.array(backprop.output_of(model, y, output, "explain")))
    return np.concatenate(parts)


def _targets(model, x, target, output, training, batch_size, what):
    if target is not None and np.ndim(target) == 0 and len(x):
        probe = _scores(model, x[:1], output, training, batch_size)
        return backprop.targets_of(np.repeat(probe, len(x), axis=0), target, what)
    return backprop.targets_of(_scores(model, x, output, training, batch_size), target, what)


def input_gradient(model, x, target=None, output=0, training=False, batch_size=64):
    """d(target score) / d(input) for each sample: an array shaped like ``x``."""
    x = backprop.single_input(model, x, "input_gradient")
    targets = _targets(model, x, target, output, training, batch_size, "input_gradient")
    out = np.empty_like(x)
    for s in _chunks(len(x), batch_size):
        _, out[s] = backprop.gradient(model, x[s], backprop.one_hot_grad(targets[s]), output,
                                      training, "input_gradient")
    return out


def saliency(model, x, target=None, absolute=True, **kwargs):
    """The gradient's magnitude (``absolute=False``: the signed gradient), as captum's
    ``Saliency``; a per-pixel map is ``.max(axis=-1)`` of it, as Simonyan et al. take it."""
    g = input_gradient(model, x, target, **kwargs)
    return np.abs(g) if absolute else g


def gradient_x_input(model, x, target=None, **kwargs):
    """gradient * input, as captum's ``InputXGradient``."""
    x = np.asarray(x, dtype=np.float32)
    return input_gradient(model, x, target, **kwargs) * x


def smoothgrad(model, x, target=None, samples=25, noise_level=0.15, seed=0, absolute=False,
               **kwargs):
    """The gradient averaged over ``samples`` noisy copies of each image (Smilkov et al.):
    Gaussian noise of standard deviation ``noise_level`` times the image's value range. The
    target is fixed on the clean images. ``absolute``: the average of |gradient|."""
    x = backprop.single_input(model, x, "smoothgrad")
    if int(samples) < 1:
        raise ValueError(f"smoothgrad: samples must be >= 1, got {samples}")
    output, training = kwargs.get("output", 0), kwargs.get("training", False)
    targets = _targets(model, x, target, output, training, kwargs.get("batch_size", 64),
                       "smoothgrad")
    rng = np.random.default_rng(seed)
    axes = tuple(range(1, x.ndim))
    sigma = noise_level * (x.max(axis=axes, keepdims=True) - x.min(axis=axes, keepdims=True))
    total = np.zeros_like(x, dtype=np.float64)
    for _ in range(int(samples)):
        noisy = (x + sigma * rng.standard_normal(x.shape)).astype(np.float32)
        g = input_gradient(model, noisy, targets, **kwargs)
        total += np.abs(g) if absolute else g
    return (total / int(samples)).astype(np.float32)


def _path(method, steps):
    """(alphas, weights) of the path integral's quadrature over [0, 1]."""
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (nodes + 1), 0.5 * weights
    if method == "riemann_trapezoid":
        alphas = np.linspace(0, 1, steps)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] *= 0.5
        return alphas, weights
    offsets = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}
    if method in offsets:
        return (np.arange(steps) + offsets[method]) / steps, np.full(steps, 1.0 / steps)
    raise ValueError(f"integrated_gradients: method must be 'gausslegendre', 'riemann_left', "
                     f"'riemann_middle', 'riemann_right' or 'riemann_trapezoid', got {method!r}")


def integrated_gradients(model, x, target=None, baseline=None, steps=50, method="gausslegendre",
                         output=0, training=False, batch_size=64):
    """Integrated gradients (Sundararajan et al.) from ``baseline`` (zeros by default; an
    array like x, or one image, or a number) along the straight path, with captum's
    quadratures (``method``, ``steps``).

    Returns (attributions, delta): ``delta`` per sample is sum(attributions) - (f(x) -
    f(baseline)) for the target score, the completeness gap (small when ``steps`` suffice)."""
    x = backprop.single_input(model, x, "integrated_gradients")
    steps = int(steps)
    if steps < (2 if method == "riemann_trapezoid" else 1):
        raise ValueError(f"integrated_gradients: steps must be >= 1 (2 for the trapezoid rule), "
                         f"got {steps}")
    base = np.zeros_like(x) if baseline is None else \
        np.broadcast_to(np.asarray(baseline, np.float32), x.shape).astype(np.float32)
    alphas, weights = _path(method, steps)
    targets = _targets(model, x, target, output, training, batch_size, "integrated_gradients")
    total = np.zeros_like(x, dtype=np.float64)
    for a, w in zip(alphas, weights):
        point = (base + np.float32(a) * (x - base)).astype(np.float32)
        total += w * input_gradient(model, point, targets, output, training, batch_size)
    attributions = ((x - base) * total).astype(np.float32)
    rows = np.arange(len(x))
    gap = (_scores(model, x, output, training, batch_size)[rows, targets]
           - _scores(model, base, output, training, batch_size)[rows, targets])
    delta = attributions.reshape(len(x), -1).sum(axis=1, dtype=np.float64) - gap
    return attributions, delta


# --- layers ----------------------------------------------------------------------------------
def _last_conv(model):
    """The dotted path of the model's last Conv2d (in the order its containers list them)."""
    found = None

    def walk(layer, prefix):
        nonlocal found
        for name, child in layer.named_children():
            path = f"{prefix}{name}"
            if isinstance(child, Conv2d):
                found = path
            walk(child, path + ".")
    walk(model, "")
    if found is None:
        raise ValueError("grad_cam: the model has no Conv2d; name the layer (layer=...)")
    return found


def activations(model, x, layer, training=False, batch_size=64):
    """The output of ``layer`` (index in a Sequential, name, or dotted path) for ``x``: feature
    maps (N, h, w, C) for a convolution."""
    x = backprop.single_input(model, x, "activations")
    parts = []
    with backprop.recording(model, layer) as recorder:
        for s in _chunks(len(x), batch_size):
            with backprop.differentiable(model, training):
                model.forward(x[s])
            parts.append(np.array(recorder.output))
    return np.concatenate(parts)


def _layer_grads(model, x, targets, layer, output, training, batch_size, what):
    """The layer's outputs A and d(target score)/dA, both (N, h, w, C)."""
    acts, grads = [], []
    with backprop.recording(model, layer) as recorder:
        for s in _chunks(len(x), batch_size):
            backprop.gradient(model, x[s], backprop.one_hot_grad(targets[s]), output, training,
                              what)
            if recorder.output is None or recorder.grad is None:
                raise ValueError(f"{what}: layer {layer!r} is not on the path to the output")
            acts.append(np.array(recorder.output))
            grads.append(recorder.grad)
    a, g = np.concatenate(acts), np.concatenate(grads)
    if a.ndim != 4:
        raise ValueError(f"{what}: layer {layer!r} gives outputs of shape {a.shape[1:]}; a "
                         f"class-activation map needs a layer with (H, W, C) outputs")
    return a, g


def _cam(model, x, target, layer, output, training, batch_size, upsample, weigh, what):
    x = backprop.single_input(model, x, what)
    layer = _last_conv(model) if layer is None else layer
    targets = _targets(model, x, target, output, training, batch_size, what)
    a, g = _layer_grads(model, x, targets, layer, output, training, batch_size, what)
    cam = np.maximum(np.einsum("nhwc,nc->nhw", a, weigh(a, g)), 0).astype(np.float32)
    if upsample:
        if x.ndim != 4:
            raise ValueError(f"{what}: upsample needs image input (N, H, W, C)")
        with inference_mode():
            cam = Upsample(size=x.shape[1:3], mode="bilinear").forward(cam[..., None])[..., 0]
    return cam


def grad_cam(model, x, target=None, layer=None, upsample=False, output=0, training=False,
             batch_size=64):
    """Grad-CAM (Selvaraju et al.): ReLU(sum_c alpha_c A_c) with alpha_c the mean over the
    pixels of d(target score)/dA_c, at ``layer`` (index in a Sequential, name or dotted path;
    default: the last Conv2d). (N, h, w) at the layer's resolution; ``upsample=True``: at the
    input's (bilinear, as PyTorch's ``align_corners=False``)."""
    return _cam(model, x, target, layer, output, training, batch_size, upsample,
                lambda a, g: g.mean(axis=(1, 2)), "grad_cam")


def _plus_plus_weights(a, g):
    """Grad-CAM++ (Chattopadhyay et al.) channel weights, in the closed form for an
    exponential score that pytorch-grad-cam uses."""
    g2, g3 = g * g, g * g * g
    denominator = 2 * g2 + a.sum(axis=(1, 2), keepdims=True) * g3
    alpha = np.where(g != 0, g2 / np.where(denominator != 0, denominator, 1), 0)
    return (np.maximum(g, 0) * alpha).sum(axis=(1, 2))


def grad_cam_plus_plus(model, x, target=None, layer=None, upsample=False, output=0,
                       training=False, batch_size=64):
    """Grad-CAM++: as :func:`grad_cam`, with each channel weighted by its positive gradients
    times Grad-CAM++'s alpha (better maps where a class appears several times)."""
    return _cam(model, x, target, layer, output, training, batch_size, upsample,
                _plus_plus_weights, "grad_cam_plus_plus")


def occlusion(model, x, target=None, window=8, stride=4, baseline=0.0, output=0, training=False,
              batch_size=64):
    """Occlusion sensitivity (Zeiler and Fergus): the drop of the target score when a
    ``window`` x ``window`` patch (all channels) is set to ``baseline``, slid by ``stride`` and
    averaged over the windows covering each pixel, as captum's ``Occlusion``. (N, H, W)."""
    x = backprop.single_input(model, x, "occlusion")
    if x.ndim != 4:
        raise ValueError(f"occlusion: takes images (N, H, W, C), got shape {x.shape}")
    window, stride = int(window), int(stride)
    n, h, w, _ = x.shape
    if not 1 <= window <= min(h, w) or stride < 1:
        raise ValueError(f"occlusion: window must be 1..{min(h, w)} and stride >= 1, got "
                         f"{window} and {stride}")
    targets = _targets(model, x, target, output, training, batch_size, "occlusion")
    rows = np.arange(n)
    clean = _scores(model, x, output, training, batch_size)[rows, targets]
    tops = list(range(0, h - window + 1, stride))
    lefts = list(range(0, w - window + 1, stride))
    if tops[-1] != h - window:
        tops.append(h - window)
    if lefts[-1] != w - window:
        lefts.append(w - window)
    total = np.zeros((n, h, w))
    count = np.zeros((h, w))
    for top in tops:
        for left in lefts:
            covered = x.copy()
            covered[:, top:top + window, left:left + window, :] = baseline
            drop = clean - _scores(model, covered, output, training, batch_size)[rows, targets]
            total[:, top:top + window, left:left + window] += drop[:, None, None]
            count[top:top + window, left:left + window] += 1
    return (total / count).astype(np.float32)
