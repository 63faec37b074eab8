"""Build the kernel test harness, natively or cross-compiled for AArch64.

    python tests/kernels/build.py [native|aarch64] [--out DIR] [--cc COMPILER]

Compiles every C file of src/cconv/kernels the way meson.build does (files named *__ISA.c with
that ISA's flags, the others with the common flags only; both read the flags from
tools/build_flags.py, so the two builds cannot drift apart), plus the harness sources of this folder, and links them into
DIR/harness (default build/kernel-harness/TARGET/harness). The AArch64 build uses
aarch64-linux-gnu-gcc and links statically, so that `qemu-aarch64 harness` needs no sysroot.
Objects are rebuilt only when a source or any header is newer. Prints the path of the program.
"""
import argparse
import concurrent.futures
import glob
import importlib.util
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KERNELS = os.path.join(ROOT, "src", "cconv", "kernels")
TARGETS = {
    # target: (machine names, default compiler, extra link flags)
    "aarch64": (("aarch64", "arm64"), "aarch64-linux-gnu-gcc", ["-static"]),
}


def _load_build_flags():
    spec = importlib.util.spec_from_file_location(
        "fastcnn_build_flags", os.path.join(ROOT, "tools", "build_flags.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_flags_module = _load_build_flags()


def build_flags(machine):
    """(common flags, {isa: flags}) that the package's build uses on `machine`
    (platform.machine()'s spelling), from tools/build_flags.py as meson.build reads them."""
    return build_flags_module.common_flags(), build_flags_module.isa_flags(machine)


def kernel_files(pattern):
    """The kernels' files matching `pattern`, in every family's folder."""
    return sorted(glob.glob(os.path.join(KERNELS, "**", pattern), recursive=True))


def sources(isa_flags):
    """[(source, extra flags)] of the kernels (meson.build's rule) and of the harness."""
    out = []
    for path in kernel_files("*.c"):
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
    common, isa_flags = build_flags(machine)
    headers = kernel_files("*.h") + glob.glob(os.path.join(HERE, "*.h"))
    flags_file = os.path.join(out, "flags")
    flags_text = repr((cc, common, isa_flags, link))
    if not os.path.exists(flags_file) or open(flags_file).read() != flags_text:
        for old in glob.glob(os.path.join(out, "*.o")):  # other flags: rebuild everything
            os.remove(old)
        with open(flags_file, "w") as f:
            f.write(flags_text)
    objects, commands = [], []
    for src, extra in sources(isa_flags):
        obj = os.path.join(out, os.path.basename(src)[:-2] + ".o")
        objects.append(obj)
        if _stale(obj, [src, flags_file] + headers):
            commands.append([cc, *common, *extra, "-I", KERNELS, "-I", HERE, "-c", src, "-o", obj])
    run_all(commands, verbose)
    program = os.path.join(out, "harness")
    if _stale(program, objects):
        cmd = [cc, *link, "-o", program, *objects, "-lm"]
        if verbose:
            print(" ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)
    return program


def run_all(commands, verbose=False):
    """Run independent compiler commands on every core; the first failure raises."""
    def run(cmd):
        if verbose:
            print(" ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(run, commands))


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
