"""Splitting a big NumPy pass over the CPU's cores.

NumPy runs its copies and element-wise loops on one core (only its BLAS uses them all), but it
lets go of the GIL inside them, so a pass cut into one slice per core along an outer axis runs on
every core at once. Each slice computes its elements exactly as the whole pass would, so the
result is the same bit for bit whatever the number of threads.
"""
import concurrent.futures
import os
import threading

PARALLEL_MIN_ELEMENTS = 1 << 18  # below ~1 MB of float32 a thread hand-off costs more than it saves

_executor, _executor_workers = None, 0
_executor_lock = threading.Lock()
_inside = threading.local()
_fork_hook = False


def _forget_executor():
    """In a forked child: the parent's threads do not exist there, so start afresh when needed."""
    global _executor, _executor_workers, _executor_lock
    _executor, _executor_workers, _executor_lock = None, 0, threading.Lock()


class ForkSafeLock:
    """A threading.Lock that a forked child gets afresh: the child must not inherit it held by a
    thread of the parent, which does not exist there to release it. Use as `with lock:`."""

    def __init__(self):
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._renew)

    def _renew(self):
        self._lock = threading.Lock()

    def __enter__(self):
        self._lock.acquire()
        return self

    def __exit__(self, *exc):
        self._lock.release()


def cpu_threads():
    """How many threads a pass is split over: MINIALEX_THREADS, else the cores this process may use."""
    env = os.environ.get("MINIALEX_THREADS")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"MINIALEX_THREADS: expected a positive integer, got {env!r}")
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _pool(workers):
    """The thread pool, made (or grown) on first need; a forked child makes its own."""
    global _executor, _executor_workers, _fork_hook
    with _executor_lock:
        if not _fork_hook and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_forget_executor)
            _fork_hook = True
        if _executor_workers < workers:  # none yet, or MINIALEX_THREADS grew
            if _executor is not None:
                _executor.shutdown(wait=False)
            _executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="minialex")
            _executor_workers = workers
        return _executor


def parallel(fn, n, elements):
    """fn(lo, hi) over [0, n), cut into one contiguous slice per core, run in threads.

    `elements` is the pass's size: small ones (and calls from inside a slice) stay on this thread.
    An exception in any slice is raised here, after every slice has finished.
    """
    if elements < PARALLEL_MIN_ELEMENTS or getattr(_inside, "busy", False):
        fn(0, n)
        return
    parts = min(cpu_threads(), n)
    if parts <= 1:
        fn(0, n)
        return
    executor = _pool(parts - 1)
    bounds = [n * p // parts for p in range(parts + 1)]

    def run(lo, hi):
        _inside.busy = True
        try:
            fn(lo, hi)
        finally:
            _inside.busy = False
    futures = [executor.submit(run, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
    try:
        run(bounds[0], bounds[1])  # the first slice on this thread
    finally:
        for f in futures:
            f.result()  # waits, and re-raises a slice's exception here
