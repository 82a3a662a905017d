"""The kernel files, read: where kernels/*.cu are, their text, and each kernel's C signature.

Shared by minialex.cuda (which checks a launch's arguments against the signature and runs it on a
GPU) and minialex.emulator (which compiles the same source for the CPU), with the limits of a GPU
that both enforce and the errors they raise. Everything here is re-exported by minialex.cuda:
`minialex.cuda.signatures("relu")` is the usual spelling.
"""
import functools
import re
from pathlib import Path

import numpy as np


class LaunchError(RuntimeError):
    """A launch that a GPU refuses (the emulator refuses it too)."""


class OutOfBoundsError(RuntimeError):
    """An access outside an array, found by the emulator's debug build (launch(..., debug=True))."""


# A GPU's limits (every NVIDIA GPU since compute capability 3.0)
MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_STATIC_SHARED_BYTES = 48 * 1024
INT32_LIMIT = 2**31 - 1  # the kernels index with int: a GPU divides 32-bit ints several times faster


def kernel_dir():
    """kernels/ of a source checkout, or minialex/kernels of an installed package."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "kernels", here.parent / "kernels"):
        if (candidate / "cuda_emu.h").is_file():
            return candidate
    raise FileNotFoundError(f"minialex: no kernels folder beside {here} (looked for kernels/cuda_emu.h)")


def kernel_path(family):
    """kernels/<family>.cu; a family ending in .cu is taken as a path (a kernel of your own)."""
    return Path(family).resolve() if family.endswith(".cu") else kernel_dir() / f"{family}.cu"


@functools.lru_cache(maxsize=None)
def source(family):
    path = kernel_path(family)
    if not path.is_file():
        raise FileNotFoundError(f"minialex.cuda: no kernel file {path}")
    return path.read_text()


# ----- signatures -----

DTYPES = {"int": np.int32, "unsigned int": np.uint32, "float": np.float32,   # of a scalar or a pointee
          "unsigned char": np.uint8}
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')


def _parse_param(text, kernel):
    """'const float* __restrict__ x' -> ('x', 'float', True)."""
    words = text.replace("*", " * ").split()
    name = words[-1]
    is_pointer = "*" in words
    base = " ".join(w for w in words[:-1] if w not in ("const", "__restrict__", "*"))
    if base not in DTYPES:
        raise ValueError(f"{kernel}: parameter {name} has type {base}{'*' if is_pointer else ''}; minialex.cuda "
                         f"launches kernels whose parameters are int, unsigned int, float, unsigned char or "
                         f"pointers to them")
    return name, base, is_pointer


@functools.lru_cache(maxsize=None)
def signatures(family):
    """{kernel name: [(param name, C base type, is_pointer), ...]} of a kernel file."""
    found = {}
    for name, params in _KERNEL.findall(source(family)):
        found[name] = [_parse_param(p, name) for p in params.split(",") if p.strip()]
    return found
