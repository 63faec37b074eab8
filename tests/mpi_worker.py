"""What tests/test_distributed.py runs under ``mpiexec -n N python tests/mpi_worker.py MODE OUT``.

MODE: ``train`` (LeNet-5 on 512 bundled digits, per-rank batch 32, 3 epochs; rank 0 saves the
weights to OUT and every rank checks that its weights are rank 0's), ``raise`` (rank 1's fit
raises at its third step), ``kill`` (rank 1 kills itself with SIGKILL in the second epoch; checkpoint at OUT),
``stuck`` (rank 1 stops answering at its third step; the timeout is 3 s), ``mismatch`` (rank 1
builds another model), ``checkpoint`` (train with a checkpoint at OUT, then stop), ``syncbn``
(as train, a small CNN with SyncBatchNorm), ``folder`` (an ImageFolder at OUT with damaged
files, skipped).
"""
import hashlib
import os
import signal
import sys
import time

import numpy as np

import fastcnn as fc

EPOCHS, BATCH, SAMPLES = 3, 32, 512


class _Fault(fc.Callback):
    def __init__(self, rank, mode):
        self.rank, self.mode, self.steps = rank, mode, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        # the kill comes in the second epoch, after the first one's checkpoint
        if self.rank != 1 or self.steps != (11 if self.mode == "kill" else 3):
            return
        if self.mode == "raise":
            raise RuntimeError("a fault on purpose")
        if self.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.mode == "stuck":
            time.sleep(60)


def model(extra=False, norm=None):
    """LeNet-5, or with ``norm`` (a batch-norm class) a small CNN with batch norm."""
    fc.manual_seed(0)
    if norm is None:
        net = fc.models.lenet5()
    else:
        net = fc.Sequential(fc.Conv2d(1, 8, 3, padding=1), norm(8), fc.ReLU(), fc.MaxPool2d(2),
                            fc.Conv2d(8, 8, 3, padding=1), norm(8), fc.ReLU(), fc.MaxPool2d(2),
                            fc.Flatten(), fc.Linear(392, 10))
    if extra:
        net.append(fc.Linear(10, 10))
    # FASTCNN_MPI_OPTIMIZER=adam (benchmarks/distributed.py --determinism): Adam's 1/sqrt(v)
    # magnifies the summation-order differences of small gradients
    optimizer = (fc.Adam(lr=2e-3) if os.environ.get("FASTCNN_MPI_OPTIMIZER") == "adam"
                 else fc.SGD(lr=0.1, momentum=0.9))
    net.compile(optimizer=optimizer, loss="cross_entropy")
    return net


def state_vector(net):
    """Every parameter and running statistic, as one float64 vector."""
    return np.concatenate([np.asarray(v, np.float64).reshape(-1)
                           for v in net.state_dict().values()])


def folder_run(world, root):
    """A folder with damaged files, batch 1 per rank: some ranks' parts come out empty."""
    import warnings
    folder = fc.datasets.ImageFolder(root, 8, on_error="skip")
    fc.manual_seed(0)
    net = fc.Sequential(fc.Conv2d(3, 4, 3), fc.ReLU(), fc.Flatten(), fc.Linear(144, 2))
    net.compile(optimizer=fc.SGD(lr=0.1), loss="cross_entropy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = net.fit(folder, epochs=2, batch_size=1, verbose=0)
    digests = world.gather_text(hashlib.sha256(state_vector(net).tobytes()).hexdigest())
    if len(set(digests)) != 1:
        raise SystemExit(f"rank {world.rank}: the ranks' weights differ")
    print(f"rank {world.rank} of {world.size}: done, loss {history.history['loss']}", flush=True)


def main(mode, out):
    world = fc.distributed.init(timeout=3.0 if mode in ("stuck", "folder") else 60.0)
    if mode == "folder":
        return folder_run(world, out)
    (x, y), (x_test, y_test) = fc.datasets.load_mnist()
    x, y = x[:SAMPLES], y[:SAMPLES]
    net = model(extra=(mode == "mismatch" and world.rank == 1),
                norm=fc.SyncBatchNorm if mode == "syncbn" else None)
    callbacks = [_Fault(world.rank, mode)] if mode in ("raise", "kill", "stuck") else []
    net.fit(x, y, epochs=EPOCHS, batch_size=BATCH, seed=3, verbose=0, callbacks=callbacks,
            validation_data=(x_test[:200], y_test[:200]),
            checkpoint=out if mode in ("checkpoint", "kill") else None)
    weights = state_vector(net)
    mine = weights.tobytes()
    digests = world.gather_text(hashlib.sha256(mine).hexdigest())
    if len(set(digests)) != 1:
        raise SystemExit(f"rank {world.rank}: the ranks' weights differ")
    if world.rank == 0 and mode in ("train", "syncbn"):
        np.savez(out, weights=weights, val_loss=net.history.history["val_loss"],
                 loss=net.history.history["loss"],
                 reduce_seconds=net.data_parallel.reduce_seconds,
                 exposed_seconds=net.data_parallel.exposed_seconds)
    print(f"rank {world.rank} of {world.size}: done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
