"""The kernel files, read: where kernels/*.cu are, their text, and each kernel's C signature.

Shared by minialex.cuda (which checks a launch's arguments against the signature and runs it on a
GPU) and minialex.emulator (which compiles the same source for the CPU), with the limits of a GPU
that both enforce and the errors they raise. Everything here is re-exported by minialex.cuda:
`minialex.cuda.signatures("relu")` is the usual spelling.

A kernel file is named by its family ("relu": kernels/relu.cu) or by a path (a str ending in .cu,
or a pathlib.Path: a file of your own); family_name gives both one spelling. The text is read
again when the file changes, so an edited kernel is compiled again in the same process.
"""
import functools
import os
import re
import stat
import time
from pathlib import Path

import numpy as np


class LaunchError(RuntimeError):
    """A launch that a GPU refuses (the emulator refuses it too)."""


class OutOfBoundsError(RuntimeError):
    """An access outside an array, found by the emulator's debug build (launch(..., debug=True))."""


class KernelCrashError(LaunchError):
    """An emulated kernel that crashed (a segmentation fault, a bus error, a division by zero, ...)
    in the child process that ran its launch: the interpreter lives on, the arrays are unchanged."""


class LaunchTimeout(LaunchError):
    """An emulated kernel still running after its time limit (an endless loop?): its child process
    was killed, the arrays are unchanged."""


# A GPU's limits (every NVIDIA GPU since compute capability 3.0)
MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_STATIC_SHARED_BYTES = 48 * 1024
INT32_LIMIT = 2**31 - 1  # the kernels index with int: a GPU divides 32-bit ints several times faster


@functools.lru_cache(maxsize=None)
def kernel_dir():
    """kernels/ of a source checkout, or minialex/kernels of an installed package."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "kernels", here.parent / "kernels"):
        if (candidate / "cuda_emu.h").is_file():
            return candidate
    raise FileNotFoundError(f"minialex: no kernels folder beside {here} (looked for kernels/cuda_emu.h)")


def family_name(family):
    """The one spelling of a kernel file that the caches use: a family of the library ("relu")
    as it is; a path (a str ending in .cu, or any pathlib.Path) as its absolute path, a str."""
    if isinstance(family, str) and not family.endswith(".cu"):
        return family
    if isinstance(family, (str, os.PathLike)):
        return _resolved(os.path.abspath(family))   # relative to the working directory of now
    raise TypeError(f"minialex.cuda: a kernel file expected a family name (\"relu\") or a path to a .cu "
                    f"file (str or pathlib.Path), got {type(family).__name__}")


@functools.lru_cache(maxsize=256)
def _resolved(path):
    return str(Path(path).resolve())


def kernel_path(family):
    """kernels/<family>.cu; a path (a str ending in .cu, or a pathlib.Path) is taken as it is (a
    kernel of your own)."""
    return Path(_file(family_name(family)))


@functools.lru_cache(maxsize=256)
def _file(name):
    """The file of a family's name, as a str (os.stat takes it fastest)."""
    return name if os.path.isabs(name) else str(kernel_dir() / f"{name}.cu")


def is_library_kernel(family):
    """Whether a kernel file is one of the library's (in kernels/), not one of your own."""
    return _in_kernel_dir(family_name(family))


@functools.lru_cache(maxsize=256)
def _in_kernel_dir(name):
    return not os.path.isabs(name) or Path(name).parent == kernel_dir()


RECHECK_SECONDS = 0.5   # a library file is looked at again (os.stat) at most this often


def source(family):
    """The text of a kernel file, read again when the file changed: a file of your own at every
    call (an edit within the file system's clock tick, which keeps the time, is still seen); a
    library file when its size, time or inode changed, looked at no more often than every
    RECHECK_SECONDS (a stat per launch would cost the library's launches time)."""
    seen = _checked.get(family)
    now = time.monotonic()
    if seen is not None and now - seen[0] < RECHECK_SECONDS:
        return seen[1]
    name = family_name(family)
    path = _file(name)
    library = _in_kernel_dir(name)
    try:
        info = os.stat(path)
    except OSError:
        info = None
    if info is None or not stat.S_ISREG(info.st_mode):
        raise FileNotFoundError(f"minialex.cuda: no kernel file {path}")
    if not library:
        return _text(path)
    text = _cached_text(path, info.st_mtime_ns, info.st_size, info.st_ino)
    _checked[family] = (now, text)
    return text


_checked = {}   # library family, as given -> (time.monotonic() of its file's last os.stat, its text then)


def _text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


@functools.lru_cache(maxsize=64)
def _cached_text(path, mtime_ns, size, inode):
    return _text(path)


# ----- signatures -----

DTYPES = {"int": np.int32, "unsigned int": np.uint32, "float": np.float32,   # of a scalar or a pointee
          "unsigned char": np.uint8, "__half": np.float16, "half": np.float16}    # __half: cuda_fp16.h's
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')


def _parse_param(text, kernel):
    """'const float* __restrict__ x' -> ('x', 'float', True)."""
    words = text.replace("*", " * ").split()
    name = words[-1]
    is_pointer = "*" in words
    base = " ".join(w for w in words[:-1] if w not in ("const", "__restrict__", "*"))
    if base not in DTYPES:
        raise ValueError(f"{kernel}: parameter {name} has type {base}{'*' if is_pointer else ''}; minialex.cuda "
                         f"launches kernels whose parameters are int, unsigned int, float, unsigned char, __half "
                         f"(cuda_fp16.h) or pointers to them")
    return name, base, is_pointer


def signatures(family):
    """{kernel name: [(param name, C base type, is_pointer), ...]} of a kernel file (as it is now)."""
    return _signatures(source(family))


@functools.lru_cache(maxsize=64)
def _signatures(text):
    found = {}
    for name, params in _KERNEL.findall(text):
        found[name] = [_parse_param(p, name) for p in params.split(",") if p.strip()]
    return found
