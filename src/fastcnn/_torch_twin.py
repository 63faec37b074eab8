"""The PyTorch nn.Sequential twin of a fastcnn model (same layer indices, same state-dict keys).

For the tests and benchmarks that compare with PyTorch; torch is imported only when called.
"""
import numpy as np

import fastcnn as fc


def torch_twin(layer):
    import torch.nn as nn

    class Residual(nn.Module):
        def __init__(self, body, shortcut):
            super().__init__()
            self.body = body
            self.shortcut = shortcut

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    class GlobalAvgPool(nn.Module):  # (N, C, H, W) -> (N, C), as fc.GlobalAvgPool2d
        def forward(self, x):
            return x.mean(dim=(2, 3))

    class SumPool(nn.AvgPool2d):
        def forward(self, x):
            return super().forward(x) * (self.kernel_size[0] * self.kernel_size[1])

    def conv_padding(p):
        return p if isinstance(p, str) else tuple(p)

    def build(m):
        cfg = m.get_config()
        name = type(m).__name__
        if isinstance(m, fc.Sequential):
            return nn.Sequential(*[build(child) for child in m])
        if name == "Residual":
            return Residual(build(m.body), None if m.shortcut is None else build(m.shortcut))
        if name == "Conv2d":
            return nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride,
                             conv_padding(m.padding), m.dilation, m.groups, cfg["bias"])
        if name == "ConvTranspose2d":
            return nn.ConvTranspose2d(m.in_channels, m.out_channels, m.kernel_size, m.stride,
                                      m.padding, m.output_padding, m.groups, cfg["bias"], m.dilation)
        if name == "Linear":
            return nn.Linear(m.in_features, m.out_features, cfg["bias"])
        if name == "MaxPool2d":
            return nn.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode)
        if name == "AvgPool2d":
            return nn.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad)
        if name == "SumPool2d":
            return SumPool(m.kernel_size, m.stride, m.padding, m.ceil_mode, True)
        if name == "BatchNorm2d":
            return nn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        if name == "GlobalAvgPool2d":
            return GlobalAvgPool()
        simple = {"ReLU": nn.ReLU(), "Sigmoid": nn.Sigmoid(), "Tanh": nn.Tanh(),
                  "Flatten": nn.Flatten(), "Softmax": nn.Softmax(dim=1),
                  "Dropout": nn.Dropout(getattr(m, "p", 0.5)),
                  "LeakyReLU": nn.LeakyReLU(getattr(m, "negative_slope", 0.01))}
        return simple[name]

    return build(layer)


def to_nchw(a):
    a = np.asarray(a)
    return a.transpose(0, 3, 1, 2) if a.ndim == 4 else a


def to_nhwc(t):
    a = t.detach().numpy()
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
