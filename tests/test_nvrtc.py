"""Every kernel compiles for the GPU: with NVRTC (what CuPy uses; no GPU needed) for sm_80 and
sm_90, and with nvcc where it is installed. In CI (CI=true) NVRTC must be available: .ci/run
installs it with the test extra, so a missing NVRTC is a failure there, not a skip."""
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


@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
@pytest.mark.parametrize("family", KERNEL_FILES)
def test_kernels_compile_with_nvrtc(family, arch):
    nvrtc = _nvrtc()
    program = nvrtc.createProgram(cuda.source(family), f"{family}.cu", [], [])
    try:
        nvrtc.compileProgram(program, [f"-arch={arch}", "--std=c++14"])
    except Exception as e:
        pytest.fail(f"{family}.cu does not compile for {arch}: {e}\n{nvrtc.getProgramLog(program)}")
    ptx = nvrtc.getPTX(program)
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    names = list(cuda.signatures(family))
    assert names, f"{family}.cu has no extern \"C\" __global__ kernels"
    for name in names:  # extern "C": the entry keeps its plain name, so CuPy finds it
        assert f".entry {name}(" in ptx


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
    """The warp-shuffle and bounds-check kernels of tests/test_cuda.py compile for a GPU too."""
    from .test_cuda import DEBUG_KERNELS, _POPC
    nvrtc = _nvrtc()
    program = nvrtc.createProgram(_POPC + DEBUG_KERNELS, "mine.cu", [], [])
    try:
        nvrtc.compileProgram(program, ["-arch=compute_80", "--std=c++14"])
    except Exception as e:
        pytest.fail(f"the test kernels do not compile: {e}\n{nvrtc.getProgramLog(program)}")
