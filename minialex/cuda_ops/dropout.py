"""Dropout, CUDA pair: kernels/dropout.cu, one thread per element; the backward recomputes the
mask from the seed and the counter offset. Math: minialex/ops/dropout.py."""
import numpy as np

from .. import backend, cuda
from ..ops import dropout as spec


def _args(cache):
    return (np.uint32(cache.seed), np.uint32(cache.offset & 0xFFFFFFFF), np.uint32(spec.keep_threshold(cache.p)),
            np.float32(1.0 / (1.0 - cache.p)))


def dropout_forward(x, p, seed, offset):
    y = backend.xp_of(x).empty_like(x)
    cache = spec.DropoutCache(seed, p, offset)
    if x.size:
        cuda.launch("dropout", "dropout_forward", *cuda.blocks(x.size), y, x, np.int32(x.size), *_args(cache))
    return y, cache


def dropout_backward(dy, cache):
    dx = backend.xp_of(dy).empty_like(dy)
    if dy.size:
        cuda.launch("dropout", "dropout_backward", *cuda.blocks(dy.size), dx, dy, np.int32(dy.size), *_args(cache))
    return (dx,)
