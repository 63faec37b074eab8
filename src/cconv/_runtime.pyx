"""Runtime state of the op set: which SIMD instruction set runs, and how many OpenMP threads.

The ISA is chosen once at import (the best the CPU supports, capped by ``FASTCNN_ISA``) and can be
capped again with :func:`set_isa`; every op module reads it through ``current_isa()``, and each op
family's kernel table (``kernels/FAMILY/FAMILY.h``) maps it to micro-kernels in one place.
"""
import numbers
import os
import time

from cython.parallel cimport parallel, prange, threadid

from cconv._kernels cimport cconv_ftz_enter, cconv_ftz_restore

cdef extern from "core/openmp_or_serial.h":
    int omp_get_max_threads() nogil
    void omp_set_num_threads(int n) nogil

cdef extern from "core/isa.h":
    unsigned cconv_supported_isas() nogil

cdef extern from "peak/peak.h":
    ctypedef double (*f32_fma_peak_fn)(size_t, float*) noexcept nogil
    f32_fma_peak_fn f32_fma_peak_select(int isa) nogil

ISA_NAMES = ("scalar", "avx2", "avx512", "neon")
# Preference order, best first, of the ISAs that can exist on one machine.
_PREFERENCE = ("avx512", "avx2", "neon", "scalar")

cdef int _isa = 0
# More OpenMP threads than this is a mistake (a count of items passed for a thread count, say),
# and asking the runtime for them could exhaust the process's threads or memory.
MAX_THREADS = 1024


# Floating-point operations one more OpenMP thread must get to pay for waking it: a smaller
# parallel region runs on fewer threads (results do not depend on the thread count). See
# threads_for; min_parallel_work reads or sets it; _init chooses it (_region_cost).
cdef double _min_work = 4e6


cdef int current_isa() noexcept nogil:
    return _isa


cdef int threads_for(int n_threads, double work) noexcept nogil:
    """Threads to run ``work`` floating-point operations (or their equivalent) on: at most
    ``n_threads``, and no more than give each thread ``min_parallel_work()`` operations, so
    that a small op does not wait for threads to wake up that would have little to do."""
    cdef double most = work / _min_work if _min_work > 0 else n_threads
    if n_threads <= 1:
        return 1
    if most >= n_threads:
        return n_threads
    return <int>most if most >= 1 else 1


def min_parallel_work(work=None):
    """Read, or with ``work`` set, the floating-point operations below which an op runs on
    one thread fewer (see ``threads_for``); returns the previous value. 0 runs every op on all
    the threads asked for (the tests do, to exercise the parallel code on small shapes). The
    default, chosen at import from the measured cost of waking a thread: 4e6 where the OpenMP
    threads soon sleep while they wait (cconv's short spin, or OMP_WAIT_POLICY=PASSIVE), 1e6
    where they spin without bound."""
    global _min_work
    previous = _min_work
    if work is not None:
        if isinstance(work, bool) or not isinstance(work, numbers.Real) or not work >= 0:
            raise ValueError(f"min_parallel_work: expected a number >= 0, got {work!r}")
        _min_work = float(work)
    return previous


def available_isas():
    """The instruction sets this machine can run, best first."""
    cdef unsigned mask = cconv_supported_isas()
    return tuple(name for name in _PREFERENCE if mask & (1u << ISA_NAMES.index(name)))


def set_isa(name):
    """Use at most ISA ``name`` ('avx512', 'avx2', 'neon' or 'scalar'); returns the ISA chosen.

    A cap above what the machine supports selects the best supported set below it.
    """
    global _isa
    name = str(name).lower()
    if name not in ISA_NAMES:
        raise ValueError(f"unknown ISA {name!r}: choose one of {', '.join(ISA_NAMES)}")
    available = available_isas()
    order = {"avx512": 3, "avx2": 2, "neon": 2, "scalar": 1}
    chosen = next(isa for isa in available if order[isa] <= order[name])
    _isa = ISA_NAMES.index(chosen)
    return chosen


def get_isa():
    """Name of the instruction set the kernels use now."""
    return ISA_NAMES[_isa]


def physical_cores():
    """Number of physical cores available to this process (logical CPUs when unknown)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/core_cpus_list") as f:
                cores.add(f.read().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def set_num_threads(n):
    """Set the number of OpenMP threads the kernels use (for the calling thread)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= MAX_THREADS:
        raise ValueError(f"set_num_threads: n must be an int in [1, {MAX_THREADS}], got {n!r}")
    omp_set_num_threads(int(n))


def get_num_threads():
    """Number of OpenMP threads the kernels will use (threadpoolctl's limits included)."""
    return omp_get_max_threads()


cpdef int resolve_threads(n_threads) except -1:
    """Thread count for one op call: ``n_threads`` if given, else :func:`get_num_threads`."""
    if n_threads is None:
        return min(omp_get_max_threads(), MAX_THREADS)
    if (isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral)
            or not 1 <= n_threads <= MAX_THREADS):
        raise ValueError(f"n_threads must be None or an int in [1, {MAX_THREADS}], "
                         f"got {n_threads!r}")
    return int(n_threads)


def measure_peak_gflops(n_threads=1, double seconds=0.1):
    """Measured FMA throughput of ``n_threads`` cores with the current ISA, in GFLOP/s.

    Every thread runs independent FMA chains from registers; the best of a few timed rounds counts.
    """
    cdef int nt = resolve_threads(n_threads)
    cdef f32_fma_peak_fn probe = f32_fma_peak_select(_isa)
    cdef float sink[256]
    cdef size_t iterations = 1 << 16
    cdef double flops = 0
    cdef int tid
    probe(iterations, &sink[0])  # warm up the clocks and the code
    best = 0.0
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        with nogil, parallel(num_threads=nt):
            tid = threadid()
            probe(iterations, &sink[tid % 256])
        elapsed = time.perf_counter() - start
        flops = probe(iterations, &sink[0]) * nt  # flops of one round on nt threads
        best = max(best, flops / elapsed / 1e9)
        if elapsed < 0.01:
            iterations *= 2
        elif time.perf_counter() > deadline:
            return best


def _region_cost(int rounds=15, double gap=200e-6):
    """Median seconds a parallel region of two threads takes when it starts ``gap`` seconds
    after the previous one ended: a microsecond or two where the runtime's threads spin until
    there is work, tens of microseconds where they sleep by then (OMP_WAIT_POLICY=PASSIVE, or
    cconv's bounded spin, which ends well before 200 us). 0 with one thread."""
    cdef int tid
    if omp_get_max_threads() < 2:
        return 0.0
    times = []
    for _ in range(rounds):
        end = time.perf_counter() + gap
        while time.perf_counter() < end:
            pass
        start = time.perf_counter()
        with nogil, parallel(num_threads=2):
            tid = threadid()
        times.append(time.perf_counter() - start)
    return sorted(times)[rounds // 2]


def _init():
    global _min_work
    cap = os.environ.get("FASTCNN_ISA", "").strip().lower()
    set_isa(cap or "avx512")
    if not os.environ.get("OMP_NUM_THREADS"):
        # libgomp defaults to logical CPUs; SMT siblings only slow FMA-bound kernels down.
        omp_set_num_threads(physical_cores())
    # Measured on the 2-core machine, ResNet-20 inference at batch 1 (3x3 layers of 4.7 MFLOP):
    # with sleeping threads (OMP_WAIT_POLICY=PASSIVE) 2 threads on those layers take 0.94 ms, 1
    # thread 0.63 ms; where the runtime spins without bound (another library started it first,
    # or the user asked for it) 2 threads take 0.51 ms. So: 4 MFLOP a thread where threads
    # sleep, 1 where they spin. cconv's own short spin counts as sleeping: with 1 MFLOP, batch-1
    # inference is faster alone (0.42 ms best) but 2.35 ms (median) beside a second process
    # training on the same cores, against 0.61 ms with 4 MFLOP.
    if 0 < _region_cost() < 5e-6:
        _min_work = 1e6


_init()


cdef void run_chunks(chunk_fn run, const void* job, Py_ssize_t n, Py_ssize_t chunk,
                     int n_threads) noexcept nogil:
    """Every chunk of the job on at most n_threads threads (one per chunk at most), denormals
    flushed while the kernels run; see _runtime.pxd."""
    cdef Py_ssize_t nchunks, i, start, length
    cdef unsigned ftz = 0
    if n <= 0:
        return
    nchunks = (n + chunk - 1) // chunk
    if n_threads > nchunks:
        n_threads = <int>nchunks
    if n_threads <= 1:
        ftz = cconv_ftz_enter()
        for i in range(nchunks):
            start = i * chunk
            run(job, i, start, min(chunk, n - start))
        cconv_ftz_restore(ftz)
        return
    with parallel(num_threads=n_threads):
        ftz = cconv_ftz_enter()
        for i in prange(nchunks, schedule="static"):
            start = i * chunk
            length = n - start
            if length > chunk:
                length = chunk
            run(job, i, start, length)
        cconv_ftz_restore(ftz)
