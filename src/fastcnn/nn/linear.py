"""The fully connected layer."""
import numpy as np

import cconv

from .base import Layer, Parameter, check_parameters, kaiming_uniform, positive_int, shape_error

class Linear(Layer):
    """y = x W^T + b over the last axis; weight (out_features, in_features) as PyTorch."""

    _param_names = ("weight", "bias")

    def __init__(self, in_features, out_features, bias=True):
        self.in_features = positive_int("Linear", "in_features", in_features)
        self.out_features = positive_int("Linear", "out_features", out_features)
        check_parameters("Linear", (self.out_features, self.in_features), (self.out_features,))
        self.weight = Parameter(kaiming_uniform((self.out_features, self.in_features), self.in_features))
        self.bias = Parameter(kaiming_uniform((self.out_features,), self.in_features)) if bias else None
        self._x = None

    def forward(self, x, activation=None):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise shape_error(self, f"(N, {self.in_features})", x)
        if x.shape[0] == 0:
            raise ValueError(f"Linear: empty input of shape {x.shape}")
        self._x = x
        return cconv.linear(x, self.weight.data, None if self.bias is None else self.bias.data,
                            activation=activation)

    def backward(self, dy):
        return cconv.linear_backward_data(self.backward_params(dy), self.weight.data)

    def backward_params(self, dy):
        """The parameter gradients only (the model's first layer needs no input gradient)."""
        dy = np.ascontiguousarray(dy, dtype=np.float32)
        if self.weight.requires_grad:
            self.weight.accumulate(cconv.linear_backward_weight(self._x, dy))
        if self.bias is not None and self.bias.requires_grad:
            self.bias.accumulate(cconv.bias_backward(dy))
        return dy

    def get_config(self):
        return dict(in_features=self.in_features, out_features=self.out_features,
                    bias=self.bias is not None)

    def output_shape(self, shape):
        if tuple(shape) != (self.in_features,):
            raise ValueError(f"Linear: expected input of shape ({self.in_features},) per sample, "
                             f"got {tuple(shape)}")
        return (self.out_features,)

    def flops(self, shape):
        return 2 * self.in_features * self.out_features


