"""Unpickling that runs no code from the file.

A pickle can call only what ``find_class`` hands it, so an allow-list of harmless stand-ins is
the whole defence: :class:`AllowListUnpickler` refuses every other global. :func:`check_opcodes`
reads every length field against the data first, so that no length can make the unpickler
allocate more than the pickle holds. The stand-ins here
build plain data and numeric numpy arrays (checked against their declared shape before any
array exists); PyTorch checkpoints add their own (:mod:`fastcnn.io.state_dict_files`).
"""
import io
import math
import pickle
import pickletools

import numpy as np

# What a damaged or crafted pickle can raise while it is read; callers turn these into a
# ValueError that names the file.
UNPICKLING_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                     IndexError, KeyError, OverflowError, MemoryError, RecursionError)


def check_opcodes(data):
    """Walk the opcodes of ``data`` without building anything: a length field larger than what
    remains (the C unpickler allocates a bytearray of the declared size before reading it) or
    an unknown opcode is an UnpicklingError."""
    try:
        for _ in pickletools.genops(data):
            pass
    except ValueError as exc:
        raise pickle.UnpicklingError(f"bad opcode stream: {exc}") from None


class AllowListUnpickler(pickle.Unpickler):
    """An unpickler whose globals come from ``allowed`` ({(module, name): object}) only;
    ``what`` says in the refusal what the file may hold."""

    def __init__(self, file, allowed, what, **kwargs):
        super().__init__(file, **kwargs)
        self._allowed = allowed
        self._what = what

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only {self._what} "
                                         f"are allowed") from None


# --- numpy arrays ------------------------------------------------------------------------------
_ALLOWED_DTYPES = {"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8", "b1"}


class ArrayStub:
    """Stands in for numpy.ndarray during unpickling; holds the verified array once built."""

    def __init__(self, shape=(0,), dtype=None):
        self.array = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("unexpected ndarray state")
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, DtypeStub) or dtype.dtype is None:
            raise pickle.UnpicklingError("ndarray with an unsupported dtype")
        if not (isinstance(shape, tuple) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise pickle.UnpicklingError(f"bad ndarray shape {shape!r}")
        if isinstance(raw, str):  # python 2 str read with encoding='latin1'
            raw = raw.encode("latin1")
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError("ndarray data is not raw bytes (object arrays are "
                                         "refused)")
        count = math.prod(shape)
        if len(raw) != count * dtype.dtype.itemsize:
            raise pickle.UnpicklingError(f"ndarray of shape {shape} has {len(raw)} bytes of data")
        arr = np.frombuffer(raw, dtype.dtype).copy()
        self.array = arr.reshape(shape, order="F" if fortran else "C")


class DtypeStub:
    """Stands in for numpy.dtype: only plain numeric dtypes are accepted."""

    def __init__(self, name, align=False, copy=False):
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        if not isinstance(name, str) or name.lstrip("<>|=") not in _ALLOWED_DTYPES:
            raise pickle.UnpicklingError(f"dtype {name!r} is not allowed")
        self.name = name.lstrip("<>|=")
        self.dtype = np.dtype(self.name)

    def __setstate__(self, state):
        # (version, byte order, subarray, names, fields, elsize, alignment, flags)
        if not (isinstance(state, tuple) and len(state) >= 2):
            raise pickle.UnpicklingError("unexpected dtype state")
        if any(v is not None for v in state[2:5]):
            raise pickle.UnpicklingError("structured or sub-array dtypes are not allowed")
        order = state[1]
        if isinstance(order, bytes):
            order = order.decode("ascii")
        if order not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"bad byte order {order!r}")
        self.dtype = np.dtype(self.name).newbyteorder(order if order != "|" else "=")


def _reconstruct(cls, shape, dtype_code):
    if cls is not ArrayStub:
        raise pickle.UnpicklingError("ndarray reconstruction of another class is not allowed")
    return ArrayStub()


def _frombuffer(buf, dtype, shape, order):
    """numpy's pickle-protocol-5 path: an array from an in-band buffer."""
    stub = ArrayStub()
    stub.__setstate__((1, tuple(shape), dtype, order == "F", bytes(buf)))
    return stub


def _scalar(dtype, raw=None):
    """numpy.float64(...) and friends: one value of a plain numeric dtype, as a python number."""
    if isinstance(raw, str):
        raw = raw.encode("latin1")
    if not isinstance(dtype, DtypeStub) or not isinstance(raw, bytes) \
            or len(raw) != dtype.dtype.itemsize:
        raise pickle.UnpicklingError("bad numpy scalar")
    return np.frombuffer(raw, dtype.dtype)[0].item()


def _codecs_encode(text, encoding="utf-8"):
    """How python 3 writes bytes at pickle protocol 2: _codecs.encode(text, 'latin1')."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("only latin1 text-to-bytes encoding is allowed")
    return text.encode("latin1")


PLAIN_GLOBALS = {("_codecs", "encode"): _codecs_encode}

NUMPY_GLOBALS = {
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): ArrayStub,
    ("numpy", "dtype"): DtypeStub,
}

_DATA_GLOBALS = {**PLAIN_GLOBALS, **NUMPY_GLOBALS}


def materialise(obj, memo=None):
    """Replace the array stubs by their arrays. Shared objects are visited once (a pickle can
    share one list at every level of a deep structure: copying it each time would take
    exponential time); a cycle or a structure too deep is a RecursionError, refused by the
    caller."""
    if memo is None:
        memo = {}
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, ArrayStub):
        if obj.array is None:
            raise pickle.UnpicklingError("incomplete ndarray")
        return obj.array
    if isinstance(obj, DtypeStub):
        raise pickle.UnpicklingError("unexpected dtype object")
    if isinstance(obj, dict):
        out = memo[id(obj)] = {}
        out.update((materialise(k, memo), materialise(v, memo)) for k, v in obj.items())
        return out
    if isinstance(obj, list):
        out = memo[id(obj)] = []
        out.extend(materialise(v, memo) for v in obj)
        return out
    if isinstance(obj, tuple):
        out = memo[id(obj)] = tuple(materialise(v, memo) for v in obj)
        return out
    return obj


def safe_unpickle(data):
    """Unpickle ``data`` (bytes) allowing plain python data and numeric numpy arrays only.

    Raises ValueError for anything else (a class, a function, an object array).
    """
    try:
        check_opcodes(data)
        obj = AllowListUnpickler(io.BytesIO(data), _DATA_GLOBALS, "plain data and numpy arrays",
                                 encoding="bytes").load()
        return materialise(obj)
    except UNPICKLING_ERRORS as exc:
        raise ValueError(f"not a plain-data pickle: {type(exc).__name__}: {exc}") from None
