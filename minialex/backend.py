"""The one place that knows NumPy from CuPy.

Devices (DESIGN.md):
    "cpu"       NumPy arrays, the NumPy code of each op
    "cuda[:N]"  CuPy arrays on GPU N, the kernels in kernels/*.cu through CuPy
    "cuda-emu"  NumPy arrays, the same kernels compiled for the CPU by minialex.cuda's emulator

CuPy is imported lazily: importing minialex never needs it.
"""
import concurrent.futures
import ctypes
import os
import platform
import sys
import threading
from pathlib import Path

import numpy as np

_cupy = None


def cache_root():
    """Where minialex keeps what it makes once: compiled emulator kernels, the built-in dataset,
    dataset statistics. $MINIALEX_CACHE, else $XDG_CACHE_HOME/minialex, else ~/.cache/minialex."""
    return Path(os.environ.get("MINIALEX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "minialex"))


def tune_allocator():
    """Keep freed memory in the process for reuse instead of giving it back to the OS (glibc only).

    A training step allocates and frees the same large arrays (columns, activations, gradients)
    every time. By default glibc serves each large one with a fresh mmap and unmaps it on free, so
    every step pays a page fault for every 4 KiB it touches again (on a 2-core machine this was a
    third of an AlexNet step). Raising the mmap threshold to its maximum (32 MiB) and not trimming
    the heap lets numpy reuse that memory. Set MINIALEX_TUNE_MALLOC=0 to leave malloc alone.
    """
    if os.environ.get("MINIALEX_TUNE_MALLOC", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # from <malloc.h>
    ok = libc.mallopt(m_mmap_threshold, 32 * 2**20)
    ok &= libc.mallopt(m_trim_threshold, 2**31 - 1)
    ok &= libc.mallopt(m_top_pad, 64 * 2**20)
    return bool(ok)


def _openblas():
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


BLAS_THREAD_TIMEOUT = 4  # OpenBLAS's smallest: its idle threads wait 2^4 cycles, then sleep


def tune_blas():
    """Make OpenBLAS's idle threads sleep at once after a matrix product instead of spinning.

    By default they busy-wait for 2^28 cycles (about 0.1 s) for the next product, holding the cores
    that minialex's own passes (im2col, pooling, ReLU, SGD, see `parallel`) then run on: on a 2-core
    machine this made everything outside the matrix products of an AlexNet step about 1.4x slower.
    Sleeping costs a wake-up of some microseconds per product. It sets OPENBLAS_THREAD_TIMEOUT,
    has OpenBLAS read it again and restarts its threads. Not done when OPENBLAS_THREAD_TIMEOUT is
    already set, or with MINIALEX_TUNE_BLAS=0.
    """
    if os.environ.get("MINIALEX_TUNE_BLAS", "1") == "0" or "OPENBLAS_THREAD_TIMEOUT" in os.environ:
        return False
    lib = _openblas()
    if lib is None:
        return False
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(BLAS_THREAD_TIMEOUT)
    lib.openblas_read_env()
    lib.blas_thread_shutdown_()  # the next product starts the threads again, with the new timeout
    return lib.openblas_thread_timeout() == BLAS_THREAD_TIMEOUT


def cupy():
    """Import CuPy on first use, with a message that says what to do when it is missing."""
    global _cupy
    if _cupy is None:
        try:
            import cupy as cp
        except ImportError as e:
            raise RuntimeError(
                "device 'cuda' needs CuPy (pip install 'minialex[gpu]'), which is not installed "
                f"({e}); on a machine without a GPU use device='cuda-emu' to run the same kernels "
                "on the CPU") from None
        try:
            if cp.cuda.runtime.getDeviceCount() < 1:
                raise RuntimeError("no CUDA device found")
        except Exception as e:
            raise RuntimeError(
                f"device 'cuda': CuPy is installed but no GPU can be used ({e}); "
                "use device='cuda-emu' to run the same kernels on the CPU") from None
        _cupy = cp
    return _cupy


def check_device(device):
    """Normalise a device name; raise ValueError naming the accepted forms."""
    if not isinstance(device, str):
        raise TypeError(f"device: expected a string such as 'cpu', 'cuda', 'cuda:0' or 'cuda-emu', "
                        f"got {type(device).__name__}")
    if device in ("cpu", "cuda-emu"):
        return device
    if device == "cuda":
        return "cuda:0"
    if device.startswith("cuda:") and device[5:].isdigit():
        return device
    raise ValueError(f"device: expected 'cpu', 'cuda', 'cuda:N' or 'cuda-emu', got {device!r}")


def is_gpu(device):
    return device.startswith("cuda:")


def uses_kernels(device):
    """True where ops run the CUDA C kernels: on a GPU, or on the CPU emulator."""
    return device != "cpu"


def xp_for(device):
    """The array module of a device: numpy for 'cpu' and 'cuda-emu', cupy for 'cuda:N'."""
    return cupy() if is_gpu(device) else np


def is_cupy_array(array):
    """A CuPy ndarray, recognised without importing CuPy."""
    return type(array).__module__.startswith("cupy")


def xp_of(array):
    """The array module an array belongs to (no CuPy import for NumPy arrays)."""
    return cupy() if is_cupy_array(array) else np


def to_device(array, device, dtype=None):
    """Copy (or pass through) `array` onto `device`; cast to `dtype` when given."""
    if is_gpu(device):
        cp = cupy()
        with cp.cuda.Device(int(device[5:])):
            return cp.asarray(array, dtype=dtype)
    return np.asarray(to_numpy(array), dtype=dtype)


def to_numpy(array):
    """A NumPy array for any array (device arrays are copied to the host)."""
    if isinstance(array, np.ndarray):
        return array
    if is_cupy_array(array):
        return array.get()
    return np.asarray(array)


def scatter_add(target, index, values):
    """target[index] += values, adding repeated indices once each (np.add.at semantics)."""
    if isinstance(target, np.ndarray):
        np.add.at(target, index, values)
    else:
        import cupyx
        cupyx.scatter_add(target, index, values)


# ----- reusable big arrays (NumPy) -----

POOL_MIN_BYTES = 8 * 2**20
_pool = {}  # (shape, dtype) -> arrays handed out before


def scratch(shape, dtype=np.float32):
    """np.empty(shape, dtype), but a big array (>= 8 MiB) is taken from a pool of earlier ones that
    nothing references any more (the previous training step's columns, gradients, activations).

    Reusing them skips the allocation and the page faults of fresh memory, which the allocator
    would otherwise pay for on every step (glibc maps every array over 32 MiB anew). An array is
    free when only the pool itself refers to it: views keep their base alive, so a view still in use
    keeps its buffer out of reuse. The pool keeps its arrays for the life of the process.
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    if int(np.prod(shape)) * dtype.itemsize < POOL_MIN_BYTES:
        return np.empty(shape, dtype)
    arrays = _pool.setdefault((shape, dtype.str), [])
    for a in arrays:
        if sys.getrefcount(a) == 3:  # the pool's list, this loop's variable, getrefcount's argument
            return a
    a = np.empty(shape, dtype)
    arrays.append(a)
    return a


def release_pool():
    """Drop the pooled arrays (their memory returns once nothing else refers to them)."""
    _pool.clear()


# ----- the CPU's other cores (NumPy) -----

_executor, _executor_workers = None, 0
_executor_lock = threading.Lock()
_inside = threading.local()


def _forget_executor():
    """In a forked child: the parent's threads do not exist there, so start afresh when needed."""
    global _executor, _executor_workers, _executor_lock
    _executor, _executor_workers, _executor_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_executor)


def cpu_threads():
    """How many threads the NumPy path splits its big non-BLAS passes over: MINIALEX_THREADS, else
    the cores this process may run on."""
    env = os.environ.get("MINIALEX_THREADS")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"MINIALEX_THREADS: expected a positive integer, got {env!r}")
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


PARALLEL_MIN_ELEMENTS = 1 << 18  # below ~1 MB of float32 a thread hand-off costs more than it saves


def parallel(fn, n, elements):
    """fn(lo, hi) over [0, n), cut into one contiguous slice per core, run in threads.

    NumPy runs its copies and element-wise loops on one core (only its BLAS uses them all), but it
    lets go of the GIL inside them, so a strided pass split along an outer axis runs on every core.
    `elements` is the pass's size: small ones (and calls from inside a slice) stay on this thread.
    """
    global _executor, _executor_workers
    parts = min(cpu_threads(), n)
    if parts <= 1 or elements < PARALLEL_MIN_ELEMENTS or getattr(_inside, "busy", False):
        fn(0, n)
        return
    with _executor_lock:
        if _executor_workers < parts - 1:  # none yet, or MINIALEX_THREADS grew
            if _executor is not None:
                _executor.shutdown(wait=False)
            _executor = concurrent.futures.ThreadPoolExecutor(parts - 1, thread_name_prefix="minialex")
            _executor_workers = parts - 1
        executor = _executor
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
