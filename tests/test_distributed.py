"""fastcnn.distributed: the data-parallel pieces in one process, and training under ``mpiexec``
(tests/mpi_worker.py): the weights of 2 ranks x batch 32 against one process with batch 64,
and what a rank that raises, dies, hangs or builds another model does to the others."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastcnn as fc

WORKER = Path(__file__).with_name("mpi_worker.py")
sys.path.insert(0, str(WORKER.parent))
import mpi_worker  # noqa: E402


def test_a_world_of_one_without_mpiexec():
    world = fc.distributed.init()
    assert (world.rank, world.size) == (0, 1) and fc.distributed.rank() == 0
    assert fc.distributed.size() == 1 and world.sum([1.5, 2.0]).tolist() == [1.5, 2.0]


@pytest.mark.parametrize("n,batch,ranks,drop_last", [(10, 2, 3, False), (64, 8, 2, False),
                                                       (13, 4, 2, True), (5, 4, 3, False)])
def test_shards_cut_every_global_batch_in_rank_order(n, batch, ranks, drop_last):
    x = np.arange(n, dtype=np.float32)[:, None]
    loaders = [fc.DataLoader(x, np.arange(n), batch_size=batch, shuffle=True, seed=4,
                             drop_last=drop_last).shard(r, ranks) for r in range(ranks)]
    whole = fc.DataLoader(x, np.arange(n), batch_size=batch * ranks, shuffle=True, seed=4,
                          drop_last=drop_last)
    parts = [list(loader) for loader in loaders]
    steps = [list(loader.steps()) for loader in loaders]
    for k, (_, y_global) in enumerate(whole):
        got, offset = [], 0
        for r in range(ranks):
            n_global, n_here = steps[r][k]
            assert n_global == len(y_global)
            if n_here:
                y_part = parts[r].pop(0)[1]
                assert len(y_part) == n_here
                got.append(y_part)
            offset += n_here
        np.testing.assert_array_equal(np.concatenate(got), y_global)
        assert offset == len(y_global)
    assert all(not p for p in parts)
    with pytest.raises(ValueError, match="rank 3"):
        fc.DataLoader(x, batch_size=2).shard(3, 3)


# --- under mpiexec -----------------------------------------------------------------------------
def _mpiexec():
    pytest.importorskip("mpi4py")
    exe = shutil.which("mpiexec")
    if exe is None:
        pytest.skip("no mpiexec (pip install fastcnn[mpi])")
    return exe


def _run(ranks, mode, out, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.perf_counter()
    run = subprocess.run([_mpiexec(), "-n", str(ranks), sys.executable, str(WORKER), mode,
                          str(out)], capture_output=True, text=True, timeout=timeout, env=env)
    return run, time.perf_counter() - start


@pytest.mark.slow_under_emulation
@pytest.mark.processes
def test_two_ranks_give_the_weights_of_one_process_with_twice_the_batch(tmp_path):
    run, _ = _run(2, "train", tmp_path / "ranks.npz")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "rank 1 of 2: done" in run.stdout and "rank 0 of 2: done" in run.stdout
    ranks = np.load(tmp_path / "ranks.npz")

    (x, y), (x_test, y_test) = fc.datasets.load_mnist()
    net = _one_process(mpi_worker.model())
    one = mpi_worker.state_vector(net)
    difference = np.max(np.abs(ranks["weights"] - one)) / np.max(np.abs(one))
    assert difference < 1e-6, difference
    assert np.max(np.abs(one - mpi_worker.state_vector(mpi_worker.model()))) > 1e-2   # it trained
    np.testing.assert_allclose(ranks["loss"], net.history.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(ranks["val_loss"], net.history.history["val_loss"], rtol=1e-5)
    assert ranks["reduce_seconds"] >= ranks["exposed_seconds"] >= 0


def _one_process(net):
    (x, y), (x_test, y_test) = fc.datasets.load_mnist()
    net.fit(x[:mpi_worker.SAMPLES], y[:mpi_worker.SAMPLES], epochs=mpi_worker.EPOCHS,
            batch_size=2 * mpi_worker.BATCH, seed=3, verbose=0,
            validation_data=(x_test[:200], y_test[:200]))
    return net


@pytest.mark.slow_under_emulation
@pytest.mark.processes
def test_sync_batch_norm_on_two_ranks_is_batch_norm_on_the_global_batch(tmp_path):
    run, _ = _run(2, "syncbn", tmp_path / "ranks.npz")
    assert run.returncode == 0, run.stdout + run.stderr
    ranks = np.load(tmp_path / "ranks.npz")
    net = _one_process(mpi_worker.model(norm=fc.BatchNorm2d))    # the same keys
    one = mpi_worker.state_vector(net)
    difference = np.max(np.abs(ranks["weights"] - one)) / np.max(np.abs(one))
    assert difference < 1e-5, difference
    np.testing.assert_allclose(ranks["val_loss"], net.history.history["val_loss"], rtol=1e-4)


@pytest.mark.slow_under_emulation
@pytest.mark.processes
@pytest.mark.parametrize("mode,message", [
    ("raise", "rank 1 of 2: fit failed: RuntimeError: a fault on purpose; stopping every rank"),
    ("stuck", "did not complete within 3 s: another rank is gone or stuck"),
    ("mismatch", "the models of ranks [1] differ from rank 0's"),
    ("kill", "")])
def test_a_failing_rank_stops_the_others_with_its_reason(tmp_path, mode, message):
    run, seconds = _run(2, mode, tmp_path / "x.npz", timeout=120)
    assert run.returncode != 0
    assert message in run.stderr + run.stdout, run.stdout + run.stderr
    assert "done" not in run.stdout
    assert seconds < 60
    if mode == "kill":   # the checkpoint rank 0 wrote after the first epoch is whole
        info = fc.io.read_checkpoint_info(tmp_path / "x.npz")
        assert info["epochs_done"] == 1


@pytest.mark.slow_under_emulation
@pytest.mark.processes
def test_a_checkpoint_of_two_ranks_resumes_on_one(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    run, _ = _run(2, "checkpoint", ckpt)
    assert run.returncode == 0, run.stdout + run.stderr
    (x, y), (x_test, y_test) = fc.datasets.load_mnist()
    net = mpi_worker.model()
    history = net.fit(x[:mpi_worker.SAMPLES], y[:mpi_worker.SAMPLES],
                      epochs=mpi_worker.EPOCHS + 1, batch_size=64, seed=3, verbose=0,
                      checkpoint=ckpt, resume=True)
    assert len(history.epoch) == mpi_worker.EPOCHS + 1
    assert len(net.history.history["loss"]) == mpi_worker.EPOCHS + 1


@pytest.mark.slow_under_emulation
@pytest.mark.processes
def test_images_that_cannot_be_read_leave_the_ranks_in_step(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(5):
            path = tmp_path / name / f"{i}.png"
            if i % 2:
                path.write_bytes(b"not an image")
            else:
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)
    run, _ = _run(2, "folder", tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "rank 0 of 2: done" in run.stdout and "rank 1 of 2: done" in run.stdout
