"""The CPU kernel emulator (device "cuda-emu"): kernels/*.cu compiled with the system C++ compiler
and run on the CPU, so that every kernel is tested on machines without a GPU.

    run(family, name, grid, block, args)     called by minialex.cuda.launch for NumPy arrays

A kernel file is compiled once against kernels/cuda_emu.h, which supplies the CUDA built-ins
(threadIdx, blockIdx, __syncthreads, atomicAdd, min/max, the float math functions) and runs a
launch over every block and thread: the threads of a block are cooperative fibers that switch at
__syncthreads, so shared-memory tiling behaves as on a GPU. The wrapper exports one C function per
kernel, taking the launch geometry and an array of pointers to the arguments. Compiled libraries
are cached by the hash of their sources in <cache root>/emu.
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

from . import cuda
from .paths import cache_root

_libraries = {}          # family -> (ctypes library, {kernel: static shared bytes})
_lock = threading.Lock()  # the emulator's built-ins (threadIdx, ...) are process-wide
_CTYPES = {np.int32: ctypes.c_int32, np.uint32: ctypes.c_uint32, np.float32: ctypes.c_float}


def cache_dir():
    return cache_root() / "emu"


def compiler():
    for cxx in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if cxx and shutil.which(cxx):
            return cxx
    raise RuntimeError("device 'cuda-emu' compiles kernels/*.cu with a C++ compiler and found none "
                       "(set CXX, or install g++: apt-get install g++)")


def _wrapper(family):
    """C++ that includes the emulator header and the .cu, and exports one launcher per kernel."""
    barriers = "true" if "__syncthreads" in cuda.source(family) else "false"
    lines = ['#include "cuda_emu.h"', f'#include "{cuda.kernel_path(family)}"', ""]
    for name, params in cuda.signatures(family).items():
        call = ", ".join(f"*({base}{'*' if is_pointer else ''}*)a[{i}]"
                         for i, (_, base, is_pointer) in enumerate(params))
        lines += [f'extern "C" int emu_{name}(unsigned gx, unsigned gy, unsigned gz, '
                  f'unsigned bx, unsigned by, unsigned bz, void** a) {{',
                  f"    return emu::launch(dim3(gx, gy, gz), dim3(bx, by, bz), {barriers}, "
                  f"[&] {{ {name}({call}); }});",
                  "}", ""]
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


def _library(family):
    if family in _libraries:
        return _libraries[family]
    kdir = cuda.kernel_dir()
    wrapper = _wrapper(family)
    header = (kdir / "cuda_emu.h").read_text()
    flags = ["-O2", "-std=c++14", "-shared", "-fPIC", "-w"]
    digest = hashlib.sha256("\0".join([wrapper, header, cuda.source(family), " ".join(flags)]).encode()).hexdigest()
    target = cache_dir() / f"{cuda.kernel_path(family).stem}-{digest[:16]}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            cpp = Path(tmp) / "kernel_emu.cpp"
            cpp.write_text(wrapper)
            out = Path(tmp) / "kernel.so"
            run = subprocess.run([compiler(), *flags, "-I", str(kdir), "-o", str(out), str(cpp)],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError(f"cuda-emu: compiling {cuda.kernel_path(family)} failed:\n{run.stderr}")
            staged = target.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(out, staged)
            os.replace(staged, target)  # atomic: a parallel process never loads half a file
    _libraries[family] = (ctypes.CDLL(str(target)), _shared_bytes(target, cuda.signatures(family)))
    return _libraries[family]


def shared_bytes(family, name):
    """Static __shared__ memory of a kernel, in bytes (as the GPU would reserve per block)."""
    return _library(family)[1].get(name, 0)


def run(family, name, grid, block, args):
    """Run kernel `name` of kernels/<family>.cu over grid x block threads on NumPy arrays (the
    arguments are checked by minialex.cuda.launch before)."""
    library, shared = _library(family)
    if shared.get(name, 0) > cuda.MAX_STATIC_SHARED_BYTES:
        raise cuda.LaunchError(
            f"{name}: uses too much shared data ({shared[name]} bytes, {cuda.MAX_STATIC_SHARED_BYTES} max): "
            "a GPU refuses to load it (ptxas error; CuPy raises CompileException)")
    keep = []  # ctypes values that must outlive the call
    for arg in args:
        if isinstance(arg, np.ndarray):
            keep.append(ctypes.c_void_p(arg.ctypes.data))
        else:
            keep.append(_CTYPES[type(arg)](arg))
    pointers = (ctypes.c_void_p * len(args))(*[ctypes.addressof(k) for k in keep])
    fn = getattr(library, f"emu_{name}")
    fn.restype = ctypes.c_int
    with _lock:
        status = fn(*[ctypes.c_uint(v) for v in (*grid, *block)], pointers)
    if status == 1:
        raise RuntimeError(f"cuda-emu: {name}: some threads of a block returned while others waited "
                           "at __syncthreads() (a GPU would hang or misbehave)")
