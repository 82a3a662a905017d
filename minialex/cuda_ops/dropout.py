"""Dropout, CUDA pair: kernels/dropout.cu, one thread per element; the backward recomputes the
mask from the seed and the counter offset. float16 arrays go to dropout_forward_half and
dropout_backward_half. Math: minialex/ops/dropout.py."""
import numpy as np

from .. import backend, cuda
from ..ops import dropout as spec


def _args(cache, dtype):
    """seed, offset, threshold and 1 / (1 - p) in the arrays' dtype (float16: rounded to half first,
    as the reference's x * float16(1 / (1 - p)))."""
    return (np.uint32(cache.seed), np.uint32(cache.offset & 0xFFFFFFFF), np.uint32(spec.keep_threshold(cache.p)),
            np.dtype(dtype).type(1.0 / (1.0 - cache.p)))


def dropout_forward(x, p, seed, offset):
    y = backend.xp_of(x).empty_like(x)
    cache = spec.DropoutCache(seed, p, offset)
    if x.size:
        name = "dropout_forward_half" if x.dtype == np.float16 else "dropout_forward"
        cuda.launch("dropout", name, *cuda.blocks(x.size), y, x, np.int32(x.size),
                    *_args(cache, x.dtype))
    return y, cache


def dropout_backward(dy, cache):
    dx = backend.xp_of(dy).empty_like(dy)
    if dy.size:
        name = "dropout_backward_half" if dy.dtype == np.float16 else "dropout_backward"
        cuda.launch("dropout", name, *cuda.blocks(dy.size), dx, dy, np.int32(dy.size), *_args(cache, dy.dtype))
    return (dx,)
