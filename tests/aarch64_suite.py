"""Run the Python test suite on an AArch64 Python under qemu-aarch64 (NEON and scalar kernels).

    python tests/aarch64_suite.py [--work DIR] [--suite CODENAME] [--mirror URL] [PYTEST ARGS...]

For machines that are not ARM64: tests the package as an ARM64 user gets it, without one.
1. An AArch64 Debian root with Python, numpy, pytest, hypothesis, threadpoolctl and libgomp,
   unpacked (never executed) by `mmdebstrap --variant=extract --architectures=arm64`.
2. The Cython modules are translated to C here (Cython, with the build's directives) and, with
   the kernels (the build's AArch64 flags from tools/build_flags.py: NEON files built), cross-compiled by
   aarch64-linux-gnu-gcc into extension modules for that Python, next to a copy of src/.
3. pytest runs tests/ (but test_kernel_harness.py, which runs its AArch64 build under qemu
   itself, and the tests marked `slow_under_emulation`, minutes each under qemu: thousands of
   training steps, processes started) with that Python under qemu-aarch64 (user-mode
   emulation, the root as its library prefix), the property-based tests with fewer examples
   (FASTCNN_FUZZ_PROFILE=emulated). `sys.executable` is a wrapper script, so tests that start
   a Python subprocess get an emulated one too. A `-m` among the pytest arguments replaces the
   marker selection.
Everything goes under build/aarch64-suite (the root is reused on the next run). Needs
gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user and mmdebstrap (Debian packages) and
Cython on this machine, and the Debian mirror; without them it says what is missing and exits
with status 0. Otherwise the exit status is pytest's (or the cross-build's).
"""
import argparse
import concurrent.futures
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SRC = os.path.join(REPO, "src")
KERNELS = os.path.join(SRC, "cconv", "kernels")
CROSS_CC = "aarch64-linux-gnu-gcc"
PACKAGES = ["python3", "python3-numpy", "python3-pytest", "python3-hypothesis",
            "python3-threadpoolctl", "libgomp1", "libpython3-dev"]
# numpy's BLAS and LAPACK are chosen by update-alternatives links, which an unpacked (never
# configured) root lacks: point the loader at the reference libraries.
LIBRARY_PATH = "/usr/lib/aarch64-linux-gnu/blas:/usr/lib/aarch64-linux-gnu/lapack"

_spec = importlib.util.spec_from_file_location("kernel_harness_build",
                                               os.path.join(HERE, "kernels", "build.py"))
harness_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness_build)


def log(message):
    print(f"[aarch64 suite] {message}", flush=True)


def missing_tools():
    missing = [f"{tool} (Debian package {pkg})" for tool, pkg in
               ((CROSS_CC, "gcc-aarch64-linux-gnu"), ("qemu-aarch64", "qemu-user"),
                ("mmdebstrap", "mmdebstrap")) if shutil.which(tool) is None]
    if importlib.util.find_spec("Cython") is None:
        missing.append("Cython (pip install Cython)")
    return missing


def host_codename():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("VERSION_CODENAME="):
                    return line.split("=", 1)[1].strip().strip('"') or None
    except OSError:
        pass
    return None


def make_root(root, suite, mirror):
    """The AArch64 root, unpacked once (a marker file records the package list)."""
    marker = os.path.join(root, ".fastcnn-root")
    wanted = f"{suite} {mirror} {' '.join(PACKAGES)}"
    if os.path.exists(marker) and open(marker).read() == wanted:
        return
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(os.path.dirname(root), exist_ok=True)
    log(f"unpacking an arm64 Debian {suite} root with {', '.join(PACKAGES)}")
    subprocess.run(["mmdebstrap", "--quiet", "--variant=extract", "--architectures=arm64",
                    "--include=" + ",".join(PACKAGES), suite, root,
                    f"deb {mirror} {suite} main"], check=True)
    with open(marker, "w") as f:
        f.write(wanted)


def _stale(target, deps):
    return not os.path.exists(target) or any(
        os.path.getmtime(d) > os.path.getmtime(target) for d in deps)


def build_package(root, work):
    """Cross-built cconv + fastcnn under work/stage/src; returns that folder."""
    stage = os.path.join(work, "stage", "src")
    objdir = os.path.join(work, "obj")
    os.makedirs(objdir, exist_ok=True)
    includes = sorted(glob.glob(os.path.join(root, "usr", "include", "python3.*")))
    if not includes:
        raise RuntimeError(f"no Python headers under {root}/usr/include")
    # Debian's pyconfig.h includes <aarch64-linux-gnu/python3.X/pyconfig.h>: the root's
    # include folder, searched after the cross compiler's own.
    py_includes = ["-I", includes[-1], "-idirafter", os.path.join(root, "usr", "include")]
    ext_suffix = ".cpython-%s-aarch64-linux-gnu.so" % os.path.basename(includes[-1])[6:].replace(".", "")

    # Pure Python files and data: a fresh copy every run.
    if os.path.exists(stage):
        shutil.rmtree(stage)
    shutil.copytree(SRC, stage, ignore=shutil.ignore_patterns(
        "*.so", "*.c", "*.o", "__pycache__", "*.egg-info", "kernels"))

    common, isa_flags = harness_build.build_flags("aarch64")
    headers = harness_build.kernel_files("*.h")
    kernel_objects, commands = [], []
    for src, extra in harness_build.sources(isa_flags):
        if not src.startswith(KERNELS + os.sep):
            continue  # the harness's own files
        obj = os.path.join(objdir, os.path.basename(src)[:-2] + ".o")
        if _stale(obj, [src] + headers):
            commands.append([CROSS_CC, *common, *extra, "-fPIC", "-I", KERNELS, "-c", src,
                             "-o", obj])
        kernel_objects.append(obj)
    harness_build.run_all(commands)

    directives = dict(harness_build.build_flags_module.CYTHON_DIRECTIVES)
    language_level = directives.pop("language_level")
    directive_arg = ",".join(f"{k}={v}" for k, v in directives.items())
    def build_module(pyx):
        name = os.path.basename(pyx)[:-4]
        c_file = os.path.join(objdir, name + ".c")
        deps = [pyx] + glob.glob(os.path.join(SRC, "cconv", "*.pxd")) + headers
        if _stale(c_file, deps):
            subprocess.run([sys.executable, "-m", "cython", f"-{language_level}",
                            "-X", directive_arg, "--module-name", f"cconv.{name}",
                            "-I", SRC, "-I", KERNELS, pyx, "-o", c_file], check=True)
        obj = c_file[:-2] + ".o"
        if _stale(obj, [c_file] + headers):
            subprocess.run([CROSS_CC, *common, "-fopenmp", "-fPIC", "-w", *py_includes,
                            "-I", KERNELS, "-c", c_file, "-o", obj], check=True)
        subprocess.run([CROSS_CC, "-shared", "-fopenmp", "-o",
                        os.path.join(stage, "cconv", name + ext_suffix), obj, *kernel_objects,
                        "-lm"], check=True)

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(build_module, sorted(glob.glob(os.path.join(SRC, "cconv", "_*.pyx")))))
    return stage


def write_wrapper(root, work):
    """A `python3` for this machine that runs the AArch64 Python under qemu."""
    path = os.path.join(work, "bin", "python3")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n"
                "# The AArch64 Python of the root below, under user-mode emulation.\n"
                f'exec qemu-aarch64 -L "{root}" -0 "$0" -E LD_LIBRARY_PATH={LIBRARY_PATH} '
                f'"{root}/usr/bin/python3" "$@"\n')
    os.chmod(path, 0o755)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=os.path.join(REPO, "build", "aarch64-suite"))
    parser.add_argument("--suite", default=None, help="Debian codename (default: this machine's, "
                                                      "else bookworm)")
    parser.add_argument("--mirror", default="http://deb.debian.org/debian")
    args, pytest_args = parser.parse_known_args()

    missing = missing_tools()
    if missing:
        log("skipped, missing: " + ", ".join(missing))
        return 0
    work = os.path.abspath(args.work)
    root = os.path.join(work, "root")
    start = time.time()
    try:
        make_root(root, args.suite or host_codename() or "bookworm", args.mirror)
    except subprocess.CalledProcessError:
        log(f"skipped: could not unpack the arm64 root from {args.mirror} (network, mirror?)")
        return 0
    stage = build_package(root, work)
    python = write_wrapper(root, work)
    log(f"root and cross-build ready in {time.time() - start:.0f} s; running pytest under qemu")
    env = dict(os.environ, PYTHONPATH=stage, PYTHONDONTWRITEBYTECODE="1")
    env.setdefault("FASTCNN_FUZZ_PROFILE", "emulated")
    env.pop("PYTHONHOME", None)
    check = subprocess.run([python, "-c", "import platform, cconv; "
                            "print(platform.machine(), cconv.available_isas())"],
                           env=env, cwd=REPO, capture_output=True, text=True)
    log("emulated: " + (check.stdout.strip() or check.stderr.strip()[-2000:]))
    if check.returncode != 0:
        return check.returncode
    # The kernel harness is a C program for this machine's qemu, not for the emulated Python.
    select = [] if "-m" in pytest_args else ["-m", "not slow_under_emulation"]
    rc = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                         "--ignore=tests/test_kernel_harness.py", *select, *pytest_args],
                        env=env, cwd=REPO).returncode
    log(f"pytest exit status {rc}, {time.time() - start:.0f} s in all")
    return rc


if __name__ == "__main__":
    sys.exit(main())
