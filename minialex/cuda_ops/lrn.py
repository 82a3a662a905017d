"""LRN, CUDA pair: kernels/lrn.cu, one thread per element. float16 arrays go to lrn_forward_half
and lrn_backward_half, which compute in float as the reference does (its cache, y before rounding
and the scale, in float32; x stays half). Math: minialex/ops/lrn.py."""
import numpy as np

from .. import backend, cuda
from ..ops import lrn as spec


def _sizes(x):
    n, c = x.shape[:2]
    return np.int32(n), np.int32(c), np.int32(x.size // (n * c))         # N, C, H*W


def lrn_forward(x, size, alpha, beta, k):
    xp = backend.xp_of(x)
    if x.dtype == np.float16:
        y, y_f, scale = xp.empty_like(x), xp.empty(x.shape, np.float32), xp.empty(x.shape, np.float32)
        if x.size:
            cuda.launch("lrn", "lrn_forward_half", *cuda.blocks(x.size), y, y_f, scale, x, *_sizes(x),
                        np.int32(size), np.float32(alpha), np.float32(beta), np.float32(k))
        return y, spec.LRNCache(x, y_f, scale, size, alpha, beta)
    y, scale = xp.empty_like(x), xp.empty_like(x)
    if x.size:
        cuda.launch("lrn", "lrn_forward", *cuda.blocks(x.size), y, scale, x, *_sizes(x),
                    np.int32(size), np.float32(alpha), np.float32(beta), np.float32(k))
    return y, spec.LRNCache(x, y, scale, size, alpha, beta)


def lrn_backward(dy, cache):
    x, y, scale, size, alpha, beta = cache
    dx = backend.xp_of(dy).empty_like(dy)
    if x.size and dy.dtype == np.float16:   # y: the float y; 2 * alpha * beta rounded as the reference rounds it
        cuda.launch("lrn", "lrn_backward_half", *cuda.blocks(x.size), dx, dy, x, y, scale, *_sizes(x),
                    np.int32(size), np.float32(beta), np.float32(2 * alpha * beta))
    elif x.size:
        cuda.launch("lrn", "lrn_backward", *cuda.blocks(x.size), dx, dy, x, y, scale, *_sizes(x),
                    np.int32(size), np.float32(alpha), np.float32(beta))
    return (dx,)
