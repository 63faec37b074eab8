"""Normalisation layers."""
import math
import numbers

import numpy as np

import cconv

from .. import distributed
from .base import Layer, Parameter, check_nhwc, check_parameters, hwc, positive_int

class BatchNorm2d(Layer):
    """Batch normalisation over (N, H, W) per channel: batch statistics in training, running
    averages (momentum 0.1, unbiased variance, as PyTorch) in evaluation."""

    _param_names = ("weight", "bias")
    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        num_features = positive_int("BatchNorm2d", "num_features", num_features)
        check_parameters("BatchNorm2d", (6, num_features))
        if not (isinstance(eps, numbers.Real) and math.isfinite(eps) and eps > 0):
            raise ValueError(f"BatchNorm2d: eps must be a positive number, got {eps!r}")
        if momentum is not None and not (isinstance(momentum, numbers.Real)
                                         and 0.0 <= momentum <= 1.0):
            raise ValueError(f"BatchNorm2d: momentum must be None or in [0, 1], got {momentum!r}")
        self.num_features, self.eps, self.momentum = num_features, float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        c = self.num_features
        self.weight = Parameter(np.ones(c, np.float32)) if affine else None
        self.bias = Parameter(np.zeros(c, np.float32)) if affine else None
        if track_running_stats:
            self.running_mean = np.zeros(c, np.float32)
            self.running_var = np.ones(c, np.float32)
            self.num_batches_tracked = np.array(0, dtype=np.int64)
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self._ones, self._zeros = np.ones(c, np.float32), np.zeros(c, np.float32)
        self._cache = None

    def _affine(self):
        if self.affine:
            return self.weight.data, self.bias.data
        return self._ones, self._zeros

    def forward(self, x, activation=None, residual=None):
        """``activation='relu'`` fuses a ReLU after the batch norm into its store; the
        backward of such a forward then takes dy of the ReLU's output (the model skips the
        ReLU's own backward: see Sequential). ``residual`` (a Residual's shortcut output) is
        added before the activation in the same pass; the activation's backward then stays
        with the caller, and this layer's backward takes dy of the sum."""
        x = check_nhwc(self, x, self.num_features)
        if residual is not None and residual.shape != x.shape:
            raise ValueError(f"BatchNorm2d: the residual added to its output has shape "
                             f"{residual.shape}, the output {x.shape}")
        w, b = self._affine()
        own_relu = activation is not None and residual is None  # its backward is this layer's
        if self.training or not self.track_running_stats:
            y, mean, var = cconv.batch_norm_forward_train(x, w, b, eps=self.eps,
                                                          activation=activation,
                                                          residual=residual)
            self._cache = (x, mean, var, True, y if own_relu else None)
            if self.training and self.track_running_stats:
                self._update_running(mean, var, x.shape[0] * x.shape[1] * x.shape[2])
            return y
        y = cconv.batch_norm_forward_eval(x, w, b, self.running_mean, self.running_var,
                                          eps=self.eps, activation=activation, residual=residual)
        self._cache = (x, self.running_mean, self.running_var, False, y if own_relu else None)
        return y

    def _update_running(self, mean, var, n):
        self.num_batches_tracked = self.num_batches_tracked + 1
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (n / max(n - 1, 1))
        self.running_mean = ((1 - m) * self.running_mean + m * mean).astype(np.float32)
        self.running_var = ((1 - m) * self.running_var + m * unbiased).astype(np.float32)

    def backward(self, dy):
        x, mean, var, batch_stats, relu_y = self._cache
        dy = np.ascontiguousarray(dy, dtype=np.float32)
        w, _ = self._affine()
        if batch_stats:  # through the fused ReLU, if any, in the same passes
            dx, dw, db = cconv.batch_norm_backward(dy, x, w, mean, var, eps=self.eps, y=relu_y)
        else:
            if relu_y is not None:
                dy = cconv.relu_backward(dy, relu_y)
            # Evaluation mode: a fixed per-channel affine map y = x * scale + shift.
            inv_std = (1.0 / np.sqrt(var.astype(np.float64) + self.eps)).astype(np.float32)
            xhat = (x - mean) * inv_std
            dw, db = cconv.bias_backward(dy * xhat), cconv.bias_backward(dy)
            dx = dy * (w * inv_std)
        if self.affine:
            if self.weight.requires_grad:
                self.weight.accumulate(dw)
            if self.bias.requires_grad:
                self.bias.accumulate(db)
        return dx

    def get_config(self):
        return dict(num_features=self.num_features, eps=self.eps, momentum=self.momentum,
                    affine=self.affine, track_running_stats=self.track_running_stats)

    def output_shape(self, shape):
        return hwc(self, shape, self.num_features)

    def flops(self, shape):
        return 2 * int(np.prod(shape))




class SyncBatchNorm(BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch in data-parallel
    training (PyTorch's SyncBatchNorm): per channel, the sums of x and x^2 are summed across
    ranks in forward, and those of dy and dy * x_hat in backward. Alone (one process, or
    evaluation) it is BatchNorm2d, with the same keys, so either loads the other's weights."""

    synchronizes_ranks = True   # its forward and backward are collective operations

    def forward(self, x, activation=None, residual=None):
        world = distributed.world()
        if world.size == 1 or not self.training or activation is not None or residual is not None:
            return super().forward(x, activation, residual)
        x = check_nhwc(self, x, self.num_features)
        x64 = x.reshape(-1, self.num_features).astype(np.float64)
        sums = world.sum(np.concatenate([x64.sum(0), (x64 * x64).sum(0), [len(x64)]]),
                         f"{describe_sync(self)}: the batch statistics")
        c, count = self.num_features, sums[-1]
        mean = sums[:c] / count
        var = np.maximum(sums[c:2 * c] / count - mean * mean, 0.0)
        inv_std = 1.0 / np.sqrt(var + self.eps)
        w, b = self._affine()
        xhat = (x64 - mean) * inv_std
        y = (xhat * w + b).astype(np.float32).reshape(x.shape)
        self._cache = (x, xhat, inv_std, count)
        if self.track_running_stats:
            self._update_running(mean.astype(np.float32), var.astype(np.float32), int(count))
        return y

    def backward(self, dy):
        world = distributed.world()
        if world.size == 1 or len(self._cache) != 4:
            return super().backward(dy)
        x, xhat, inv_std, count = self._cache
        # The statistics couple the ranks: the gradient is taken of the global batch's loss
        # (this rank's share of it), then given back in the scale of this rank's own mean loss,
        # which is what the rest of backward and the gradient sum assume.
        share = distributed.step_share()
        g = np.ascontiguousarray(dy, dtype=np.float64).reshape(-1, self.num_features) * share
        c = self.num_features
        local = np.concatenate([g.sum(0), (g * xhat).sum(0)])
        sums = world.sum(local, f"{describe_sync(self)}: the gradient statistics")
        w, _ = self._affine()
        dx = (w * inv_std) * (g - sums[:c] / count - xhat * (sums[c:] / count))
        if self.affine:   # this rank's part: the gradient sum across ranks adds the rest
            if self.weight.requires_grad:
                self.weight.accumulate((local[c:] / share).astype(np.float32))
            if self.bias.requires_grad:
                self.bias.accumulate((local[:c] / share).astype(np.float32))
        return (dx / share).astype(np.float32).reshape(dy.shape)


def describe_sync(layer):
    return f"SyncBatchNorm({layer.num_features})"


class BatchNorm1d(BatchNorm2d):
    """Batch normalisation of (N, C) or (N, L, C) input per channel, run by the 2-D kernels."""

    def forward(self, x, activation=None, residual=None):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim not in (2, 3) or x.shape[-1] != self.num_features:
            raise ValueError(f"BatchNorm1d: expected input of shape (N, {self.num_features}) or "
                             f"(N, L, {self.num_features}), got {x.shape}")
        shape = x.shape
        x4 = x.reshape(shape[0], 1, -1, shape[-1])
        r4 = None if residual is None else np.ascontiguousarray(residual).reshape(x4.shape)
        return super().forward(x4, activation, r4).reshape(shape)

    def backward(self, dy):
        x4 = self._cache[0]
        dy = np.ascontiguousarray(dy, dtype=np.float32)
        return super().backward(dy.reshape(x4.shape)).reshape(dy.shape)

    def output_shape(self, shape):
        if len(shape) not in (1, 2) or shape[-1] != self.num_features:
            raise ValueError(f"BatchNorm1d: expected ({self.num_features},) or (L, "
                             f"{self.num_features}) per sample, got {tuple(shape)}")
        return tuple(shape)


class _ChannelGroupNorm(Layer):
    """Normalise each sample over groups of channels (and its pixels): the statistics are
    computed in float64, so no batch or thread count changes them."""

    _param_names = ("weight", "bias")

    def _init_affine(self, name, c, eps, affine):
        if not (isinstance(eps, numbers.Real) and math.isfinite(eps) and eps > 0):
            raise ValueError(f"{name}: eps must be a positive number, got {eps!r}")
        self.eps, self.affine = float(eps), bool(affine)
        self.weight = Parameter(np.ones(c, np.float32)) if affine else None
        self.bias = Parameter(np.zeros(c, np.float32)) if affine else None

    def _normalise(self, x, groups):
        """x (N, ..., C) -> (y, cache) with statistics over axes (1.., C/groups) per group."""
        n, c = x.shape[0], x.shape[-1]
        xg = x.reshape(n, -1, groups, c // groups).astype(np.float64)
        mean = xg.mean(axis=(1, 3), keepdims=True)
        var = xg.var(axis=(1, 3), keepdims=True)
        inv = 1.0 / np.sqrt(var + self.eps)
        xhat = (xg - mean) * inv
        y = xhat.reshape(x.shape)
        if self.affine:
            y = y * self.weight.data + self.bias.data
        self._cache = (xhat, inv, x.shape, groups)
        return y.astype(np.float32)

    def backward(self, dy):
        xhat, inv, shape, groups = self._cache
        n, c = shape[0], shape[-1]
        dy = np.asarray(dy, dtype=np.float64).reshape(shape)
        if self.affine:
            flat_dy = dy.reshape(-1, c)
            flat_xhat = xhat.reshape(-1, c)
            if self.weight.requires_grad:
                self.weight.accumulate((flat_dy * flat_xhat).sum(axis=0).astype(np.float32))
            if self.bias.requires_grad:
                self.bias.accumulate(flat_dy.sum(axis=0).astype(np.float32))
            dy = dy * self.weight.data
        g = dy.reshape(xhat.shape)
        m = xhat.shape[1] * xhat.shape[3]
        dx = inv * (g - g.sum(axis=(1, 3), keepdims=True) / m
                    - xhat * (g * xhat).sum(axis=(1, 3), keepdims=True) / m)
        return dx.reshape(shape).astype(np.float32)

    def flops(self, shape):
        return 7 * int(np.prod(shape))


class GroupNorm(_ChannelGroupNorm):
    """Group normalisation (Wu & He 2018): per sample, over each group of
    ``num_channels // num_groups`` channels and all pixels; PyTorch's arguments."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        self.num_groups = positive_int("GroupNorm", "num_groups", num_groups)
        self.num_channels = positive_int("GroupNorm", "num_channels", num_channels)
        if self.num_channels % self.num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by "
                             f"num_groups ({num_groups})")
        self._init_affine("GroupNorm", self.num_channels, eps, affine)

    def forward(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim < 2 or x.shape[-1] != self.num_channels or x.shape[0] == 0:
            raise ValueError(f"GroupNorm: expected input of shape (N, ..., {self.num_channels}) "
                             f"(channels last), got {x.shape}")
        return self._normalise(x, self.num_groups)

    def get_config(self):
        return dict(num_groups=self.num_groups, num_channels=self.num_channels, eps=self.eps,
                    affine=self.affine)


class LayerNorm(_ChannelGroupNorm):
    """Layer normalisation over the channel axis of each pixel, as ConvNeXt uses it on
    channels-last activations (``normalized_shape`` is the channel count)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        if isinstance(normalized_shape, (tuple, list)):
            if len(normalized_shape) != 1:
                raise ValueError(f"LayerNorm: only normalisation over the channel axis is "
                                 f"supported (normalized_shape=C), got {normalized_shape}")
            normalized_shape = normalized_shape[0]
        self.normalized_shape = positive_int("LayerNorm", "normalized_shape", normalized_shape)
        self._init_affine("LayerNorm", self.normalized_shape, eps, elementwise_affine)

    def forward(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        c = self.normalized_shape
        if x.ndim < 2 or x.shape[-1] != c or x.shape[0] == 0:
            raise ValueError(f"LayerNorm: expected input of shape (..., {c}), got {x.shape}")
        # every pixel is its own group of C channels
        y = self._normalise(x.reshape(-1, 1, c), 1)
        xhat, inv, _, groups = self._cache
        self._cache = (xhat, inv, x.shape, groups, x.reshape(-1, 1, c).shape)
        return y.reshape(x.shape)

    def backward(self, dy):
        xhat, inv, shape, groups, flat = self._cache
        self._cache = (xhat, inv, flat, groups)
        return super().backward(np.asarray(dy).reshape(flat)).reshape(shape)

    def get_config(self):
        return dict(normalized_shape=self.normalized_shape, eps=self.eps,
                    elementwise_affine=self.affine)
