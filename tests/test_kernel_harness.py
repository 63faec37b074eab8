"""The C kernel harness (tests/kernels): every SIMD micro-kernel against the scalar kernel.

Natively, the harness runs every ISA this CPU has (AVX-512, AVX2 on x86-64; NEON on ARM64).
When Debian's cross compiler and user-mode emulator are installed (packages
gcc-aarch64-linux-gnu and qemu-user), the AArch64 build runs the NEON kernels under
qemu-aarch64 on any machine, so that the ARM64 path is tested where no ARM64 machine is at hand.
"""
import importlib.util
import os
import platform
import re
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if not os.path.isdir(os.path.join(os.path.dirname(HERE), "src", "cconv", "kernels")):
    pytest.skip("the kernel harness compiles the kernels' sources, which are not beside these "
                "tests (the suite runs against an installed package)", allow_module_level=True)
_spec = importlib.util.spec_from_file_location("kernel_harness_build",
                                               os.path.join(HERE, "kernels", "build.py"))
harness_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness_build)

ISA_LINE = re.compile(r"^(\w+): (\d+) cases, (\d+) failed", re.M)
TOTAL_LINE = re.compile(r"^(\d+) passed, (\d+) failed$", re.M)
BUILD_TIMEOUT = 600
RUN_TIMEOUT = 600


def _build(target):
    try:
        return harness_build.build(target)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"building the {target} kernel harness failed: {e}")


def _run(command, label, capsys):
    proc = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    out = proc.stdout + proc.stderr
    per_isa = ISA_LINE.findall(out)
    with capsys.disabled():  # the case counts belong in the test log
        for isa, cases, failed in per_isa:
            print(f"\n[kernel harness, {label}] {isa}: {cases} cases, {failed} failed", end="")
    assert proc.returncode == 0, f"kernel harness ({label}) failed:\n{out[-6000:]}"
    total = TOTAL_LINE.search(out)
    assert total and total.group(2) == "0", out[-6000:]
    return per_isa


def test_build_reads_the_package_build_flags():
    common, x86 = harness_build.build_flags("x86_64")
    assert "-O3" in common
    assert {"scalar", "avx2", "avx512"} <= set(x86)
    assert "-mavx2" in x86["avx2"] and "-mavx512f" in x86["avx512"]
    _, arm = harness_build.build_flags("aarch64")
    assert set(arm) == {"scalar", "neon"}


def test_native_kernels_match_scalar(capsys):
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc}) to build the kernel harness")
    program = _build("native")
    per_isa = _run([program], platform.machine(), capsys)
    if not per_isa:
        pytest.skip("this CPU has no SIMD instruction set with kernels: nothing to compare")
    assert all(int(cases) > 0 for _, cases, _ in per_isa)


def test_aarch64_neon_kernels_match_scalar_under_qemu(capsys):
    if platform.machine().lower() in ("aarch64", "arm64"):
        pytest.skip("this machine is ARM64: the native harness runs the NEON kernels")
    missing = [f"{tool} (Debian package {package})"
               for tool, package in (("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
                                     ("qemu-aarch64", "qemu-user"))
               if shutil.which(tool) is None]
    if missing:
        pytest.skip("AArch64 cross-build not possible, missing: " + ", ".join(missing))
    program = _build("aarch64")
    per_isa = _run(["qemu-aarch64", program], "aarch64 under qemu", capsys)
    assert [isa for isa, _, _ in per_isa] == ["neon"]
    assert int(per_isa[0][1]) > 0
