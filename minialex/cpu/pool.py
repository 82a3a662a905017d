"""Max pooling, fast CPU pair: equal to the reference in minialex/ops/pool.py bit for bit (the same
maxima, the same winners), images split over the cores.

Forward: the max first, one np.maximum pass per window offset (padding is -inf). Then the winner,
the first offset k (row-major) whose value equals the max: walking k from last to first and
overwriting where window(k) == y leaves the smallest such k; the arithmetic update
a -= eq * (a - k) is several times faster than a masked copy. Windows whose max is NaN or -inf
(where equality cannot find the reference's winner) are redone with the reference's rule.
Backward: one select per window offset (masks.select, exact for an infinite dy).
"""
from typing import NamedTuple

import numpy as np

from ..ops import pool as spec
from ..ops.windows import conv_outsize, pad
from .masks import select
from .threads import parallel


class FastPoolCache(NamedTuple):
    argmax: object     # (N, C, OH, OW) int8 (int32 for windows of 128 pixels or more)
    x_shape: tuple
    kernel: tuple
    stride: tuple
    padding: tuple


def max_pool2d_forward(x, kernel, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x.shape
    oh, ow = conv_outsize(h, kh, sh, ph), conv_outsize(w, kw, sw, pw)
    xp = pad(x, ph, pw, value=-np.inf)                     # (N, C, H+2PH, W+2PW)
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    argmax = np.empty(y.shape, dtype=np.int8 if kh * kw < 128 else np.int32)

    def pool(lo, hi):  # images lo..hi-1
        def window(k):  # the k-th offset (i, j) of every window at once: a (hi-lo, C, OH, OW) view
            i, j = divmod(k, kw)
            return xp[lo:hi, :, i:i + sh * oh:sh, j:j + sw * ow:sw]
        y_, a_ = y[lo:hi], argmax[lo:hi]
        np.copyto(y_, window(0))
        for k in range(1, kh * kw):
            np.maximum(y_, window(k), out=y_)              # propagates NaN
        a_.fill(kh * kw - 1)
        for k in range(kh * kw - 2, -1, -1):
            a_ -= (window(k) == y_) * (a_ - a_.dtype.type(k))
        if not y_.min(initial=np.inf) > -np.inf:           # a NaN or -inf window (min propagates NaN)
            special = ~(y_ > -np.inf)
            a_[special] = spec.max_pool2d_forward(x[lo:hi], kernel, stride, padding)[1].argmax[special]
    parallel(pool, n, x.size * kh * kw)
    return y, FastPoolCache(argmax, x.shape, kernel, stride, padding)


def max_pool2d_backward(dy, cache):
    argmax, x_shape, (kh, kw), (sh, sw), (ph, pw) = cache
    n, c, h, w = x_shape
    oh, ow = dy.shape[2:]
    dxp = np.empty((n, c, h + 2 * ph, w + 2 * pw), dtype=dy.dtype)

    def unpool(lo, hi):  # images lo..hi-1
        dxp[lo:hi].fill(0)
        won, part = np.empty(dy[lo:hi].shape, bool), np.empty_like(dy[lo:hi])
        for i in range(kh):
            for j in range(kw):  # windows whose winner sat at (i, j) send dy there (a select: inf stays out)
                np.equal(argmax[lo:hi], i * kw + j, out=won)
                dxp[lo:hi, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += select(dy[lo:hi], won, part)
    parallel(unpool, n, dxp.size * kh * kw)
    return (dxp[:, :, ph:ph + h, pw:pw + w],)
