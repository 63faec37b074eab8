"""Memory kept between calls.

``scratch``: per-thread scratch buffers that a pass overwrites before it reads them (slabs,
partial sums): reused instead of allocated, so that a pass does not pay the page faults of
fresh memory on every call.

``WorkspaceCache``: a bounded cache for workspaces that are worth keeping between calls (packed or
transformed weights, geometry tables): least recently used entries are dropped once the cache
holds more than its byte limit, so a model run on ever new input shapes keeps its memory flat.
Never a growing dict.

    _packed = WorkspaceCache("conv2d packed weights", max_bytes=64 << 20)
    value = _packed.get(key)
    if value is None:
        value = _packed.put(key, pack(w))        # returns value
"""
import collections
import threading

import numpy as np


_local = threading.local()
SCRATCH_KEEP_BYTES = 32 << 20   # larger buffers are allocated per call and not kept


def empty_aligned(shape, dtype=np.float32, alignment=64):
    """np.empty(shape, dtype) whose data start on an ``alignment``-byte boundary (a cache line:
    what streaming stores need), a view into a slightly larger array."""
    count = int(np.prod(shape))
    itemsize = np.dtype(dtype).itemsize
    buf = np.empty(count + alignment // itemsize, dtype)
    skip = (-buf.ctypes.data % alignment) // itemsize
    return buf[skip:skip + count].reshape(shape)


def scratch(key, size, dtype=np.float32):
    """A 1-D array of ``size`` elements of ``dtype`` with undefined contents, reused by later
    calls with the same key from the same Python thread (each thread has its own buffers, so
    calls from several threads never share one). Never hand it to a caller."""
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    buf = buffers.get(key)
    if buf is None or buf.size < size or buf.dtype != dtype:
        buf = np.empty(max(int(size), 1), dtype)
        if buf.nbytes <= SCRATCH_KEEP_BYTES:
            buffers[key] = buf
        else:
            buffers.pop(key, None)
    return buf[:size]


def _nbytes(value):
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    return 64


class WorkspaceCache:
    """LRU mapping of hashable keys to arrays (or tuples/dicts of arrays) holding at most
    ``max_bytes``; thread-safe. An entry larger than the limit is returned but not kept."""

    def __init__(self, name, max_bytes=64 << 20):
        if int(max_bytes) < 0:
            raise ValueError(f"WorkspaceCache {name}: max_bytes must be >= 0, got {max_bytes}")
        self.name = name
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = self.misses = 0
        self._entries = collections.OrderedDict()   # key -> (value, nbytes)
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key, value):
        size = _nbytes(value)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= old[1]
            if size <= self.max_bytes:
                self._entries[key] = (value, size)
                self.nbytes += size
                while self.nbytes > self.max_bytes:
                    _, (_, dropped) = self._entries.popitem(last=False)
                    self.nbytes -= dropped
        return value

    def clear(self):
        with self._lock:
            self._entries.clear()
            self.nbytes = 0

    def __len__(self):
        return len(self._entries)

    def __repr__(self):
        return (f"WorkspaceCache({self.name!r}, {len(self)} entries, {self.nbytes} of "
                f"{self.max_bytes} bytes)")
