"""Loading and launching the kernels in kernels/*.cu: on a GPU through CuPy, or on the CPU emulator.

    launch("relu", "relu_forward", grid, block, y, x, np.int32(n))

checks every argument against the kernel's C signature (read from the .cu source) and the launch
geometry against a GPU's limits, then runs it:
  * CuPy arrays: through cupy.RawModule (compiled by NVRTC and loaded once per GPU and process,
    on the GPU the arrays live on; CuPy caches the compiled code on disk)
  * NumPy arrays: through minialex.emulator ("cuda-emu"), which compiles the same .cu with the
    system C++ compiler and runs every block and thread on the CPU.

The checks are the ones a careful CuPy call needs, because CuPy checks nothing: it passes a Python
int as 64 bits and a float64 array's bytes as floats. So an `int` parameter takes np.int32, a
`float` np.float32, an `unsigned int` np.uint32, an `unsigned char` np.uint8, and a `float*` a
C-contiguous float32 array (an `unsigned char*` a uint8 one);
anything else is a TypeError naming the kernel, the parameter and both types. A grid or block a
GPU refuses (more than 1024 threads in a block, grid y or z above 65535, an empty grid) is a
LaunchError on every device, as CuPy's CUDA_ERROR_INVALID_VALUE would be on a GPU.

Matrix products go through `gemm`: kernels/gemm.cu (set_gemm("tiled")) or the array library's
BLAS (set_gemm("blas"), the default: cuBLAS on a GPU, NumPy's BLAS on the emulator).
"""
import functools
import os
import re
from pathlib import Path

import numpy as np

from . import backend


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


def _is_array(value):
    """A NumPy or CuPy ndarray (not a NumPy scalar, which also has .dtype and .flags)."""
    return isinstance(value, np.ndarray) or backend.is_cupy_array(value)


# ----- signatures -----

_DTYPES = {"int": np.int32, "unsigned int": np.uint32, "float": np.float32,   # of a scalar or a pointee
           "unsigned char": np.uint8}
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')


def _parse_param(text, kernel):
    """'const float* __restrict__ x' -> ('x', 'float', True)."""
    words = text.replace("*", " * ").split()
    name = words[-1]
    is_pointer = "*" in words
    base = " ".join(w for w in words[:-1] if w not in ("const", "__restrict__", "*"))
    if base not in _DTYPES:
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


def check_geometry(name, grid, block):
    """(grid, block) as 3-tuples, or a LaunchError where a GPU would refuse the launch."""
    dims = []
    for what, value, limits in (("grid", grid, MAX_GRID), ("block", block, MAX_BLOCK)):
        value = tuple(int(v) for v in value) + (1,) * (3 - len(value))
        if len(value) != 3:
            raise LaunchError(f"{name}: {what} expected 1 to 3 dimensions, got {value}")
        for axis, v, most in zip("xyz", value, limits):
            if not 1 <= v <= most:
                raise LaunchError(f"{name}: {what} {axis} expected 1 .. {most}, got {v} in {what} {value} "
                                  "(a GPU refuses it: CUDA_ERROR_INVALID_VALUE)")
        dims.append(value)
    threads = dims[1][0] * dims[1][1] * dims[1][2]
    if threads > MAX_THREADS_PER_BLOCK:
        raise LaunchError(f"{name}: block {dims[1]} expected at most {MAX_THREADS_PER_BLOCK} threads, got "
                          f"{threads} (a GPU refuses it: CUDA_ERROR_INVALID_VALUE)")
    return dims[0], dims[1]


# ----- GPU: CuPy RawModule -----

_gpu_modules = {}  # (family, GPU index) -> RawModule: a module is loaded into one GPU's context


def _gpu_kernel(family, name, gpu):
    """Kernel `name` of kernels/<family>.cu, compiled and loaded for GPU `gpu` (call it inside
    device_scope of that GPU: CuPy compiles and loads on the current device)."""
    key = (family, gpu)
    if key not in _gpu_modules:
        _gpu_modules[key] = backend.cupy().RawModule(code=source(family), options=("--std=c++14",))
    return _gpu_modules[key].get_function(name)


def _gpu_of(name, arrays):
    """The index of the one GPU that all the CuPy `arrays` live on (a kernel reads and writes
    through one GPU's memory); TypeError when they live on several."""
    gpus = {a.device.id for a in arrays}
    if len(gpus) > 1:
        raise TypeError(f"{name}: expected all arrays on one GPU, got arrays on "
                        f"{', '.join(f'cuda:{g}' for g in sorted(gpus))}")
    return gpus.pop()


# ----- launch -----

def launch(family, name, grid, block, *args, debug=None, only_block=None, only_thread=None):
    """Check `args` against kernels/<family>.cu's `name` and run it over grid x block threads.
    On the emulator (NumPy arrays): debug=True checks every array access (see minialex.emulator),
    only_block / only_thread run one block or one thread of each block."""
    check_args(family, name, args)
    grid, block = check_geometry(name, grid, block)
    arrays = [a for a in args if _is_array(a)]
    on_gpu = [not isinstance(a, np.ndarray) for a in arrays]
    if any(on_gpu) and not all(on_gpu):
        raise TypeError(f"{name}: expected all arrays on one device, got NumPy and CuPy arrays mixed")
    if any(on_gpu):
        if debug or only_block is not None or only_thread is not None:
            raise ValueError(f"{name}: debug, only_block and only_thread are the emulator's (NumPy arrays)")
        gpu = _gpu_of(name, arrays)
        with backend.device_scope(f"cuda:{gpu}"):  # launched on the arrays' GPU, whatever is current
            _gpu_kernel(family, name, gpu)(grid, block, args)
    else:
        from . import emulator
        emulator.run(family, name, grid, block, args, debug, only_block, only_thread)


def fits_int32(n, what):
    """ValueError unless n fits the kernels' int indices."""
    if n > INT32_LIMIT:
        raise ValueError(f"cuda: {what} expected at most 2^31 - 1 elements (the kernels' int indices), got {n}")


def blocks(n, threads=256):
    """Grid and block for one thread per element of n (n >= 1: skip the launch for an empty array)."""
    fits_int32(n, "an array")
    return ((n + threads - 1) // threads,), (threads,)


def planes(inner, count, threads=256):
    """Grid and block for the kernels that give each thread one element of an `inner`-long row
    (grid x) and loop over `count` such rows (grid y, capped at 65535; the kernel strides by
    gridDim.y). A short row gets a smaller block, so fewer threads sit idle."""
    fits_int32(inner, "a row")
    fits_int32(count, "the number of rows")
    threads = min(threads, (inner + 31) // 32 * 32)
    return ((inner + threads - 1) // threads, min(count, MAX_GRID[1])), (threads,)


# ----- matrix products -----

_gemm_mode = os.environ.get("MINIALEX_GEMM", "blas")
if _gemm_mode not in ("blas", "tiled"):
    raise ValueError(f"MINIALEX_GEMM: expected 'blas' or 'tiled', got {_gemm_mode!r}")
GEMM_TILE = 16  # TILE in kernels/gemm.cu


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
    if m == 0 or n == 0 or batch == 0:
        return
    if _gemm_mode == "tiled":
        for what, v in (("m", m), ("n", n), ("k", k), ("a_batch", a_batch), ("b_batch", b_batch),
                        ("c_batch", c_batch), *zip(("a_mk[0]", "a_mk[1]", "b_kn[0]", "b_kn[1]"), (*a_mk, *b_kn))):
            if not 0 <= v <= INT32_LIMIT:
                raise ValueError(f"gemm: {what} expected 0 .. 2^31 - 1 (the tiled kernel's int arguments), got {v}")
        if batch > MAX_GRID[2]:
            raise ValueError(f"gemm: batch expected at most {MAX_GRID[2]} (grid z), got {batch}")
        tiles = (-(-n // GEMM_TILE), min(-(-m // GEMM_TILE), MAX_GRID[1]), batch)  # the kernel strides over row tiles
        i32 = np.int32
        launch("gemm", "gemm_tiled", tiles, (GEMM_TILE, GEMM_TILE),
               c, a, b, i32(m), i32(n), i32(k), i32(a_mk[0]), i32(a_mk[1]), i32(b_kn[0]), i32(b_kn[1]),
               i32(a_batch), i32(b_batch), i32(c_batch))
        return
    xp = backend.xp_of(c)
    device = "cpu" if xp is np else f"cuda:{_gpu_of('gemm', (c, a, b))}"
    with backend.device_scope(device):  # cuBLAS runs on the current device: make it the operands' GPU
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


# ----- checking a kernel against its reference -----

def check_parity(fn, shapes, device="cuda-emu", seed=0, rtol=1e-4, **kwargs):
    """Run fn(*tensors) on `device` (the kernels) and on "cpu" (the NumPy reference), from the same
    random float32 inputs of `shapes`, and compare the outputs and, through one random projection
    of the output (L = sum(r * y)), the gradients of every input. Returns {"y": err, "d input i":
    err} (max |kernel - reference| / max |reference|); AssertionError when one exceeds rtol.

        cuda.check_parity(F.relu, [(4, 5)])
        cuda.check_parity(lambda x, w: F.conv2d(x, w, padding=1), [(2, 3, 9, 9), (4, 3, 3, 3)])
    """
    from .function import cpu_path
    from .tensor import Tensor
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    results, r = [], None
    for dev in ("cpu", device):
        with cpu_path("reference"):
            ts = [Tensor(a, requires_grad=True, device=dev) for a in arrays]
            y = fn(*ts, **kwargs)
            if r is None:
                r = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(np.float32)
            y.backward(Tensor(r, device=dev))
            results.append([y.numpy()] + [np.zeros(t.shape, np.float32) if t.grad is None else
                                          Tensor(t.grad, device=dev).numpy() for t in ts])
    errors = {}
    for k, (ref, got) in enumerate(zip(*results)):
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        errors["y" if k == 0 else f"d input {k - 1}"] = \
            float(np.abs(got.astype(np.float64) - ref).max() / scale) if scale > 0 else float(np.abs(got).max(initial=0))
    bad = {k: v for k, v in errors.items() if not v <= rtol}
    if bad:
        raise AssertionError(f"check_parity on {device}: relative errors above {rtol}: {bad}")
    return errors
