"""Splitting a big NumPy pass over the CPU's cores.

NumPy runs its copies and element-wise loops on one core (only its BLAS uses them all), but it
lets go of the GIL inside them, so a pass cut into one slice per core along an outer axis runs on
every core at once. Each slice computes its elements exactly as the whole pass would, so the
result is the same bit for bit whatever the number of threads. How many threads: cpu_threads()
(minialex/system.py).
"""
import concurrent.futures
import os
import threading

from ..system import ForkSafeLock, cpu_threads  # noqa: F401  (ForkSafeLock re-exported: its older name)

PARALLEL_MIN_ELEMENTS = 1 << 18  # below ~1 MB of float32 a thread hand-off costs more than it saves

_executor, _executor_workers = None, 0
_executor_lock = threading.Lock()
_inside = threading.local()
_fork_hook = False


def _forget_executor():
    """In a forked child: the parent's threads do not exist there, so start afresh when needed."""
    global _executor, _executor_workers, _executor_lock
    _executor, _executor_workers, _executor_lock = None, 0, threading.Lock()


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
