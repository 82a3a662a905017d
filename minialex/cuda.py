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
`float` np.float32, an `unsigned int` np.uint32, an `unsigned char` np.uint8, a `__half`
(cuda_fp16.h) np.float16, and a `float*` a C-contiguous float32 array (an `unsigned char*` a uint8
one, a `__half*` a float16 one); anything else is a TypeError naming the kernel, the parameter and
both types. A grid or block a
GPU refuses (more than 1024 threads in a block, grid y or z above 65535, an empty grid) is a
LaunchError on every device, as CuPy's CUDA_ERROR_INVALID_VALUE would be on a GPU.

Matrix products go through `gemm`: kernels/gemm.cu (set_gemm("tiled")) or the array library's
BLAS (set_gemm("blas"), the default: cuBLAS on a GPU, NumPy's BLAS on the emulator). float16
operands are summed in float32 in every mode: kernels/gemm_half.cu ("tiled"), kernels/gemm_wmma.cu
on tensor cores (set_gemm("wmma"), float16 only: float32 operands go to "blas"), or cuBLAS's
gemmEx with CUBLAS_COMPUTE_32F / NumPy on float32 copies ("blas").

A kernel file of your own is a path (a str ending in .cu, or a pathlib.Path); an edited file is
compiled again at its next launch. On the emulator it runs bounds-checked and in a child process
by default (a crash is KernelCrashError, an endless loop LaunchTimeout; see minialex.emulator).

Reading the kernel files (kernel_dir, kernel_path, source, signatures), a GPU's limits and the
errors LaunchError (and its KernelCrashError, LaunchTimeout) and OutOfBoundsError live in
minialex/kernel_source.py, which the emulator shares; they are re-exported here. Comparing a kernel with its reference: ma.check_parity
(minialex/gradcheck.py).
"""

import numpy as np

from . import backend, emulator
from .system import GEMM_MODES, env_choice
from .kernel_source import (DTYPES, INT32_LIMIT, MAX_BLOCK, MAX_GRID, MAX_STATIC_SHARED_BYTES,  # noqa: F401
                            MAX_THREADS_PER_BLOCK, KernelCrashError, LaunchError, LaunchTimeout, OutOfBoundsError,
                            family_name, is_library_kernel, kernel_dir, kernel_path, signatures, source)


def _is_array(value):
    """A NumPy or CuPy ndarray (not a NumPy scalar, which also has .dtype and .flags)."""
    return isinstance(value, np.ndarray) or backend.is_cupy_array(value)


# ----- checks -----

def check_args(family, name, args):
    """TypeError unless each argument matches its C parameter exactly (see module docstring)."""
    params = signatures(family).get(name)
    if params is None:
        raise ValueError(f"minialex.cuda: {kernel_path(family)} has no extern \"C\" kernel {name!r}")
    if len(args) != len(params):
        raise TypeError(f"{name}: expected {len(params)} arguments "
                        f"({', '.join(p[0] for p in params)}), got {len(args)}")
    for arg, (pname, base, is_pointer) in zip(args, params):
        want = DTYPES[base]
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

_gpu_modules = {}  # (family, GPU index, source text) -> RawModule: a module is loaded into one GPU's context
NVRTC_OPTIONS = ("--std=c++14",)   # what _gpu_kernel gives RawModule; CuPy adds the rest (nvrtc_options)


def nvrtc_options():
    """Every option NVRTC gets when CuPy's RawModule compiles a kernel file for _gpu_kernel, so that
    NVRTC called directly (tests/test_nvrtc.py) compiles as CuPy does: NVRTC_OPTIONS, the include
    folders CuPy adds (its own headers, then <CUDA toolkit>/include, where cuda_fp16.h and mma.h
    are: NVRTC 12 has neither built in) and -ftz=true. NVRTC_OPTIONS alone where CuPy cannot say
    (no CuPy, or no CUDA toolkit found: then only kernels without #include compile)."""
    try:
        from cupy._core.core import assemble_cupy_compiler_options
        return tuple(assemble_cupy_compiler_options(NVRTC_OPTIONS)) + ("-ftz=true",)
    except (ImportError, RuntimeError):
        return NVRTC_OPTIONS


def _gpu_kernel(family, name, gpu):
    """Kernel `name` of kernels/<family>.cu, compiled and loaded for GPU `gpu` (call it inside
    device_scope of that GPU: CuPy compiles and loads on the current device); an edited file is
    compiled again."""
    text = source(family)
    key = (family, gpu, text)
    if key not in _gpu_modules:
        _gpu_modules[key] = backend.cupy().RawModule(code=text, options=NVRTC_OPTIONS)
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

def launch(family, name, grid, block, *args, debug=None, only_block=None, only_thread=None, isolate=None,
           timeout=None):
    """Check `args` against kernels/<family>.cu's `name` (or a .cu file of your own: a str ending in
    .cu or a pathlib.Path) and run it over grid x block threads. On the emulator (NumPy arrays),
    see minialex.emulator: debug=True checks every array access (the default for your own files),
    only_block / only_thread run one block or one thread of each block, isolate=True runs the
    launch in a child process (the default for your own files) that may crash or run past
    `timeout` seconds (default $MINIALEX_EMU_TIMEOUT, else 60) without taking Python down."""
    family = family_name(family)
    check_args(family, name, args)
    grid, block = check_geometry(name, grid, block)
    arrays = [a for a in args if _is_array(a)]
    on_gpu = [not isinstance(a, np.ndarray) for a in arrays]
    if any(on_gpu) and not all(on_gpu):
        raise TypeError(f"{name}: expected all arrays on one device, got NumPy and CuPy arrays mixed")
    if any(on_gpu):
        if debug or only_block is not None or only_thread is not None or isolate or timeout is not None:
            raise ValueError(f"{name}: debug, only_block, only_thread, isolate and timeout are the emulator's "
                             "(NumPy arrays)")
        gpu = _gpu_of(name, arrays)
        with backend.device_scope(f"cuda:{gpu}"):  # launched on the arrays' GPU, whatever is current
            _gpu_kernel(family, name, gpu)(grid, block, args)
    else:
        emulator.run(family, name, grid, block, args, debug, only_block, only_thread, isolate, timeout)


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

_gemm_mode = env_choice("MINIALEX_GEMM", "blas")  # a bad value: "blas" (system.check_environment reports it)
GEMM_TILE = 16  # TILE in kernels/gemm.cu and kernels/gemm_half.cu
GEMM_WMMA_TILE, GEMM_WMMA_THREADS = 32, 128  # BLOCK_TILE and THREADS in kernels/gemm_wmma.cu


def set_gemm(mode):
    """'blas' (default: cuBLAS through CuPy on a GPU, NumPy's BLAS on cuda-emu), 'tiled'
    (kernels/gemm.cu, the hand-written shared-memory SGEMM; kernels/gemm_half.cu for float16
    operands) or 'wmma' (kernels/gemm_wmma.cu, tensor cores through CUDA's wmma API, for float16
    operands; float32 operands go to 'blas'). Also settable as MINIALEX_GEMM."""
    global _gemm_mode
    if mode not in GEMM_MODES:
        raise ValueError(f"set_gemm: mode expected 'blas', 'tiled' or 'wmma', got {mode!r}")
    _gemm_mode = mode


def get_gemm():
    return _gemm_mode


def _strided(xp, array, shape, element_strides):
    """A view of a flat array with the given shape and strides counted in elements."""
    item = array.dtype.itemsize
    as_strided = np.lib.stride_tricks.as_strided if xp is np else xp.lib.stride_tricks.as_strided
    return as_strided(array, shape, tuple(s * item for s in element_strides))


def gemm(c, a, b, m, n, k, a_mk, b_kn, batch=1, a_batch=0, b_batch=0, c_batch=0):
    """Matrix product on flat arrays, strides in elements; `batch` independent products.

    For z < batch:
        A(m, k) = a[z*a_batch + m*a_mk[0] + k*a_mk[1]]      (M x K)
        B(k, n) = b[z*b_batch + k*b_kn[0] + n*b_kn[1]]      (K x N)
        C(m, n) = c[z*c_batch + m*N + n] = A @ B            (M x N, row-major)
    A transpose is only swapped strides, so no operand is copied to transpose it.
    a, b and c float32; or a and b float16 with c float16 or float32, the products summed in
    float32 in every mode (see _gemm_half).
    """
    if m == 0 or n == 0 or batch == 0:
        return
    if a.dtype == np.float16:
        _gemm_half(c, a, b, m, n, k, a_mk, b_kn, batch, a_batch, b_batch, c_batch)
        return
    if _gemm_mode == "tiled":
        _launch_gemm("gemm", "gemm_tiled", GEMM_TILE, (GEMM_TILE, GEMM_TILE),
                     c, a, b, m, n, k, a_mk, b_kn, batch, a_batch, b_batch, c_batch)
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


def _launch_gemm(family, name, tile, block, c, a, b, m, n, k, a_mk, b_kn, batch, a_batch, b_batch, c_batch):
    """One of the hand-written GEMM kernels (gemm_tiled's arguments), a block per tile x tile of C."""
    for what, v in (("m", m), ("n", n), ("k", k), ("a_batch", a_batch), ("b_batch", b_batch),
                    ("c_batch", c_batch), *zip(("a_mk[0]", "a_mk[1]", "b_kn[0]", "b_kn[1]"), (*a_mk, *b_kn))):
        if not 0 <= v <= INT32_LIMIT:
            raise ValueError(f"gemm: {what} expected 0 .. 2^31 - 1 (the tiled kernel's int arguments), got {v}")
    if batch > MAX_GRID[2]:
        raise ValueError(f"gemm: batch expected at most {MAX_GRID[2]} (grid z), got {batch}")
    tiles = (-(-n // tile), min(-(-m // tile), MAX_GRID[1]), batch)  # the kernel strides over row tiles
    i32 = np.int32
    launch(family, name, tiles, block, c, a, b, i32(m), i32(n), i32(k), i32(a_mk[0]), i32(a_mk[1]),
           i32(b_kn[0]), i32(b_kn[1]), i32(a_batch), i32(b_batch), i32(c_batch))


def _gemm_half(c, a, b, m, n, k, a_mk, b_kn, batch, a_batch, b_batch, c_batch):
    """float16 A and B; C float16 or float32. Every product of two halves is exact in float32 and
    the sums are float32 in every mode, C rounded once to its dtype at the end:
      'tiled': kernels/gemm_half.cu; 'wmma': kernels/gemm_wmma.cu (tensor cores, sm_70 or later);
      'blas': on cuda-emu NumPy's float32 matmul of float32 copies (every half is a float32, so the
      copies are exact); on a GPU cuBLAS's gemmEx with CUBLAS_COMPUTE_32F (_cublas_half)."""
    if b.dtype != np.float16 or c.dtype not in (np.float16, np.float32):
        raise TypeError(f"gemm: float16 operands expected b float16 and c float16 or float32, got a {a.dtype}, "
                        f"b {b.dtype}, c {c.dtype}")
    shape = (c, a, b, m, n, k, a_mk, b_kn, batch, a_batch, b_batch, c_batch)
    out = "f16" if c.dtype == np.float16 else "f32"
    xp = backend.xp_of(c)
    if _gemm_mode == "tiled":
        _launch_gemm("gemm_half", f"gemm_half_tiled_{out}", GEMM_TILE, (GEMM_TILE, GEMM_TILE), *shape)
    elif _gemm_mode == "wmma":
        if xp is not np:
            _check_tensor_cores(_gpu_of("gemm", (c, a, b)))
        _launch_gemm("gemm_wmma", f"gemm_wmma_{out}", GEMM_WMMA_TILE, (GEMM_WMMA_THREADS,), *shape)
    elif xp is np:
        c_view = _strided(np, c, (batch, m, n), (c_batch, n, 1))
        c_view[...] = np.matmul(_strided(np, a.astype(np.float32), (batch, m, k), (a_batch, *a_mk)),
                                _strided(np, b.astype(np.float32), (batch, k, n), (b_batch, *b_kn)))
    else:
        with backend.device_scope(f"cuda:{_gpu_of('gemm', (c, a, b))}"):
            _cublas_half(xp, *shape)


def _check_tensor_cores(gpu):
    major, minor = divmod(int(backend.cupy().cuda.Device(gpu).compute_capability), 10)
    if major < 7:
        raise RuntimeError(f"gemm: set_gemm('wmma') runs on tensor cores (compute capability 7.0 and later); "
                           f"cuda:{gpu} has {major}.{minor}: use 'blas' or 'tiled'")


def _cublas_operand(rows, cols, strides):
    """How cuBLAS, which reads matrices column-major, takes the (rows, cols) matrix P with element
    strides (s_r, s_c) as the operand op(S) = P^T: ("N", ld) when P is row-major (s_c = 1: S = P^T
    is column-major with ld = s_r), ("T", ld) when P is column-major (s_r = 1: S = P, ld = s_c),
    None when it is neither (a copy is needed). A dimension of 1 may have any stride."""
    s_r, s_c = strides
    if (s_c == 1 or cols == 1) and (rows == 1 or s_r >= max(1, cols)):
        return "N", s_r if rows > 1 else max(1, cols)
    if (s_r == 1 or rows == 1) and (cols == 1 or s_c >= max(1, rows)):
        return "T", s_c if cols > 1 else max(1, rows)
    return None


def _cublas_half(xp, c, a, b, m, n, k, a_mk, b_kn, batch, a_batch, b_batch, c_batch):
    """C = A B through cublasGemmStridedBatchedEx: A and B CUDA_R_16F, C CUDA_R_16F or CUDA_R_32F,
    CUBLAS_COMPUTE_32F (products and sums in float32, on tensor cores where the GPU has them).
    cuBLAS is column-major: the row-major C (m, n) is the column-major C^T (n, m) with ld n, and
    C^T = B^T A^T, so B is cuBLAS's first operand and A its second."""
    from cupy_backends.cuda.api import runtime
    from cupy_backends.cuda.libs import cublas
    if _cublas_operand(k, n, b_kn) is None:   # neither layout: a contiguous copy
        b, b_kn, b_batch = _contiguous(xp, b, (k, n), b_kn, batch, b_batch)
    if _cublas_operand(m, k, a_mk) is None:
        a, a_mk, a_batch = _contiguous(xp, a, (m, k), a_mk, batch, a_batch)
    (op_b, ld_b), (op_a, ld_a) = _cublas_operand(k, n, b_kn), _cublas_operand(m, k, a_mk)
    ops = {"N": cublas.CUBLAS_OP_N, "T": cublas.CUBLAS_OP_T}
    one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)   # alpha, beta: float for COMPUTE_32F
    c_type = runtime.CUDA_R_16F if c.dtype == np.float16 else runtime.CUDA_R_32F
    handle = backend.cupy().cuda.device.get_cublas_handle()
    cublas.gemmStridedBatchedEx(handle, ops[op_b], ops[op_a], n, m, k, one.ctypes.data,
                                b.data.ptr, runtime.CUDA_R_16F, ld_b, b_batch,
                                a.data.ptr, runtime.CUDA_R_16F, ld_a, a_batch, zero.ctypes.data,
                                c.data.ptr, c_type, n, c_batch, batch, cublas.CUBLAS_COMPUTE_32F,
                                cublas.CUBLAS_GEMM_DEFAULT)


def _contiguous(xp, x, shape, strides, batch, batch_stride):
    """A row-major copy of the strided operand: (copy, its strides, its batch stride)."""
    if batch_stride == 0:   # one matrix for every batch
        return xp.ascontiguousarray(_strided(xp, x, shape, strides)).ravel(), (shape[1], 1), 0
    copy = xp.ascontiguousarray(_strided(xp, x, (batch, *shape), (batch_stride, *strides)))
    return copy.ravel(), (shape[1], 1), shape[0] * shape[1]
