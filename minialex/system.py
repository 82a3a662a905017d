"""The process and the machine: facts about them that several parts of minialex need.

    check_environment()    the errors in minialex's environment variables, as text: every command
                           calls it first and stops with exit status 2 on one
    env_choice(name, ...)  a variable's value, or its default when unset or bad (at import: never raises)
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


# ----- the environment variables -----

CPU_PATHS = ("reference", "fast")     # MINIALEX_CPU_PATH, set_cpu_path (minialex/function.py)
GEMM_MODES = ("blas", "tiled", "wmma")   # MINIALEX_GEMM, cuda.set_gemm
CHOICES = {"MINIALEX_CPU_PATH": CPU_PATHS, "MINIALEX_GEMM": GEMM_MODES,
           "MINIALEX_TUNE_MALLOC": ("0", "1"), "MINIALEX_TUNE_BLAS": ("0", "1"), "MINIALEX_EMU_DEBUG": ("0", "1")}


def _choice_error(name):
    """The error in $name (one of CHOICES), or None when it is unset, empty or one of its choices."""
    value = os.environ.get(name, "")
    if value == "" or value in CHOICES[name]:
        return None
    return f"{name} expected {' or '.join(CHOICES[name])}, got {value!r}"


def env_choice(name, default):
    """$name when it is one of its CHOICES, else `default` (unset, empty or bad: check_environment
    reports a bad value when a command starts; importing minialex must never fail for one)."""
    return default if _choice_error(name) or not os.environ.get(name) else os.environ[name]


def usable_cores():
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def max_threads():
    """The most MINIALEX_THREADS may ask for: 1024, or 4 per usable core on a larger machine."""
    return max(1024, 4 * usable_cores())


def _seconds_error(name):
    """The error in $name, a number of seconds > 0, or None when it is unset, empty or fine."""
    value = os.environ.get(name, "")
    try:
        if value == "" or 0 < float(value) < float("inf"):
            return None
    except ValueError:
        pass
    return f"{name} expected seconds (a number > 0), got {value!r}"


def _threads_error():
    value = os.environ.get("MINIALEX_THREADS", "")
    if value == "" or (value.isascii() and value.isdigit() and 1 <= int(value) <= max_threads()):
        return None
    return f"MINIALEX_THREADS expected an integer from 1 to {max_threads()}, got {value!r}"


def check_environment():
    """The errors in minialex's environment variables, each a line such as "MINIALEX_CPU_PATH
    expected reference or fast, got 'bogus'"; [] when every one is fine. Each command calls it
    before any work and stops with exit status 2 (the library itself falls back to the defaults)."""
    errors = [_choice_error(name) for name in CHOICES] + [_threads_error(), _seconds_error("MINIALEX_EMU_TIMEOUT")]
    return [e for e in errors if e]


def cpu_threads():
    """How many threads a pass is split over: MINIALEX_THREADS, else the cores this process may use.
    A bad MINIALEX_THREADS is a ValueError saying so (commands find it first: check_environment)."""
    error = _threads_error()
    if error:
        raise ValueError(error)
    env = os.environ.get("MINIALEX_THREADS")
    return int(env) if env else usable_cores()


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
