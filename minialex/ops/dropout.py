"""Inverted dropout (paper section 4.2, p = 0.5 in fc6 and fc7).

Training:  y = x * keep / (1 - p),   keep ~ Bernoulli(1 - p) per element
Eval:      y = x                     (the paper instead multiplies by 1-p at test time: the same
                                      network, since we scaled during training)
Backward:  dx = dy * keep / (1 - p)

The mask is a pure function of (seed, element index), a counter-based hash, not a stream of
random draws: for the flat C-order index i,
    h = fmix32(i * 0x9E3779B9 + fmix32(seed))     (mod 2^32; fmix32 = MurmurHash3's finalizer)
    keep = (h >> 8) >= threshold,  threshold = round(p * 2^24)
so the same seed gives the identical mask on every device, thread layout and batch order.
kernels/dropout.cu computes the same hash (one thread per element).
"""
import numpy as np

from .. import backend, cuda, random
from ..errors import fail
from ..function import Function

_GOLDEN = 0x9E3779B9


def fmix32(h):
    """MurmurHash3's 32-bit finalizer, on a uint32 array (wrapping arithmetic)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def keep_threshold(p):
    """Keep an element when its 24-bit hash is >= this: exactly probability ~ 1 - p."""
    return int(round(p * (1 << 24)))


def dropout_keep_mask(seed, shape, p):
    """The keep mask (bool, `shape`) for `seed`, identical to kernels/dropout.cu's."""
    key = fmix32(np.array([seed], dtype=np.uint32))[0]
    index = np.arange(int(np.prod(shape)), dtype=np.uint32)
    h = fmix32(index * np.uint32(_GOLDEN) + key)
    return ((h >> np.uint32(8)) >= keep_threshold(p)).reshape(shape)


def dropout_forward(x, p, seed):
    scale = dropout_keep_mask(seed, x.shape, p).astype(x.dtype) / x.dtype.type(1 - p)  # 0 or 1/(1-p)
    return x * scale, scale


def dropout_backward(dy, scale):
    return (dy * scale,)


def dropout_forward_cuda(x, p, seed):
    y = backend.xp_of(x).empty_like(x)
    args = (np.uint32(seed), np.uint32(keep_threshold(p)), np.float32(1.0 / (1.0 - p)))
    cuda.launch("dropout", "dropout_forward", *cuda.blocks(x.size), y, x, np.int32(x.size), *args)
    return y, args                     # the mask is recomputed from the seed, not stored


def dropout_backward_cuda(dy, args):
    dx = backend.xp_of(dy).empty_like(dy)
    cuda.launch("dropout", "dropout_backward", *cuda.blocks(dy.size), dx, dy, np.int32(dy.size), *args)
    return (dx,)


class Dropout(Function):
    numpy = (dropout_forward, dropout_backward)
    cuda = (dropout_forward_cuda, dropout_backward_cuda)


def dropout(x, p=0.5, training=True, seed=None):
    """Inverted dropout; identity when not training or p == 0. seed=None draws one from
    minialex.random (so ma.manual_seed reproduces a run)."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0 <= p < 1:
        fail("dropout", "p", "a probability in [0, 1)", repr(p))
    if not training or p == 0:
        return x
    seed = random.next_seed() if seed is None else int(seed)
    return Dropout.apply(x, p=float(p), seed=seed & 0xFFFFFFFF)
