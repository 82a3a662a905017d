"""Process-wide settings that make CPU training faster, made only when asked: `minialex.cpu.tune()`.

Importing minialex changes nothing outside minialex. minialex-train and the benchmarks call
tune(); a script of your own may too (the README's training loop shows it). Both settings concern
the whole process, which is why they are a call and not a side effect of the import:

1. malloc (glibc only): keep freed memory in the process for reuse. A training step allocates and
   frees the same large arrays every time; by default glibc serves each large one with a fresh mmap
   and unmaps it on free, so every step pays a page fault for every 4 KiB it touches again.
   Serving every size from the heap (no mmap) and never trimming it lets NumPy reuse that memory.
   Skipped with MINIALEX_TUNE_MALLOC=0.
2. OpenBLAS: make its idle threads sleep right after a matrix product instead of spinning for about
   0.1 s (2^28 cycles) waiting for the next one, holding the cores that minialex's own passes
   (minialex.cpu.threads) run on next. It sets OPENBLAS_THREAD_TIMEOUT=4 (OpenBLAS's smallest),
   has OpenBLAS read it again and restarts its threads. Skipped when OPENBLAS_THREAD_TIMEOUT is
   already set (your choice stays) or with MINIALEX_TUNE_BLAS=0.
Measured effects are in benchmarks/RESULTS.md.
"""
import ctypes
import os
import platform

from ..system import blas_threads, openblas, set_blas_threads  # noqa: F401  (re-exported: their older names)

BLAS_THREAD_TIMEOUT = 4
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -2, -3, -4  # from <malloc.h>
_tuned = {}


def _tune_malloc():
    if os.environ.get("MINIALEX_TUNE_MALLOC", "1") == "0":
        return "skipped (MINIALEX_TUNE_MALLOC=0)"
    if platform.libc_ver()[0] != "glibc":
        return "skipped (not glibc)"
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return "skipped (libc.so.6 not found)"
    ok = libc.mallopt(_M_MMAP_MAX, 0)                 # no mmap: big arrays come from the heap too
    ok &= libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)  # and freed heap memory stays for the next step
    ok &= libc.mallopt(_M_TOP_PAD, 64 * 2**20)
    return "every size from the heap (no mmap), no heap trimming, 64 MiB top pad" if ok else "failed (mallopt refused)"


def _tune_blas():
    if os.environ.get("MINIALEX_TUNE_BLAS", "1") == "0":
        return "skipped (MINIALEX_TUNE_BLAS=0)"
    if "OPENBLAS_THREAD_TIMEOUT" in os.environ:
        return f"skipped (OPENBLAS_THREAD_TIMEOUT={os.environ['OPENBLAS_THREAD_TIMEOUT']} already set)"
    lib = openblas()
    if lib is None:
        return "skipped (NumPy's BLAS is not OpenBLAS)"
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(BLAS_THREAD_TIMEOUT)
    lib.openblas_read_env()
    lib.blas_thread_shutdown_()  # the next product starts the threads again, with the new timeout
    if lib.openblas_thread_timeout() != BLAS_THREAD_TIMEOUT:
        return "failed (OpenBLAS kept its timeout)"
    return f"idle threads sleep after a product (OPENBLAS_THREAD_TIMEOUT={BLAS_THREAD_TIMEOUT})"


def tune(verbose=False):
    """Apply both settings (see the module docstring) once per process; returns
    {"malloc": what was done, "openblas": what was done}, and prints it when verbose."""
    if not _tuned:
        _tuned.update(malloc=_tune_malloc(), openblas=_tune_blas())
    if verbose:
        print("minialex.cpu.tune: " + "; ".join(f"{k}: {v}" for k, v in _tuned.items()))
    return dict(_tuned)
