"""Dropout, fast CPU pair: equal to the reference in minialex/ops/dropout.py bit for bit. The
counter-based mask is hashed once in the forward and kept as a 1-byte select mask (the reference
recomputes it in the backward); the select works on the bit patterns (masks.select)."""
from typing import NamedTuple

import numpy as np

from ..ops import dropout as spec
from .masks import select


class FastDropoutCache(NamedTuple):
    keep: object       # bool, True where kept
    scale: object      # 1 / (1 - p) in the input's dtype


def dropout_forward(x, p, seed, offset):
    keep = spec.dropout_keep_mask(seed, x.shape, p, offset)
    scale = x.dtype.type(1 / (1 - p))
    y = np.multiply(x, scale)
    return select(y, keep, y), FastDropoutCache(keep, scale)


def dropout_backward(dy, cache):
    dx = np.multiply(dy, cache.scale)
    return (select(dx, cache.keep, dx),)
