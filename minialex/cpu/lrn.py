"""LRN, fast CPU pair: equal to the reference in minialex/ops/lrn.py (to float rounding: s^-beta is
computed once and kept, and the paper's s^-0.75 by two square roots, several times faster than a
general power). Images are split over the cores; the window sums are slice-adds in place."""
from typing import NamedTuple

import numpy as np

from .threads import parallel


class FastLRNCache(NamedTuple):
    x: object
    y: object
    scale: object      # s
    s_pow: object      # s^-beta
    size: int
    alpha: float
    beta: float


def _window_sum(a, before, after):
    """out[:, c] = sum of a[:, c - before .. c + after], clipped: one slice-add per offset."""
    out = np.zeros_like(a)
    c = a.shape[1]
    for d in range(-before, after + 1):                # out[:, m] += a[:, m + d]
        if abs(d) >= c:
            continue
        if d >= 0:
            out[:, :c - d] += a[:, d:]
        else:
            out[:, -d:] += a[:, :c + d]
    return out


def _power(s, exponent):
    if exponent == -0.75:
        r = np.sqrt(s)
        return 1.0 / (r * np.sqrt(r))
    return s ** exponent


def lrn_forward(x, size, alpha, beta, k):
    y, scale, s_pow = np.empty_like(x), np.empty_like(x), np.empty_like(x)

    def normalize(lo, hi):  # images lo..hi-1
        a = x[lo:hi]
        s = _window_sum(a * a, size // 2, (size - 1) // 2)
        s *= alpha
        s += k
        scale[lo:hi] = s
        s_pow[lo:hi] = _power(s, -beta)
        np.multiply(a, s_pow[lo:hi], out=y[lo:hi])
    parallel(normalize, x.shape[0], x.size)
    return y, FastLRNCache(x, y, scale, s_pow, size, alpha, beta)


def lrn_backward(dy, cache):
    x, y, scale, s_pow, size, alpha, beta = cache
    dx = np.empty_like(dy)

    def differentiate(lo, hi):  # images lo..hi-1
        t = dy[lo:hi] * y[lo:hi]
        t /= scale[lo:hi]
        back = _window_sum(t, (size - 1) // 2, size // 2)
        back *= x[lo:hi]
        back *= 2 * alpha * beta
        np.multiply(dy[lo:hi], s_pow[lo:hi], out=dx[lo:hi])
        dx[lo:hi] -= back
    parallel(differentiate, dy.shape[0], dy.size)
    return (dx,)
