"""Kernels of your own on the emulator ("cuda-emu") cannot take Python down: bounds-checked by
default, a crash or an endless loop in a child process becomes an exception naming the kernel,
an edited file is compiled again, a path may be a pathlib.Path, printf reaches sys.stdout. And
the pieces of the macOS build that can be checked on Linux."""
import contextlib
import io
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from minialex import cuda, emulator, kernel_source

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="kernels of your own run in a forked child")

KERNELS = r'''
extern "C" __global__ void mine_no_guard(float* __restrict__ y, const float* __restrict__ x, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;       /* no `if (i >= n) return;` */
    y[i] = 2.0f * x[i];
}

extern "C" __global__ void mine_far_write(float* __restrict__ y, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = 1.0f;
    if (i == 5) y[i + (1 << 30)] = 1.0f;                   /* 4 GiB past the array */
}

extern "C" __global__ void mine_wild_pointer(float* __restrict__ y, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i == 0) printf("before the crash\n");
    y[i] = 1.0f;
    if (i == 3) {
        float* p = (float*)(unsigned long long)n;        /* an address made by hand: no array behind it */
        *p = 1.0f;
    }
}

extern "C" __global__ void mine_spin(float* __restrict__ y, int n)
{
    volatile int* flag = (volatile int*)y;
    y[1] = 5.0f;
    while (flag[0] == 0) {}                               /* waits for a write that never comes */
}

__device__ int depth(int k, volatile int* above)
{
    volatile int local[64];                               /* kept on the stack: the next call reads it */
    local[0] = above[0] + k;
    return depth(k + 1, local) + local[0];                /* no way out */
}

extern "C" __global__ void mine_recursion(float* __restrict__ y, int n)
{
    volatile int start[1] = {n};
    __syncthreads();                                      /* fibers: each thread on its own stack */
    if (threadIdx.x == 1) y[0] = (float)depth(n, start);
}

extern "C" __global__ void mine_divide(float* __restrict__ y, int n)
{
    y[threadIdx.x] = (float)(100 / (n - (int)threadIdx.x));
}

extern "C" __global__ void mine_scale(float* __restrict__ y, const float* __restrict__ x, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    y[i] = 3.0f * x[i];
}

extern "C" __global__ void mine_print(float* __restrict__ y, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) printf("block %d thread %d: %.1f\n", blockIdx.x, threadIdx.x, y[i]);
}

extern "C" __global__ void mine_print_a_lot(float* __restrict__ y, int n)
{
    printf("%0100d\n", blockIdx.x * blockDim.x + threadIdx.x);     /* 101 bytes a thread */
}

extern "C" __global__ void mine_shared_reverse(float* __restrict__ y, const float* __restrict__ x, int n)
{
    __shared__ float tile[1024];
    float* row = tile;                                    /* plain pointers the debug build must take */
    float* mine = &y[blockIdx.x * blockDim.x + threadIdx.x];
    row[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
    __syncthreads();
    *mine = row[blockDim.x - 1 - threadIdx.x];
}
'''


@pytest.fixture
def mine(tmp_path, monkeypatch):
    for name in ("MINIALEX_EMU_DEBUG", "MINIALEX_EMU_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "mine.cu"
    path.write_text(KERNELS)
    return str(path)


def _no_fork(*args, **kwargs):
    raise AssertionError("os.fork called")


# ----- bounds-checked by default -----

def test_a_kernel_of_your_own_is_bounds_checked_by_default(mine, monkeypatch):
    x, y = np.arange(1000, dtype=np.float32), np.zeros(1000, np.float32)
    with pytest.raises(cuda.OutOfBoundsError, match=r"mine_no_guard: [xy]\[1000\] accessed, outside its 1000 elements, "
                                                    r"by block \(3, 0, 0\) thread \(232, 0, 0\)"):
        cuda.launch(str(mine), "mine_no_guard", *cuda.blocks(1024), y, x, np.int32(1000))
    with pytest.raises(cuda.OutOfBoundsError, match=r"mine_far_write: y\[1073741829\] accessed, outside its 64"):
        cuda.launch(mine, "mine_far_write", (1,), (64,), np.zeros(64, np.float32), np.int32(64))
    assert emulator.debug_default(str(mine)) is True and emulator.debug_default("relu") is False
    monkeypatch.setenv("MINIALEX_EMU_DEBUG", "0")                  # opted out: no checks, no error here
    assert emulator.debug_default(str(mine)) is False and emulator.debug_default(str(mine), True) is True
    y = np.zeros(1024, np.float32)
    cuda.launch(mine, "mine_no_guard", *cuda.blocks(1000), y[:1000], np.arange(1024, dtype=np.float32)[:1000],
                np.int32(1000))
    np.testing.assert_array_equal(y[:1000], 2 * np.arange(1000))


def test_the_debug_build_takes_plain_pointers_and_volatile(mine):
    x = np.arange(2 * 1024, dtype=np.float32)
    for debug in (True, False):
        y = np.zeros_like(x)
        cuda.launch(mine, "mine_shared_reverse", (2,), (1024,), y, x, np.int32(x.size), debug=debug)
        np.testing.assert_array_equal(y, x.reshape(2, 1024)[:, ::-1].ravel())
    source = emulator._debug_source("volatile int* flag, const volatile float *q, const float* __restrict__ x")
    assert source == "emu::ptr<volatile int> flag, emu::ptr<const volatile float> q, emu::ptr<const float> x"


# ----- crashes and endless loops: an exception naming the kernel -----

def test_a_segfault_is_an_exception_naming_the_kernel_and_the_arrays_are_unchanged(mine):
    y = np.full(64, -1.0, np.float32)
    # an unmapped address: SIGSEGV (11); macOS may say SIGBUS (10) for a mapped page it may not touch
    with pytest.raises(cuda.KernelCrashError, match=r"cuda-emu: mine_far_write \(.*mine\.cu\): crashed with signal "
                                                    r"(11 \(SIGSEGV\), a segmentation fault|10 \(SIGBUS\)).*debug=True"):
        cuda.launch(mine, "mine_far_write", (1,), (64,), y, np.int32(64), debug=False)
    assert (y == -1).all()                                   # the writes before the crash are not kept
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(cuda.KernelCrashError, match=r"mine_wild_pointer .*SIGSEGV"
                                                                                     r".*saw no access outside"):
        cuda.launch(mine, "mine_wild_pointer", (1,), (8,), y, np.int32(16))   # the debug build cannot see it
    assert out.getvalue() == "before the crash\n"                            # printf before a crash is kept
    assert issubclass(cuda.KernelCrashError, cuda.LaunchError)
    cuda.launch(mine, "mine_scale", (1,), (64,), y, np.ones(64, np.float32), np.int32(64))   # Python goes on
    assert (y == 3).all()


def test_a_stack_overflow_is_a_crash_not_a_corrupt_heap(mine):
    with pytest.raises(cuda.KernelCrashError, match=r"mine_recursion .*signal \d+ \((SIGSEGV|SIGBUS)\).*stack"):
        cuda.launch(mine, "mine_recursion", (1,), (64,), np.zeros(4, np.float32), np.int32(0), debug=False)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="ARM divides by zero without a trap")
def test_an_integer_division_by_zero_is_sigfpe(mine):
    with pytest.raises(cuda.KernelCrashError, match=r"mine_divide .*signal 8 \(SIGFPE\), an arithmetic error"):
        cuda.launch(mine, "mine_divide", (1,), (8,), np.zeros(8, np.float32), np.int32(5))


def test_an_endless_loop_is_stopped_at_the_time_limit(mine, monkeypatch):
    y = np.zeros(4, np.float32)
    start = time.monotonic()
    with pytest.raises(cuda.LaunchTimeout, match=r"cuda-emu: mine_spin \(.*mine\.cu\): still running after 1.5 s, "
                                                 r"the time limit"):
        cuda.launch(mine, "mine_spin", (1,), (1,), y, np.int32(4), timeout=1.5)
    assert 1.5 <= time.monotonic() - start < 10
    assert (y == 0).all() and issubclass(cuda.LaunchTimeout, cuda.LaunchError)
    monkeypatch.setenv("MINIALEX_EMU_TIMEOUT", "0.5")
    with pytest.raises(cuda.LaunchTimeout, match=r"mine_spin .*after 0.5 s"):
        cuda.launch(mine, "mine_spin", (1,), (1,), y, np.int32(4), debug=False)
    monkeypatch.setenv("MINIALEX_EMU_TIMEOUT", "soon")
    with pytest.raises(ValueError, match=r"MINIALEX_EMU_TIMEOUT expected seconds \(a number > 0\), got 'soon'"):
        cuda.launch(mine, "mine_scale", (1,), (4,), y, y, np.int32(4))
    monkeypatch.delenv("MINIALEX_EMU_TIMEOUT")
    with pytest.raises(ValueError, match=r"mine_scale: timeout expected seconds \(a number > 0\), got 0"):
        cuda.launch(mine, "mine_scale", (1,), (4,), y, y, np.int32(4), timeout=0)
    with pytest.raises(ValueError, match=r"mine_scale: timeout needs isolate=True"):
        cuda.launch(mine, "mine_scale", (1,), (4,), y, y, np.int32(4), isolate=False, timeout=5)


def test_the_child_sees_arrays_as_the_kernel_would(mine):
    a = np.arange(100, dtype=np.float32)
    cuda.launch(mine, "mine_scale", (1,), (128,), a, a, np.int32(100))          # in place: y and x alias
    np.testing.assert_array_equal(a, 3 * np.arange(100))
    buffer = np.arange(200, dtype=np.float32)
    cuda.launch(mine, "mine_scale", (1,), (128,), buffer[100:], buffer[:100], np.int32(100))   # views of one buffer
    np.testing.assert_array_equal(buffer, np.concatenate([np.arange(100), 3 * np.arange(100)]))
    x = np.ones(100, np.float32)
    x.setflags(write=False)                                                     # a read-only input is fine
    y = np.zeros(100, np.float32)
    cuda.launch(mine, "mine_scale", (1,), (128,), y, x, np.int32(100))
    assert (y == 3).all() and (x == 1).all()
    results = []
    thread = threading.Thread(target=_launch_or_record, args=(mine, results))  # from another thread too
    thread.start()
    thread.join()
    assert results == [9.0]


def _launch_or_record(path, results):
    y = np.zeros(8, np.float32)
    try:
        cuda.launch(path, "mine_scale", (1,), (8,), y, np.full(8, 3.0, np.float32), np.int32(8))
        results.append(float(y[0]))
    except Exception as e:
        results.append(e)


def test_the_librarys_kernels_keep_the_fast_path_and_isolate_chooses(mine, monkeypatch):
    monkeypatch.setattr(os, "fork", _no_fork)
    x = np.array([-1.0, 2.0], np.float32)
    y = np.zeros(2, np.float32)
    cuda.launch("relu", "relu_forward", (1,), (32,), y, x, np.int32(2))        # in this process
    np.testing.assert_array_equal(y, [0.0, 2.0])
    cuda.launch(mine, "mine_scale", (1,), (32,), y, x, np.int32(2), isolate=False)
    np.testing.assert_array_equal(y, [-3.0, 6.0])
    with pytest.raises(AssertionError, match="os.fork called"):
        cuda.launch(mine, "mine_scale", (1,), (32,), y, x, np.int32(2))
    with pytest.raises(AssertionError, match="os.fork called"):
        cuda.launch("relu", "relu_forward", (1,), (32,), y, x, np.int32(2), isolate=True)


# ----- an edited file, a pathlib.Path -----

def test_an_edited_kernel_file_is_compiled_again_in_the_same_process(tmp_path):
    path = tmp_path / "edit.cu"
    body = 'extern "C" __global__ void mine_fill(float* y, int n) {{ if (threadIdx.x < n) y[threadIdx.x] = {}; }}\n'
    y = np.zeros(4, np.float32)
    for value in ("1.0f", "2.0f", "7.0f"):                  # the same size each time, written at once
        path.write_text(body.format(value))
        for debug in (False, True):
            y[:] = 0
            cuda.launch(str(path), "mine_fill", (1,), (4,), y, np.int32(4), debug=debug)
            assert (y == float(value[:-1])).all(), (value, debug, y)
    for value in ("3.0f", "4.0f"):                          # in this process, through a Path
        path.write_text(body.format(value))
        cuda.launch(path, "mine_fill", (1,), (4,), y, np.int32(4), isolate=False)
        assert (y == float(value[:-1])).all(), (value, y)
    path.write_text(body.format("1.0f").replace("mine_fill(float* y, int n)", "mine_fill(float* y, int n, int k)"))
    with pytest.raises(TypeError, match=r"mine_fill: expected 3 arguments \(y, n, k\), got 2"):
        cuda.launch(path, "mine_fill", (1,), (4,), y, np.int32(4))


def test_a_kernel_file_may_be_a_pathlib_path(mine):
    mine = Path(mine)
    assert list(cuda.signatures(mine)) == list(cuda.signatures(str(mine)))
    assert cuda.kernel_path(mine) == mine.resolve() and not cuda.is_library_kernel(mine)
    assert cuda.is_library_kernel("relu") and cuda.is_library_kernel(cuda.kernel_dir() / "relu.cu")
    y = np.zeros(4, np.float32)
    cuda.launch(mine, "mine_scale", (1,), (4,), y, np.ones(4, np.float32), np.int32(4))
    assert (y == 3).all()
    with pytest.raises(TypeError, match=r"a kernel file expected a family name .* or a path to a \.cu file"):
        cuda.launch(3, "mine_scale", (1,), (4,), y, y, np.int32(4))
    with pytest.raises(FileNotFoundError, match="no kernel file .*missing.cu"):
        cuda.launch(mine.parent / "missing.cu", "mine_scale", (1,), (4,), y, y, np.int32(4))


def test_a_compile_error_names_your_file_not_a_temporary_one(tmp_path):
    path = tmp_path / "broken.cu"
    path.write_text('extern "C" __global__ void mine_broken(float* y, int n)\n{\n    y[0] = undeclared;\n}\n')
    for debug in (False, True):
        with pytest.raises(RuntimeError) as caught:
            cuda.launch(path, "mine_broken", (1,), (1,), np.zeros(1, np.float32), np.int32(1), debug=debug)
        assert f"{path.resolve()}:3" in str(caught.value) and "undeclared" in str(caught.value)


# ----- printf -----

@pytest.mark.parametrize("isolate", [None, False])      # a child process (the default here), this process
def test_printf_reaches_sys_stdout_in_launch_order(mine, isolate):
    y = np.arange(6, dtype=np.float32)
    out = io.StringIO()                                       # no file descriptor: C's printf never gets here
    with contextlib.redirect_stdout(out):
        cuda.launch(mine, "mine_print", (2,), (4,), y, np.int32(6), **({} if isolate is None else {"isolate": False}))
    assert out.getvalue() == "".join(f"block {i // 4} thread {i % 4}: {i:.1f}\n" for i in range(6))


def test_printf_keeps_a_gpus_1_mib_and_says_what_it_dropped(mine):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cuda.launch(mine, "mine_print_a_lot", (20,), (1024,), np.zeros(1, np.float32), np.int32(0), debug=False)
    text = out.getvalue()
    assert text.startswith("0" * 100 + "\n" + "0" * 99 + "1\n")
    assert len(text.split("[cuda-emu")[0]) == 2**20
    assert text.endswith("[cuda-emu: mine_print_a_lot: printf output past 1 MiB in this launch was dropped, as a "
                         "GPU drops what overflows its printf buffer]\n")


# ----- macOS: what can be checked here -----

def test_build_flags_for_linux_and_macos():
    linux, mac = emulator.build_flags(False, "linux"), emulator.build_flags(True, "darwin")
    assert {"-shared", "-fPIC", "-O2", "-std=c++14"} <= set(linux) and "-dynamiclib" not in linux
    assert {"-dynamiclib", "-O0", "-g", "-std=c++14"} <= set(mac) and "-shared" not in mac
    assert mac[mac.index("-arch") + 1] == platform.machine()
    assert not any("dynamic_lookup" in f for f in linux + mac)
    assert emulator.library_suffix("darwin") == ".dylib" and emulator.library_suffix("linux") == ".so"


def test_the_compiler_choice_and_hint_on_macos(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(emulator.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert emulator.compiler() == ["clang++"]
    monkeypatch.setenv("CXX", "ccache clang++ -Wno-deprecated")
    assert emulator.compiler() == ["ccache", "clang++", "-Wno-deprecated"]
    monkeypatch.setattr(emulator.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"found none .*xcode-select --install"):
        emulator.compiler()
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(emulator.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.delenv("CXX")
    assert emulator.compiler() == ["g++"]


def test_shared_memory_sizes_from_a_mach_o_symbol_table(monkeypatch, tmp_path):
    """macOS's nm gives no sizes (and one more leading _): the distance to the next symbol of the
    same section is the size; the last of a section is left out."""
    listing = ("0000000000003f50 (__TEXT,__text) external _emu_mine_tiles\n"
               "0000000000008000 (__DATA,__bss) non-external __ZZ10mine_tilesE6a_tile\n"
               "0000000000008400 (__DATA,__bss) non-external __ZZ10mine_tilesE6b_tile\n"
               "000000000000c410 (__DATA,__bss) non-external __ZN3emuL7messageE\n"
               "000000000000c610 (__DATA,__bss) non-external __ZZ8mine_bigE3big\n"
               "                 (undefined) external _swapcontext\n")
    monkeypatch.setattr(emulator, "library_suffix", lambda platform=None: ".dylib")
    monkeypatch.setattr(emulator.shutil, "which", lambda name: "/usr/bin/nm")
    calls = []
    monkeypatch.setattr(emulator.subprocess, "run", lambda args, **kw: calls.append(args) or
                        subprocess.CompletedProcess(args, 0, listing, ""))
    sizes = emulator._shared_bytes(tmp_path / "k.dylib", ["mine_tiles", "mine_big", "emu_mine_tiles"])
    assert sizes == {"mine_tiles": 0x400 + 0x4010, "mine_big": 0, "emu_mine_tiles": 0}
    assert "-m" in calls[0] and "-S" not in calls[0]


def test_the_header_defines_the_xopen_feature_macros_first_and_compiles_with_them(tmp_path):
    """macOS's <ucontext.h> wants _XOPEN_SOURCE before any include (and _DARWIN_C_SOURCE for the
    rest). Here: the header and a kernel with barriers and printf, compiled with those macros and
    without the GNU ones (glibc's _DEFAULT_SOURCE standing in for _DARWIN_C_SOURCE), run right."""
    header = (kernel_source.kernel_dir() / "cuda_emu.h").read_text()
    apple = header.index("#if defined(__APPLE__)")
    assert apple < header.index("#define _XOPEN_SOURCE 600") < header.index("#define _DARWIN_C_SOURCE") \
        < header.index("#include")
    program = tmp_path / "main.cpp"
    program.write_text('#include "cuda_emu.h"\n'
                       "static void k(float* y) { __shared__ float t[64]; t[threadIdx.x] = threadIdx.x; __syncthreads();\n"
                       "    y[threadIdx.x] = t[63 - threadIdx.x]; if (threadIdx.x == 0) printf(\"%g\\n\", y[0]); }\n"
                       "int main() { float y[64]; int s = emu::launch(dim3(1), dim3(64), true, [&] { k(y); });\n"
                       "    fputs(emu::output.c_str(), stdout); return s || y[10] != 53.0f; }\n")
    exe = tmp_path / "main"
    cxx = emulator.compiler()
    build = subprocess.run([*cxx, "-std=c++14", "-U_GNU_SOURCE", "-D_XOPEN_SOURCE=600", "-D_DEFAULT_SOURCE",
                            "-D_DARWIN_C_SOURCE", "-I", str(kernel_source.kernel_dir()), "-o", str(exe), str(program)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout == "63\n"


def test_the_macos_workflow_runs_the_emulator_tests():
    workflow = (Path(__file__).resolve().parent.parent / ".github" / "workflows" / "macos.yml")
    if not workflow.is_file():
        pytest.skip("an installed package: no .github folder")
    text = workflow.read_text()
    assert "macos-14" in text and "macos-13" in text and 'pip install ".[test]"' in text
    assert "tests/test_emulator_safety.py" in text and "tests/test_cuda.py" in text


def test_the_kernels_here_are_real_cuda():
    """The crashing, spinning and printing kernels above compile for a GPU too (NVRTC)."""
    if sys.platform == "darwin":
        pytest.skip("no NVRTC for macOS (and CI there must not ask for it)")
    from .test_nvrtc import _nvrtc
    nvrtc = _nvrtc()
    program = nvrtc.createProgram(KERNELS, "mine.cu", [], [])
    try:
        nvrtc.compileProgram(program, ["-arch=compute_80", "--std=c++14"])
    except Exception as e:
        pytest.fail(f"the test kernels do not compile: {e}\n{nvrtc.getProgramLog(program)}")
