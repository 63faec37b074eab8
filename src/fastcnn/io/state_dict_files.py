"""PyTorch checkpoints (``torch.save`` zip files) and ``.safetensors`` files, read without PyTorch.

:func:`load_state_dict_file` returns ``{key: numpy array}``, ready for ``load_state_dict``:
PyTorch's parameter order is fastcnn's, so no array needs transposing.

Nothing from the file is executed and no size in it is trusted. A checkpoint's pickle goes
through an allow-list unpickler (:mod:`fastcnn.io.safe_pickle`) whose few globals are stand-ins
that record what a tensor would be; arrays are made only after the whole pickle has been read,
each from a storage record whose real size has been checked against every shape, stride and
offset that views it, and against the memory limit (:func:`cconv.set_memory_limit`). A
safetensors header is checked against the file's size before anything is allocated. A
truncated, damaged or crafted file is a ValueError that names it and says what was expected.
"""
import collections
import io as _io
import json
import math
import os
import pickle
import struct
import zipfile
import zlib

import numpy as np

from cconv._validation import check_workspace

from .safe_pickle import (NUMPY_GLOBALS, PLAIN_GLOBALS, UNPICKLING_ERRORS, AllowListUnpickler,
                          check_opcodes)

_OP = "load_state_dict_file"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry; an empty zip
# torch.save before PyTorch 1.6 (and with _use_new_zipfile_serialization=False): a pickle of
# this magic number, then more pickles and raw storages.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_MAX_SAFETENSORS_HEADER = 100_000_000


def load_state_dict_file(path):
    """The tensors of a PyTorch checkpoint or a safetensors file, as ``{key: numpy array}``.

    ``path``: a file name (str or PathLike), or the file's content as bytes. The format is
    told from the content: a ``torch.save`` zip archive (PyTorch >= 1.6) or a ``.safetensors``
    file. float32, float16 and bfloat16 tensors come back as float32 (float16 and bfloat16
    widen exactly), float64 as float64, integer and bool tensors (``num_batches_tracked``) as
    numpy integers and bools; 0-d tensors as 0-d arrays.

    A checkpoint must hold a dict of tensors, or a dict whose ``"state_dict"`` or ``"model"``
    entry is one (the usual ``{"epoch": ..., "state_dict": ...}`` training checkpoint): that
    dict is returned, and the other entries (numbers, strings, lists, optimizer state) are read
    as data and left out. A whole pickled ``nn.Module``, any other class or function, PyTorch's
    legacy pre-1.6 format, and damaged files are refused with a ValueError::

        model = fc.models.resnet18()
        model.load_state_dict(fc.load_state_dict_file("resnet18.pth"))
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        name, f = "<bytes>", _io.BytesIO(bytes(path))
    else:
        name = os.fspath(path)
        f = open(name, "rb")
    with f:
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        head = f.read(512)
        f.seek(0)
        if head.startswith(_ZIP_MAGIC):
            return _read_torch_zip(f, name)
        if head[8:9] == b"{" or str(name).endswith(".safetensors"):
            return _read_safetensors(f, name, size)
        if head.startswith(_LEGACY_MAGIC) or head[257:262] == b"ustar":
            raise ValueError(f"{name}: a PyTorch checkpoint in the legacy format (before PyTorch "
                             f"1.6), which is not read: load it in PyTorch and save it again "
                             f"with torch.save (zip format, the default since 1.6) or as "
                             f"safetensors")
        what = "an empty file" if not head else (
            "a plain pickle, not a torch.save zip archive" if head[:1] == b"\x80"
            else f"a file starting with {head[:8]!r}")
        raise ValueError(f"{name}: not a PyTorch checkpoint (a zip archive, starting with "
                         f"b'PK\\x03\\x04') nor a safetensors file (an 8-byte header length, "
                         f"then a JSON header starting with '{{'): {what}")


# ---------------------------------------------------------------------------------------------
# torch.save zip archives: <name>/data.pkl, <name>/data/<storage key>, <name>/byteorder, ...
# ---------------------------------------------------------------------------------------------
class _Record:
    """Base of the stand-ins. The allow-listed ones are shared by every load: BUILD (which
    would set attributes) is refused, so one crafted file cannot change how the next is read."""

    __slots__ = ()

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"unexpected state for a {type(self).__name__[1:]}")


class _DType(_Record):
    """A torch dtype (``torch.float32``): the numpy dtype of its bytes (little-endian) and how
    the loaded array is finished (bfloat16 and float16 widen to float32, bool is normalised)."""

    __slots__ = ("name", "raw", "kind")

    def __init__(self, name, raw, kind="plain"):
        self.name, self.raw, self.kind = name, np.dtype(raw), kind

    def __repr__(self):
        return f"torch.{self.name}"


_DTYPES = {d.name: d for d in (
    _DType("float32", "<f4"), _DType("float64", "<f8"), _DType("float16", "<f2", "half"),
    _DType("bfloat16", "<u2", "bfloat16"), _DType("int64", "<i8"), _DType("int32", "<i4"),
    _DType("int16", "<i2"), _DType("int8", "i1"), _DType("uint8", "u1"),
    _DType("bool", "u1", "bool"), _DType("uint16", "<u2"), _DType("uint32", "<u4"),
    _DType("uint64", "<u8"))}
_DTYPE_ALIASES = {"float": "float32", "double": "float64", "half": "float16", "long": "int64",
                  "int": "int32", "short": "int16"}


class _StorageType(_Record):
    """A storage class (``torch.FloatStorage``) as named in a storage record. An instance, not
    a class: a pickle cannot call it or make objects of it."""

    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype    # dtype None: untyped bytes


_STORAGE_TYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool"}


class _Storage(_Record):
    """One storage record of the archive: its key, element dtype and element count."""

    __slots__ = ("key", "dtype", "numel")

    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel

    @property
    def nbytes(self):
        return self.numel * (1 if self.dtype is None else self.dtype.raw.itemsize)


class _Tensor(_Record):
    """What a tensor would be: a view (offset, size, stride, in elements) of a storage."""

    __slots__ = ("storage", "offset", "size", "stride", "dtype")

    def __init__(self, storage, offset, size, stride, dtype):
        self.storage, self.offset, self.size, self.stride, self.dtype = \
            storage, offset, size, stride, dtype


class _StateDict(collections.OrderedDict):
    """OrderedDict as torch pickles a state dict: its BUILD state (``_metadata``, the modules'
    versions) is dropped, so a pickle cannot set attributes on it."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("unexpected state for an OrderedDict")


def _index(value, what):
    if type(value) is not int or value < 0:
        raise pickle.UnpicklingError(f"tensor {what} {value!r} is not a non-negative integer")
    return value


def _dims(value, what):
    if not isinstance(value, (tuple, list)):
        raise pickle.UnpicklingError(f"tensor {what} {value!r} is not a tuple")
    return tuple(_index(v, what) for v in value)


def _tensor(storage, offset, size, stride, dtype=None):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor must be rebuilt from a storage record")
    if dtype is None:
        if storage.dtype is None:
            raise pickle.UnpicklingError("a tensor of an untyped storage without a dtype")
        dtype = storage.dtype
    elif not isinstance(dtype, _DType):
        raise pickle.UnpicklingError(f"tensor dtype {dtype!r} is not a torch dtype")
    elif storage.dtype is not None and storage.dtype is not dtype:
        raise pickle.UnpicklingError(f"a {dtype} tensor of a {storage.dtype} storage")
    size, stride = _dims(size, "size"), _dims(stride, "stride")
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"tensor size {size} and stride {stride} differ in length")
    return _Tensor(storage, _index(offset, "storage offset"), size, stride, dtype)


# The rebuild functions torch pickles tensors and parameters with; requires_grad, backward
# hooks and python attributes do not matter to an array.
def _rebuild_tensor(storage, storage_offset, size, stride):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    """Tensors of the dtypes that have no typed storage class (uint16...): untyped bytes."""
    return _tensor(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None, state=None):
    if not isinstance(data, _Tensor):
        raise pickle.UnpicklingError("a parameter must be rebuilt from a tensor")
    return data


def _size(dims=()):
    return _dims(dims, "size")


def _device(kind="cpu", index=None):
    return str(kind) if index is None else f"{kind}:{index}"


_TORCH_GLOBALS = {
    **PLAIN_GLOBALS, **NUMPY_GLOBALS,
    ("collections", "OrderedDict"): _StateDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): _size,
    ("torch", "device"): _device,
    ("torch", "UntypedStorage"): _StorageType("UntypedStorage", None),
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", None),
    **{("torch", n): _StorageType(n, _DTYPES[d]) for n, d in _STORAGE_TYPES.items()},
    **{("torch", n): d for n, d in _DTYPES.items()},
    **{("torch", a): _DTYPES[n] for a, n in _DTYPE_ALIASES.items()},
}


class _CheckpointUnpickler(AllowListUnpickler):
    """Reads data.pkl: tensors become :class:`_Tensor` records of :class:`_Storage` records."""

    def __init__(self, file):
        super().__init__(file, _TORCH_GLOBALS, "tensors, numpy arrays and plain data")
        self.storages = {}

    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except pickle.UnpicklingError as exc:
            if module == "__main__" or module.startswith("torch.nn"):
                raise pickle.UnpicklingError(
                    f"{exc} (the file pickles a model object, as torch.save(model) does: save "
                    f"model.state_dict() instead)") from None
            if module.startswith("__torch__"):
                raise pickle.UnpicklingError(
                    f"{exc} (a TorchScript archive, as torch.jit.save writes: save "
                    f"model.state_dict() with torch.save instead)") from None
            if module.startswith("torch"):
                raise pickle.UnpicklingError(
                    f"{exc} (a tensor type or object that this reader does not support)") from None
            raise

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, location, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) \
                or not isinstance(location, str) or type(numel) is not int or numel < 0:
            raise pickle.UnpicklingError(f"bad storage record {pid!r:.80}")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key, storage_type.dtype, numel)
        elif storage.dtype is not storage_type.dtype or storage.numel != numel:
            raise pickle.UnpicklingError(f"storage {key} is recorded with two types or sizes")
        return storage


def _zip_member(z, member, name, expected=None, most=None):
    """A member's bytes, its declared size checked first (against ``expected``, ``most`` and
    the memory limit: zipfile never returns more than the declared size)."""
    try:
        info = z.getinfo(member)
    except KeyError:
        raise ValueError(f"{name}: the archive has no {member}: a damaged PyTorch checkpoint "
                         f"(expected the records torch.save writes)") from None
    if expected is not None and info.file_size != expected:
        raise ValueError(f"{name}: {member} holds {info.file_size} bytes, its tensors' record "
                         f"says {expected}")
    if most is not None and info.file_size > most:
        raise ValueError(f"{name}: {member} holds {info.file_size} bytes, expected at most {most}")
    check_workspace(_OP, info.file_size, f"{member} of {name}")
    try:
        with z.open(info) as f:
            data = f.read()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
            RuntimeError, zlib.error, struct.error) as exc:   # RuntimeError: encrypted
        raise ValueError(f"{name}: {member} cannot be read (truncated or damaged archive): "
                         f"{exc}") from None
    if len(data) != info.file_size:
        raise ValueError(f"{name}: {member} is truncated ({len(data)} of {info.file_size} bytes)")
    return data


def _read_torch_zip(f, name):
    try:
        z = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
            struct.error) as exc:
        raise ValueError(f"{name}: a zip archive that cannot be read (truncated or damaged?): "
                         f"{exc}; expected a PyTorch checkpoint written by torch.save") from None
    with z:
        pickles = [n for n in z.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError(f"{name}: a zip archive that is not a PyTorch checkpoint: expected "
                             f"one <archive>/data.pkl record, found {len(pickles)}")
        prefix = pickles[0][:-len("data.pkl")]
        byteorder = "little"   # what PyTorch assumes when the record is missing (older files)
        if prefix + "byteorder" in z.namelist():
            byteorder = _zip_member(z, prefix + "byteorder", name, most=16).decode(
                "ascii", "replace")
            if byteorder not in ("little", "big"):
                raise ValueError(f"{name}: byteorder record {byteorder[:20]!r}: expected "
                                 f"'little' or 'big'")
        data = _zip_member(z, pickles[0], name)
        try:
            check_opcodes(data)
            obj = _CheckpointUnpickler(_io.BytesIO(data)).load()
        except UNPICKLING_ERRORS as exc:
            raise ValueError(f"{name}: {pickles[0]} is not a state-dict pickle: "
                             f"{type(exc).__name__}: {exc}") from None
        state = _select_state_dict(obj, name)
        return _Materialiser(z, prefix, byteorder, name).arrays(state)


def _is_state_dict(obj):
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, _Tensor) for k, v in obj.items())


def _select_state_dict(obj, name):
    if _is_state_dict(obj):
        return obj
    if isinstance(obj, dict):
        for entry in ("state_dict", "model"):
            if _is_state_dict(obj.get(entry)):
                return obj[entry]
        tensors = [k for k, v in obj.items() if isinstance(v, _Tensor)]
        others = [k for k, v in obj.items() if not isinstance(v, _Tensor)]
        found = (f"a dict mixing tensors ({len(tensors)}) with other entries "
                 f"({', '.join(repr(k) for k in others[:5])})" if tensors else
                 f"a dict without tensors (keys {', '.join(repr(k) for k in list(obj)[:8])})"
                 if obj else "an empty dict")
    else:
        found = f"a {type(obj).__name__}"
    raise ValueError(f"{name}: holds no state dict: expected a dict of tensors, or a dict whose "
                     f"'state_dict' or 'model' entry is one; found {found}")


class _Materialiser:
    """Turns tensor records into arrays, reading each storage once and dropping it after its
    last tensor (shared storages are common: tied weights, views)."""

    def __init__(self, z, prefix, byteorder, name):
        self.z, self.prefix, self.name = z, prefix, name
        self.order = "<" if byteorder == "little" else ">"
        self.buffers = {}
        self.uses = collections.Counter()

    def arrays(self, state):
        unique = {id(t): t for t in state.values()}.values()
        self.uses.update(t.storage.key for t in unique)
        done = {}
        out = {}
        for key, t in state.items():
            if id(t) not in done:
                done[id(t)] = self.array(key, t)
            out[key] = done[id(t)]
        return out

    def array(self, key, t):
        raw = t.dtype.raw.newbyteorder(self.order) if t.dtype.raw.itemsize > 1 else t.dtype.raw
        count = math.prod(t.size)
        storage = t.storage
        if count:
            # The last element the view touches must lie inside the storage (strides >= 0).
            end = (t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride)) + 1) * raw.itemsize
            if end > storage.nbytes:
                raise ValueError(
                    f"{self.name}: tensor {key!r} of size {list(t.size)}, stride "
                    f"{list(t.stride)} and offset {t.offset} needs {end} bytes of storage "
                    f"{storage.key}, which holds {storage.nbytes}")
        check_workspace(_OP, count * _out_itemsize(raw, t.dtype.kind),
                        f"tensor {key!r} of {self.name}")
        if count == 0:
            view = np.empty(t.size, raw)
        else:
            buf = self.buffers.get(storage.key)
            if buf is None:
                buf = self.buffers[storage.key] = _zip_member(
                    self.z, f"{self.prefix}data/{storage.key}", self.name, storage.nbytes)
            view = np.ndarray(t.size, raw, buffer=buf, offset=t.offset * raw.itemsize,
                              strides=tuple(s * raw.itemsize for s in t.stride))
        self.uses[storage.key] -= 1
        if self.uses[storage.key] == 0:
            self.buffers.pop(storage.key, None)
        return _finish(view, t.dtype.kind)


def _out_itemsize(raw, kind):
    return 4 if kind in ("bfloat16", "half") else raw.itemsize


def _finish(view, kind, copy=True):
    """A native-order C-contiguous array from a view of a file's bytes (a new one unless
    ``copy`` is false and the view is already one)."""
    if kind == "bfloat16":   # bfloat16 is float32's upper half: widening is a shift
        wide = view.astype(np.uint32, order="C")
        np.left_shift(wide, 16, out=wide)
        return wide.view(np.float32)
    if kind == "half":
        return view.astype(np.float32, order="C")
    if kind == "bool":
        return np.not_equal(view, 0, out=np.empty(view.shape, np.bool_))
    return view.astype(view.dtype.newbyteorder("="), order="C", copy=copy)


# ---------------------------------------------------------------------------------------------
# safetensors: u64 little-endian header length, a JSON header, then the tensors' bytes
# ---------------------------------------------------------------------------------------------
_SAFETENSORS_DTYPES = {
    "F32": ("<f4", "plain"), "F16": ("<f2", "half"), "BF16": ("<u2", "bfloat16"),
    "F64": ("<f8", "plain"), "I64": ("<i8", "plain"), "I32": ("<i4", "plain"),
    "I16": ("<i2", "plain"), "I8": ("i1", "plain"), "U8": ("u1", "plain"),
    "U16": ("<u2", "plain"), "U32": ("<u4", "plain"), "U64": ("<u8", "plain"),
    "BOOL": ("u1", "bool")}


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} appears twice")
        out[k] = v
    return out


def _read_safetensors(f, name, size):
    def bad(what):
        return ValueError(f"{name}: not a valid safetensors file: {what}")

    if size < 8:
        raise bad(f"{size} bytes, too short for the 8-byte header length")
    n = int.from_bytes(f.read(8), "little")
    if n > _MAX_SAFETENSORS_HEADER:
        raise bad(f"header length {n} is over the {_MAX_SAFETENSORS_HEADER} bytes allowed")
    if n > size - 8:
        raise bad(f"header length {n} is larger than the file ({size} bytes; truncated?)")
    try:
        header = json.loads(f.read(n).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"the header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise bad(f"the header is a JSON {type(header).__name__}, expected an object")
    data_start, data_len = 8 + n, size - 8 - n
    entries = []
    for key, entry in header.items():
        if key == "__metadata__":
            if not isinstance(entry, dict):
                raise bad("__metadata__ is not an object")
            continue
        if not (isinstance(entry, dict) and {"dtype", "shape", "data_offsets"} <= set(entry)):
            raise bad(f"tensor {key!r}: expected an object with dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _SAFETENSORS_DTYPES:
            raise bad(f"tensor {key!r} has dtype {dtype!r}; expected one of "
                      f"{', '.join(_SAFETENSORS_DTYPES)}")
        if not (isinstance(shape, list)
                and all(type(s) is int and s >= 0 for s in shape)):
            raise bad(f"tensor {key!r}: shape {shape!r} is not a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_len):
            raise bad(f"tensor {key!r}: data_offsets {offsets!r} are not within the "
                      f"{data_len} bytes of data (truncated file?)")
        raw, kind = _SAFETENSORS_DTYPES[dtype]
        nbytes = math.prod(shape) * np.dtype(raw).itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise bad(f"tensor {key!r}: {dtype} of shape {shape} takes {nbytes} bytes, its "
                      f"data_offsets {offsets} span {offsets[1] - offsets[0]}")
        entries.append((offsets[0], offsets[1], key, shape, raw, kind))
    if not entries:
        raise bad("the header lists no tensors")
    previous_end, previous = 0, None
    for begin, end, key, *_ in sorted(e for e in entries if e[1] > e[0]):
        if begin < previous_end:
            raise bad(f"tensors {previous!r} and {key!r} overlap in the data")
        previous_end, previous = end, key
    out = {}
    for begin, end, key, shape, raw, kind in entries:
        check_workspace(_OP, math.prod(shape) * _out_itemsize(np.dtype(raw), kind),
                        f"tensor {key!r} of {name}")
        buf = np.empty(end - begin, np.uint8)
        f.seek(data_start + begin)
        if f.readinto(buf) != end - begin:
            raise bad(f"tensor {key!r}: the file ends inside its data (truncated?)")
        out[key] = _finish(buf.view(raw).reshape(shape), kind, copy=False)
    return out
