"""ReLU, fast CPU pair: equal to the reference in minialex/ops/relu.py bit for bit. Split over the
cores, and the backward's select done on the bit patterns (masks.select) with a 1-byte mask kept
instead of x."""
import numpy as np

from .masks import select
from .threads import parallel


def _rows(a):
    return a.reshape(1, -1) if a.ndim == 0 else a            # a view whose first axis the cores split


def relu_forward(x):
    x1 = _rows(x)
    y, keep = np.empty(x1.shape, x.dtype), np.empty(x1.shape, bool)

    def rectify(lo, hi):
        np.maximum(x1[lo:hi], x.dtype.type(0), out=y[lo:hi])
        np.less_equal(x1[lo:hi], 0, out=keep[lo:hi])              # x <= 0 (False for NaN) ...
        np.logical_not(keep[lo:hi], out=keep[lo:hi])              # ... is where dy is dropped
    parallel(rectify, x1.shape[0], x1.size)
    return y.reshape(x.shape), keep.reshape(x.shape)


def relu_backward(dy, keep):
    dy1, keep1 = _rows(dy), _rows(keep)
    dx = np.empty(dy1.shape, dy.dtype)
    parallel(lambda lo, hi: select(dy1[lo:hi], keep1[lo:hi], dx[lo:hi]), dy1.shape[0], dy1.size)
    return (dx.reshape(dy.shape),)
