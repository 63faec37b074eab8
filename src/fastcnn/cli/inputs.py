"""What the commands share: an image or an array read as a batch, and a model file that takes
images."""


def load_inputs(path, input_shape, invert):
    """A batch (N, H, W, C) from a .npy array or an image file, scaled like the training data."""
    import numpy as np
    h, w, c = input_shape
    if path.lower().endswith(".npy"):
        arr = np.load(path, allow_pickle=False)
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        arr = np.asarray(arr, dtype=np.float32)
        if c == 1 and arr.shape[-1] != 1 and arr.shape[-2:] == (h, w):
            arr = arr[..., None]
        if arr.shape == (h, w, c):
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[1:] != (h, w, c):
            raise ValueError(f"{path}: expected an array of shape ({h}, {w}, {c}) or "
                             f"(N, {h}, {w}, {c}), got {arr.shape}")
        return arr
    try:
        from PIL import Image
    except ImportError:
        raise ValueError(f"{path}: reading images needs Pillow (pip install pillow); "
                         f".npy arrays work without it") from None
    try:
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB")
            if im.size != (w, h):
                im = im.resize((w, h), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the image: {exc}") from None
    arr = arr.reshape(1, h, w, c)
    if invert == "yes" or (invert == "auto" and c == 1 and arr.mean() > 0.5):
        arr = 1.0 - arr  # dark digit on a light background -> MNIST's light digit on black
    return arr


def image_model(path):
    """(model, (H, W, C)) of a model file that takes images; OSError or ValueError say why
    not."""
    import fastcnn as fc
    model = fc.load(path)
    shape = getattr(model, "input_shape", None)
    if shape is None and hasattr(model, "inputs") and len(model.inputs) == 1:
        shape = model.inputs[0].shape
    if shape is None or len(shape) != 3:
        raise ValueError(f"{path} does not take images (H, W, C)")
    return model, tuple(shape)
