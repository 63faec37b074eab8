"""Build of the compiled op set.

The C micro-kernels are compiled once per instruction set, each group with its own flags, into
static libraries that every Cython module links; `kernels/isa.c` picks the best set at import time.
No -march=native: one build runs on any x86-64 (or ARM64) machine.
"""
import glob
import os
import platform
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = "src/cconv/kernels"
SANITIZE = os.environ.get("FASTCNN_SANITIZE") == "1"

COMMON_CFLAGS = ["-O3", "-std=c11", "-fno-math-errno", "-Wall", "-Wno-unused-function"]
if SANITIZE:
    COMMON_CFLAGS = ["-O1", "-g", "-fno-omit-frame-pointer",
                     "-fsanitize=address,undefined", "-std=c11", "-fno-math-errno"]

machine = platform.machine().lower()
if machine in ("x86_64", "amd64"):
    ISA_FLAGS = {
        "scalar": ["-fno-tree-vectorize", "-fno-tree-slp-vectorize"],
        "avx2": ["-mavx2", "-mfma", "-mf16c"],
        "avx512": ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx2", "-mfma"],
    }
elif machine in ("aarch64", "arm64"):
    ISA_FLAGS = {"scalar": ["-fno-tree-vectorize", "-fno-tree-slp-vectorize"], "neon": []}
else:
    ISA_FLAGS = {"scalar": ["-fno-tree-vectorize", "-fno-tree-slp-vectorize"]}


HEADERS = sorted(glob.glob(f"{KERNELS}/*.h"))


def kernel_libraries():
    """One static library per ISA (files named *__ISA.c) plus one for ISA-independent C.

    Every object depends on every kernel header, so that editing a header rebuilds what uses it.
    """
    libs = []
    deps = {"obj_deps": {"": HEADERS}}
    generic = sorted(f for f in glob.glob(f"{KERNELS}/*.c") if "__" not in os.path.basename(f))
    libs.append(("cconv_common", {"sources": generic, "cflags": COMMON_CFLAGS,
                                  "include_dirs": [KERNELS], **deps}))
    for isa, flags in ISA_FLAGS.items():
        sources = sorted(glob.glob(f"{KERNELS}/*__{isa}.c"))
        if sources:
            libs.append((f"cconv_{isa}", {"sources": sources, "cflags": COMMON_CFLAGS + flags,
                                          "include_dirs": [KERNELS], **deps}))
    return libs


class BuildExtWithKernels(build_ext):
    """build_ext that builds the kernel libraries first (also for `build_ext --inplace`)."""

    def run(self):
        self.run_command("build_clib")
        super().run()


def extensions():
    openmp = ["-fopenmp"]
    link = ["-fopenmp"] + (["-fsanitize=address,undefined"] if SANITIZE else [])
    exts = []
    for pyx in sorted(glob.glob("src/cconv/_*.pyx")):
        name = "cconv." + os.path.splitext(os.path.basename(pyx))[0]
        exts.append(Extension(
            name, [pyx],
            include_dirs=[KERNELS],
            # Relink when any kernel changes (the static libraries are not tracked otherwise).
            depends=HEADERS + sorted(glob.glob(f"{KERNELS}/*.c")),
            # Cython's generated C trips these warnings by design.
            extra_compile_args=COMMON_CFLAGS + openmp + ["-Wno-sign-compare", "-Wno-maybe-uninitialized",
                                                         "-Wno-array-bounds", "-Wno-unreachable-code"],
            extra_link_args=link,
        ))
    return cythonize(exts, language_level=3, compiler_directives={
        "boundscheck": False, "wraparound": False, "cdivision": True,
        "initializedcheck": False, "embedsignature": True,
    })


if sys.platform == "darwin":  # Apple clang needs libomp from Homebrew; documented in the README
    pass

setup(
    libraries=kernel_libraries(),
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtWithKernels},
)
