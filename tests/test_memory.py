"""Memory: the per-call memory limit (cconv.set_memory_limit / FASTCNN_MAX_WORKSPACE) and the
32-bit index checks refuse absurd sizes before anything is allocated; the workspace cache is
bounded; 2,000 training steps and 10,000 predictions (on ever changing input shapes) leave the
process's resident memory flat."""
import gc
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cconv
import fastcnn as fc
from cconv._cache import WorkspaceCache
from cconv._validation import check_index_range, check_workspace, parse_bytes


@pytest.fixture
def limit():
    """Set a memory limit for one test; the previous one comes back afterwards."""
    previous = cconv.set_memory_limit(None)
    yield cconv.set_memory_limit
    cconv.set_memory_limit(previous)


def test_limit_api(limit):
    default = cconv.get_memory_limit()
    assert default >= 2**20
    assert limit("3M") == default and cconv.get_memory_limit() == 3 * 2**20
    assert limit(1000) == 3 * 2**20 and cconv.get_memory_limit() == 1000
    limit(None)
    assert cconv.get_memory_limit() == default
    assert fc.get_memory_limit() == default
    for bad in (0, -5, "lots", float("nan"), True, [1]):
        with pytest.raises(ValueError, match="set_memory_limit"):
            cconv.set_memory_limit(bad)
    assert parse_bytes("512k") == 512 * 1024 and parse_bytes("1.5GiB") == 3 * 2**29
    assert parse_bytes(" 2 GB ") == 2 * 2**30 and parse_bytes("77") == 77
    check_workspace("op", 2001, "x")
    cconv.set_memory_limit(2000)
    with pytest.raises(ValueError, match=r"op: x would take 2,001 bytes, more than the memory "
                                         r"limit of 2,000 bytes"):
        check_workspace("op", 2001, "x")


def test_every_module_refuses_work_over_the_limit(limit):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 32, 32, 16)).astype(np.float32)   # 256 KiB
    flat = x.reshape(-1, 16)
    ones, zeros = np.ones(16, np.float32), np.zeros(16, np.float32)
    calls = {
        "relu": lambda: cconv.relu(x),
        "add": lambda: cconv.add(x, x),
        "dropout": lambda: cconv.dropout(x, 0.5, 1),
        "softmax": lambda: cconv.softmax(flat),
        "softmax_cross_entropy": lambda: cconv.softmax_cross_entropy(flat, np.zeros(len(flat), int)),
        "batch_norm_forward_train": lambda: cconv.batch_norm_forward_train(x, ones, zeros),
        "max_pool2d": lambda: cconv.max_pool2d(x, 2),
        "avg_pool2d_backward": lambda: cconv.avg_pool2d_backward(x, (4, 64, 64, 16), 2),
        "global_avg_pool2d_backward": lambda: cconv.global_avg_pool2d_backward(
            x[:, 0, 0, :], x.shape),
        "sgd_update": lambda: cconv.sgd_update(flat.copy(), x.astype(np.float64).reshape(-1, 16),
                                               lr=0.1),
    }
    for name, call in calls.items():
        call()                                   # fine with the default limit
    limit("100K")
    for name, call in calls.items():
        with pytest.raises(ValueError, match=f"{name}: .* more than the memory limit of 102,400 "
                                             f"bytes"):
            call()
    limit(None)
    assert cconv.relu(x).shape == x.shape


def test_absurd_sizes_are_refused_before_allocating(limit):
    # Shapes whose memory no machine has: a clear error, not a MemoryError or an OOM kill.
    one = np.ones((1, 1), np.float32)
    with pytest.raises(ValueError, match="global_avg_pool2d_backward: .* memory limit"):
        cconv.global_avg_pool2d_backward(one, (1, 10**6, 10**6, 1))
    with pytest.raises(ValueError, match="sum_pool2d_backward: .* memory limit"):
        cconv.sum_pool2d_backward(np.ones((1, 1, 1, 1)), (1, 2**20, 2**20, 1), 2**20)
    huge_view = np.broadcast_to(np.float32(1.0), (10**6, 10**6))   # 4 TB, no memory behind it
    for op in (cconv.relu, cconv.sigmoid, cconv.softmax):
        with pytest.raises(ValueError, match="converting .* more than the memory limit"):
            op(huge_view)
    with pytest.raises(ValueError, match="Linear: its parameters .* memory limit"):
        fc.Linear(10**6, 10**6)
    with pytest.raises(ValueError, match="Conv2d: its parameters .* memory limit"):
        fc.Conv2d(100_000, 100_000, 99)
    for bad in (2**31, 10**30):
        with pytest.raises(ValueError, match="max_pool2d: stride must be <= 2147483647"):
            cconv.max_pool2d(one.reshape(1, 1, 1, 1), 1, bad)
    with pytest.raises(ValueError, match="n_threads"):
        cconv.relu(one, n_threads=10**6)


def test_32bit_indices_are_checked(limit):
    # The max-pooling indices are int32: an image of more than 2^31 pixels is refused even when
    # the memory limit would allow it.
    limit(2**62)
    dy = np.ones((1, 1, 1, 1), np.float32)
    idx = np.zeros((1, 1, 1, 1), np.int32)
    with pytest.raises(ValueError, match="max_pool2d_backward: height x width .* 32-bit"):
        cconv.max_pool2d_backward(dy, idx, (1, 65536, 65536, 1))
    with pytest.raises(ValueError, match="op: rows is 2,147,483,648, more than the kernels' "
                                         "32-bit indices hold"):
        check_index_range("op", "rows", 2**31)
    check_index_range("op", "rows", 2**31 - 1)


def test_limit_from_the_environment():
    src = str(Path(fc.__file__).resolve().parents[1])
    code = ("import numpy as np, cconv\n"
            "print(cconv.get_memory_limit())\n"
            "try:\n    cconv.relu(np.zeros(2**19, np.float32))\n"
            "except ValueError as e:\n    print(e)\n")
    env = dict(os.environ, PYTHONPATH=src, FASTCNN_MAX_WORKSPACE="1M")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    lines = out.stdout.splitlines()
    assert lines[0] == str(2**20), out.stderr
    assert "relu: its output and scratch buffers would take 2.0 MiB, more than the memory " \
           "limit of 1.0 MiB" in lines[1]
    env["FASTCNN_MAX_WORKSPACE"] = "plenty"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "FASTCNN_MAX_WORKSPACE ignored" in out.stderr and int(out.stdout.split()[0]) > 2**20


def test_workspace_cache_is_bounded():
    cache = WorkspaceCache("test", max_bytes=10_000)
    for i in range(100):                       # ever new shapes
        assert cache.get(("w", i)) is None
        cache.put(("w", i), np.zeros(i * 10, np.float32))
        assert cache.nbytes <= 10_000
    assert cache.get(("w", 99)) is not None and cache.get(("w", 97)) is None
    assert len(cache) == 2 and cache.nbytes == 98 * 40 + 99 * 40
    cache.get(("w", 98))                       # recently used: kept
    cache.put("big", (np.zeros(1000, np.float32), np.zeros(500, np.float32)))
    assert cache.get(("w", 98)) is not None and cache.get(("w", 99)) is None
    assert cache.nbytes == 98 * 40 + 6000
    assert cache.put("huge", np.zeros(10**4, np.float32)) is not None
    assert cache.get("huge") is None           # larger than the whole cache: not kept
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


# ---------------------------------------------------------------------------------------------
# No leaks: resident memory stays flat over long runs
# ---------------------------------------------------------------------------------------------
def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _under_asan():
    with open("/proc/self/maps") as f:
        return "libasan" in f.read()


@pytest.mark.slow_under_emulation
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_training_and_prediction_do_not_leak():
    fc.manual_seed(0)
    model = fc.Sequential(
        fc.Conv2d(1, 8, 3, padding=1), fc.BatchNorm2d(8), fc.ReLU(), fc.MaxPool2d(2),
        fc.Conv2d(8, 16, 3, padding=1), fc.ReLU(), fc.Dropout(0.2),
        fc.GlobalAvgPool2d(), fc.Flatten(), fc.Linear(16, 10))
    model.compile(optimizer=fc.Adam(lr=1e-3), loss=fc.CrossEntropyLoss())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 256)
    model.fit(x[:64], y[:64], epochs=10, batch_size=16, verbose=0)      # warm up: 40 steps
    gc.collect()
    before = _rss()
    history = model.fit(x, y, epochs=125, batch_size=16, verbose=0)     # 2,000 steps
    assert len(history.epoch) * len(x) // 16 == 2000
    gc.collect()
    trained = _rss()
    # 10,000 predictions on 40 different input shapes (batch 1-4, images 4-16 pixels a side).
    shapes = [(1 + i % 4, 4 + i % 13, 4 + (i * 7) % 11, 1) for i in range(40)]
    images = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    for i in range(10_000):
        model.predict(images[i % 40])
    gc.collect()
    predicted = _rss()
    growth_train, growth_predict = trained - before, predicted - trained
    print(f"RSS growth: {growth_train / 2**20:+.2f} MiB over 2,000 training steps, "
          f"{growth_predict / 2**20:+.2f} MiB over 10,000 predictions")
    if _under_asan():
        pytest.skip("AddressSanitizer keeps freed memory in quarantine: RSS is not a measure")
    assert growth_train < 4 * 2**20 and growth_predict < 4 * 2**20


def test_conv_workspace_bound_covers_what_conv_allocates():
    """conv_workspace_bytes (for the convolution module's memory-limit check) is an upper bound
    of what each pass of the direct algorithm allocates, measured with tracemalloc (numpy reports
    its allocations). Winograd's blocked scratch is not part of the bound yet."""
    import tracemalloc

    from cconv._validation import conv_workspace_bytes
    rng = np.random.default_rng(0)
    cases = [((2, 9, 7, 3), (8, 3, 3, 3), 1, 1, 1), ((1, 12, 12, 16), (32, 16, 3, 3), 1, 2, 1),
             ((3, 8, 8, 12), (12, 4, 5, 5), 2, 1, 3), ((1, 6, 6, 9), (9, 1, 3, 3), 1, 1, 9),
             ((4, 5, 5, 40), (70, 40, 1, 1), 1, 1, 1), ((1, 16, 16, 1), (4, 1, 7, 7), 2, 3, 1)]
    for x_shape, w_shape, stride, padding, groups in cases:
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        kw = dict(stride=stride, padding=padding, groups=groups)
        y = cconv.conv2d(x, w, **kw)
        passes = {"forward": lambda: cconv.conv2d(x, w, **kw, algo="direct"),
                  "backward_data": lambda: cconv.conv2d_backward_data(y, w, x.shape, **kw,
                                                                      algo="direct"),
                  "backward_weight": lambda: cconv.conv2d_backward_weight(x, y, w_shape[2:], **kw)}
        previous = cconv.get_num_threads()
        try:
            for threads in (1, 3):
                cconv.set_num_threads(threads)
                for name, call in passes.items():
                    tracemalloc.start()
                    try:
                        call()
                        peak = tracemalloc.get_traced_memory()[1]
                    finally:
                        tracemalloc.stop()
                    bound = conv_workspace_bytes(name, x.shape, y.shape, w.shape, groups, threads)
                    assert peak <= bound, (name, x_shape, w_shape, threads, peak, bound)
        finally:
            cconv.set_num_threads(previous)
