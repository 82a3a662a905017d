"""The process and the machine: facts about them that several parts of minialex need.

    cpu_threads()          how many threads a pass may use (MINIALEX_THREADS, else the usable cores)
    set_blas_threads(n)    NumPy's OpenBLAS threads (blas_threads() asks; openblas() finds the library)
    ForkSafeLock           a lock that a forked child gets afresh
    process_alive(pid)     whether a process runs on this host (a zombie does not)

Neutral ground: it imports nothing of minialex, so the fast CPU ops (minialex/cpu/), the data
pipeline (minialex/data/), the run folder and data parallel (minialex/distributed.py) can all
use it without depending on one another.
"""
import ctypes
import os
import threading


def cpu_threads():
    """How many threads a pass is split over: MINIALEX_THREADS, else the cores this process may use."""
    env = os.environ.get("MINIALEX_THREADS")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"MINIALEX_THREADS: expected a positive integer, got {env!r}")
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ----- NumPy's OpenBLAS -----

def openblas():
    """NumPy's OpenBLAS as a ctypes library, if this process has loaded one (Linux), else None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if all(hasattr(lib, f) for f in ("openblas_read_env", "openblas_thread_timeout", "blas_thread_shutdown_")):
            return lib
    return None


_BLAS_PREFIXES = ("openblas_", "scipy_openblas_")     # NumPy's wheels rename OpenBLAS's functions
_BLAS_SUFFIXES = ("", "64_")


def _blas_function(name, argtypes, restype):
    lib = openblas()
    for prefix in _BLAS_PREFIXES:
        for suffix in _BLAS_SUFFIXES:
            fn = getattr(lib, prefix + name + suffix, None) if lib is not None else None
            if fn is not None:
                fn.argtypes, fn.restype = argtypes, restype
                return fn
    return None


def set_blas_threads(n):
    """Have NumPy's OpenBLAS use n threads from its next product on; returns True if it could."""
    fn = _blas_function("set_num_threads", [ctypes.c_int], None)
    if fn is not None:
        fn(int(n))
    return fn is not None


def blas_threads():
    """The threads NumPy's OpenBLAS uses, or None where it cannot be asked."""
    fn = _blas_function("get_num_threads", [], ctypes.c_int)
    return fn() if fn is not None else None


# ----- processes -----

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


def process_alive(pid):
    """Whether process `pid` runs on this host (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
