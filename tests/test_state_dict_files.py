"""fc.load_state_dict_file: PyTorch checkpoints and safetensors files read without PyTorch.

Without torch: checkpoints written by hand (zipfile and protocol-2 pickle opcodes, the layout
torch.save writes) and safetensors files written with struct + json, well-formed and crafted
(code payloads, storages too small for their tensors, truncations, absurd headers), each
crafted one refused with a ValueError that says what is wrong. With torch (marked ``torch``):
files written by torch.save and by the safetensors package, compared bit for bit, and a
subprocess in which torch cannot be imported loading a torch-written ResNet-20.
"""
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections import namedtuple

import numpy as np
import pytest

import cconv
import fastcnn as fc


# ---------------------------------------------------------------------------------------------
# Writing torch.save's zip layout by hand
# ---------------------------------------------------------------------------------------------
T = namedtuple("T", "key offset size stride rebuild", defaults=("_rebuild_tensor_v2",))


def _op(value):
    """Plain data as protocol-2 opcodes, without PROTO and STOP."""
    return pickle.dumps(value, protocol=2)[2:-1]


def _global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _encode(obj, storages):
    """Opcodes of ``obj``: dicts, plain data and T records (a tensor viewing ``storages[key]``,
    which is ``(storage type, array)``), as torch.save pickles them."""
    if isinstance(obj, T):
        storage_type, array = storages[obj.key]
        record = (b"(" + _op("storage") + _global("torch", storage_type) + _op(obj.key)
                  + _op("cpu") + _op(array.size) + b"tQ")
        hooks = _global("collections", "OrderedDict") + b")R"
        view = record + _op(obj.offset) + _op(tuple(obj.size)) + _op(tuple(obj.stride))
        if obj.rebuild == "_rebuild_tensor":        # the oldest zip files: no grad, no hooks
            return _global("torch._utils", "_rebuild_tensor") + b"(" + view + b"tR"
        tensor = (_global("torch._utils", "_rebuild_tensor_v2") + b"(" + view + b"\x89" + hooks
                  + b"tR")
        if obj.rebuild == "_rebuild_parameter":     # nn.Parameter(tensor, requires_grad=True)
            return (_global("torch._utils", "_rebuild_parameter") + b"(" + tensor + b"\x88"
                    + hooks + b"tR")
        return tensor
    if isinstance(obj, dict):
        return b"}(" + b"".join(_op(k) + _encode(v, storages) for k, v in obj.items()) + b"u"
    return _op(obj)


def torch_zip(obj=None, storages=None, byteorder=b"little", data_pkl=None, prefix="archive",
              records=None):
    """The bytes of a torch.save-style archive holding ``obj`` (or the pickle ``data_pkl``)."""
    storages = storages or {}
    if data_pkl is None:
        data_pkl = b"\x80\x02" + _encode(obj, storages) + b"."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", data_pkl)
        if byteorder is not None:
            z.writestr(f"{prefix}/byteorder", byteorder)
        for key, (_, array) in storages.items():
            z.writestr(f"{prefix}/data/{key}", array.tobytes())
        for name, data in (records or {}).items():
            z.writestr(f"{prefix}/{name}", data)
        z.writestr(f"{prefix}/version", b"3\n")
    return buf.getvalue()


def _bf16_bits(x):
    """bfloat16 bit patterns of float32 values that bfloat16 holds exactly."""
    return (np.asarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def _handmade(order="<"):
    """A checkpoint using every feature: views with strides and offsets, a shared storage,
    0-d int64, bfloat16, float16, bool; and the arrays the loader must return."""
    base = np.arange(24, dtype=np.float32).reshape(4, 6) / 8
    bf = np.array([1.5, -2.0, 2.0**-7, 2.0**127], np.float32)
    storages = {
        "0": ("FloatStorage", base.ravel().astype(order + "f4")),
        "1": ("LongStorage", np.array([7], order + "i8")),
        "2": ("BFloat16Storage", _bf16_bits(bf).astype(order + "u2")),
        "3": ("HalfStorage", np.array([0.5, -1.25, 65504], order + "f2")),
        "4": ("BoolStorage", np.array([1, 0, 1], np.uint8)),
    }
    obj = {
        "conv.weight": T("0", 0, (4, 6), (6, 1)),
        "transposed": T("0", 0, (6, 4), (1, 6)),                 # base.T, a non-contiguous view
        "rows": T("0", 12, (2, 6), (6, 1)),                      # base[2:], storage offset 12
        "column": T("0", 1, (4,), (6,)),                         # base[:, 1]
        "bn.num_batches_tracked": T("1", 0, (), ()),
        "bf16": T("2", 0, (4,), (1,)),
        "f16": T("3", 0, (3,), (1,)),
        "mask": T("4", 0, (3,), (1,)),
        "empty": T("0", 0, (0, 5), (5, 1)),
        "param": T("0", 0, (2, 2), (6, 1), "_rebuild_parameter"),
        "old": T("0", 0, (2, 2), (6, 1), "_rebuild_tensor"),
    }
    expected = {
        "conv.weight": base, "transposed": base.T, "rows": base[2:], "column": base[:, 1],
        "bn.num_batches_tracked": np.array(7, np.int64), "bf16": bf,
        "f16": np.array([0.5, -1.25, 65504], np.float32), "mask": np.array([True, False, True]),
        "empty": np.zeros((0, 5), np.float32), "param": base[:2, :2], "old": base[:2, :2],
    }
    return obj, storages, expected


def _check_equal(got, expected, layout=True):
    """Same keys in the same order, same dtypes, shapes and bytes (and, with ``layout``,
    C-contiguous native-order arrays, as the loader promises)."""
    assert list(got) == list(expected)
    for key, want in expected.items():
        assert got[key].dtype == want.dtype, key
        assert got[key].shape == want.shape, key
        if layout:
            assert got[key].flags.c_contiguous and got[key].dtype.isnative, key
        assert np.ascontiguousarray(got[key]).tobytes() == np.ascontiguousarray(want).tobytes(), key


class Payload:
    """Unpickling this runs ``func(arg)``: with the arguments below, it creates the marker."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "code from a checkpoint was executed"


@pytest.fixture
def small_limit():
    previous = cconv.set_memory_limit("64M")
    yield
    cconv.set_memory_limit(previous)


# ---------------------------------------------------------------------------------------------
# torch.save archives written by hand: always run
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["<", ">"])
def test_handmade_checkpoint(tmp_path, order):
    obj, storages, expected = _handmade(order)
    data = torch_zip(obj, storages, byteorder=b"little" if order == "<" else b"big")
    path = tmp_path / "model.pth"
    path.write_bytes(data)
    _check_equal(fc.load_state_dict_file(path), expected)
    _check_equal(fc.load_state_dict_file(str(path)), expected)
    _check_equal(fc.load_state_dict_file(data), expected)       # the file's bytes
    other = tmp_path / "weights.bin"                            # the content decides, not the name
    other.write_bytes(data)
    _check_equal(fc.load_state_dict_file(other), expected)


def test_handmade_checkpoint_without_byteorder_record_is_little_endian():
    obj, storages, expected = _handmade()
    _check_equal(fc.load_state_dict_file(torch_zip(obj, storages, byteorder=None)), expected)


def test_training_checkpoint_returns_the_inner_state_dict():
    obj, storages, expected = _handmade()
    for entry in ("state_dict", "model"):
        wrapped = {"epoch": 3, "best": 0.91, "arch": "resnet", "history": [1.0, 0.5],
                   entry: obj, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}
        _check_equal(fc.load_state_dict_file(torch_zip(wrapped, storages)), expected)


def test_loads_into_a_model():
    fc.manual_seed(0)
    model = fc.models.lenet5()
    state = model.state_dict()
    storages = {str(i): ("FloatStorage", np.ascontiguousarray(v, np.float32).ravel())
                for i, v in enumerate(state.values())}
    obj = {k: T(str(i), 0, v.shape, tuple(s // 4 for s in np.ascontiguousarray(v).strides))
           for i, (k, v) in enumerate(state.items())}
    fc.manual_seed(1)
    other = fc.models.lenet5()
    other.load_state_dict(fc.load_state_dict_file(torch_zip(obj, storages)))
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    np.testing.assert_array_equal(other(x), model(x))


@pytest.mark.parametrize("func,arg", [
    (os.system, "touch {marker}"),
    (eval, "open({marker!r}, 'w')"),
    (os.mkdir, "{marker}"),
])
@pytest.mark.parametrize("where", ["top", "value"])
def test_code_payloads_are_refused_and_never_run(marker, func, arg, where):
    payload = Payload(func, arg.format(marker=str(marker)))
    data_pkl = pickle.dumps(payload if where == "top" else {"w": payload}, protocol=2)
    with pytest.raises(ValueError, match=r"<bytes>: archive/data.pkl is not a state-dict pickle"
                                         r".*refusing to load (posix|os|builtins|__builtin__)\."
                                         r"(system|eval|mkdir)"):
        fc.load_state_dict_file(torch_zip(data_pkl=data_pkl))


def test_refusal_names_the_file_and_the_global(tmp_path, marker):
    path = tmp_path / "evil.pth"
    path.write_bytes(torch_zip(data_pkl=pickle.dumps(Payload(os.system, f"touch {marker}"))))
    with pytest.raises(ValueError, match=rf"{path}: .*refusing to load posix\.system"):
        fc.load_state_dict_file(path)


def test_a_pickled_model_object_is_refused_with_advice():
    # torch.save(model) of a model class defined in a script: its class global, then NEWOBJ
    data_pkl = b"\x80\x02" + _global("__main__", "Net") + b")\x81."
    with pytest.raises(ValueError, match=r"refusing to load __main__\.Net.*save "
                                         r"model\.state_dict\(\) instead"):
        fc.load_state_dict_file(torch_zip(data_pkl=data_pkl))
    # a class torch defines, as a global in the pickle
    data_pkl = b"\x80\x02" + _global("torch.nn.modules.linear", "Linear") + b")\x81."
    with pytest.raises(ValueError, match=r"refusing to load torch\.nn\.modules\.linear\.Linear"):
        fc.load_state_dict_file(torch_zip(data_pkl=data_pkl))


@pytest.mark.parametrize("name", ["FloatStorage", "float32", "UntypedStorage"])
def test_allow_listed_objects_cannot_be_changed_by_a_file(name):
    """BUILD on a shared stand-in (which would set its attributes) is refused, so a crafted
    file cannot change how the files after it are read."""
    obj, storages, expected = _handmade()
    attrs = b"}" + _op("dtype") + b"Ns" + _op("raw") + b"Ns"      # {"dtype": None, "raw": None}
    for state in (attrs, b"N" + attrs + b"\x86"):          # __dict__ state, and slot state
        data_pkl = b"\x80\x02" + _global("torch", name) + state + b"b."
        with pytest.raises(ValueError, match=r"unexpected state for a (StorageType|DType)"):
            fc.load_state_dict_file(torch_zip(data_pkl=data_pkl))
    _check_equal(fc.load_state_dict_file(torch_zip(obj, storages)), expected)


def test_storage_too_small_for_the_tensor():
    storages = {"0": ("FloatStorage", np.zeros(8, np.float32))}
    cases = {
        "shape": T("0", 0, (3, 3), (3, 1)),
        "offset": T("0", 5, (4,), (1,)),
        "stride": T("0", 0, (2, 2), (1, 7)),
    }
    for name, t in cases.items():
        with pytest.raises(ValueError, match=r"tensor 'w' of size .* needs \d+ bytes of "
                                             r"storage 0, which holds 32"):
            fc.load_state_dict_file(torch_zip({"w": t}, storages))


def test_storage_record_of_the_wrong_size():
    storages = {"0": ("FloatStorage", np.zeros(4, np.float32))}
    data_pkl = _pickle_of(torch_zip({"w": T("0", 0, (4,), (1,))}, storages))
    # the record holds 16 bytes; make the pickle claim 8 elements (32 bytes)
    bad = data_pkl.replace(_op("cpu") + _op(4), _op("cpu") + _op(8))
    assert bad != data_pkl
    with pytest.raises(ValueError, match=r"archive/data/0 holds 16 bytes, its tensors' record "
                                         r"says 32"):
        fc.load_state_dict_file(torch_zip(storages=storages, data_pkl=bad))


def _pickle_of(archive):
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        return z.read("archive/data.pkl")


def test_missing_storage_record():
    data_pkl = _pickle_of(torch_zip({"w": T("0", 0, (2,), (1,))},
                                    {"0": ("FloatStorage", np.zeros(2, np.float32))}))
    with pytest.raises(ValueError, match=r"the archive has no archive/data/0"):
        fc.load_state_dict_file(torch_zip(data_pkl=data_pkl))


def test_claims_over_the_memory_limit_allocate_nothing(small_limit):
    # a one-element storage viewed with stride 0 as 10**12 elements (an expand)
    storages = {"0": ("FloatStorage", np.zeros(1, np.float32))}
    data = torch_zip({"w": T("0", 0, (10**12,), (0,))}, storages)
    with pytest.raises(ValueError, match=r"tensor 'w' of <bytes> would take .* memory limit"):
        fc.load_state_dict_file(data)


def test_truncated_and_damaged_archives(tmp_path):
    obj, storages, _ = _handmade()
    data = torch_zip(obj, storages)
    for cut in (len(data) // 2, len(data) - 30, 10):
        with pytest.raises(ValueError, match=r"cannot be read \(truncated or damaged"):
            fc.load_state_dict_file(data[:cut])
    # a damaged storage record: its CRC no longer matches
    at = data.index(storages["0"][1].tobytes())
    flipped = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
    with pytest.raises(ValueError, match=r"archive/data/0 cannot be read"):
        fc.load_state_dict_file(flipped)
    # a truncated pickle inside a sound archive
    with pytest.raises(ValueError, match=r"is not a state-dict pickle: .*(EOFError|Unpickling)"):
        fc.load_state_dict_file(torch_zip(data_pkl=_pickle_of(data)[:-20]))


@pytest.mark.parametrize("opcode", [b"\x96", b"\x8e", b"\x8d"])   # BYTEARRAY8 BINBYTES8 BINUNICODE8
def test_length_fields_are_checked_before_allocating(opcode):
    data_pkl = b"\x80\x05" + opcode + struct.pack("<Q", 2**40) + b"abc."
    with pytest.raises(ValueError, match=r"is not a state-dict pickle: UnpicklingError: bad "
                                         r"opcode stream: expected 1099511627776 bytes"):
        fc.load_state_dict_file(torch_zip(data_pkl=data_pkl))


def test_zip_without_a_checkpoint():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match=r"not a PyTorch checkpoint: expected one "
                                         r"<archive>/data.pkl record, found 0"):
        fc.load_state_dict_file(buf.getvalue())


@pytest.mark.parametrize("obj,match", [
    ({"epoch": 3, "lr": 0.1}, r"found a dict without tensors \(keys 'epoch', 'lr'\)"),
    ({}, r"found an empty dict"),
    ([1, 2, 3], r"found a list"),
    ({"w": T("0", 0, (2,), (1,)), "epoch": 3}, r"a dict mixing tensors \(1\) with other "
                                               r"entries \('epoch'\)"),
    ({"state_dict": {"epoch": 1}}, r"found a dict without tensors \(keys 'state_dict'\)"),
])
def test_no_state_dict(obj, match):
    storages = {"0": ("FloatStorage", np.zeros(2, np.float32))}
    with pytest.raises(ValueError, match=r"holds no state dict: expected a dict of tensors.*"
                                         + match):
        fc.load_state_dict_file(torch_zip(obj, storages) if not isinstance(obj, list)
                                else torch_zip(data_pkl=pickle.dumps(obj, protocol=2)))


def test_bad_byteorder_record():
    obj, storages, _ = _handmade()
    with pytest.raises(ValueError, match=r"byteorder record 'middle': expected 'little' or 'big'"):
        fc.load_state_dict_file(torch_zip(obj, storages, byteorder=b"middle"))


def test_legacy_format_and_other_files(tmp_path):
    legacy = (b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19." + b"\x80\x02M\xe9\x03."
              + pickle.dumps({"protocol_version": 1001}, protocol=2))
    with pytest.raises(ValueError, match=r"legacy format \(before PyTorch 1.6\).*save it again"):
        fc.load_state_dict_file(legacy)
    with pytest.raises(ValueError, match=r"not a PyTorch checkpoint .* nor a safetensors file.*"
                                         r"a plain pickle"):
        fc.load_state_dict_file(pickle.dumps({"w": np.zeros(2)}))
    with pytest.raises(ValueError, match=r"an empty file"):
        fc.load_state_dict_file(b"")
    path = tmp_path / "notes.pth"
    path.write_text("some text that is no checkpoint")
    with pytest.raises(ValueError, match=rf"{path}: not a PyTorch checkpoint"):
        fc.load_state_dict_file(path)
    with pytest.raises(FileNotFoundError):
        fc.load_state_dict_file(tmp_path / "missing.pth")


# ---------------------------------------------------------------------------------------------
# safetensors written by hand: always run
# ---------------------------------------------------------------------------------------------
_ST_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4",
              "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "u1", "BF16": "<u2"}


def safetensors_bytes(tensors, metadata=None, header=None, pad=0):
    """A safetensors file of ``tensors`` ({name: (dtype code, array)}); ``header`` overrides
    the computed JSON header (a dict, or raw bytes)."""
    entries, data = {}, b""
    for name, (code, array) in tensors.items():
        raw = np.ascontiguousarray(array, _ST_DTYPES[code]).tobytes()
        entries[name] = {"dtype": code, "shape": list(np.shape(array)),
                         "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        entries["__metadata__"] = metadata
    if header is None:
        header = entries
    if isinstance(header, dict):
        header = json.dumps(header).encode()
    header += b" " * pad
    return struct.pack("<Q", len(header)) + header + data


def _st_good():
    rng = np.random.default_rng(0)
    bf = np.array([[1.5, -2.0], [2.0**-7, -(2.0**127)]], np.float32)
    tensors = {
        "conv.weight": ("F32", rng.standard_normal((2, 3, 3, 3)).astype(np.float32)),
        "f64": ("F64", np.array([1.0 / 3.0])),
        "f16": ("F16", np.array([0.5, -65504], np.float16)),
        "bf16": ("BF16", _bf16_bits(bf)),
        "bn.num_batches_tracked": ("I64", np.array(12, np.int64)),
        "i32": ("I32", np.array([-5, 7], np.int32)),
        "i16": ("I16", np.array([-300], np.int16)),
        "i8": ("I8", np.array([-1, 2], np.int8)),
        "u8": ("U8", np.array([255, 0], np.uint8)),
        "mask": ("BOOL", np.array([1, 0], np.uint8)),
        "empty": ("F32", np.zeros((0, 4), np.float32)),
    }
    expected = {k: np.asarray(a) for k, (_, a) in tensors.items()}
    expected.update(f16=np.array([0.5, -65504], np.float32), bf16=bf,
                    mask=np.array([True, False]))
    return tensors, expected


def test_handmade_safetensors(tmp_path):
    tensors, expected = _st_good()
    data = safetensors_bytes(tensors, metadata={"format": "pt"}, pad=5)
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    _check_equal(fc.load_state_dict_file(path), expected)
    _check_equal(fc.load_state_dict_file(data), expected)
    other = tmp_path / "model.bin"
    other.write_bytes(data)
    _check_equal(fc.load_state_dict_file(other), expected)


def _st_header(**changes):
    """The good file's header with entries replaced (None drops one)."""
    good = safetensors_bytes(_st_good()[0])
    header = json.loads(good[8:8 + struct.unpack("<Q", good[:8])[0]])
    for k, v in changes.items():
        if v is None:
            header.pop(k)
        else:
            header[k] = v
    return header


def test_crafted_safetensors(tmp_path, small_limit):
    tensors, _ = _st_good()
    good = safetensors_bytes(tensors)
    n = struct.unpack("<Q", good[:8])[0]
    w = _st_header()["conv.weight"]
    cases = {
        "truncated data": (good[:-10], r"data_offsets .* are not within the \d+ bytes of data "
                                       r"\(truncated file\?\)"),
        "truncated header": (good[:8 + n // 2], r"header length \d+ is larger than the file"),
        "huge header": (struct.pack("<Q", 2**40) + good[8:], r"header length 1099511627776 is "
                                                             r"over the 100000000 bytes allowed"),
        "not json": (safetensors_bytes({}, header=b"{not json"), r"the header is not JSON"),
        "unknown dtype": (safetensors_bytes(tensors, header=_st_header(
            i8={"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]})),
            r"tensor 'i8' has dtype 'F8_E4M3'; expected one of F32, F16, BF16"),
        "overlap": (safetensors_bytes(tensors, header=_st_header(
            f64={**w, "shape": [2, 3, 3, 3], "dtype": "F32"})),
            r"tensors '(conv.weight|f64)' and '(conv.weight|f64)' overlap"),
        "size mismatch": (safetensors_bytes(tensors, header=_st_header(
            **{"conv.weight": {**w, "shape": [2, 3, 3, 4]}})),
            r"F32 of shape \[2, 3, 3, 4\] takes 288 bytes, its data_offsets \[0, 216\] span 216"),
        "negative offset": (safetensors_bytes(tensors, header=_st_header(
            **{"conv.weight": {**w, "data_offsets": [-4, 212]}})),
            r"data_offsets \[-4, 212\] are not within"),
        "bad shape": (safetensors_bytes(tensors, header=_st_header(
            **{"conv.weight": {**w, "shape": [2, -3]}})),
            r"shape \[2, -3\] is not a list of non-negative integers"),
        "missing field": (safetensors_bytes(tensors, header=_st_header(
            **{"conv.weight": {"dtype": "F32"}})), r"expected an object with dtype, shape"),
        "duplicate": (safetensors_bytes({}, header=b'{"a": {}, "a": {}}'),
                      r"the header is not JSON: key 'a' appears twice"),
        "no tensors": (safetensors_bytes({}, metadata={"format": "pt"}),
                       r"the header lists no tensors"),
        "over the limit": (safetensors_bytes({}, header={"w": {
            "dtype": "U8", "shape": [2**27], "data_offsets": [0, 2**27]}}) + b"\0" * 8,
            r"data_offsets \[0, 134217728\] are not within the 8 bytes"),
    }
    for name, (data, match) in cases.items():
        prefix = r"<bytes>: not a valid safetensors file: (tensor '[\w.]+': )?"
        with pytest.raises(ValueError, match=prefix + match):
            fc.load_state_dict_file(data)
    # a file whose extension says safetensors but too short to tell from its content
    path = tmp_path / "cut.safetensors"
    path.write_bytes(good[:6])
    with pytest.raises(ValueError, match=rf"{path}: not a valid safetensors file: 6 bytes"):
        fc.load_state_dict_file(path)
    path.write_bytes(safetensors_bytes({}, header=b"[1, 2]"))
    with pytest.raises(ValueError, match=r"the header is a JSON list, expected an object"):
        fc.load_state_dict_file(path)


def test_safetensors_over_the_memory_limit(small_limit):
    size = 80 * 2**20
    data = safetensors_bytes({}, header={"w": {"dtype": "U8", "shape": [size],
                                               "data_offsets": [0, size]}})
    data += bytes(size)
    with pytest.raises(ValueError, match=r"tensor 'w' of <bytes> would take .* memory limit"):
        fc.load_state_dict_file(data)


# ---------------------------------------------------------------------------------------------
# Files written by torch and by the safetensors package
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _as_numpy(torch, t):
    t = t.detach()
    return (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).numpy()


@pytest.mark.torch
def test_torch_save_tensors(torch, tmp_path):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 6, generator=g)
    state = {
        "w": a, "transposed": a.t(), "rows": a[2:], "column": a[:, 3], "block": a[1:4, 2:5],
        "shared": a.view(30)[7:19],                             # shares a's storage
        "expanded": torch.randn(3, 1, generator=g).expand(3, 4),
        "bf16": torch.randn(7, generator=g).to(torch.bfloat16),
        "f16": torch.randn(2, 3, generator=g).half(), "f64": torch.randn(3, dtype=torch.float64),
        "steps": torch.tensor(17), "i32": torch.tensor([1, -2], dtype=torch.int32),
        "i8": torch.tensor([-128, 127], dtype=torch.int8), "u8": torch.tensor([0, 255]).byte(),
        "mask": torch.tensor([True, False, True]), "empty": torch.empty(0, 3),
        "u16": torch.tensor([1, 65535], dtype=torch.uint16),
        "param": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
    }
    path = tmp_path / "t.pth"
    torch.save(state, path)
    got = fc.load_state_dict_file(path)
    _check_equal(got, {k: _as_numpy(torch, v) for k, v in state.items()})
    # nested, with an optimizer's state (tensors, lists, numbers) beside it
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 1, 5, 5)).sum().backward()
    opt.step()
    torch.save({"epoch": 3, "state_dict": model.state_dict(), "optimizer": opt.state_dict()},
               path)
    _check_equal(fc.load_state_dict_file(path),
                 {k: _as_numpy(torch, v) for k, v in model.state_dict().items()})


@pytest.mark.torch
def test_torch_reads_the_handmade_checkpoint(torch):
    """The hand-written archives of the tests above are what torch.save writes."""
    obj, storages, expected = _handmade()
    loaded = torch.load(io.BytesIO(torch_zip(obj, storages)), weights_only=True)
    _check_equal({k: _as_numpy(torch, v) for k, v in loaded.items()}, expected, layout=False)


@pytest.mark.torch
def test_torch_model_state_dict_loads_into_the_fastcnn_model(torch, tmp_path):
    from fastcnn._torch_twin import to_nchw
    from fastcnn._torch_twin import torch_twin
    torch.manual_seed(0)
    model = fc.models.lenet5()
    twin = torch_twin(model).eval()
    path = tmp_path / "lenet5.pth"
    torch.save(twin.state_dict(), path)
    model.load_state_dict(fc.load_state_dict_file(path))
    for key, value in twin.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[key], value.numpy())
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    with torch.no_grad():
        want = twin(torch.from_numpy(to_nchw(x).copy())).numpy()
    np.testing.assert_allclose(model(x), want, rtol=1e-4, atol=1e-5)


@pytest.mark.torch
def test_safetensors_package_files(tmp_path, torch):
    st_numpy = pytest.importorskip("safetensors.numpy")
    st_torch = pytest.importorskip("safetensors.torch")
    rng = np.random.default_rng(0)
    arrays = {"w": rng.standard_normal((3, 4)).astype(np.float32),
              "f16": rng.standard_normal(5).astype(np.float16),
              "f64": rng.standard_normal(2), "n": np.array(4, np.int64),
              "i16": np.array([-3, 3], np.int16), "u8": np.array([9], np.uint8),
              "mask": np.array([True, False])}
    path = tmp_path / "a.safetensors"
    st_numpy.save_file(arrays, str(path), metadata={"format": "np"})
    expected = {k: (v.astype(np.float32) if v.dtype == np.float16 else v)
                for k, v in arrays.items()}
    got = fc.load_state_dict_file(path)
    _check_equal({k: got[k] for k in expected}, expected)
    tensors = {"bf16": torch.randn(4, 3).to(torch.bfloat16), "w": torch.randn(2, 2)}
    st_torch.save_file(tensors, str(path))
    got = fc.load_state_dict_file(path)
    for key, t in tensors.items():
        assert got[key].tobytes() == _as_numpy(torch, t).tobytes()


@pytest.mark.torch
def test_loads_a_torch_checkpoint_where_torch_cannot_be_imported(torch, tmp_path):
    """The promise: a torch.save file loads into a zoo model in a process without torch."""
    from fastcnn._torch_twin import to_nchw
    from fastcnn._torch_twin import torch_twin
    torch.manual_seed(0)
    twin = torch_twin(fc.models.resnet20())
    for name, buf in twin.named_buffers():               # batch-norm statistics of a trained net
        if name.endswith("running_mean"):
            buf.normal_(0, 0.1)
        elif name.endswith("running_var"):
            buf.uniform_(0.5, 2.0)
        elif name.endswith("num_batches_tracked"):
            buf.fill_(100)
    twin.eval()
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    torch.save({"epoch": 10, "state_dict": twin.state_dict()}, tmp_path / "resnet20.pth")
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np, fastcnn as fc\n"
        "folder = sys.argv[1]\n"
        "model = fc.models.resnet20()\n"
        "model.load_state_dict(fc.load_state_dict_file(folder + '/resnet20.pth'))\n"
        "model.eval()\n"
        "np.save(folder + '/y.npy', model(np.load(folder + '/x.npy')))\n"
        "np.savez(folder + '/state.npz', **model.state_dict())\n"
        "assert sys.modules['torch'] is None\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "state.npz") as state:
        for key, value in twin.state_dict().items():
            assert state[key].dtype == value.numpy().dtype
            np.testing.assert_array_equal(state[key], value.numpy())
    with torch.no_grad():
        want = twin(torch.from_numpy(to_nchw(x).copy())).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-4, atol=1e-4)
