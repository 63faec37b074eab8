"""Save and load models: one zip file holding the architecture as JSON and every array as .npy.

Layout of a ``.fcnn`` file (a zip archive, readable with any zip tool)::

    fastcnn.json                  format tag, version, architecture, loss, optimizer settings
    weights/<state-dict key>.npy  parameters and buffers (PyTorch keys: 0.weight, 3.running_mean)
    optimizer/<key>/<slot>.npy    optimizer state per parameter (momentum, Adam moments, step)

Arrays are read with ``allow_pickle=False`` and nothing is ever unpickled. Writing is atomic: the
file is written to a temporary file in the same folder, flushed to disk and renamed over the
target, so a crash mid-save leaves the previous file intact.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from . import layers as _layers
from . import losses as _losses
from . import optim as _optim

FORMAT = "fastcnn-model"
FORMAT_VERSION = 1
_META = "fastcnn.json"


# --- architecture <-> JSON -------------------------------------------------------------------
def layer_to_config(layer):
    """{"class": name, "config": {...}} for a layer, recursively for containers."""
    from .sequential import Sequential
    name = type(layer).__name__
    if name not in _layers.LAYERS and not isinstance(layer, Sequential):
        raise ValueError(f"save: layer {name} cannot be saved (not a fastcnn layer)")
    return {"class": "Sequential" if isinstance(layer, Sequential) else name,
            "config": layer.get_config()}


def layer_from_config(cfg):
    from .sequential import Sequential
    if not isinstance(cfg, dict) or "class" not in cfg:
        raise ValueError(f"bad layer description {cfg!r}")
    name, conf = cfg["class"], dict(cfg.get("config") or {})
    if name == "Sequential":
        return Sequential(*[layer_from_config(c) for c in conf.get("layers", [])],
                          input_shape=conf.get("input_shape"))
    if name == "Residual":
        shortcut = conf.get("shortcut")
        return _layers.Residual(layer_from_config(conf["body"]),
                                None if shortcut is None else layer_from_config(shortcut))
    if name not in _layers.LAYERS:
        raise ValueError(f"unknown layer class {name!r}")
    return _layers.LAYERS[name](**conf)


# --- save --------------------------------------------------------------------------------------
def _npy_bytes(array):
    import io
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array, order="C"), allow_pickle=False)
    return buf.getvalue()


def save(model, path, include_optimizer=True):
    """Write ``model`` (architecture, weights, buffers, and the optimizer state when compiled)
    to ``path`` atomically. Never pickles."""
    from . import __version__
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "fastcnn_version": __version__,
            "model": layer_to_config(model)}
    arrays = {f"weights/{k}.npy": v for k, v in model.state_dict().items()}
    loss = getattr(model, "loss", None)
    if loss is not None:
        meta["loss"] = {"class": type(loss).__name__, "config": loss.get_config()}
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
                for name in sorted(arrays):
                    z.writestr(name, _npy_bytes(arrays[name]))
            f.flush()
            os.fsync(f.fileno())
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
def _read_array(z, name, path):
    import io
    try:
        with z.open(name) as f:
            data = f.read()
        return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except KeyError:
        raise ValueError(f"{path}: damaged fastcnn model file: member {name} is missing") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: damaged fastcnn model file: member {name}: {exc}") from None


def load(path, compile=True):
    """Read a model written by :func:`save`; compiled with its loss and optimizer (state
    included) when it was saved compiled. A truncated, damaged or foreign file is a ValueError."""
    path = os.fspath(path)
    try:
        z = zipfile.ZipFile(path, "r")
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a fastcnn model file (not a zip archive, or truncated): "
                         f"{exc}") from None
    with z:
        try:
            meta = json.loads(z.read(_META).decode("utf-8"))
        except KeyError:
            raise ValueError(f"{path}: not a fastcnn model file (no {_META})") from None
        except (zipfile.BadZipFile, OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"{path}: damaged fastcnn model file: {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a fastcnn model file (format tag missing)")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: fastcnn model format version {meta.get('format_version')} "
                             f"is not supported (this fastcnn reads version {FORMAT_VERSION})")
        try:
            model = layer_from_config(meta["model"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: bad architecture description: {exc}") from None
        listed = set(meta.get("arrays", []))
        state = {}
        for key in model.state_dict():
            name = f"weights/{key}.npy"
            if name not in listed:
                raise ValueError(f"{path}: damaged fastcnn model file: {name} is not listed")
            state[key] = _read_array(z, name, path)
        try:
            model.load_state_dict(state)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

        if compile and "loss" in meta:
            loss_cfg = meta["loss"]
            if loss_cfg.get("class") not in _losses.LOSSES:
                raise ValueError(f"{path}: unknown loss {loss_cfg.get('class')!r}")
            loss = _losses.LOSSES[loss_cfg["class"]](**loss_cfg.get("config", {}))
            opt_cfg = meta.get("optimizer")
            if opt_cfg is not None:
                try:
                    opt = _optim.from_config(opt_cfg["class"], opt_cfg["config"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise ValueError(f"{path}: bad optimizer description: {exc}") from None
                model.compile(optimizer=opt, loss=loss)
                named = dict(model.named_parameters())
                keys = opt_cfg.get("params", [])
                if any(k not in named for k in keys):
                    raise ValueError(f"{path}: optimizer parameters do not match the model")
                opt.bind([named[k] for k in keys])
                states = []
                for key in keys:
                    prefix = f"optimizer/{key}/"
                    slots = [n for n in listed if n.startswith(prefix) and "/" not in n[len(prefix):]]
                    states.append({n[len(prefix):-4]: _read_array(z, n, path) for n in sorted(slots)})
                opt.load_state_arrays(states)
            elif hasattr(model, "compile"):
                model.loss = loss
    model.eval()
    return model
