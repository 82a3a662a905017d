"""The one place that knows NumPy from CuPy: devices and their array modules.

Devices:
    "cpu"       NumPy arrays; each op's CPU pair (the fast one, or the reference: set_cpu_path)
    "cuda[:N]"  CuPy arrays on GPU N; the kernels in kernels/*.cu through CuPy
    "cuda-emu"  NumPy arrays; the same kernels compiled for the CPU by minialex.emulator

CuPy is imported lazily: importing minialex never needs it.

CuPy allocates, launches kernels and calls cuBLAS on its *current* device (GPU 0 unless changed),
not on the device of the arrays involved. So whatever runs on "cuda:N" runs inside
device_scope("cuda:N"): Function.apply around the forward, the engine around each backward step,
SGD.step around each update, to_device around each copy, the device batches around their copies.
"""
import contextlib

import numpy as np

_cupy = None
_gpu_count = None  # how many GPUs CuPy sees, asked once with the import


def cupy():
    """Import CuPy on first use, with a message that says what to do when it is missing."""
    global _cupy, _gpu_count
    if _cupy is None:
        try:
            import cupy as cp
        except ImportError as e:
            raise RuntimeError(
                "device 'cuda' needs CuPy (pip install 'minialex[gpu]'), which is not installed "
                f"({e}); on a machine without a GPU use device='cuda-emu' to run the same kernels "
                "on the CPU") from None
        try:
            count = cp.cuda.runtime.getDeviceCount()
            if count < 1:
                raise RuntimeError("no CUDA device found")
        except Exception as e:
            raise RuntimeError(
                f"device 'cuda': CuPy is installed but no GPU can be used ({e}); "
                "use device='cuda-emu' to run the same kernels on the CPU") from None
        _cupy, _gpu_count = cp, count
    return _cupy


def check_device(device):
    """Normalise a device name; raise ValueError naming the accepted forms."""
    if not isinstance(device, str):
        raise TypeError(f"device: expected a string such as 'cpu', 'cuda', 'cuda:0' or 'cuda-emu', "
                        f"got {type(device).__name__}")
    if device in ("cpu", "cuda-emu"):
        return device
    if device == "cuda":
        return "cuda:0"
    if device.startswith("cuda:") and device[5:].isdigit():
        return device
    raise ValueError(f"device: expected 'cpu', 'cuda', 'cuda:N' or 'cuda-emu', got {device!r}")


def is_gpu(device):
    return device.startswith("cuda:")


def device_scope(device):
    """with device_scope("cuda:1"): ... makes GPU 1 CuPy's current device for the block (where its
    allocations, kernel launches and cuBLAS calls go), then restores the previous one, even on an
    error. "cuda" is GPU 0. On "cpu" and "cuda-emu" it does nothing (and never imports CuPy)."""
    device = check_device(device)
    if not is_gpu(device):
        return contextlib.nullcontext()
    cp, index = cupy(), int(device[5:])
    if index >= _gpu_count:
        raise ValueError(f"device {device!r}: expected a GPU index below {_gpu_count} "
                         f"(CuPy sees {_gpu_count} GPU(s): cuda:0 .. cuda:{_gpu_count - 1})")
    return cp.cuda.Device(index)  # CuPy's context manager: sets the device, restores it on exit


def uses_kernels(device):
    """True where ops run the CUDA C kernels: on a GPU, or on the CPU emulator."""
    return device != "cpu"


def xp_for(device):
    """The array module of a device: numpy for 'cpu' and 'cuda-emu', cupy for 'cuda:N'."""
    return cupy() if is_gpu(device) else np


def is_cupy_array(array):
    """A CuPy ndarray, recognised without importing CuPy."""
    return type(array).__module__.startswith("cupy")


def xp_of(array):
    """The array module an array belongs to (no CuPy import for NumPy arrays)."""
    return cupy() if is_cupy_array(array) else np


def to_device(array, device, dtype=None, copy=False):
    """`array` on `device` as a C-contiguous array, cast to `dtype` when given. A copy when it
    comes from another device or another dtype, or when copy=True; else possibly `array` itself."""
    if is_gpu(device):
        cp = cupy()
        with device_scope(device):  # allocated on (and, from another GPU, copied to) that GPU
            if copy:
                return cp.array(array, dtype=dtype, order="C", copy=True)
            return cp.asarray(array, dtype=dtype, order="C")
    array = to_numpy(array)
    if copy:
        return np.array(array, dtype=dtype, order="C", copy=True)
    return np.asarray(array, dtype=dtype, order="C")


def to_numpy(array):
    """A NumPy array for any array (device arrays are copied to the host)."""
    if isinstance(array, np.ndarray):
        return array
    if is_cupy_array(array):
        return array.get()
    return np.asarray(array)


def scatter_add(target, index, values):
    """target[index] += values, adding repeated indices once each (np.add.at semantics)."""
    if isinstance(target, np.ndarray):
        np.add.at(target, index, values)
    else:
        import cupyx
        cupyx.scatter_add(target, index, values)
