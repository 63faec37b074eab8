"""Save and load models: one zip file holding the architecture as JSON and every array as .npy.

Layout of a ``.fcnn`` file (a zip archive, readable with any zip tool)::

    fastcnn.json                  format tag, version, architecture, loss, optimizer settings
    weights/<state-dict key>.npy  parameters and buffers (PyTorch keys: 0.weight, 3.running_mean)
    optimizer/<key>/<slot>.npy    optimizer state per parameter (momentum, Adam moments, step)

Reading never executes code from the file: nothing is unpickled (``.npy`` members with object
or structured dtypes are refused), the architecture is built from a fixed table of layer
classes, and every size is checked before memory is allocated for it (an array's header against
its data, every member against the memory limit of :func:`cconv.set_memory_limit`). A damaged,
truncated or foreign file raises a ValueError that says what is wrong with it.

Writing is atomic: the file is written to a temporary file in the same folder, flushed to disk
and renamed over the target, so a crash mid-save leaves the previous file intact.

A training checkpoint (``fit(..., checkpoint=path)``) is such a file whose ``fastcnn.json`` also
holds a ``training`` entry: epochs done, history, callbacks' and random generators' states.
"""
import io as _io
import json
import math
import os
import tempfile
import zipfile

import numpy as np

from cconv._validation import check_workspace

from .. import losses as _losses
from .. import optim as _optim
from ..nn.registry import layer_from_config, layer_to_config

FORMAT = "fastcnn-model"
FORMAT_VERSION = 1
_META = "fastcnn.json"
_MAX_META_BYTES = 64 * 2**20     # the JSON description of a model is a few KiB


def _jsonable(obj):
    """JSON-friendly copy of nested dicts/lists of numbers and numpy values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.str}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _from_jsonable(obj):
    if isinstance(obj, dict):
        if set(obj) == {"__ndarray__", "dtype"}:
            dtype = np.dtype(obj["dtype"])
            if dtype.kind not in "biuf":
                raise ValueError(f"array of dtype {dtype} in the training state")
            return np.array(obj["__ndarray__"], dtype=dtype)
        return {k: _from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_jsonable(v) for v in obj]
    return obj


class Checkpoint:
    """Where ``fit(checkpoint=...)`` keeps its training state, with JSON-friendly ``metadata``
    of the caller's (``fastcnn train`` records its options there). A plain path does too."""

    def __init__(self, path, metadata=None):
        self.path = os.fspath(path)
        self.metadata = metadata

    def __fspath__(self):
        return self.path

    def __repr__(self):
        return f"Checkpoint({self.path!r})"


# --- save --------------------------------------------------------------------------------------
def _npy_bytes(array):
    import io
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array, order="C"), allow_pickle=False)
    return buf.getvalue()


def _umask():
    """The process's umask, read without changing it where the OS tells (Linux); else set and
    restored at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save(model, path, include_optimizer=True, training_state=None):
    """Write ``model`` (architecture, weights, buffers, and the optimizer state when compiled)
    to ``path`` atomically. Never pickles. ``training_state``: the JSON-friendly state of a
    training loop (what ``fit(checkpoint=...)`` writes)."""
    from .. import __version__
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "fastcnn_version": __version__,
            "model": layer_to_config(model)}
    if training_state is not None:
        meta["training"] = _jsonable(training_state)
    arrays = {f"weights/{k}.npy": v for k, v in model.state_dict().items()}
    loss = getattr(model, "loss", None)
    if loss is not None:
        describe = (lambda fn: {"class": type(fn).__name__, "config": fn.get_config()})
        meta["loss"] = [describe(fn) for fn in loss] if isinstance(loss, list) else describe(loss)
        if getattr(model, "loss_weights", None) is not None:
            meta["loss_weights"] = list(model.loss_weights)
    opt = getattr(model, "optimizer", None)
    if include_optimizer and opt is not None:
        meta["optimizer"] = {"class": type(opt).__name__, "config": opt.get_config()}
        names = {id(p): k for k, p in model.named_parameters()}
        keys = []
        for p, state in zip(opt.params, opt.state_arrays()):
            key = names.get(id(p))
            if key is None:
                raise ValueError("save: the optimizer holds a parameter that is not in the model")
            keys.append(key)
            for slot, value in state.items():
                arrays[f"optimizer/{key}/{slot}.npy"] = value
        meta["optimizer"]["params"] = keys
    meta["arrays"] = sorted(arrays)

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".fcnn", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
                z.writestr(_META, json.dumps(meta, indent=1))
                for name in sorted(arrays):   # float weights barely deflate: stored as they are
                    z.writestr(name, _npy_bytes(arrays[name]), compress_type=zipfile.ZIP_STORED)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file private (0600): give it the mode a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


# --- load --------------------------------------------------------------------------------------
def _damaged(path, what):
    return ValueError(f"{path}: damaged fastcnn model file: {what}")


def _read_member(z, name, path):
    """The bytes of member ``name``, its declared size checked against the memory limit first
    (zipfile never returns more than the declared size)."""
    try:
        info = z.getinfo(name)
    except KeyError:
        raise _damaged(path, f"member {name} is missing") from None
    try:
        check_workspace("fastcnn.load", info.file_size, f"member {name} of {path}")
        with z.open(info) as f:
            return f.read()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
            RuntimeError) as exc:   # RuntimeError: an encrypted member
        if isinstance(exc, ValueError) and "memory limit" in str(exc):
            raise
        raise _damaged(path, f"member {name}: {exc}") from None


def _read_array(z, name, path):
    """A plain numeric array from an .npy member; its header is checked against its data
    before an array is made (a header cannot make us allocate more than the member holds)."""
    data = _read_member(z, name, path)
    buf = _io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise _damaged(path, f"member {name}: not an .npy array: {exc}") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None \
            or dtype.kind not in "biuf":
        raise _damaged(path, f"member {name}: dtype {dtype} is not a plain numeric type "
                             f"(object arrays are never unpickled)")
    count = math.prod(shape)
    offset = buf.tell()
    if len(data) - offset != count * dtype.itemsize:
        raise _damaged(path, f"member {name}: its header says shape {shape} of {dtype} "
                             f"({count * dtype.itemsize} bytes), it holds {len(data) - offset}")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape, order="F" if fortran else "C").copy()


# Errors a bad description can raise while it is turned into objects.
_DESCRIPTION_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError,
                       OverflowError, RecursionError)


def _open(path):
    try:
        return zipfile.ZipFile(path, "r")
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        raise ValueError(f"{path}: not a fastcnn model file (not a zip archive, or truncated): "
                         f"{exc}") from None


def _read_meta(z, path):
    try:
        info = z.getinfo(_META)
    except KeyError:
        raise ValueError(f"{path}: not a fastcnn model file (no {_META})") from None
    if info.file_size > _MAX_META_BYTES:
        raise _damaged(path, f"{_META} is {info.file_size} bytes long")
    try:
        meta = json.loads(_read_member(z, _META, path).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(path):
            raise
        raise _damaged(path, f"{_META}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a fastcnn model file (format tag missing)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: fastcnn model format version {meta.get('format_version')!r} "
                         f"is not supported (this fastcnn reads version {FORMAT_VERSION})")
    return meta


def read_checkpoint_info(path):
    """The training state of a checkpoint (epochs done, history, metadata...) without loading
    its arrays."""
    path = os.fspath(path)
    with _open(path) as z:
        training = _read_meta(z, path).get("training")
    if not isinstance(training, dict):
        raise ValueError(f"{path}: not a training checkpoint (it holds no training state)")
    return training


def _load(path, compile=True):
    """(model, meta) from a file written by :func:`save`."""
    path = os.fspath(path)
    z = _open(path)
    with z:
        meta = _read_meta(z, path)
        try:
            model = layer_from_config(meta["model"])
        except _DESCRIPTION_ERRORS as exc:
            raise ValueError(f"{path}: bad architecture description: {exc}") from None
        listed = meta.get("arrays", [])
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise _damaged(path, "the list of arrays is not a list of names")
        listed = set(listed)
        state = {}
        for key in model.state_dict():
            name = f"weights/{key}.npy"
            if name not in listed:
                raise _damaged(path, f"{name} is not listed")
            state[key] = _read_array(z, name, path)
        try:
            model.load_state_dict(state)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

        if compile and "loss" in meta:
            try:
                _compile_from(model, meta, z, listed, path)
            except _DESCRIPTION_ERRORS as exc:
                if isinstance(exc, ValueError) and str(exc).startswith(path):
                    raise
                raise ValueError(f"{path}: bad loss or optimizer description: {exc}") from None
    model.eval()
    return model, meta


def _compile_from(model, meta, z, listed, path):
    def make_loss(cfg):
        if cfg.get("class") not in _losses.LOSSES:
            raise ValueError(f"{path}: unknown loss {cfg.get('class')!r}")
        return _losses.LOSSES[cfg["class"]](**cfg.get("config", {}))

    loss_cfg = meta["loss"]
    loss = [make_loss(c) for c in loss_cfg] if isinstance(loss_cfg, list) else make_loss(loss_cfg)
    weights = meta.get("loss_weights")
    opt_cfg = meta.get("optimizer")
    if opt_cfg is None:
        if hasattr(model, "compile"):
            model.loss, model.loss_weights = loss, weights
        return
    opt = _optim.from_config(opt_cfg["class"], opt_cfg["config"])
    model.compile(optimizer=opt, loss=loss, loss_weights=weights)
    named = dict(model.named_parameters())
    keys = opt_cfg.get("params", [])
    if not isinstance(keys, list) or any(not isinstance(k, str) or k not in named for k in keys):
        raise ValueError(f"{path}: optimizer parameters do not match the model")
    opt.bind([named[k] for k in keys])
    states = []
    for key in keys:
        prefix = f"optimizer/{key}/"
        slots = [n for n in listed if n.startswith(prefix) and "/" not in n[len(prefix):]
                 and n.endswith(".npy")]
        state = {}
        for n in sorted(slots):
            value = _read_array(z, n, path)
            if n[len(prefix):-4] == "step" and (value.shape != () or value.dtype.kind not in "iu"
                                                 or int(value) < 0):
                raise _damaged(path, f"member {n}: a step count must be one non-negative int")
            state[n[len(prefix):-4]] = value
        states.append(state)
    opt.load_state_arrays(states)


def load(path, compile=True):
    """Read a model written by :func:`save`; compiled with its loss and optimizer (state
    included) when it was saved compiled. A truncated, damaged or foreign file is a ValueError;
    nothing in the file is ever executed."""
    return _load(path, compile)[0]


def load_training_state(path, model):
    """Load a checkpoint written by ``fit(checkpoint=...)`` into ``model`` (weights, buffers and
    the state of its optimizer, which must be of the same class) and return the training state
    (plus ``optimizer_lr``). The architectures must match."""
    path = os.fspath(path)
    loaded, meta = _load(path, compile=True)
    training = meta.get("training")
    if not isinstance(training, dict):
        raise ValueError(f"{path}: not a training checkpoint (it holds no training state)")
    if layer_to_config(loaded)["config"] != json.loads(json.dumps(layer_to_config(model)["config"])):
        raise ValueError(f"{path}: the checkpoint's architecture differs from this model's")
    opt = getattr(model, "optimizer", None)
    if opt is None or type(opt) is not type(loaded.optimizer):
        raise ValueError(f"{path}: the checkpoint's optimizer is "
                         f"{type(loaded.optimizer).__name__}, this model's is "
                         f"{type(opt).__name__}")
    model.load_state_dict(loaded.state_dict())
    by_id = {id(p): k for k, p in loaded.named_parameters()}
    saved = {by_id[id(p)]: s for p, s in zip(loaded.optimizer.params,
                                             loaded.optimizer.state_arrays())}
    names = {id(p): k for k, p in model.named_parameters()}
    opt.hyper = dict(loaded.optimizer.hyper)
    opt.initial_lr = loaded.optimizer.initial_lr
    opt.load_state_arrays([saved.get(names.get(id(p)), {}) for p in opt.params])
    try:
        state = _from_jsonable(training)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: bad training state: {exc}") from None
    state["optimizer_lr"] = loaded.optimizer.lr
    return state
