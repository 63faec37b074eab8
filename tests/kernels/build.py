"""Build the kernel test harness, natively or cross-compiled for AArch64.

    python tests/kernels/build.py [native|aarch64] [--out DIR] [--cc COMPILER]

Compiles every C file of src/cconv/kernels the way setup.py does (files named *__ISA.c with that
ISA's flags, the others with the common flags only; the flags are read from setup.py, so the
two builds cannot drift apart), plus the harness sources of this folder, and links them into
DIR/harness (default build/kernel-harness/TARGET/harness). The AArch64 build uses
aarch64-linux-gnu-gcc and links statically, so that `qemu-aarch64 harness` needs no sysroot.
Objects are rebuilt only when a source or any header is newer. Prints the path of the program.
"""
import argparse
import ast
import glob
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KERNELS = os.path.join(ROOT, "src", "cconv", "kernels")
TARGETS = {
    # target: (machine names in setup.py, default compiler, extra link flags)
    "aarch64": (("aarch64", "arm64"), "aarch64-linux-gnu-gcc", ["-static"]),
}


def _literal_assignments(body):
    """{name: value} of the `NAME = <literal>` statements directly in `body`."""
    out = {}
    for node in body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def setup_flags(machine):
    """(COMMON_CFLAGS, ISA_FLAGS) that setup.py uses on `machine` (platform.machine() spelling).

    Reads setup.py's module-level `COMMON_CFLAGS = [...]` and its chain of
    `if machine in (...): ISA_FLAGS = {...} elif ...: ... else: ...`.
    """
    with open(os.path.join(ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    common = _literal_assignments(tree.body).get("COMMON_CFLAGS")
    isa_flags = None
    for node in tree.body:
        if not isinstance(node, ast.If):
            continue
        branch = node
        while isa_flags is None:
            test = branch.test
            if (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
                    and test.left.id == "machine" and isinstance(test.ops[0], ast.In)):
                names = ast.literal_eval(test.comparators[0])
                if machine.lower() in names:
                    isa_flags = _literal_assignments(branch.body).get("ISA_FLAGS")
                    break
            else:
                break  # not the machine dispatch
            if len(branch.orelse) == 1 and isinstance(branch.orelse[0], ast.If):
                branch = branch.orelse[0]
            else:
                isa_flags = _literal_assignments(branch.orelse).get("ISA_FLAGS")
                break
        if isa_flags is not None:
            break
    if not isinstance(common, list) or not isinstance(isa_flags, dict):
        raise RuntimeError("setup.py: COMMON_CFLAGS or the ISA_FLAGS of "
                           f"{machine!r} not found as literals")
    return common, isa_flags


def sources(isa_flags):
    """[(source, extra flags)] of the kernels (setup.py's rule) and of the harness."""
    out = []
    for path in sorted(glob.glob(os.path.join(KERNELS, "*.c"))):
        base = os.path.basename(path)
        if "__" not in base:
            out.append((path, []))
            continue
        isa = base.rsplit("__", 1)[1][:-2]
        if isa in isa_flags:  # files of other architectures' ISAs are not built here
            out.append((path, isa_flags[isa]))
    for path in sorted(glob.glob(os.path.join(HERE, "*.c"))):
        out.append((path, []))
    return out


def _stale(obj, deps):
    if not os.path.exists(obj):
        return True
    t = os.path.getmtime(obj)
    return any(os.path.getmtime(d) > t for d in deps)


def build(target="native", out=None, cc=None, verbose=False):
    """Build the harness for `target`; returns the path of the program."""
    if target == "native":
        machine = platform.machine()
        cc = cc or os.environ.get("CC", "cc")
        link = []
    elif target in TARGETS:
        machines, default_cc, link = TARGETS[target]
        machine = machines[0]
        cc = cc or default_cc
    else:
        raise ValueError(f"unknown target {target!r}: native or {', '.join(TARGETS)}")
    out = out or os.path.join(ROOT, "build", "kernel-harness", target)
    os.makedirs(out, exist_ok=True)
    common, isa_flags = setup_flags(machine)
    headers = glob.glob(os.path.join(KERNELS, "*.h")) + glob.glob(os.path.join(HERE, "*.h"))
    flags_file = os.path.join(out, "flags")
    flags_text = repr((cc, common, isa_flags, link))
    if not os.path.exists(flags_file) or open(flags_file).read() != flags_text:
        for old in glob.glob(os.path.join(out, "*.o")):  # other flags: rebuild everything
            os.remove(old)
        with open(flags_file, "w") as f:
            f.write(flags_text)
    objects = []
    for src, extra in sources(isa_flags):
        obj = os.path.join(out, os.path.basename(src)[:-2] + ".o")
        objects.append(obj)
        if _stale(obj, [src, flags_file] + headers):
            cmd = [cc, *common, *extra, "-I", KERNELS, "-I", HERE, "-c", src, "-o", obj]
            if verbose:
                print(" ".join(cmd), file=sys.stderr)
            subprocess.run(cmd, check=True)
    program = os.path.join(out, "harness")
    if _stale(program, objects):
        cmd = [cc, *link, "-o", program, *objects, "-lm"]
        if verbose:
            print(" ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)
    return program


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="?", default="native", choices=["native", *TARGETS])
    parser.add_argument("--out", help="build folder (default build/kernel-harness/TARGET)")
    parser.add_argument("--cc", help="C compiler (default: $CC or cc; aarch64-linux-gnu-gcc)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the commands")
    args = parser.parse_args()
    try:
        print(build(args.target, args.out, args.cc, args.verbose))
    except subprocess.CalledProcessError as e:
        sys.exit(e.returncode or 1)


if __name__ == "__main__":
    main()
