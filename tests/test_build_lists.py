"""meson.build lists its sources by name: every file of the source tree must be in a list, or
an install would silently lack it (a module missing from the wheel, a kernel never compiled)."""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
if not os.path.isdir(SRC):
    pytest.skip("the build lists are checked against the source tree, which is not beside these "
                "tests (the suite runs against an installed package)", allow_module_level=True)


def quoted(path):
    with open(path) as f:
        text = re.sub(r"#.*", "", f.read())
    return set(re.findall(r"'([^']+)'", text))


def files_under(folder, suffixes):
    out = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            if name.endswith(suffixes):
                out.add(os.path.relpath(os.path.join(dirpath, name), folder))
    return out


def test_every_python_file_and_data_file_is_installed():
    folder = os.path.join(SRC, "fastcnn")
    listed = quoted(os.path.join(folder, "meson.build")) - {"fastcnn"}  # the subdir: argument
    present = files_under(folder, (".py", ".npz", ".md"))
    assert present - listed == set(), "add these to src/fastcnn/meson.build"
    assert listed - present == set(), "src/fastcnn/meson.build lists files that do not exist"


def test_every_kernel_source_is_compiled_for_its_isa():
    folder = os.path.join(SRC, "cconv", "kernels")
    text = open(os.path.join(folder, "meson.build")).read()
    listed = {}
    for isa, body in re.findall(r"'(\w+)': files\(([^)]*)\)", text):
        for name in re.findall(r"'([^']+)'", body):
            listed[name] = isa
    for name in re.findall(r"files\('([^']+)'\)", text):
        listed[name] = None
    present = files_under(folder, (".c",))
    assert present == set(listed), "src/cconv/kernels/meson.build and the .c files differ"
    for name, isa in listed.items():
        assert isa == (name.rsplit("__", 1)[1][:-2] if "__" in name else None), name


def test_every_cython_module_and_helper_is_built():
    folder = os.path.join(SRC, "cconv")
    listed = quoted(os.path.join(folder, "meson.build"))
    modules = {n[:-4] for n in os.listdir(folder) if n.endswith(".pyx")}
    helpers = {n for n in os.listdir(folder) if n.endswith(".py")}
    assert modules <= listed and helpers <= listed
