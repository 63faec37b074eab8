"""Layers that move or resample data: Flatten, ZeroPad2d, Upsample."""
import numpy as np

import cconv

from .base import Layer, shape_error

class Flatten(Layer):
    """(N, H, W, C) -> (N, C*H*W) in (C, H, W) order, as PyTorch flattens NCHW, so that the
    weights of a following Linear layer are PyTorch's. A 2-D input passes through."""

    def __init__(self, start_dim=1, end_dim=-1):
        if (start_dim, end_dim) != (1, -1):
            raise ValueError("Flatten: only start_dim=1, end_dim=-1 is supported")
        self._shape = None

    def forward(self, x):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim < 2:
            raise shape_error(self, "(N, H, W, C) or (N, features)", x)
        self._shape = x.shape
        if x.ndim == 2:
            return np.ascontiguousarray(x)
        channels_first = (0, x.ndim - 1) + tuple(range(1, x.ndim - 1))
        return np.ascontiguousarray(x.transpose(channels_first)).reshape(x.shape[0], -1)

    def backward(self, dy):
        shape = self._shape
        if len(shape) == 2:
            return dy
        moved = (shape[0], shape[-1]) + tuple(shape[1:-1])
        channels_last = (0,) + tuple(range(2, len(shape))) + (1,)
        return np.ascontiguousarray(np.reshape(dy, moved).transpose(channels_last))

    def output_shape(self, shape):
        return (int(np.prod(shape)),)




class ZeroPad2d(Layer):
    """Pad (H, W) with zeros: ``padding`` an int or PyTorch's (left, right, top, bottom)."""

    def __init__(self, padding):
        p = (padding,) * 4 if isinstance(padding, int) else tuple(padding)
        if len(p) != 4 or any(not isinstance(v, int) or v < 0 for v in p):
            raise ValueError(f"ZeroPad2d: padding must be an int or (left, right, top, bottom) "
                             f"of ints >= 0, got {padding!r}")
        self.padding = p

    def forward(self, x):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise shape_error(self, "(N, H, W, C) (NHWC)", x)
        left, right, top, bottom = self.padding
        return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))

    def backward(self, dy):
        left, right, top, bottom = self.padding
        h, w = dy.shape[1] - top - bottom, dy.shape[2] - left - right
        return np.ascontiguousarray(dy[:, top:top + h, left:left + w])

    def output_shape(self, shape):
        h, w, c = shape
        left, right, top, bottom = self.padding
        return (h + top + bottom, w + left + right, c)

    def get_config(self):
        return dict(padding=list(self.padding))


class Upsample(Layer):
    """Resize (H, W) by ``scale_factor`` or to ``size``, with ``mode`` 'nearest' or 'bilinear'
    (``align_corners`` as PyTorch's; False by default for bilinear). The output size is
    floor(size * scale_factor); the sampling positions follow PyTorch's for a given output size
    (exactly PyTorch's results for integer scale factors and for explicit sizes)."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None):
        if (size is None) == (scale_factor is None):
            raise ValueError("Upsample: give either size or scale_factor")
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"Upsample: mode must be 'nearest' or 'bilinear', got {mode!r}")
        if mode == "nearest" and align_corners:
            raise ValueError("Upsample: align_corners only applies to mode='bilinear'")
        pair_of = (lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v))
        self.size = None if size is None else tuple(int(v) for v in pair_of(size))
        self.scale_factor = None if scale_factor is None else \
            tuple(float(v) for v in pair_of(scale_factor))
        if (self.size and min(self.size) < 1) or (self.scale_factor and
                                                  min(self.scale_factor) <= 0):
            raise ValueError(f"Upsample: sizes and scale factors must be positive, got "
                             f"size={size!r}, scale_factor={scale_factor!r}")
        self.mode, self.align_corners = mode, bool(align_corners)

    def _out(self, h, w):
        if self.size is not None:
            return self.size
        return (int(h * self.scale_factor[0]), int(w * self.scale_factor[1]))

    def output_shape(self, shape):
        if len(shape) != 3:
            raise ValueError(f"Upsample: expected (H, W, C) per sample, got {tuple(shape)}")
        ho, wo = self._out(shape[0], shape[1])
        if ho < 1 or wo < 1:
            raise ValueError(f"Upsample: the output of {tuple(shape)} would be empty")
        return (ho, wo, shape[2])

    def forward(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise shape_error(self, "(N, H, W, C) (NHWC)", x)
        self._in = x.shape[1:3]
        out = self._out(*self._in)
        if self.mode == "nearest":
            return cconv.upsample_nearest2d(x, out)
        return cconv.upsample_bilinear2d(x, out, align_corners=self.align_corners)

    def backward(self, dy):
        if self.mode == "nearest":
            return cconv.upsample_nearest2d_backward(dy, self._in)
        return cconv.upsample_bilinear2d_backward(dy, self._in, align_corners=self.align_corners)

    def get_config(self):
        return dict(size=None if self.size is None else list(self.size),
                    scale_factor=None if self.scale_factor is None else list(self.scale_factor),
                    mode=self.mode, align_corners=self.align_corners if self.mode == "bilinear"
                    else None)

    def flops(self, shape):
        return int(np.prod(self.output_shape(shape))) * (4 if self.mode == "bilinear" else 1)


class Rescaling(Layer):
    """y = x * scale + offset (Keras'): put it first to feed integer images as they are,
    ``Rescaling(1 / 255)`` for 0..255 pixels. fastcnn never rescales an input by itself."""

    def __init__(self, scale, offset=0.0):
        self.scale, self.offset = float(scale), float(offset)

    def forward(self, x):
        return (np.asarray(x, dtype=np.float32) * np.float32(self.scale)
                + np.float32(self.offset)).astype(np.float32, copy=False)

    def backward(self, dy):
        return np.asarray(dy, dtype=np.float32) * np.float32(self.scale)

    def get_config(self):
        return dict(scale=self.scale, offset=self.offset)

    def flops(self, shape):
        return 2 * int(np.prod(shape))
