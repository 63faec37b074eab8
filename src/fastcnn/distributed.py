"""Data-parallel training over MPI (mpi4py, ``pip install fastcnn[mpi]``).

    mpiexec -n 4 python train.py          # in train.py: fc.distributed.init(), then fit as usual

After :func:`init` under ``mpiexec``, ``fit`` is data-parallel: every rank draws the same seeded
permutation of the samples each epoch and takes its own part of every batch (``batch_size`` is
per rank: the global batch is ``size`` times it); after the backward pass the gradients are
summed across ranks and every rank takes the same optimizer step. The sum is bucketed and each
bucket's allreduce is started as soon as the layers that own it have their gradients, while
the backward pass goes on through the earlier layers (as PyTorch's DistributedDataParallel
does). Each rank's gradient is weighted by its share of the global batch, so a run on N ranks
with per-rank batch b follows a one-process run with batch N x b.

Batch norm keeps per-rank statistics (DDP's default); :class:`SyncBatchNorm` computes them over
the global batch. Epoch losses, metrics and validation are reduced across ranks; the progress
bar, logs and checkpoints come from rank 0. Every collective operation has a timeout: a rank
that is gone or stuck makes the others raise :class:`DistributedError` and stop the job, and a
rank whose fit raises stops the job with its error, instead of a hang.

Without MPI (no ``mpiexec``, or mpi4py missing) the world is one process and nothing changes.
"""
import hashlib
import os
import sys
import time

import numpy as np

# Environment variables through which MPI launchers tell a process its place.
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE")
DEFAULT_TIMEOUT = 300.0


class DistributedError(RuntimeError):
    """A collective operation failed or timed out, or the ranks disagree."""


class World:
    """This process's place among the ranks: ``rank``, ``size``, ``local_rank`` (its index on
    its machine). ``comm`` is the MPI communicator (None in a world of one)."""

    def __init__(self, comm=None, local_rank=0, timeout=DEFAULT_TIMEOUT):
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()
        self.local_rank = int(local_rank)
        self.timeout = float(timeout)

    def __repr__(self):
        return f"World(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"

    # --- collectives, each bounded by the timeout --------------------------------------------------
    def _wait(self, requests, what):
        from mpi4py import MPI
        start = time.monotonic()
        deadline = start + self.timeout
        pause = 0.0   # spin for the usual few milliseconds, then back off to 1 ms sleeps
        while not MPI.Request.Testall(requests):
            now = time.monotonic()
            if now > deadline:
                raise DistributedError(
                    f"rank {self.rank}: {what} did not complete within {self.timeout:g} s: "
                    f"another rank is gone or stuck (set the limit with "
                    f"fc.distributed.init(timeout=...))")
            if now - start > 0.01:
                time.sleep(pause)
                pause = min(max(pause * 2, 1e-5), 1e-3)

    def start_sum(self, array):
        """Start summing float ``array`` in place across ranks; returns a request for
        :meth:`wait_all`."""
        from mpi4py import MPI
        return self.comm.Iallreduce(MPI.IN_PLACE, array, op=MPI.SUM)

    def wait_all(self, requests, what="allreduce of the gradients"):
        if requests:
            self._wait(list(requests), what)

    def sum(self, values, what="allreduce"):
        """The sum across ranks of float64 ``values`` (a copy)."""
        buf = np.array(values, dtype=np.float64)
        if self.size > 1:
            self.wait_all([self.start_sum(buf)], what)
        return buf

    def broadcast(self, array, what="broadcast"):
        """Rank 0's ``array`` into ``array`` on every rank."""
        if self.size > 1:
            self._wait([self.comm.Ibcast(array, root=0)], what)
        return array

    def gather_text(self, text, what="allgather"):
        """Every rank's ``text`` (short), in rank order."""
        if self.size == 1:
            return [text]
        data = np.zeros(1024, np.uint8)
        raw = text.encode()[:1024]
        data[:len(raw)] = np.frombuffer(raw, np.uint8)
        out = np.zeros((self.size, 1024), np.uint8)
        self._wait([self.comm.Iallgather(data, out)], what)
        return [bytes(row).rstrip(b"\0").decode() for row in out]

    def abort(self, message, code=1):
        """Print ``message`` and end every rank of the job (MPI_Abort)."""
        print(f"fastcnn.distributed: {message}", file=sys.stderr, flush=True)
        if self.comm is not None:
            time.sleep(0.5)   # the launcher forwards the message before it tears the job down
            self.comm.Abort(code)
        raise SystemExit(code)


_world = World()


def _launched_size():
    for var in _SIZE_VARS:
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 1


def init(timeout=DEFAULT_TIMEOUT):
    """Join the ranks started by ``mpiexec`` (a world of one without it); returns the
    :class:`World`. ``timeout``: seconds any collective operation may take before the ranks
    give up with a :class:`DistributedError` (a rank gone or stuck)."""
    global _world
    if _launched_size() == 1 and "mpi4py" not in sys.modules:
        _world = World(timeout=timeout)
        return _world
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError("fastcnn.distributed: this process was started by an MPI launcher "
                          "but mpi4py is missing: pip install fastcnn[mpi]") from None
    node = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED)   # the ranks on this machine
    _world = World(MPI.COMM_WORLD, node.Get_rank(), timeout)
    if "OMP_NUM_THREADS" not in os.environ:
        # the machine's cores shared among its ranks, not each rank taking all of them
        import cconv
        cconv.set_num_threads(max(1, cconv.info()["physical_cores"] // node.Get_size()))
    node.Free()
    return _world


def world():
    """The world :func:`init` joined (a world of one before it)."""
    return _world


def rank():
    return _world.rank


def size():
    return _world.size


# --- what fit does with the world ------------------------------------------------------------
_share = 1.0


def step_share():
    """This rank's share of the global batch in the step under way (1 in a world of one)."""
    return _share if _world.size > 1 else 1.0


def check_same_model(world, model):
    """Refuse ranks whose models differ in structure (names and shapes of the state)."""
    signature = ";".join(f"{k}:{tuple(np.shape(v))}" for k, v in model.state_dict().items())
    digest = hashlib.sha256(signature.encode()).hexdigest()[:16]
    digests = world.gather_text(digest, "the model check at the start of fit")
    differ = [r for r, d in enumerate(digests) if d != digests[0]]
    if differ:
        raise DistributedError(f"rank {world.rank}: the models of ranks {differ} differ from "
                               f"rank 0's (parameter names or shapes): every rank must build "
                               f"the same model")


def check_every_rank_has_samples(world, model, loader):
    """SyncBatchNorm needs every rank in every step's statistics: refuse an epoch whose last
    global batch leaves a rank without samples."""
    if not any(getattr(layer, "synchronizes_ranks", False) for layer in _all_layers(model)):
        return
    n, per_rank = loader.num_samples, loader.batch_size
    last = n % (per_rank * world.size)
    if not loader.drop_last and 0 < last <= per_rank * (world.size - 1):
        raise ValueError(f"fit: {n} samples in batches of {per_rank} on {world.size} ranks leave "
                         f"the last batch ({last} samples) without samples on some ranks, and "
                         f"SyncBatchNorm needs every rank in every step: pass drop_last=True or "
                         f"another batch size")


def _all_layers(layer):
    yield layer
    for _, child in layer.named_children():
        yield from _all_layers(child)


def broadcast_state(world, model):
    """Rank 0's parameters and buffers on every rank (DDP's start)."""
    state = model.state_dict()
    for key, value in state.items():
        state[key] = world.broadcast(np.array(value, order="C"), f"the broadcast of {key}")
    model.load_state_dict(state)


class GradientReducer:
    """Sums the trainable parameters' gradients across ranks in buckets of about
    ``bucket_bytes``, in the order backward produces them (the last layers first); a bucket's
    allreduce starts as soon as every parameter in it has its gradient."""

    def __init__(self, world, model, bucket_bytes=1 << 20):
        self.world = world
        owners = []   # (layer, its trainable parameters), in backward order
        for layer in reversed(list(_leaf_owners(model))):
            params = [p for p in layer.parameters() if p.requires_grad]
            if params:
                owners.append((layer, params))
        self.buckets, current, nbytes = [], [], 0
        self.bucket_of = {}
        for layer, params in owners:
            current.append(layer)
            nbytes += sum(p.data.nbytes for p in params)
            if nbytes >= bucket_bytes:
                self.buckets.append(current)
                current, nbytes = [], 0
        if current:
            self.buckets.append(current)
        self.params = {id(layer): params for layer, params in owners}
        for b, layers in enumerate(self.buckets):
            for layer in layers:
                self.bucket_of[id(layer)] = b
        # one buffer a bucket for the whole run: each step waits for its sums before the next
        self.buffers = [np.empty(sum(p.data.size for layer in layers for p in self.params[id(layer)]),
                                 np.float32) for layers in self.buckets]
        # seconds from the first bucket's start to the last one's end, and of those the ones
        # spent waiting after backward had finished (the rest was hidden behind it)
        self.reduce_seconds = self.exposed_seconds = 0.0

    def begin(self, weight, total):
        """A step starts: this rank's gradient counts ``weight`` times (its samples) of the
        global batch's ``total``."""
        global _share
        _share = weight / total
        self.weight = np.float32(weight)
        self.pending = [set(id(layer) for layer in layers) for layers in self.buckets]
        self.requests = [None] * len(self.buckets)
        self.started_at = []

    def ready(self, layer):
        """``layer`` (or a container: every owner inside it) has its gradients."""
        for owner in _leaf_owners(layer):
            b = self.bucket_of.get(id(owner))
            if b is None or id(owner) not in self.pending[b]:
                continue
            self.pending[b].discard(id(owner))
            if not self.pending[b]:
                self._start(b)
        started = [r for r in self.requests if r is not None]
        if started:   # MPI progresses a request inside MPI calls: let it, between layers
            from mpi4py import MPI
            MPI.Request.Testall(started)

    def _start(self, b):
        buf, offset = self.buffers[b], 0
        for layer in self.buckets[b]:
            for p in self.params[id(layer)]:
                n = p.data.size
                if p.grad is None:   # no gradient reached it this step
                    buf[offset:offset + n] = 0
                else:
                    np.multiply(p.grad.reshape(-1), self.weight, out=buf[offset:offset + n])
                offset += n
        self.started_at.append(time.perf_counter())
        self.requests[b] = self.world.start_sum(buf)

    def finish(self, extras):
        """Start what backward did not, wait for every bucket, and leave the global mean
        gradient in each parameter's ``.grad``. ``extras``: this rank's loss and metric sums,
        its number of samples last; returns their sums across ranks (the last: the samples the
        mean is over, fewer than planned where an image could not be read)."""
        backward_done = time.perf_counter()
        for b in range(len(self.buckets)):
            if self.requests[b] is None:
                self._start(b)
        sums = np.array(extras, dtype=np.float64)
        requests = [r for r in self.requests if r is not None] + [self.world.start_sum(sums)]
        self.world.wait_all(requests)
        end = time.perf_counter()
        first = min(self.started_at) if self.started_at else backward_done
        self.reduce_seconds += end - first
        self.exposed_seconds += end - backward_done
        scale = np.float32(1.0 / max(sums[-1], 1.0))
        for b, layers in enumerate(self.buckets):
            buf, offset = self.buffers[b], 0
            for layer in layers:
                for p in self.params[id(layer)]:
                    n = p.data.size
                    p.grad = (buf[offset:offset + n] * scale).reshape(p.data.shape)
                    offset += n
        return sums


def _leaf_owners(layer):
    """The layers in ``layer`` (itself included) that own parameters directly."""
    if any("." not in name for name, _ in layer.named_parameters()):
        yield layer
    for _, child in layer.named_children():
        yield from _leaf_owners(child)



