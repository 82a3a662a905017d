"""The CPU kernel emulator (device "cuda-emu"): kernels/*.cu compiled with the system C++ compiler
and run on the CPU, so that every kernel is tested on machines without a GPU.

    run(family, name, grid, block, args)     called by minialex.cuda.launch for NumPy arrays

Debugging (minialex.cuda.launch's keywords, or MINIALEX_EMU_DEBUG=1 for every launch):
    debug=True         a build with -O0 -g in which every pointer parameter checks each access
                       against its array's size: the first access outside raises OutOfBoundsError
                       naming the kernel, the array, the index, the block and the thread
    only_block=(x, y, z), only_thread=(x, y, z)    run just that block, or that thread of each
                       block (a kernel with barriers needs its whole block), e.g. for printf

A kernel file is compiled once against kernels/cuda_emu.h, which supplies the CUDA built-ins
(threadIdx, blockIdx, __syncthreads, atomicAdd, min/max, the float math functions) and runs a
launch over every block and thread: the threads of a block are cooperative fibers that switch at
__syncthreads, so shared-memory tiling behaves as on a GPU. The wrapper exports one C function per
kernel, taking the launch geometry and an array of pointers to the arguments. Compiled libraries
are cached by the hash of their sources in <cache root>/emu. The kernel files, their signatures
and a GPU's limits come from minialex/kernel_source.py; minialex.cuda imports this module, never
the other way round.
"""
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from . import kernel_source
from .paths import cache_root

_libraries = {}          # (family, debug) -> (ctypes library, {kernel: static shared bytes})
_lock = threading.Lock()  # the emulator's built-ins (threadIdx, ...) are process-wide
_CTYPES = {np.int32: ctypes.c_int32, np.uint32: ctypes.c_uint32, np.float32: ctypes.c_float, np.uint8: ctypes.c_uint8}


def cache_dir():
    return cache_root() / "emu"


def compiler():
    for cxx in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if cxx and shutil.which(cxx):
            return cxx
    raise RuntimeError("device 'cuda-emu' compiles kernels/*.cu with a C++ compiler and found none "
                       "(set CXX, or install g++: apt-get install g++)")


_POINTER = re.compile(r"\b(const\s+)?(float|double|int|unsigned int|unsigned char|unsigned|long long|char)\s*\*\s*"
                      r"(?:__restrict__\s*)?(?=[A-Za-z_])")


def uses_barriers(source):
    """Whether code needs fibers: a block barrier or a warp primitive."""
    return any(word in source for word in ("__syncthreads", "__syncwarp", "_sync("))


def kernel_needs_fibers(family, name):
    """Whether kernel `name` (its body, or a __device__ function of its file) waits at barriers."""
    source = kernel_source.source(family)
    start = source.find(f" {name}(")
    body_start = source.find("{", start)
    depth, end = 0, body_start
    for end in range(body_start, len(source)):  # the kernel's body: up to its matching brace
        depth += {"{": 1, "}": -1}.get(source[end], 0)
        if depth == 0:
            break
    return uses_barriers(source[body_start:end]) or uses_barriers(_device_code(source))


def _device_code(source):
    """The text of the file's __device__ functions (a kernel may call them)."""
    parts = []
    for m in re.finditer(r"__device__[^;{]*\{", source):
        depth, i = 0, m.end() - 1
        for i in range(m.end() - 1, len(source)):
            depth += {"{": 1, "}": -1}.get(source[i], 0)
            if depth == 0:
                break
        parts.append(source[m.start():i])
    return "".join(parts)


def _debug_source(family):
    """The .cu with every pointer declaration made an emu::ptr (parameters and locals alike)."""
    return _POINTER.sub(lambda m: f"emu::ptr<{m.group(1) or ''}{m.group(2)}> ", kernel_source.source(family))


def _wrapper(family, source_path, debug):
    """C++ that includes the emulator header and the .cu, and exports one launcher per kernel."""
    lines = (["#define EMU_DEBUG"] if debug else []) + ['#include "cuda_emu.h"', f'#include "{source_path}"', ""]
    for name, params in kernel_source.signatures(family).items():
        barriers = "true" if kernel_needs_fibers(family, name) else "false"
        args = []
        for i, (pname, base, is_pointer) in enumerate(params):
            if is_pointer and debug:
                args.append(f'emu::ptr<{base}>(*({base}**)a[{i}], sizes[{i}], "{pname}")')
            else:
                args.append(f"*({base}{'*' if is_pointer else ''}*)a[{i}]")
        lines += [f'extern "C" int emu_{name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, '
                  f'unsigned bz, void** a, long long* sizes, long long* only) {{',
                  f"    return emu::launch(dim3(gx, gy, gz), dim3(bx, by, bz), {barriers}, "
                  f"[&] {{ {name}({', '.join(args)}); }}, only[0], only[1], only[2], only[3], only[4], only[5]);",
                  "}", ""]
    lines += ['extern "C" const char* emu_message() { return emu::message; }', ""]
    return "\n".join(lines)


_LOCAL_STATIC = re.compile(r"^_ZZ(\d+)(\w+)$")


def _shared_bytes(library_path, kernels):
    """{kernel: bytes of its __shared__ arrays}. cuda_emu.h makes __shared__ a function-local
    static, which the symbol table lists as _ZZ<len><kernel>E<len><name> with its size."""
    sizes = dict.fromkeys(kernels, 0)
    nm = shutil.which("nm")
    if nm is None:
        return sizes
    out = subprocess.run([nm, "-S", "--defined-only", str(library_path)], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) != 4:
            continue
        match = _LOCAL_STATIC.match(fields[3])
        if match:
            length = int(match.group(1))
            kernel = match.group(2)[:length]
            if kernel in sizes:
                sizes[kernel] += int(fields[1], 16)
    return sizes


def _library(family, debug=False):
    if (family, debug) in _libraries:
        return _libraries[(family, debug)]
    kdir = kernel_source.kernel_dir()
    header = (kdir / "cuda_emu.h").read_text()
    flags = ["-O0", "-g"] if debug else ["-O2"]
    flags += ["-std=c++14", "-shared", "-fPIC", "-w"]
    source = _debug_source(family) if debug else kernel_source.source(family)
    stem = kernel_source.kernel_path(family).stem
    digest = hashlib.sha256("\0".join([_wrapper(family, "K", debug), header, source, " ".join(flags)]).encode()).hexdigest()
    target = cache_dir() / f"{stem}-{'debug-' if debug else ''}{digest[:16]}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            source_path = kernel_source.kernel_path(family)
            if debug:
                source_path = Path(tmp) / f"{stem}_debug.cu"
                source_path.write_text(source)
            cpp = Path(tmp) / "kernel_emu.cpp"
            cpp.write_text(_wrapper(family, source_path, debug))
            out = Path(tmp) / "kernel.so"
            run = subprocess.run([compiler(), *flags, "-I", str(kdir), "-o", str(out), str(cpp)],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError(f"cuda-emu: compiling {kernel_source.kernel_path(family)}"
                                   f"{' (debug build)' if debug else ''} failed:\n{run.stderr}")
            staged = target.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(out, staged)
            os.replace(staged, target)  # atomic: a parallel process never loads half a file
    library = ctypes.CDLL(str(target))
    library.emu_message.restype = ctypes.c_char_p
    _libraries[(family, debug)] = (library, _shared_bytes(target, kernel_source.signatures(family)))
    return _libraries[(family, debug)]


def shared_bytes(family, name):
    """Static __shared__ memory of a kernel, in bytes (as the GPU would reserve per block)."""
    return _library(family)[1].get(name, 0)


def run(family, name, grid, block, args, debug=None, only_block=None, only_thread=None):
    """Run kernel `name` of kernels/<family>.cu over grid x block threads on NumPy arrays (the
    arguments are checked by minialex.cuda.launch before). See the module docstring for the
    debugging keywords."""
    if debug is None:
        debug = os.environ.get("MINIALEX_EMU_DEBUG", "0") not in ("", "0")
    if only_thread is not None and kernel_needs_fibers(family, name):
        raise ValueError(f"{name}: only_thread runs one thread, but the kernel waits for its block or warp at "
                         "barriers; use only_block")
    library, shared = _library(family, debug)
    if shared.get(name, 0) > kernel_source.MAX_STATIC_SHARED_BYTES:
        raise kernel_source.LaunchError(
            f"{name}: uses too much shared data ({shared[name]} bytes, {kernel_source.MAX_STATIC_SHARED_BYTES} max): "
            "a GPU refuses to load it (ptxas error; CuPy raises CompileException)")
    keep = []  # ctypes values that must outlive the call
    sizes = (ctypes.c_longlong * max(len(args), 1))()
    for i, arg in enumerate(args):
        if isinstance(arg, np.ndarray):
            keep.append(ctypes.c_void_p(arg.ctypes.data))
            sizes[i] = arg.size
        else:
            keep.append(_CTYPES[type(arg)](arg))
    pointers = (ctypes.c_void_p * len(args))(*[ctypes.addressof(k) for k in keep])
    only = (ctypes.c_longlong * 6)(*_only(only_block), *_only(only_thread))
    fn = getattr(library, f"emu_{name}")
    fn.restype = ctypes.c_int
    with _lock:
        status = fn(*[ctypes.c_uint(v) for v in (*grid, *block)], pointers, sizes, only)
        message = library.emu_message().decode()
    if status == 1:
        raise RuntimeError(f"cuda-emu: {name}: some threads of a block returned while others waited at "
                           f"__syncthreads() or a warp primitive, or they waited at different barriers (a GPU "
                           f"would hang or misbehave){': ' + message if message else ''}")
    if status == 2:
        raise kernel_source.OutOfBoundsError(f"cuda-emu: {name}: {message}")


def _only(where):
    """(x, y, z) of a chosen block or thread, or (-1, 0, 0) for all."""
    if where is None:
        return (-1, 0, 0)
    where = tuple(int(v) for v in where) + (0,) * (3 - len(tuple(where)))
    if len(where) != 3 or min(where) < 0:
        raise ValueError(f"emulator: only_block/only_thread expected 1 to 3 indices >= 0, got {where}")
    return where
