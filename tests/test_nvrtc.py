"""Every kernel compiles for the GPU: with NVRTC (what CuPy uses; no GPU needed) for sm_80 and
sm_90, with the options CuPy's RawModule gives it (cuda.nvrtc_options: the include folders where
cuda_fp16.h and mma.h are), and with nvcc where it is installed. In CI (CI=true) NVRTC must be
available: .ci/run installs it with the test extra, so a missing NVRTC is a failure there, not a
skip; so are missing CUDA headers for a kernel that includes them (CI's machine has the toolkit)."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from minialex import cuda

KERNEL_FILES = sorted(p.stem for p in cuda.kernel_dir().glob("*.cu"))


def test_every_op_family_has_a_kernel_file():
    assert set(KERNEL_FILES) >= {"conv", "gemm", "relu", "lrn", "pool", "dropout", "cross_entropy", "bias", "sgd"}


def _nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
        return nvrtc
    except Exception as e:  # ImportError, or the NVRTC library not found
        if os.environ.get("CI"):
            pytest.fail(f"NVRTC is not available in CI ({e!r}); .ci/run should install it")
        pytest.skip(f"NVRTC not available: {e!r}")


def compile_with_nvrtc(nvrtc, source, name, arch):
    """The PTX of `source`, compiled as CuPy's RawModule compiles it; a failure names the file."""
    program = nvrtc.createProgram(source, name, [], [])
    try:
        nvrtc.compileProgram(program, [f"-arch={arch}", *cuda.nvrtc_options()])
    except Exception as e:
        log = nvrtc.getProgramLog(program)
        if "could not open source file" in log and not os.environ.get("CI"):
            pytest.skip(f"{name} includes a CUDA header NVRTC does not have built in and no CUDA toolkit was found "
                        f"(install one, or set CUDA_PATH): {log.strip().splitlines()[0]}")
        pytest.fail(f"{name} does not compile for {arch}: {e}\n{log}")
    ptx = nvrtc.getPTX(program)
    return ptx.decode() if isinstance(ptx, bytes) else ptx


@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
@pytest.mark.parametrize("family", KERNEL_FILES)
def test_kernels_compile_with_nvrtc(family, arch):
    ptx = compile_with_nvrtc(_nvrtc(), cuda.source(family), f"{family}.cu", arch)
    names = list(cuda.signatures(family))
    assert names, f"{family}.cu has no extern \"C\" __global__ kernels"
    for name in names:  # extern "C": the entry keeps its plain name, so CuPy finds it
        assert f".entry {name}(" in ptx
    if family == "gemm_wmma":  # the wmma calls became tensor-core instructions
        assert "wmma.mma.sync.aligned.row.row.m16n16k16.f32.f32" in ptx


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("family", KERNEL_FILES)
def test_kernels_compile_with_nvcc(family, tmp_path):
    run = subprocess.run(["nvcc", "--ptx", "-arch=sm_80", "-std=c++14", "-o", str(tmp_path / "k.ptx"),
                          str(cuda.kernel_path(family))], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    ptx = Path(tmp_path / "k.ptx").read_text()
    for name in cuda.signatures(family):
        assert f".entry {name}(" in ptx


def test_the_emulator_test_kernels_are_real_cuda():
    """The warp-shuffle and bounds-check kernels of tests/test_cuda.py, the half and wmma kernels of
    tests/test_half.py and its probe of cuda_fp16.h's overloads compile for a GPU too."""
    from .test_cuda import DEBUG_KERNELS, _POPC
    from .test_half import API_PROBE, HALF_KERNELS, WMMA_KERNELS
    nvrtc = _nvrtc()
    compile_with_nvrtc(nvrtc, _POPC + DEBUG_KERNELS, "mine.cu", "compute_80")
    compile_with_nvrtc(nvrtc, API_PROBE, "probe.cu", "compute_80")   # its static_asserts hold for CUDA's header
    for path in (HALF_KERNELS, WMMA_KERNELS):
        compile_with_nvrtc(nvrtc, path.read_text(), path.name, "compute_80")
