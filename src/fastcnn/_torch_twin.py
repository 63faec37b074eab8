"""The PyTorch twin of a fastcnn model: nn.Sequential for a Sequential, a module that runs the
graph for a Model (its layers as submodules by name), with the same state-dict keys.

For the tests and benchmarks that compare with PyTorch; torch is imported only when called.
"""
import numpy as np

import fastcnn as fc


def torch_twin(layer):
    import torch
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

    class Graph(nn.Module):
        """A fastcnn Model in PyTorch: its layers as submodules by name, its calls in order."""

        def __init__(self, model):
            super().__init__()
            cfg = model.get_config()
            self.names = [layer.name for layer in model.layers]
            for layer in model.layers:
                self.add_module(layer.name, build(layer))
            self.calls, self.outputs = cfg["calls"], cfg["outputs"]
            self.several = (not cfg["single_input"], not cfg["single_output"])
            self.merges = [type(layer).__name__ for layer in model.layers]

        def forward(self, *xs):
            made = []

            def tensor(ref):
                node, i = ref
                if node < 0:
                    return xs[-1 - node]
                out = made[node]
                return out[i] if isinstance(out, (list, tuple)) else out

            for call in self.calls:
                args = [tensor(r) for r in call["inputs"]]
                module = getattr(self, self.names[call["layer"]])
                kind = self.merges[call["layer"]]
                if kind == "Add":
                    made.append(sum(args[1:], args[0]))
                elif kind == "Multiply":
                    out = args[0]
                    for a in args[1:]:
                        out = out * a
                    made.append(out)
                elif kind == "Concatenate":
                    made.append(torch.cat(args, 1))
                elif isinstance(module, Graph) and module.several[0]:
                    made.append(module(*args))
                else:
                    made.append(module(args[0]))
            outs = [tensor(r) for r in self.outputs]
            return outs if self.several[1] else outs[0]

    class ChannelsLast(nn.Module):
        """A module that normalises over the last axis, applied to NCHW or NCL input."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.movedim(1, -1)).movedim(-1, 1)

        def _load_from_state_dict(self, state, prefix, *args):
            state.update({prefix + "inner." + k[len(prefix):]: state.pop(k)
                          for k in list(state) if k.startswith(prefix) and
                          not k[len(prefix):].startswith("inner.")})
            super()._load_from_state_dict(state, prefix, *args)

    class DropPath(nn.Module):
        def __init__(self, p):
            super().__init__()
            self.p = p

        def forward(self, x):
            if not self.training or self.p == 0.0:
                return x
            keep = (torch.rand((x.shape[0],) + (1,) * (x.ndim - 1)) >= self.p).to(x.dtype)
            return x * keep / (1.0 - self.p)

    def conv_padding(p):
        return p if isinstance(p, str) else tuple(p)

    def build(m):
        cfg = m.get_config()
        name = type(m).__name__
        if isinstance(m, fc.Sequential):
            return nn.Sequential(*[build(child) for child in m])
        if isinstance(m, fc.Model):
            return Graph(m)
        if name == "Conv1d":
            return nn.Conv1d(m.in_channels, m.out_channels, cfg["kernel_size"], cfg["stride"],
                             cfg["padding"], cfg["dilation"], m.groups, cfg["bias"])
        if name == "BatchNorm1d":
            return nn.BatchNorm1d(m.num_features, m.eps, m.momentum, m.affine,
                                  m.track_running_stats)
        if name == "GroupNorm":
            return nn.GroupNorm(m.num_groups, m.num_channels, m.eps, m.affine)
        if name == "LayerNorm":
            return ChannelsLast(nn.LayerNorm(m.normalized_shape, m.eps, m.affine))
        if name in ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d"):
            return getattr(nn, name)(tuple(m.output_size))
        if name == "Upsample":
            return nn.Upsample(size=m.size, scale_factor=m.scale_factor, mode=m.mode,
                               align_corners=m.align_corners if m.mode == "bilinear" else None)
        if name == "ZeroPad2d":
            return nn.ZeroPad2d(tuple(m.padding))
        if name == "DropPath":
            return DropPath(m.p)
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
                  "ReLU6": nn.ReLU6(), "Hardswish": nn.Hardswish(),
                  "Hardsigmoid": nn.Hardsigmoid(), "SiLU": nn.SiLU(), "Identity": nn.Identity(),
                  "GELU": nn.GELU(approximate=getattr(m, "approximate", "none")),
                  "Dropout2d": nn.Dropout2d(getattr(m, "p", 0.5)),
                  "Add": nn.Identity(), "Multiply": nn.Identity(), "Concatenate": nn.Identity(),
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
