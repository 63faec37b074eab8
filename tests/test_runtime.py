"""ISA dispatch, thread control and the info report."""
import os
import platform
import subprocess
import sys

import pytest

import cconv
import fastcnn


def test_available_isas_include_scalar():
    isas = cconv.available_isas()
    assert isas[-1] == "scalar"
    assert cconv.get_isa() in isas


def test_set_isa_caps_the_choice(isa):
    assert cconv.get_isa() == isa
    assert cconv.set_isa("scalar") == "scalar"
    assert cconv.get_isa() == "scalar"


def test_set_isa_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown ISA"):
        cconv.set_isa("sse9")


@pytest.mark.parametrize("cap", ["scalar", "avx2", "avx512"])
def test_fastcnn_isa_environment_variable_caps_dispatch(cap):
    env = dict(os.environ, FASTCNN_ISA=cap)
    out = subprocess.run([sys.executable, "-c", "import cconv; print(cconv.get_isa())"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    rank = {"scalar": 0, "avx2": 1, "neon": 1, "avx512": 2}
    assert rank[out] <= rank[cap]
    if cap in cconv.available_isas():
        assert out == cap


def test_omp_num_threads_is_respected():
    env = dict(os.environ, OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", "import fastcnn; print(fastcnn.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == "3"


def test_set_num_threads_round_trip():
    before = fastcnn.get_num_threads()
    try:
        fastcnn.set_num_threads(1)
        assert fastcnn.get_num_threads() == 1
    finally:
        fastcnn.set_num_threads(before)
    with pytest.raises(ValueError):
        fastcnn.set_num_threads(0)


def test_threadpoolctl_sees_and_limits_the_openmp_runtime():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    apis = {pool["user_api"] for pool in threadpoolctl.threadpool_info()}
    assert "openmp" in apis
    fastcnn.set_num_threads(2)
    with threadpoolctl.threadpool_limits(1):
        assert fastcnn.get_num_threads() == 1
    assert fastcnn.get_num_threads() == 2


def test_info_reports_isa_and_openmp():
    info = fastcnn.info()
    assert info["isa"] in info["available_isas"]
    assert info["openmp"] is not None
    assert info["num_threads"] >= 1
    out = subprocess.run([sys.executable, "-m", "fastcnn", "info"], capture_output=True,
                         text=True, check=True).stdout
    assert "ISA:" in out and "OpenMP:" in out


def test_keep_freed_memory_is_applied_and_can_be_turned_off():
    """On glibc cconv keeps freed arrays in the heap (no page faults per training step), unless
    FASTCNN_KEEP_MEMORY=0 or the user's own MALLOC_* settings say otherwise."""
    code = "import cconv; print(cconv._keep_freed_memory())"
    def run(**env):
        full = {k: v for k, v in os.environ.items()
                if not k.startswith("MALLOC_") and k != "FASTCNN_KEEP_MEMORY"}
        full.update(env)
        return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                              text=True, check=True).stdout.strip()
    if platform.libc_ver()[0] == "glibc" and "asan" not in os.environ.get("LD_PRELOAD", ""):
        assert run() == "True"   # (AddressSanitizer's allocator ignores mallopt)
    assert run(FASTCNN_KEEP_MEMORY="0") == "False"
    assert run(MALLOC_ARENA_MAX="2") == "False"


def test_openmp_threads_spin_briefly_unless_the_user_chose():
    """cconv asks for a short spin before a waiting thread sleeps (GOMP_SPINCOUNT=1000); a wait
    policy or spin count of the user's is left as it is."""
    code = ("import os, cconv; "
            "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))")
    def run(**env):
        full = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
        full.update(env)
        return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                              text=True, check=True).stdout.split()
    assert run() == ["1000", "None"]
    assert run(OMP_WAIT_POLICY="PASSIVE") == ["None", "PASSIVE"]
    assert run(GOMP_SPINCOUNT="50") == ["50", "None"]
