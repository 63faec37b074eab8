"""Data-parallel training over MPI: how the ResNet-20 training step scales with ranks and
threads, and how close N ranks come to one process with an N times larger batch.

    python benchmarks/distributed.py                        # 1 rank x 2 threads, 2 ranks x 1
    python benchmarks/distributed.py --configs 1x16,2x8,4x4,8x2,16x1 --steps 20
    python benchmarks/distributed.py --determinism          # LeNet-5: 2 x 32 against 1 x 64

Each configuration RxT starts ``mpiexec -n R`` with T threads per rank and times ``fit`` over
``steps`` global batches of R x ``--batch`` CIFAR-sized images (after one warm-up epoch):
images/s, the efficiency against the first configuration scaled by its cores (R x T), the
allreduce's time per step from its first bucket's start to its last one's end, and the share of
that time hidden behind the backward pass. Needs mpi4py and an MPI (pip install fastcnn[mpi]).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

import fastcnn as fc


def worker(args):
    world = fc.distributed.init()
    fc.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n = world.size * args.batch * args.steps
    x = rng.uniform(0, 1, (n, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, n)
    fc.manual_seed(0)
    model = fc.models.resnet20()
    model.compile(optimizer=fc.SGD(lr=0.05, momentum=0.9), loss="cross_entropy")
    model.fit(x[:world.size * args.batch * 2], y[:world.size * args.batch * 2],
              batch_size=args.batch, verbose=0)                       # warm-up
    start = time.perf_counter()
    model.fit(x, y, batch_size=args.batch, verbose=0, shuffle=False)
    seconds = world.sum([time.perf_counter() - start])[0] / world.size
    reducer = model.data_parallel
    reduce_s = exposed_s = 0.0
    if reducer is not None:
        reduce_s, exposed_s = world.sum([reducer.reduce_seconds, reducer.exposed_seconds]) / world.size
    if world.rank == 0:
        print(json.dumps({"images_per_s": n / seconds, "reduce_ms_per_step": 1e3 * reduce_s / args.steps,
                          "exposed_ms_per_step": 1e3 * exposed_s / args.steps,
                          "step_ms": 1e3 * seconds / args.steps}))


def launch(ranks, threads, extra):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [shutil.which("mpiexec") or "mpiexec", "-n", str(ranks), sys.executable, __file__,
           "--worker", "--threads", str(threads)] + extra
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def scaling(args):
    info = fc.info()
    print(f"CPU: {info['cpu']} ({info['isa']}, {info['physical_cores']} physical cores); "
          f"ResNet-20 training, batch {args.batch} per rank, {args.steps} steps")
    print(f"{'ranks x threads':<16} {'images/s':>9} {'efficiency':>10} {'step (ms)':>9} "
          f"{'allreduce (ms/step)':>20} {'hidden':>7}")
    base = None
    for config in args.configs.split(","):
        ranks, threads = (int(v) for v in config.split("x"))
        r = launch(ranks, threads, ["--batch", str(args.batch), "--steps", str(args.steps)])
        per_core = r["images_per_s"] / (ranks * threads)
        base = base or per_core
        hidden = (1 - r["exposed_ms_per_step"] / r["reduce_ms_per_step"]
                  if r["reduce_ms_per_step"] else float("nan"))
        print(f"{config:<16} {r['images_per_s']:>9.1f} {per_core / base:>10.2f} "
              f"{r['step_ms']:>9.1f} {r['reduce_ms_per_step']:>20.2f} {hidden:>7.0%}")


def determinism(args):
    """Max relative weight difference: 2 ranks x 32 against 1 process x 64 (LeNet-5, and a
    small CNN with SyncBatchNorm against BatchNorm2d)."""
    here = os.path.dirname(os.path.abspath(__file__))
    print("LeNet-5 on 512 bundled digits, 3 epochs (24 steps): 2 ranks x batch 32 against one "
          "process with batch 64")
    sys.path.insert(0, os.path.join(here, "..", "tests"))
    import mpi_worker
    for name, mode in (("sgd", "train"), ("adam", "train"), ("sgd, SyncBatchNorm", "syncbn")):
        out = os.path.join(os.path.abspath("."), "determinism.npz")
        optimizer = name.split(",")[0]
        env = dict(os.environ, OMP_NUM_THREADS="1", FASTCNN_MPI_OPTIMIZER=optimizer)
        subprocess.run([shutil.which("mpiexec") or "mpiexec", "-n", "2", sys.executable,
                        os.path.join(here, "..", "tests", "mpi_worker.py"), mode, out],
                       check=True, env=env, capture_output=True)
        os.environ["FASTCNN_MPI_OPTIMIZER"] = optimizer
        ranks = np.load(out)["weights"]
        os.unlink(out)
        (x, y), (x_test, y_test) = fc.datasets.load_mnist()
        net = mpi_worker.model(norm=fc.BatchNorm2d if mode == "syncbn" else None)
        net.fit(x[:mpi_worker.SAMPLES], y[:mpi_worker.SAMPLES], epochs=mpi_worker.EPOCHS,
                batch_size=2 * mpi_worker.BATCH, seed=3, verbose=0,
                validation_data=(x_test[:200], y_test[:200]))
        one = mpi_worker.state_vector(net)
        print(f"  {name:<20} max |difference| / max |weight| = "
              f"{np.max(np.abs(ranks - one)) / np.max(np.abs(one)):.2e}"
              f"{'  (bitwise equal)' if np.array_equal(ranks, one) else ''}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="1x2,2x1", help="RANKSxTHREADS, comma-separated")
    parser.add_argument("--batch", type=int, default=64, help="per rank")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--determinism", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
    elif args.determinism:
        determinism(args)
    else:
        scaling(args)


if __name__ == "__main__":
    main()
