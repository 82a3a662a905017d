"""Max pooling, CUDA pair: kernels/pool.cu (forward: a thread per output, writing the argmax;
backward: a thread per input pixel, gathering); float16 arrays go to pool_forward_half and
pool_backward_half. Math: minialex/ops/pool.py."""
import numpy as np

from .. import backend, cuda
from ..ops import pool as spec
from ..ops.windows import window_geometry


def max_pool2d_forward(x, kernel, stride, padding):
    xp = backend.xp_of(x)
    geometry = window_geometry(x.shape, kernel, stride, padding)
    shape = (*x.shape[:2], int(geometry[-2]), int(geometry[-1]))
    y, argmax = xp.empty(shape, dtype=x.dtype), xp.empty(shape, dtype=np.int32)
    if y.size:
        name = "pool_forward_half" if x.dtype == np.float16 else "pool_forward"
        cuda.launch("pool", name, *cuda.blocks(y.size), y, argmax, x, *geometry)
    return y, spec.PoolCache(argmax, x.shape, kernel, stride, padding)


def max_pool2d_backward(dy, cache):
    argmax, x_shape, kernel, stride, padding = cache
    dx = backend.xp_of(dy).empty(x_shape, dtype=dy.dtype)
    if dx.size:
        name = "pool_backward_half" if dy.dtype == np.float16 else "pool_backward"
        cuda.launch("pool", name, *cuda.blocks(dx.size), dx, dy, argmax,
                    *window_geometry(x_shape, kernel, stride, padding))
    return (dx,)
