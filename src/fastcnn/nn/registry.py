"""The table of layer classes that model files may name, and the JSON description of a layer.

Reading a model file builds layers from this table only (never from a class named by the file
itself), so a file cannot make fastcnn run code of its choice.
"""
import importlib

LAYERS = {}
# Classes registered by modules that `import fastcnn` does not load until they are used: the
# module is imported when a saved model names the class.
_REGISTERED_ON_IMPORT = {"OnnxModel": "fastcnn.onnx.model"}


def register(cls):
    """Add a layer class to the table (a class decorator)."""
    LAYERS[cls.__name__] = cls
    return cls


def layer_to_config(layer):
    """{"class": name, "config": {...}, "name": ...} for a layer, recursively for containers."""
    name = type(layer).__name__
    if LAYERS.get(name) is not type(layer):
        raise ValueError(f"save: layer {name} cannot be saved (not a fastcnn layer)")
    cfg = {"class": name, "config": layer.get_config()}
    if layer.name is not None:
        cfg["name"] = layer.name
    return cfg


def layer_from_config(cfg):
    """The layer that :func:`layer_to_config` described."""
    if not isinstance(cfg, dict) or "class" not in cfg:
        raise ValueError(f"bad layer description {cfg!r}")
    name, conf = cfg["class"], dict(cfg.get("config") or {})
    if name not in LAYERS and name in _REGISTERED_ON_IMPORT:
        importlib.import_module(_REGISTERED_ON_IMPORT[name])
    if name not in LAYERS:
        raise ValueError(f"unknown layer class {name!r}")
    layer = LAYERS[name].from_config(conf)
    if cfg.get("name") is not None:
        layer.name = cfg["name"]
    return layer
