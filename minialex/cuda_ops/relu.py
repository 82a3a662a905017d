"""ReLU, CUDA pair: kernels/relu.cu, one thread per element (float32) or per pair of elements
(float16, relu_forward_half and relu_backward_half on __half2). Math: minialex/ops/relu.py."""
import numpy as np

from .. import backend, cuda


def paired(a):
    """a, or a copy of it where its address is not a multiple of 4 bytes: the _half kernels read
    two halves as one __half2, which a GPU loads only from an aligned address (a fresh array always
    is; a view that starts at an odd element, x[1:], is not)."""
    address = a.data.ptr if backend.is_cupy_array(a) else a.ctypes.data
    return a if address % 4 == 0 else a.copy()


def relu_forward(x):
    y = backend.xp_of(x).empty_like(x)
    if x.size and x.dtype == np.float16:
        cuda.launch("relu", "relu_forward_half", *cuda.blocks((x.size + 1) // 2), y, paired(x), np.int32(x.size))
    elif x.size:
        cuda.launch("relu", "relu_forward", *cuda.blocks(x.size), y, x, np.int32(x.size))
    return y, x                                              # cache: x


def relu_backward(dy, x):
    dx = backend.xp_of(dy).empty_like(dy)
    if x.size and x.dtype == np.float16:
        cuda.launch("relu", "relu_backward_half", *cuda.blocks((x.size + 1) // 2), dx, paired(dy), paired(x),
                    np.int32(x.size))
    elif x.size:
        cuda.launch("relu", "relu_backward", *cuda.blocks(x.size), dx, dy, x, np.int32(x.size))
    return (dx,)
