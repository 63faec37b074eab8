"""What the op set runs on: version, ISA, OpenMP runtime, threads and caches."""
import os
import platform

from . import _runtime


def _cache_sizes():
    sizes = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            if not entry.startswith("index"):
                continue
            path = os.path.join(base, entry)
            with open(os.path.join(path, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(path, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(path, "size")) as f:
                size = f.read().strip()
            if kind != "Instruction":
                sizes[f"L{level}" + ("d" if kind == "Data" else "")] = size
    except OSError:
        pass
    return sizes


def cpu_name():
    """The processor's model name as the OS reports it (benchmarks name the CPU they ran on)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":")[0].strip() in ("model name", "Model"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def last_level_cache_bytes(default=32 << 20):
    """Bytes of the largest data cache the OS reports ("32768K" -> 33554432), else ``default``."""
    sizes = []
    for size in _cache_sizes().values():
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
        digits = size[:-1] if size[-1:] in "KMG" else size
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes) if sizes else default


def _openmp_runtime():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for pool in threadpool_info():
        if pool.get("user_api") == "openmp":
            return {"library": pool.get("prefix"), "path": pool.get("filepath"),
                    "version": pool.get("version")}
    return None


def info(measure_peak=False):
    """A dict describing the build and the machine as the kernels see them; with
    ``measure_peak`` also the measured FMA peak of one core and of all threads (GFLOP/s)."""
    from . import __version__
    result = {
        "version": __version__,
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "isa": _runtime.get_isa(),
        "available_isas": list(_runtime.available_isas()),
        "openmp": _openmp_runtime(),
        "num_threads": _runtime.get_num_threads(),
        "physical_cores": _runtime.physical_cores(),
        "caches": _cache_sizes(),
    }
    if measure_peak:
        result["peak_gflops_1_thread"] = round(_runtime.measure_peak_gflops(1), 1)
        threads = _runtime.get_num_threads()
        result["peak_gflops_all_threads"] = round(_runtime.measure_peak_gflops(threads), 1)
    return result
