"""The compiler flags of the compiled op set: one place for every build that compiles it.

    python tools/build_flags.py CPU_FAMILY [--sanitize]

meson.build runs this at configure time, and so do the kernel test harness
(tests/kernels/build.py) and the ARM64 suite (tests/aarch64_suite.py), so the three builds
cannot drift apart. The C micro-kernels in files named `*__ISA.c` are compiled once per
instruction set with that set's flags; `kernels/core/isa.c` picks the best set at import time.
No -march=native: one build runs on any x86-64 (or ARM64) machine.

`-std=c11` (ISO C) keeps GCC from contracting a*b+c into FMAs on its own in the AVX2 and
AVX-512 files: the kernels do the arithmetic their code says, in the order it says. `-fwrapv`
(signed overflow wraps), which Python's own flags give every extension module, is what the
kernels were tuned with: GCC shapes some loops differently without it (the planar weight
gradient of LeNet-5's first layer ran 17% slower).

Printed as lines `NAME|FLAGS`: `common` (every C file), `cython` (Cython's directives),
`extension` (the C that Cython generates), then `isa ISA` for each instruction set of the family.
"""
import sys

COMMON_CFLAGS = ["-O3", "-std=c11", "-fno-math-errno", "-fwrapv", "-Wall",
                 "-Wno-unused-function"]
SANITIZE_CFLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", "-std=c11", "-fno-math-errno"]

# Cython's generated C trips these warnings by design.
EXTENSION_CFLAGS = ["-Wno-sign-compare", "-Wno-maybe-uninitialized", "-Wno-array-bounds",
                    "-Wno-unreachable-code"]

CYTHON_DIRECTIVES = {"language_level": 3, "boundscheck": False, "wraparound": False,
                     "cdivision": True, "initializedcheck": False, "embedsignature": True}

_NO_VECTORIZE = ["-fno-tree-vectorize", "-fno-tree-slp-vectorize"]
ISA_FLAGS = {
    "x86_64": {
        "scalar": _NO_VECTORIZE,
        "avx2": ["-mavx2", "-mfma", "-mf16c"],
        "avx512": ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx2", "-mfma"],
    },
    "aarch64": {"scalar": _NO_VECTORIZE, "neon": []},
}
_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


def isa_flags(cpu_family):
    """{isa: flags} for a CPU family (meson's or platform.machine()'s spelling); others get the
    scalar kernels only."""
    family = _ALIASES.get(cpu_family.lower(), cpu_family.lower())
    return ISA_FLAGS.get(family, {"scalar": _NO_VECTORIZE})


def common_flags(sanitize=False):
    return list(SANITIZE_CFLAGS if sanitize else COMMON_CFLAGS)


def main(argv):
    if not argv or argv[0].startswith("-"):
        sys.exit(__doc__)
    print("common|" + " ".join(common_flags("--sanitize" in argv)))
    print("cython|" + " ".join(f"-X {k}={v}" for k, v in CYTHON_DIRECTIVES.items()))
    print("extension|" + " ".join(EXTENSION_CFLAGS))
    for isa, flags in isa_flags(argv[0]).items():
        print(f"isa {isa}|" + " ".join(flags))


if __name__ == "__main__":
    main(sys.argv[1:])
