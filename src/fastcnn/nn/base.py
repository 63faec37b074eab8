"""What every layer shares: the Layer base class, Parameter, the seeded generator, evaluation
mode per thread, and the input checks that layers use.

Activations are NHWC float32; parameters are numpy float32 arrays in PyTorch order, so that a
state dict moves between fastcnn and a PyTorch model of the same architecture unchanged.
Every layer keeps what its backward needs from its forward, and ``backward(dy)`` adds the
parameter gradients into ``.grad`` and returns ``dx``.

Random initialisation (Kaiming-uniform with a=sqrt(5), as PyTorch) and dropout masks draw from
one seeded generator: call :func:`manual_seed` for reproducible runs (the default seed is 0, so
a fresh process is reproducible too).

Threads: a forward pass keeps no state between its steps, so several threads may run the same
model at once. :func:`inference_mode` (what ``predict`` and ``evaluate`` use) switches layers to
evaluation behaviour for the calling thread only, without changing the model's mode.
"""
import collections
import contextlib
import functools
import math
import numbers
import threading

import numpy as np

import cconv

from .symbolic import SymbolicTensor, call_symbolic
from cconv._validation import check_workspace, nbytes_of

_generator = np.random.default_rng(0)
_local = threading.local()


@contextlib.contextmanager
def inference_mode(backward=False):
    """Within this block, every layer behaves as in evaluation mode (batch-norm running
    statistics, no dropout) in the calling thread, whatever its ``training`` flag; other threads
    and the model's own mode are unaffected. ``Sequential.predict`` and ``evaluate`` use it.

    ``backward=True``: the same outputs, computed so that a backward pass can follow: models run
    layer by layer instead of their prepared eval program (no batch norm folded into the
    convolutions). Explanations and attacks differentiate eval-mode models this way."""
    previous = (getattr(_local, "inference", False), getattr(_local, "keep_backward", False))
    _local.inference, _local.keep_backward = True, bool(backward)
    try:
        yield
    finally:
        _local.inference, _local.keep_backward = previous


def backward_kept():
    """Whether this thread is inside ``inference_mode(backward=True)``."""
    return getattr(_local, "keep_backward", False)


def positive_int(layer, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")
    return int(value)


def manual_seed(seed):
    """Seed the generator behind weight initialisation and dropout (like ``torch.manual_seed``)."""
    global _generator
    _generator = np.random.default_rng(int(seed))
    return _generator


def rng():
    return _generator


class Parameter:
    """A trainable array: ``data`` (float32, PyTorch order) and ``grad`` (None until backward).

    ``requires_grad=False`` freezes it: the optimizer leaves it alone and layers skip computing
    its gradient (a frozen convolution computes only its input gradient, or nothing at all
    when no layer before it trains).
    """

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data, requires_grad=True):
        self.data = np.ascontiguousarray(data, dtype=np.float32)
        self.grad = None
        self.requires_grad = bool(requires_grad)

    @property
    def shape(self):
        return self.data.shape

    @property
    def size(self):
        return self.data.size

    def accumulate(self, g):
        """grad += g (grad is None after zero_grad: then it simply becomes g)."""
        if self.grad is None:
            self.grad = g
        else:
            self.grad = self.grad + g

    def __repr__(self):
        frozen = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={self.data.shape}{frozen})"


# Counts the in-place updates of parameter arrays (optimizer steps): what eval mode prepares
# from parameters (folded, packed convolution weights) is made again when it changes.
_updates = 0


def parameters_updated():
    """Record that parameter arrays were changed in place (optimizers call this)."""
    global _updates
    _updates += 1


def parameter_updates():
    """How many in-place updates there have been: a prepared copy older than this is stale."""
    return _updates


def _uniform(shape, bound):
    return rng().uniform(-bound, bound, size=shape).astype(np.float32)


def check_parameters(layer, *shapes):
    """Refuse parameters that would not fit the memory limit, before allocating them."""
    total = sum(nbytes_of(s) for s in shapes)
    check_workspace(layer, 3 * total, f"its parameters {', '.join(str(tuple(s)) for s in shapes)}")


def kaiming_uniform(shape, fan_in):
    # PyTorch: kaiming_uniform_(w, a=sqrt(5)) -> bound = sqrt(6 / ((1 + a^2) fan_in)) = 1/sqrt(fan_in);
    # the bias is uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) too.
    return _uniform(shape, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0)


def shape_error(layer, expected, x):
    return ValueError(f"{type(layer).__name__}: expected input of shape {expected}, "
                      f"got {tuple(np.shape(x))}")


def hwc(layer, shape, channels=None):
    """One sample's (H, W, C) shape, with ``channels`` channels (None: any)."""
    if len(shape) != 3 or (channels is not None and shape[2] != channels):
        raise ValueError(f"{type(layer).__name__}: expected input of shape (H, W, "
                         f"{channels if channels is not None else 'C'}) per sample, got {tuple(shape)}")
    return tuple(shape)


def check_name(layer, name):
    """A layer name usable in state-dict keys: a non-empty string without dots."""
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"{layer}: name must be a non-empty string without '.', got {name!r}")
    return name


def check_nhwc(layer, x, channels):
    """NHWC input with ``channels`` channels (None: any), as contiguous float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    expected = f"(N, H, W, {channels if channels is not None else 'C'}) (NHWC)"
    if x.ndim != 4 or (channels is not None and x.shape[3] != channels):
        raise shape_error(layer, expected, x)
    if 0 in x.shape:
        raise ValueError(f"{type(layer).__name__}: empty input of shape {x.shape}")
    return x


def _no_arguments(self):
    """The constructor of a layer without arguments (ReLU, Add...)."""


IncompatibleKeys = collections.namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Layer:
    """Base class: parameters, buffers, children, train/eval, state dicts, configs.

    A subclass lists its parameter attributes in ``_param_names`` and its non-trainable state in
    ``_buffer_names``; containers override :meth:`named_children`. Every constructor also takes
    ``name=`` (the layer's name in a graph model and its state-dict keys).

    Called on arrays, a layer runs :meth:`forward`; called on symbolic tensors (from
    :func:`fastcnn.Input`), it adds itself to a graph and returns symbolic outputs.
    """

    _param_names = ()
    _buffer_names = ()
    _training = True
    name = None

    def __init_subclass__(cls, **kwargs):
        # Every constructor takes name= (Keras): it is taken here, so that each layer's own
        # __init__ lists only its real arguments.
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            if cls.__init__ is not object.__init__:
                return               # inherits a constructor that takes name= already
            init = _no_arguments
        if getattr(init, "_takes_name", False):
            return

        @functools.wraps(init)
        def __init__(self, *args, name=None, **kw):
            init(self, *args, **kw)
            if name is not None:
                self.name = check_name(type(self).__name__, name)
        __init__._takes_name = True
        cls.__init__ = __init__

    @property
    def training(self):
        """Training mode (set by :meth:`train` and :meth:`eval`); False in this thread inside
        :func:`inference_mode`."""
        return self._training and not getattr(_local, "inference", False)

    @training.setter
    def training(self, mode):
        self._training = bool(mode)

    def __call__(self, x):
        if isinstance(x, SymbolicTensor) or (isinstance(x, (list, tuple)) and x and
                                             all(isinstance(t, SymbolicTensor) for t in x)):
            return call_symbolic(self, x)
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def requires_grad_(self, requires_grad=True):
        """Freeze (False) or unfreeze every parameter of this layer and its children, as
        PyTorch's ``module.requires_grad_``; returns the layer."""
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    # --- structure ---------------------------------------------------------------------------
    def named_children(self):
        return []

    def named_parameters(self, prefix=""):
        for name in self._param_names:
            p = getattr(self, name)
            if p is not None:
                yield prefix + name, p
        for cname, child in self.named_children():
            yield from child.named_parameters(f"{prefix}{cname}.")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        for name in self._buffer_names:
            b = getattr(self, name)
            if b is not None:
                yield prefix + name, b
        for cname, child in self.named_children():
            yield from child.named_buffers(f"{prefix}{cname}.")

    def num_parameters(self):
        return int(sum(p.size for p in self.parameters()))

    def train(self, mode=True):
        self.training = bool(mode)
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # --- state dict (PyTorch keys) -------------------------------------------------------------
    def _state_items(self, prefix=""):
        """(key, owner, attribute, is_parameter) in PyTorch's state-dict order."""
        for name in self._param_names:
            if getattr(self, name) is not None:
                yield prefix + name, self, name, True
        for name in self._buffer_names:
            if getattr(self, name) is not None:
                yield prefix + name, self, name, False
        for cname, child in self.named_children():
            yield from child._state_items(f"{prefix}{cname}.")

    def state_dict(self):
        """An ordered dict of copies of every parameter and buffer, with PyTorch's keys."""
        out = {}
        for key, owner, name, is_param in self._state_items():
            value = getattr(owner, name)
            out[key] = (value.data if is_param else value).copy()
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays (numpy, or torch tensors) into the parameters and buffers, by key.

        Shapes must match exactly. With ``strict`` (the default) missing or unexpected keys are a
        ``ValueError``, as in PyTorch; with ``strict=False`` the matching keys are loaded. Returns
        ``(missing_keys, unexpected_keys)`` as PyTorch does (fine-tuning: load a backbone's
        weights into a model with a new head and see what was left out).
        """
        items = {key: (owner, name, is_param) for key, owner, name, is_param in self._state_items()}
        missing = [k for k in items if k not in state_dict]
        unexpected = [k for k in state_dict if k not in items]
        if strict and (missing or unexpected):
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for key, (owner, name, is_param) in items.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            if hasattr(value, "detach"):  # a torch tensor
                value = value.detach().cpu().numpy()
            value = np.asarray(value)
            if value.dtype.kind not in "biuf":
                raise ValueError(f"load_state_dict: {key} must be a numeric array, got dtype "
                                 f"{value.dtype}")
            current = getattr(owner, name)
            target = current.data if is_param else current
            if value.shape != target.shape:
                raise ValueError(f"load_state_dict: {key} has shape {target.shape} in "
                                 f"{type(owner).__name__}, got {value.shape}")
            if is_param:
                if not np.isfinite(value).all():
                    raise ValueError(f"load_state_dict: {key} contains NaN or Inf")
                current.data = np.array(value, dtype=np.float32, order="C")
            else:
                setattr(owner, name, np.array(value, dtype=target.dtype, order="C"))
        return IncompatibleKeys(missing, unexpected)

    # --- description -----------------------------------------------------------------------------
    def get_config(self):
        """Constructor arguments as JSON-friendly values (used by fastcnn.save)."""
        return {}

    @classmethod
    def from_config(cls, config):
        """The layer that :meth:`get_config` described."""
        return cls(**config)

    def output_shape(self, shape):
        """Output shape of one sample given its input shape (no batch axis)."""
        return tuple(shape)

    def flops(self, shape):
        """Forward floating-point operations for one sample of input ``shape``."""
        return 0

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


