"""Inverted dropout (paper section 4.2, p = 0.5 in fc6 and fc7).

Training:  y = x / (1 - p) where keep, else 0,   keep ~ Bernoulli(1 - p) per element
Eval:      y = x                     (the paper instead multiplies by 1-p at test time: the same
                                      network, since we scaled during training)
Backward:  dx = dy / (1 - p) where keep, else 0

The mask is a pure function of (seed, element counter), a counter-based hash, not a stream of
random draws: for the flat C-order index i of the local tensor and a counter offset,
    h = fmix32((offset + i) * 0x9E3779B9 + fmix32(seed))   (mod 2^32; fmix32 = MurmurHash3's finalizer)
    keep = (h >> 8) >= threshold,  threshold = round(p * 2^24)
so the same seed gives the identical mask on every device, thread layout and batch order, and the
backward recomputes it from the seed instead of storing it.
The offset makes the counter the GLOBAL element index: with data parallelism, rank r holds global
samples [r*B, (r+1)*B) and passes offset = r*B * (elements per sample), so a sample's mask does not
depend on which process holds it, and N processes drop exactly what one process with the whole
batch drops. F.dropout takes it from minialex.random.sample_offset() (0 in a single process).
NOTE: the offset is taken mod 2^32, like the counter: masks repeat after 2^32 elements of a batch.
NOTE: a dropped element is exactly 0, even when x is inf or NaN (a select, not a product with a
0/1 mask: PyTorch's inf * 0 gives NaN there).
Naive loops, forward and backward: minialex/ops/loops.py (dropout_forward, dropout_backward).
Fast CPU pair: minialex/cpu/dropout.py.   CUDA pair: kernels/dropout.cu, minialex/cuda_ops/dropout.py.
float16 on the CUDA path: dropout_forward_half, dropout_backward_half.
"""
from typing import NamedTuple

import numpy as np

from .. import random
from ..errors import fail
from ..function import Function

_GOLDEN = 0x9E3779B9
MASK_BITS = 24


class DropoutCache(NamedTuple):
    seed: int
    p: float
    offset: int      # the counter of element 0 (its global element index)


def fmix32(h):
    """MurmurHash3's 32-bit finalizer, on a uint32 array (wrapping arithmetic)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def keep_threshold(p):
    """Keep an element when its 24-bit hash is >= this: probability 1 - p, to 2^-25."""
    return int(round(p * (1 << MASK_BITS)))


def dropout_keep_mask(seed, shape, p, offset=0):
    """The keep mask (bool, `shape`) for `seed`, element i hashed as counter offset + i (mod 2^32);
    identical to kernels/dropout.cu's."""
    key = fmix32(np.array([seed], dtype=np.uint32))[0]
    counter = np.uint32(int(offset) & 0xFFFFFFFF) + np.arange(int(np.prod(shape)), dtype=np.uint32)  # wraps
    h = fmix32(counter * np.uint32(_GOLDEN) + key)
    return ((h >> np.uint32(8)) >= keep_threshold(p)).reshape(shape)


def dropout_forward(x, p, seed, offset):
    keep = dropout_keep_mask(seed, x.shape, p, offset)
    y = np.where(keep, x * x.dtype.type(1 / (1 - p)), 0)           # (same shape as x)
    return y, DropoutCache(seed, p, offset)


def dropout_backward(dy, cache):
    keep = dropout_keep_mask(cache.seed, dy.shape, cache.p, cache.offset)   # the forward's mask, recomputed
    dx = np.where(keep, dy * dy.dtype.type(1 / (1 - cache.p)), 0)
    return (dx,)


class Dropout(Function):
    reference = (dropout_forward, dropout_backward)
    fast = ("minialex.cpu.dropout", "dropout_forward", "dropout_backward")
    cuda = ("minialex.cuda_ops.dropout", "dropout_forward", "dropout_backward")


def dropout(x, p=0.5, training=True, seed=None, offset=None):
    """Inverted dropout; identity when not training or p == 0. seed=None draws one from
    minialex.random (so ma.manual_seed reproduces a run). offset: the counter of element 0, an
    int >= 0 taken mod 2^32; None means random.sample_offset() * (elements per sample,
    prod(x.shape[1:])), so a data-parallel slice of the batch gets its rows' global masks."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0 <= p < 1:
        fail("dropout", "p", "a probability in [0, 1)", repr(p))
    if keep_threshold(p) >= 1 << MASK_BITS:
        fail("dropout", "p", f"a probability below 1 - 2^-{MASK_BITS + 1} (the mask has {MASK_BITS} bits; "
             "this p would drop every element)", repr(p))
    if offset is not None and (isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0):
        fail("dropout", "offset", "an integer >= 0 (the element counter of x's first element) or None", repr(offset))
    if not training or p == 0:
        return x
    seed = random.next_seed() if seed is None else int(seed)
    if offset is None:
        offset = random.sample_offset() * int(np.prod(np.shape(x)[1:]))   # first sample's global index * its size
    return Dropout.apply(x, p=float(p), seed=seed & 0xFFFFFFFF, offset=int(offset) & 0xFFFFFFFF)
