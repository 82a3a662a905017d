"""Data-parallel training over processes: MPI to start them and exchange host data, NCCL for
gradients on GPUs (the design of Chainer's ChainerMN).

    mpiexec -n 4 minialex-train --data imagenette2 --device cuda --batch-size 128

Each of the N processes (ranks) holds the whole model and trains on its slice of every global
batch: with per-process batch B, global batch k is the epoch's permutation [k*N*B, (k+1)*N*B),
and rank r takes its rows [r*B, (r+1)*B). After each backward the gradients are summed over the
ranks (one flat buffer, one all-reduce) and every rank takes the same SGD step, so the models stay
identical. Each rank's loss is its slice's mean, so its gradient is weighted by its slice's size
before the sum and the sum divided by the global batch size: exactly the gradient of the mean loss
over the global batch, as DistributedDataParallel gives (PyTorch averages equal slices the same
way). Dropout masks (minialex.random.sample_offset) and augmentation (seed, epoch, image index)
are keyed by the global sample, so N processes with batch B reproduce one process with batch N*B
up to the order of float sums.

The world comes from the launcher: `mpiexec` sets the environment (PMI_* for MPICH's Hydra,
OMPI_COMM_WORLD_* for Open MPI, PMIX_*); a process started without it is a world of one and never
imports mpi4py. On GPUs each rank uses `cuda:<local rank>` (its rank among the processes of its
machine), and gradients go through NCCL (cupy.cuda.nccl), whose communicator is set up over MPI.

Every rank takes every step: a rank none of whose images in a batch could be read takes part with
an empty slice (count 0), and the dropout offset of each rank's rows is the number of rows the
lower ranks hold in that batch (gathered before the forward), so unreadable images shift the keys exactly as
they do in one process. Stops that every rank sees at once (a Ctrl-C or SIGTERM on any rank, which
rides in the step's gradient buffer, a non-finite loss) end every rank at the same step.

Failure: an exception on any rank ends the whole job with that rank's message (MPI_Abort, after a
moment in which the other ranks' messages reach the launcher), and a collective that waits longer
than the timeout (a rank hangs, or died in a way the launcher did not see) aborts it too: no run
hangs forever.
"""
import contextlib
import os
import sys
import threading
import time

import numpy as np

from . import backend, system

LAUNCHER_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")
DEFAULT_TIMEOUT = 600.0   # seconds a collective may wait (a step of AlexNet takes well under one)
HEARTBEAT_TAG = 7301      # the message of a rank at work that the others wait for (World.working)
HEARTBEAT_SECONDS = 2.0   # how often it beats (at most a quarter of the timeout)
NCCL_ID_BYTES = 128       # ncclUniqueId
ABORT_GRACE = 1.0        # seconds between a failing rank's message and MPI_Abort (see World.abort)
POLL_SECONDS = 0.002     # how often a waiting rank looks at a non-blocking collective (World._finish)


class RootFailed(RuntimeError):
    """Rank 0's part of World.root_first raised; the message is its error's."""


class DistributedError(RuntimeError):
    """A distributed setup that cannot work (mpi4py missing, a device per rank missing)."""


def launched_size():
    """The number of processes the launcher started (1 when not under mpiexec)."""
    for name in LAUNCHER_SIZE:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return int(value)
    return 1


class World:
    """This process's place among the ranks: rank, size, local_rank, and the collectives."""

    def __init__(self, comm=None, timeout=DEFAULT_TIMEOUT):
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self.local_rank, self.local_size = 0, 1      # among the processes on this machine
        if comm is not None and self.size > 1:
            from mpi4py import MPI
            local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
            self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
            local.Free()
        self.timeout = timeout
        self.nccl, self._nccl_device = None, None
        self._watch = _Watchdog(self)
        self._buffers = {}
        self._beat_out, self._beat_in = np.ones(1, np.int32), np.zeros(1, np.int32)
        self.beats = False            # whether a rank at work can send heartbeats (World.working)
        if comm is not None and self.size > 1:
            from mpi4py import MPI    # (the same MPI library on every rank: every rank agrees)
            self.beats = MPI.Query_thread() >= MPI.THREAD_MULTIPLE

    @property
    def is_root(self):
        return self.rank == 0

    def __repr__(self):
        return f"World(rank={self.rank}, size={self.size}, local_rank={self.local_rank}, local_size={self.local_size})"

    # ----- host collectives (MPI) -----

    def _finish(self, request, what, timeout=None):
        """Wait for a non-blocking collective by polling it, so that this process's signal handlers
        run while it waits: a blocking MPI call holds the main thread in C, deaf to Ctrl-C and
        SIGTERM, and a rank waiting for rank 0's long statistics pass could not be stopped. The
        per-step collectives stay blocking (their signals are held for the step's all-reduce).
        A heartbeat from a rank at work (see working()) restarts the wait's clock."""
        with self._watch.waiting(what, timeout):
            while not request.Test():
                if self._heard_heartbeats():
                    self._watch.extend()
                time.sleep(POLL_SECONDS)

    def _heard_heartbeats(self):
        from mpi4py import MPI
        heard = False
        while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=HEARTBEAT_TAG):
            self.comm.Recv(self._beat_in, source=MPI.ANY_SOURCE, tag=HEARTBEAT_TAG)
            heard = True
        return heard

    def wait_limit(self):
        """The limit of a wait for a rank at work: the timeout while heartbeats keep it going, none
        where the MPI library cannot send them from a thread (a slow rank must not stop the job)."""
        return None if self.beats else 0

    @contextlib.contextmanager
    def working(self, what):
        """Run the block (a long task the other ranks wait for: rank 0's statistics pass, a store
        build) while telling them every few seconds that this rank is alive, so that their waits
        can keep a timeout without cutting short a task that takes hours. The rank counts as alive
        while its main thread moves (it calls or returns from a function since the last beat: a
        profile hook notes it): a rank frozen (SIGSTOP) or stuck in one call says nothing, and the
        others stop the job after --dist-timeout seconds."""
        if not self.beats:            # (the beats come from a thread: an MPI without threads sends none,
            yield                     # and the others wait without a limit: wait_limit())
            return
        moved, stop = [False], threading.Event()

        def note(frame, event, arg):
            moved[0] = True

        def beat():
            while not stop.wait(min(HEARTBEAT_SECONDS, self.timeout / 4 or HEARTBEAT_SECONDS)):
                if moved[0]:
                    moved[0] = False
                    for rank in range(self.size):
                        if rank != self.rank:
                            self.comm.Send(self._beat_out, dest=rank, tag=HEARTBEAT_TAG)
        previous = sys.getprofile()
        sys.setprofile(note)
        thread = threading.Thread(target=beat, name=f"minialex-heartbeat ({what})", daemon=True)
        thread.start()
        try:
            yield
        finally:
            sys.setprofile(previous)
            stop.set()
            thread.join()

    def barrier(self, what="barrier", timeout=None):
        if self.size > 1:
            self._finish(self.comm.Ibarrier(), what, timeout)

    def allreduce_sum(self, array, what="all-reduce"):
        """The element-wise sum of a host array over the ranks (a new float64/float32 array)."""
        array = np.ascontiguousarray(array)
        if self.size == 1:
            return array.copy()
        out = np.empty_like(array)
        self._finish(self.comm.Iallreduce(array, out), what)
        return out

    def broadcast(self, array, root=0, what="broadcast", timeout=None):
        """Rank root's host array, in place on every rank (same shape and dtype on all)."""
        if self.size > 1:
            self._finish(self.comm.Ibcast(array, root=root), what, timeout)
        return array

    def broadcast_text(self, text, what="broadcast", timeout=None):
        """Rank 0's string on every rank (text is ignored elsewhere; UTF-8 bytes, no pickle)."""
        if self.size == 1:
            return text
        data = np.frombuffer(text.encode(), np.uint8).copy() if self.is_root else None
        size = self.broadcast(np.array([data.size if self.is_root else 0], np.int64), 0, what, timeout)
        if not self.is_root:
            data = np.empty(int(size[0]), np.uint8)
        if data.size:
            self.broadcast(data, 0, what, timeout)
        return data.tobytes().decode()

    def gather_counts(self, count, what="batch sizes"):
        """Every rank's `count`, in rank order (an int64 array; [count] in a world of one)."""
        mine = np.array([count], np.int64)
        if self.size == 1:
            return mine
        counts = np.zeros(self.size, np.int64)
        with self._watch.waiting(what):
            self.comm.Allgather(mine, counts)
        return counts

    def allgather_text(self, text, what="all-gather"):
        """Every rank's string, in rank order (sent as UTF-8 bytes: no pickle)."""
        if self.size == 1:
            return [text]
        data = np.frombuffer(text.encode(), np.uint8).copy()
        sizes = np.zeros(self.size, np.int64)
        self._finish(self.comm.Iallgather(np.array([data.size], np.int64), sizes), what)
        out = np.empty(max(int(sizes.sum()), 1), np.uint8)
        self._finish(self.comm.Iallgatherv(data, [out, sizes.tolist()]), what)
        ends = np.cumsum(sizes)
        return [out[e - n:e].tobytes().decode() for n, e in zip(sizes, ends)]

    @contextlib.contextmanager
    def root_first(self, what):
        """Rank 0 runs the block first (it may write caches the others then read), the rest after.
        When rank 0's block raises, the others raise RootFailed with its message instead of
        running theirs (they would otherwise wait for a rank that has left)."""
        if self.size == 1:
            yield
            return
        if not self.is_root:
            said = self.broadcast_text(None, what, self.wait_limit())   # rank 0 may take hours: its heartbeats
            if said:
                raise RootFailed(said)
            yield
            return
        try:
            with self.working(what):
                yield
        except BaseException as e:
            self.broadcast_text(str(e) or type(e).__name__, what)
            raise
        self.broadcast_text("", what)

    # ----- gradients -----

    def allreduce_gradients(self, params, count, extra=()):
        """Each parameter's .grad becomes sum over ranks of count_r * grad_r, divided by the sum of
        the counts (count: this rank's samples, whose mean loss the gradient is of): the gradient of
        the mean loss over the global batch. A parameter without a gradient on this rank (a rank
        with an empty slice ran no backward) counts as zeros, and gets the sum. `extra` host numbers
        (this step's loss sum, correct count, a stop request) ride in the same buffer; returns
        (*their sums, the total count). When the total count is 0 the gradients are left alone.
        One flat buffer, one collective per step: MPI on the host, NCCL on GPUs."""
        params = list(params)
        device = params[0].device if params else "cpu"
        with backend.device_scope(device):   # the buffer and NCCL's communicator on this rank's GPU
            return self._allreduce_gradients(params, count, extra)

    def _allreduce_gradients(self, params, count, extra):
        xp = backend.xp_of(params[0].data) if params else np
        sizes = [p.data.size for p in params]
        n = sum(sizes)
        key = (xp.__name__, n, len(extra))
        if key not in self._buffers:
            self._buffers[key] = xp.empty(n + len(extra) + 1, np.float32)
        flat = self._buffers[key]
        offset = 0
        for p, size in zip(params, sizes):
            if p.grad is None:
                flat[offset:offset + size] = 0
            else:
                xp.multiply(p.grad.reshape(-1), np.float32(count), out=flat[offset:offset + size])
            offset += size
        flat[n:] = xp.asarray(np.array([*extra, count], np.float32))
        if self.size > 1:
            if xp is not np:
                self._nccl_allreduce(flat)
            else:
                from mpi4py import MPI
                with self._watch.waiting("gradient all-reduce"):
                    self.comm.Allreduce(MPI.IN_PLACE, flat)
        sums = backend.to_numpy(flat[n:]).astype(np.float64)
        if sums[-1] == 0:
            return tuple(sums)
        offset = 0
        for p, size in zip(params, sizes):
            if p.grad is None:
                p.grad = xp.empty_like(p.data)
            xp.multiply(flat[offset:offset + size].reshape(p.data.shape), np.float32(1.0 / sums[-1]), out=p.grad)
            offset += size
        return tuple(sums)

    def _nccl_allreduce(self, flat):
        import cupy as cp
        from cupy.cuda import nccl
        device = flat.device.id
        if self.nccl is None or self._nccl_device != device:
            uid = np.zeros(NCCL_ID_BYTES, np.int64)              # NCCL's id: 128 byte values
            if self.is_root:
                uid[:] = nccl.get_unique_id()
            self.broadcast(uid, 0, "NCCL set-up")
            with cp.cuda.Device(device):
                self.nccl = nccl.NcclCommunicator(self.size, tuple(int(v) for v in uid), self.rank)
            self._nccl_device = device
        stream = cp.cuda.get_current_stream()
        with self._watch.waiting("NCCL gradient all-reduce"):
            self.nccl.allReduce(flat.data.ptr, flat.data.ptr, flat.size, nccl.NCCL_FLOAT32, nccl.NCCL_SUM, stream.ptr)
            stream.synchronize()

    def sync_parameters(self, params):
        """Rank 0's parameters on every rank (the same seed makes them equal already; this makes sure)."""
        if self.size == 1:
            return
        for p in params:
            host = np.ascontiguousarray(backend.to_numpy(p.data))
            self.broadcast(host, 0, "parameter broadcast")
            p.data[...] = backend.to_device(host, p.device, p.dtype)

    # ----- failure -----

    def abort(self, message=None, code=1):
        """End every rank's process now, with this rank's message (if any) on stderr. Before
        MPI_Abort, ABORT_GRACE seconds in which the other ranks, which often fail at the same
        line, print theirs and the launcher passes all of it on (aborting at once lost them)."""
        try:
            if message:
                print(f"minialex: rank {self.rank} of {self.size}: {message}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            sys.stderr.flush()
            if self.size > 1:
                time.sleep(ABORT_GRACE)
        finally:
            if self.size > 1:
                self.comm.Abort(code)
            os._exit(code)


class _Watchdog:
    """Aborts the job when a collective waits longer than its limit (world.timeout; 0: no limit)
    without a heartbeat of a rank at work (extend())."""

    def __init__(self, world):
        self.world = world
        self.deadline, self.what, self.limit = None, None, None
        self.lock = threading.Lock()
        self.thread = None

    @contextlib.contextmanager
    def waiting(self, what, timeout=None):
        limit = self.world.timeout if timeout is None else timeout
        if not limit or self.world.size == 1:   # alone, nobody can keep this process waiting
            yield
            return
        with self.lock:
            self.deadline, self.what, self.limit = time.monotonic() + limit, what, limit
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="minialex-watchdog", daemon=True)
                self.thread.start()
        try:
            yield
        finally:
            with self.lock:
                self.deadline = None

    def extend(self):
        """A sign of life from the rank being waited for: the wait's clock starts again."""
        with self.lock:
            if self.deadline is not None:
                self.deadline = time.monotonic() + self.limit

    def _run(self):
        while True:
            time.sleep(0.2)
            with self.lock:
                late = self.deadline is not None and time.monotonic() > self.deadline
                what, limit = self.what, self.limit
            if late:
                self.world.abort(f"{what} waited more than {limit:g} s for the other ranks (one has died, "
                                 f"hangs or is frozen; --dist-timeout sets the limit): stopping the job")


_world = None


def init(timeout=DEFAULT_TIMEOUT):
    """The world this process belongs to (made once): size 1 unless started by mpiexec."""
    global _world
    if _world is not None:
        _world.timeout = timeout
        return _world
    if launched_size() == 1:
        _world = World(None, timeout)
        return _world
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistributedError(f"started by mpiexec as one of {launched_size()} processes, but mpi4py is not "
                               "installed: pip install 'minialex[mpi]' (mpi4py and an MPI library)") from None
    _world = World(MPI.COMM_WORLD, timeout)
    return _world


def world():
    """The current world (init() with the defaults if nobody called it)."""
    return _world if _world is not None else init()


def check_nccl():
    """Raise RuntimeError unless CuPy can load NCCL (GPU gradients are summed by it)."""
    try:
        from cupy.cuda import nccl
    except ImportError as e:
        raise RuntimeError(f"data parallel on GPUs needs NCCL through CuPy, which failed to load it ({e})") from None
    if not getattr(nccl, "available", True):
        raise RuntimeError("data parallel on GPUs needs NCCL, which CuPy did not find: "
                           "pip install nvidia-nccl-cu12 (or 'minialex[gpu]')")


def share_cores(w):
    """Split this machine's cores between its w.local_size processes: each takes cores // local_size
    threads for minialex's passes (MINIALEX_THREADS) and for OpenBLAS. Without this every process
    would start a thread per core, and two AlexNet processes on 2 cores measured 2.6x slower per
    step than with one thread each (benchmarks/allreduce.py). A MINIALEX_THREADS the user set is
    kept and sets OpenBLAS too, unless OPENBLAS_NUM_THREADS or OMP_NUM_THREADS is set (kept as
    well). Returns the threads per process, or None where nothing was changed (a process alone)."""
    if w.local_size == 1:
        return None
    if "MINIALEX_THREADS" in os.environ:
        share = system.cpu_threads()
    else:
        share = max(1, system.cpu_threads() // w.local_size)
        os.environ["MINIALEX_THREADS"] = str(share)
    if not any(k in os.environ for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")):
        system.set_blas_threads(share)
    return share


def device_for(device, w):
    """The device of rank w.rank: "cuda" becomes cuda:<local rank> when several ranks share a machine."""
    if w.size > 1 and device == "cuda":
        return f"cuda:{w.local_rank}"
    return device
