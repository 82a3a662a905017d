"""The CPU kernel emulator (device "cuda-emu"): kernels/*.cu compiled with the system C++ compiler
and run on the CPU, so that every kernel is tested on machines without a GPU.

    run(family, name, grid, block, args)     called by minialex.cuda.launch for NumPy arrays

Debugging (minialex.cuda.launch's keywords):
    debug=True         a build with -O0 -g in which every pointer parameter checks each access
                       against its array's size: the first access outside raises OutOfBoundsError
                       naming the kernel, the array, the index, the block and the thread. The
                       default for a kernel file of your own (not in kernels/); debug=False skips
                       the checks (about 5x faster). MINIALEX_EMU_DEBUG=1 checks every launch, the
                       library's too; MINIALEX_EMU_DEBUG=0 none.
    only_block=(x, y, z), only_thread=(x, y, z)    run just that block, or that thread of each
                       block (a kernel with barriers needs its whole block), e.g. for printf
    isolate, timeout   see below
printf in a kernel reaches Python's sys.stdout after the launch (a notebook cell shows it), at most
1 MiB per launch as on a GPU.

Kernels of your own run in a child process (minialex/emulator_child.py): a crash there is
KernelCrashError, a launch past its time limit LaunchTimeout, and Python goes on. The library's
kernels run in this process (the fast path); isolate=True/False chooses for one launch, and
timeout=seconds (else $MINIALEX_EMU_TIMEOUT, else 60) limits an isolated one.

A kernel file is compiled once against kernels/cuda_emu.h, which supplies the CUDA built-ins
(threadIdx, blockIdx, __syncthreads, atomicAdd, min/max, the float math functions) and runs a
launch over every block and thread: the threads of a block are cooperative fibers that switch at
__syncthreads, so shared-memory tiling behaves as on a GPU. `#include <cuda_fp16.h>` and
`#include <mma.h>` reach the emulator's versions (kernels/cuda_emu_fp16.h: __half, __half2;
kernels/cuda_emu_mma.h: nvcuda::wmma) through a folder of stand-ins the build puts first (INCLUDES). The wrapper exports one C function per
kernel, taking the launch geometry and an array of pointers to the arguments. Compiled libraries
are cached by the hash of their sources in <cache root>/emu; an edited file is compiled again in
the same process (the library is looked up by the file's text). The kernel files, their
signatures and a GPU's limits come from minialex/kernel_source.py; minialex.cuda imports this
module, never the other way round. The compiler and its flags for Linux and macOS: build_flags.
"""
import ctypes
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from . import emulator_child, kernel_source
from .paths import cache_root

_libraries = {}          # (family, debug, source text) -> (ctypes library, {kernel: static shared bytes})
_lock = threading.Lock()  # the emulator's built-ins (threadIdx, ...) are process-wide
_CTYPES = {np.int32: ctypes.c_int32, np.uint32: ctypes.c_uint32, np.float32: ctypes.c_float, np.uint8: ctypes.c_uint8,
           np.float16: lambda v: ctypes.c_uint16(int(v.view(np.uint16)))}   # a __half: its 16 bits
# CUDA's headers as the emulator's build sees them: the name a kernel includes leads to the emulator's
# version in kernels/ (NVRTC gets the real ones from the CUDA toolkit, see minialex.cuda.nvrtc_options)
INCLUDES = {"cuda_fp16.h": '#include "cuda_emu_fp16.h"\n', "mma.h": '#include "cuda_emu_mma.h"\n'}
_HAS_OUTPUT = 8          # a bit of a launcher's status: printf wrote something (see _wrapper)
_STATUS = 7


def cache_dir():
    return cache_root() / "emu"


# ----- the compiler, on Linux and macOS -----

def compiler():
    """The C++ compiler's command: $CXX (it may carry flags: "ccache g++"), else the first found of
    g++, c++, clang++ (on macOS clang++ first: Apple's g++ is clang under another name)."""
    names = ("clang++", "c++", "g++") if sys.platform == "darwin" else ("g++", "c++", "clang++")
    for cxx in (os.environ.get("CXX"), *names):
        words = shlex.split(cxx) if cxx else []
        if words and shutil.which(words[0]):
            return words
    raise RuntimeError(f"device 'cuda-emu' compiles kernels/*.cu with a C++ compiler and found none (set CXX, or "
                       f"{_install_hint()})")


def _install_hint():
    if sys.platform == "darwin":
        return "install Apple's command line tools: xcode-select --install"
    return "install g++: apt-get install g++"


def build_flags(debug, platform=None):
    """The compiler's flags for a shared library of kernels. Linux: -shared -fPIC (a .so). macOS
    (platform "darwin"): -dynamiclib (a .dylib; code is position-independent there anyway), built
    for the architecture this Python runs as (-arch arm64 or x86_64: an x86_64 Python under
    Rosetta loads only an x86_64 library)."""
    platform = platform or sys.platform
    flags = ["-O0", "-g"] if debug else ["-O2"]
    flags += ["-std=c++14", "-w"]
    if platform == "darwin":
        import platform as host
        return flags + ["-dynamiclib", "-arch", host.machine()]
    return flags + ["-shared", "-fPIC"]


def library_suffix(platform=None):
    return ".dylib" if (platform or sys.platform) == "darwin" else ".so"


# ----- the source: which kernels wait at barriers, the debug build, the wrapper -----

_POINTER = re.compile(r"\b((?:(?:const|volatile)\s+)*)(float|double|int|unsigned int|unsigned char|unsigned|long long|"
                      r"char|__half2|__half|half2|half)\s*\*\s*(?:__restrict__\s*)?(?=[A-Za-z_])")


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


def _debug_source(text):
    """The .cu with every pointer declaration made an emu::ptr (parameters and locals alike)."""
    return _POINTER.sub(lambda m: f"emu::ptr<{' '.join(m.group(1).split() + [m.group(2)])}> ", text)


def _wrapper(family, source_path, debug):
    """C++ that includes the emulator header and the .cu, and exports one launcher per kernel (its
    status: 0 fine, 1 a divergent barrier, 2 out of bounds, 3 no stacks, 4 a warp-wide call misused;
    plus 8 when printf wrote). A launcher first records the launch's arrays (emu::arrays)."""
    lines = (["#define EMU_DEBUG"] if debug else []) + ['#include "cuda_emu.h"', f'#include "{source_path}"', ""]
    for name, params in kernel_source.signatures(family).items():
        barriers = "true" if kernel_needs_fibers(family, name) else "false"
        args, arrays = [], []
        for i, (pname, base, is_pointer) in enumerate(params):
            if is_pointer and len(arrays) < 64:   # emu::arrays: where wmma counts alignment from
                arrays.append(f"emu::arrays[{len(arrays)}] = {{*(const char**)a[{i}], "
                              f"(size_t)sizes[{i}] * sizeof({base})}};")
            if is_pointer and debug:
                args.append(f'emu::ptr<{base}>(*({base}**)a[{i}], sizes[{i}], "{pname}")')
            else:
                args.append(f"*({base}{'*' if is_pointer else ''}*)a[{i}]")
        lines += [f'extern "C" int emu_{name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, '
                  f'unsigned bz, void** a, long long* sizes, long long* only) {{',
                  f"    {' '.join(arrays)} emu::array_count = {len(arrays)};",
                  f"    int status = emu::launch(dim3(gx, gy, gz), dim3(bx, by, bz), {barriers}, "
                  f"[&] {{ {name}({', '.join(args)}); }}, only[0], only[1], only[2], only[3], only[4], only[5]);",
                  f"    return status | (emu::output.empty() ? 0 : {_HAS_OUTPUT});", "}", ""]
    lines += ['extern "C" const char* emu_message() { return emu::message; }',
              'extern "C" const char* emu_output() { return emu::output.c_str(); }',
              'extern "C" void emu_output_clear() { emu::output.clear(); }',
              'extern "C" int emu_output_dropped() { return emu::output_dropped; }',
              'extern "C" void emu_print_to(int fd) { emu::output_fd = fd; }', ""]
    return "\n".join(lines)


# ----- building and loading -----

_LOCAL_STATIC = re.compile(r"^_?_ZZ(\d+)(\w+)$")   # macOS prefixes every C++ symbol with one more _


def _shared_bytes(library_path, kernels):
    """{kernel: bytes of its __shared__ arrays}. cuda_emu.h makes __shared__ a function-local
    static, which the symbol table lists as _ZZ<len><kernel>E<len><name>. An ELF library (Linux)
    records each one's size (nm -S); a Mach-O one (macOS) does not, so there the size is the
    distance to the next symbol of the same section (nm -m), an upper bound by the alignment only."""
    sizes = dict.fromkeys(kernels, 0)
    nm = shutil.which("nm")
    if nm is None:
        return sizes
    mach_o = library_suffix() == ".dylib"
    flags = ["-n", "-m"] if mach_o else ["-S"]
    out = subprocess.run([nm, *flags, "--defined-only", str(library_path)], capture_output=True, text=True)
    symbols = _mach_o_sizes(out.stdout) if mach_o else _elf_sizes(out.stdout)
    for symbol, size in symbols:
        match = _LOCAL_STATIC.match(symbol)
        if match:
            length = int(match.group(1))
            kernel = match.group(2)[:length]
            if kernel in sizes:
                sizes[kernel] += size
    return sizes


def _elf_sizes(listing):
    """(symbol, size) from `nm -S`: address size type name."""
    return [(f[3], int(f[1], 16)) for f in (line.split() for line in listing.splitlines()) if len(f) == 4]


def _mach_o_sizes(listing):
    """(symbol, size) from `nm -n -m`: address (segment,section) kind name, sorted by address; the
    last symbol of a section has no known size and is left out."""
    rows = []
    for line in listing.splitlines():
        m = re.match(r"^([0-9a-fA-F]+) \((\w+,\w+)\) .* (\S+)$", line)
        if m:
            rows.append((int(m.group(1), 16), m.group(2), m.group(3)))
    return [(name, rows[i + 1][0] - address) for i, (address, section, name) in enumerate(rows[:-1])
            if rows[i + 1][1] == section]


def _library(family, debug=False):
    text = kernel_source.source(family)
    key = (family, debug, text)
    if key in _libraries:
        return _libraries[key]
    kdir = kernel_source.kernel_dir()
    headers = [path.read_text(encoding="utf-8") for path in sorted(kdir.glob("cuda_emu*.h"))]
    flags = build_flags(debug)
    source = _debug_source(text) if debug else text
    stem = kernel_source.kernel_path(family).stem
    digest = hashlib.sha256("\0".join([_wrapper(family, "K", debug), *headers, *INCLUDES.values(), source,
                                       " ".join(flags)]).encode()).hexdigest()
    target = cache_dir() / f"{stem}-{'debug-' if debug else ''}{digest[:16]}{library_suffix()}"
    if not target.exists():
        _compile(family, source, debug, flags, target)
    library = ctypes.CDLL(str(target))
    library.emu_message.restype = ctypes.c_char_p
    library.emu_output.restype = ctypes.c_char_p
    _libraries[key] = (library, _shared_bytes(target, kernel_source.signatures(family)))
    return _libraries[key]


def _compile(family, source, debug, flags, target):
    """Compile the wrapper of kernel file `family` (its text `source`) into `target`, atomically."""
    kdir = kernel_source.kernel_dir()
    stem = kernel_source.kernel_path(family).stem
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source_path = Path(tmp) / f"{stem}.cu"  # the text read, not a newer one
        source_path.write_text(source, encoding="utf-8")
        cpp = Path(tmp) / "kernel_emu.cpp"
        cpp.write_text(_wrapper(family, source_path, debug), encoding="utf-8")
        include = Path(tmp) / "include"
        include.mkdir()
        for name, text in INCLUDES.items():
            (include / name).write_text(text, encoding="utf-8")
        out = Path(tmp) / f"kernel{library_suffix()}"
        run = subprocess.run([*compiler(), *flags, "-I", str(include), "-I", str(kdir), "-o", str(out), str(cpp)],
                             capture_output=True, text=True)
        if run.returncode != 0:
            hint = f"\n({_install_hint()})" if sys.platform == "darwin" and "xcrun" in run.stderr else ""
            errors = run.stderr.replace(str(source_path), str(kernel_source.kernel_path(family)))
            raise RuntimeError(f"cuda-emu: compiling {kernel_source.kernel_path(family)}"
                               f"{' (debug build)' if debug else ''} failed:\n{errors}{hint}")
        staged = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(out, staged)
        os.replace(staged, target)  # atomic: a parallel process never loads half a file


def shared_bytes(family, name):
    """Static __shared__ memory of a kernel, in bytes (as the GPU would reserve per block)."""
    return _library(kernel_source.family_name(family))[1].get(name, 0)


# ----- running a launch -----

def debug_default(family, debug=None):
    """debug as given; else MINIALEX_EMU_DEBUG (1: every launch checked, 0: none); else checked
    for a kernel file of your own, unchecked for the library's."""
    if debug is not None:
        return bool(debug)
    env = os.environ.get("MINIALEX_EMU_DEBUG", "")
    if env in ("0", "1"):
        return env == "1"
    return not kernel_source.is_library_kernel(family)


def run(family, name, grid, block, args, debug=None, only_block=None, only_thread=None, isolate=None, timeout=None):
    """Run kernel `name` of kernels/<family>.cu (or of a .cu of your own) over grid x block threads
    on NumPy arrays (the arguments are checked by minialex.cuda.launch before). See the module
    docstring for debug, only_block, only_thread, isolate and timeout."""
    family = kernel_source.family_name(family)
    debug = debug_default(family, debug)
    if isolate is None:
        isolate = not kernel_source.is_library_kernel(family)
    limit = emulator_child.time_limit(name, timeout, isolate) if isolate or timeout is not None else None
    if only_thread is not None and kernel_needs_fibers(family, name):
        raise ValueError(f"{name}: only_thread runs one thread, but the kernel waits for its block or warp at "
                         "barriers; use only_block")
    library, shared = _library(family, debug)
    if shared.get(name, 0) > kernel_source.MAX_STATIC_SHARED_BYTES:
        raise kernel_source.LaunchError(
            f"{name}: uses too much shared data ({shared[name]} bytes, {kernel_source.MAX_STATIC_SHARED_BYTES} max): "
            "a GPU refuses to load it (ptxas error; CuPy raises CompileException)")
    fn = getattr(library, f"emu_{name}")
    fn.restype = ctypes.c_int
    geometry = [ctypes.c_uint(v) for v in (*grid, *block)]
    only = (ctypes.c_longlong * 6)(*_only(only_block), *_only(only_thread))
    if isolate and emulator_child.available():
        view, addresses, copies = emulator_child.shared_copies(args)
        keep, pointers, sizes = _arguments(args, addresses)
        where = f"{name} ({kernel_source.kernel_path(family)})"
        try:
            status, message, dropped = emulator_child.run(library, lambda: fn(*geometry, pointers, sizes, only),
                                                          _lock, where, limit, debug)
        except BaseException:
            emulator_child.release(view)
            raise
        emulator_child.copy_back(view, copies)
    else:
        keep, pointers, sizes = _arguments(args)
        with _lock:
            status = fn(*geometry, pointers, sizes, only)
            message = library.emu_message().decode()
            text, dropped = _take_output(library, status)
        if text:
            _print(text)
    if dropped:
        _print(f"[cuda-emu: {name}: printf output past 1 MiB in this launch was dropped, as a GPU drops what "
               "overflows its printf buffer]\n")
    if status & _STATUS:
        _raise_for(status & _STATUS, name, message)


def _arguments(args, addresses=None):
    """(values kept alive, void* array of pointers to each argument, sizes in elements), arrays at
    their own address or at addresses[i] (the shared copies of a child's launch)."""
    keep = []  # ctypes values that must outlive the call
    sizes = (ctypes.c_longlong * max(len(args), 1))()
    for i, arg in enumerate(args):
        if isinstance(arg, np.ndarray):
            keep.append(ctypes.c_void_p(arg.ctypes.data if addresses is None else addresses[i]))
            sizes[i] = arg.size
        else:
            keep.append(_CTYPES[type(arg)](arg))
    pointers = (ctypes.c_void_p * max(len(args), 1))(*[ctypes.addressof(k) for k in keep])
    return keep, pointers, sizes


def _take_output(library, status):
    """(what printf wrote during a launch in this process, whether some was dropped past 1 MiB)."""
    if not status & _HAS_OUTPUT:
        return "", False
    text = library.emu_output().decode("utf-8", "replace")
    library.emu_output_clear()
    return text, bool(library.emu_output_dropped())


def _print(text):
    if text and sys.stdout is not None:   # None: pythonw, or a closed console
        sys.stdout.write(text)


def _raise_for(status, name, message):
    if status == 1:
        raise RuntimeError(f"cuda-emu: {name}: some threads of a block returned while others waited at "
                           f"__syncthreads() or a warp primitive, or they waited at different barriers (a GPU "
                           f"would hang or misbehave){': ' + message if message else ''}")
    if status == 2:
        raise kernel_source.OutOfBoundsError(f"cuda-emu: {name}: {message}")
    if status == 3:
        raise MemoryError(f"cuda-emu: {name}: {message}")
    if status == 4:
        raise RuntimeError(f"cuda-emu: {name}: {message}")


def _only(where):
    """(x, y, z) of a chosen block or thread, or (-1, 0, 0) for all."""
    if where is None:
        return (-1, 0, 0)
    where = tuple(int(v) for v in where) + (0,) * (3 - len(tuple(where)))
    if len(where) != 3 or min(where) < 0:
        raise ValueError(f"emulator: only_block/only_thread expected 1 to 3 indices >= 0, got {where}")
    return where

