"""Loading and launching the kernels in kernels/*.cu, on a GPU (CuPy) or on the CPU emulator.

    launch("relu", "relu_forward", grid, block, y, x, np.int32(n))

checks every argument against the kernel's C signature (read from the .cu source) and runs it:
  * CuPy arrays: through cupy.RawModule (compiled once per process by NVRTC; CuPy caches on disk)
  * NumPy arrays: through the emulator ("cuda-emu"), which compiles the same .cu with the system
    C++ compiler against kernels/cuda_emu.h and runs every block and thread on the CPU.

The checks are the ones a careful CuPy call needs, because CuPy checks nothing: it passes a Python
int as 64 bits and a float64 array's bytes as floats. So an `int` parameter takes np.int32, a
`float` np.float32, an `unsigned int` np.uint32, and a `float*` a C-contiguous float32 array;
anything else is a TypeError naming the kernel, the parameter and both types.

Matrix products go through `gemm`: kernels/gemm.cu (set_gemm("tiled")) or the array library's
BLAS (set_gemm("blas"), the default: cuBLAS on a GPU, NumPy's BLAS on the emulator).
"""
import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from . import backend


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


def _is_array(value):
    """A NumPy or CuPy ndarray (not a NumPy scalar, which also has .dtype and .flags)."""
    return isinstance(value, np.ndarray) or backend.is_cupy_array(value)


# ----- signatures -----

_DTYPES = {"int": np.int32, "unsigned int": np.uint32, "float": np.float32}  # of a scalar or a pointee
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')


def _parse_param(text, kernel):
    """'const float* __restrict__ x' -> ('x', 'float', True)."""
    words = text.replace("*", " * ").split()
    name = words[-1]
    is_pointer = "*" in words
    base = " ".join(w for w in words[:-1] if w not in ("const", "__restrict__", "*"))
    if base not in _DTYPES:
        raise ValueError(f"{kernel}: parameter {name} has type {base}{'*' if is_pointer else ''}; minialex.cuda "
                         f"launches kernels whose parameters are int, unsigned int, float or pointers to them")
    return name, base, is_pointer


@functools.lru_cache(maxsize=None)
def signatures(family):
    """{kernel name: [(param name, C base type, is_pointer), ...]} of a kernel file."""
    found = {}
    for name, params in _KERNEL.findall(source(family)):
        found[name] = [_parse_param(p, name) for p in params.split(",") if p.strip()]
    return found


def check_args(family, name, args):
    """TypeError unless each argument matches its C parameter exactly (see module docstring)."""
    params = signatures(family).get(name)
    if params is None:
        raise ValueError(f"minialex.cuda: {kernel_path(family)} has no extern \"C\" kernel {name!r}")
    if len(args) != len(params):
        raise TypeError(f"{name}: expected {len(params)} arguments "
                        f"({', '.join(p[0] for p in params)}), got {len(args)}")
    for arg, (pname, base, is_pointer) in zip(args, params):
        want = _DTYPES[base]
        if is_pointer:
            if not _is_array(arg):
                raise TypeError(f"{name}: parameter {pname} ({base}*) expected a C-contiguous "
                                f"{np.dtype(want).name} array, got {type(arg).__name__}")
            if arg.dtype != want:
                raise TypeError(f"{name}: parameter {pname} ({base}*) expected a "
                                f"{np.dtype(want).name} array, got {arg.dtype}")
            if not arg.flags.c_contiguous:
                raise TypeError(f"{name}: parameter {pname} ({base}*) expected a C-contiguous array, "
                                f"got a non-contiguous view of shape {tuple(arg.shape)}")
        else:
            got = type(arg)
            if got is not want:
                raise TypeError(f"{name}: parameter {pname} ({base}) expected np.{np.dtype(want).name}, "
                                f"got {got.__module__ + '.' if got.__module__ != 'builtins' else ''}"
                                f"{got.__name__}")


# ----- GPU: CuPy RawModule -----

_gpu_modules = {}


def _gpu_kernel(family, name):
    cp = backend.cupy()
    key = (family, cp.cuda.Device().id)
    if key not in _gpu_modules:
        _gpu_modules[key] = cp.RawModule(code=source(family), options=("--std=c++14",))
    return _gpu_modules[key].get_function(name)


# ----- CPU: the emulator -----

_emu_libraries = {}
_emu_lock = threading.Lock()  # the emulator's built-ins (threadIdx, ...) are process-wide


def cache_dir():
    return backend.cache_root() / "emu"


def _compiler():
    for cxx in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if cxx and shutil.which(cxx):
            return cxx
    raise RuntimeError("device 'cuda-emu' compiles kernels/*.cu with a C++ compiler and found none "
                       "(set CXX, or install g++: apt-get install g++)")


def _cast_type(base, is_pointer):
    return f"{base}*" if is_pointer else base


def _wrapper(family):
    """C++ that includes the emulator header and the .cu, and exports one launcher per kernel."""
    barriers = "true" if "__syncthreads" in source(family) else "false"
    lines = ['#include "cuda_emu.h"', f'#include "{kernel_path(family)}"', ""]
    for name, params in signatures(family).items():
        call = ", ".join(f"*({_cast_type(b, p)}*)a[{i}]" for i, (_, b, p) in enumerate(params))
        lines += [f'extern "C" int emu_{name}(unsigned gx, unsigned gy, unsigned gz, '
                  f'unsigned bx, unsigned by, unsigned bz, void** a) {{',
                  f"    return emu::launch(dim3(gx, gy, gz), dim3(bx, by, bz), {barriers}, "
                  f"[&] {{ {name}({call}); }});",
                  "}", ""]
    return "\n".join(lines)


def _emu_library(family):
    if family in _emu_libraries:
        return _emu_libraries[family]
    kdir = kernel_dir()
    wrapper = _wrapper(family)
    header = (kdir / "cuda_emu.h").read_text()
    flags = ["-O2", "-std=c++14", "-shared", "-fPIC", "-w"]
    digest = hashlib.sha256("\0".join([wrapper, header, source(family), " ".join(flags)]).encode()).hexdigest()
    target = cache_dir() / f"{kernel_path(family).stem}-{digest[:16]}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            cpp = Path(tmp) / "kernel_emu.cpp"
            cpp.write_text(wrapper)
            out = Path(tmp) / "kernel.so"
            run = subprocess.run([_compiler(), *flags, "-I", str(kdir), "-o", str(out), str(cpp)],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError(f"cuda-emu: compiling {kernel_path(family)} failed:\n{run.stderr}")
            staged = target.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(out, staged)
            os.replace(staged, target)  # atomic: a parallel process never loads half a file
    _emu_libraries[family] = ctypes.CDLL(str(target))
    return _emu_libraries[family]


_CTYPES = {np.int32: ctypes.c_int32, np.uint32: ctypes.c_uint32, np.float32: ctypes.c_float}


def _emu_launch(family, name, grid, block, args):
    keep = []  # ctypes values that must outlive the call
    for arg in args:
        if isinstance(arg, np.ndarray):
            keep.append(ctypes.c_void_p(arg.ctypes.data))
        else:
            keep.append(_CTYPES[type(arg)](arg))
    pointers = (ctypes.c_void_p * len(args))(*[ctypes.addressof(k) for k in keep])
    fn = getattr(_emu_library(family), f"emu_{name}")
    fn.restype = ctypes.c_int
    with _emu_lock:
        status = fn(*[ctypes.c_uint(v) for v in (*grid, *block)], pointers)
    if status == 1:
        raise RuntimeError(f"cuda-emu: {name}: some threads of a block returned while others waited "
                           "at __syncthreads() (a GPU would hang or misbehave)")


# ----- launch -----

def _dim3(op, arg, value):
    value = tuple(int(v) for v in value) + (1,) * (3 - len(value))
    if len(value) != 3 or min(value) < 1:
        raise ValueError(f"{op}: {arg} expected 1 to 3 positive ints, got {value}")
    return value


def launch(family, name, grid, block, *args):
    """Check `args` against kernels/<family>.cu's `name` and run it over grid x block threads."""
    check_args(family, name, args)
    grid, block = _dim3(name, "grid", grid), _dim3(name, "block", block)
    arrays = [a for a in args if _is_array(a)]
    on_gpu = [not isinstance(a, np.ndarray) for a in arrays]
    if any(on_gpu) and not all(on_gpu):
        raise TypeError(f"{name}: expected all arrays on one device, got NumPy and CuPy arrays mixed")
    if any(on_gpu):
        _gpu_kernel(family, name)(grid, block, args)
    else:
        _emu_launch(family, name, grid, block, args)


INT32_LIMIT = 2**31 - 1  # the kernels index with int: a GPU divides 32-bit ints several times faster


def _fits(n, what):
    if n > INT32_LIMIT:
        raise ValueError(f"cuda: {what} expected at most 2^31 - 1 elements (the kernels' int indices), got {n}")


def blocks(n, threads=256):
    """Grid and block for one thread per element of n."""
    _fits(n, "an array")
    return ((n + threads - 1) // threads,), (threads,)


def planes(inner, count, threads=256):
    """Grid and block for the kernels that give each thread one element of an `inner`-long row
    (grid x) and loop over `count` such rows (grid y, capped at CUDA's 65535; the kernel strides by
    gridDim.y). A short row gets a smaller block, so fewer threads sit idle."""
    _fits(inner, "a row")
    _fits(count, "the number of rows")
    threads = min(threads, (inner + 31) // 32 * 32)
    return ((inner + threads - 1) // threads, min(count, 65535)), (threads,)


# ----- matrix products -----

_gemm_mode = os.environ.get("MINIALEX_GEMM", "blas")


def set_gemm(mode):
    """'blas' (default: cuBLAS through CuPy on a GPU, NumPy's BLAS on cuda-emu) or 'tiled'
    (kernels/gemm.cu, the hand-written shared-memory SGEMM). Also settable as MINIALEX_GEMM."""
    global _gemm_mode
    if mode not in ("blas", "tiled"):
        raise ValueError(f"set_gemm: mode expected 'blas' or 'tiled', got {mode!r}")
    _gemm_mode = mode


def get_gemm():
    return _gemm_mode


def _strided(xp, array, shape, element_strides):
    """A view of a flat array with the given shape and strides counted in elements."""
    item = array.dtype.itemsize
    as_strided = np.lib.stride_tricks.as_strided if xp is np else xp.lib.stride_tricks.as_strided
    return as_strided(array, shape, tuple(s * item for s in element_strides))


def gemm(c, a, b, m, n, k, a_mk, b_kn, batch=1, a_batch=0, b_batch=0, c_batch=0):
    """Matrix product on flat float32 arrays, strides in elements; `batch` independent products.

    For z < batch:
        A(m, k) = a[z*a_batch + m*a_mk[0] + k*a_mk[1]]      (M x K)
        B(k, n) = b[z*b_batch + k*b_kn[0] + n*b_kn[1]]      (K x N)
        C(m, n) = c[z*c_batch + m*N + n] = A @ B            (M x N, row-major)
    A transpose is only swapped strides, so no operand is copied to transpose it.
    """
    if _gemm_mode == "tiled":
        tile = 16
        i32 = np.int32
        launch("gemm", "gemm_tiled", ((n + tile - 1) // tile, (m + tile - 1) // tile, batch), (tile, tile),
               c, a, b, i32(m), i32(n), i32(k), i32(a_mk[0]), i32(a_mk[1]), i32(b_kn[0]), i32(b_kn[1]),
               i32(a_batch), i32(b_batch), i32(c_batch))
        return
    xp = backend.xp_of(c)
    if batch == 1:  # 2-D views: a transposed operand goes to BLAS as a flag, never copied
        xp.matmul(_strided(xp, a, (m, k), a_mk), _strided(xp, b, (k, n), b_kn),
                  out=_strided(xp, c, (m, n), (n, 1)))
        return
    a_view = _strided(xp, a, (batch, m, k), (a_batch, *a_mk))
    b_view = _strided(xp, b, (batch, k, n), (b_batch, *b_kn))
    c_view = _strided(xp, c, (batch, m, n), (c_batch, n, 1))
    if c_batch == m * n:
        xp.matmul(a_view, b_view, out=c_view)  # contiguous: the product is written in place
    else:
        c_view[...] = xp.matmul(a_view, b_view)
