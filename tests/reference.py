"""Naive-loop references in float64: the executable spec each op is tested against.

Written for reading, not speed: one output element at a time, the formula as in the paper.
"""
import numpy as np


def conv2d(x, w, b, stride, padding, groups):
    n_, c_, h_, w_ = x.shape
    o_, cg, kh, kw = w.shape
    og = o_ // groups
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h_ + 2 * padding - kh) // stride + 1
    ow = (w_ + 2 * padding - kw) // stride + 1
    y = np.zeros((n_, o_, oh, ow))
    for n in range(n_):
        for o in range(o_):
            g = o // og                                # filter o sees only its group's channels
            for i in range(oh):
                for j in range(ow):
                    window = xp[n, g * cg:(g + 1) * cg, i * stride:i * stride + kh, j * stride:j * stride + kw]
                    y[n, o, i, j] = (window * w[o]).sum() + (b[o] if b is not None else 0.0)
    return y


def local_response_norm(x, size, alpha, beta, k):
    n_, c_, h_, w_ = x.shape
    y = np.zeros_like(x)
    for n in range(n_):
        for c in range(c_):
            lo, hi = max(0, c - size // 2), min(c_ - 1, c + (size - 1) // 2)
            for i in range(h_):
                for j in range(w_):
                    s = k + alpha * sum(x[n, m, i, j] ** 2 for m in range(lo, hi + 1))
                    y[n, c, i, j] = x[n, c, i, j] / s ** beta
    return y


def max_pool2d(x, kernel, stride):
    n_, c_, h_, w_ = x.shape
    oh, ow = (h_ - kernel) // stride + 1, (w_ - kernel) // stride + 1
    y = np.zeros((n_, c_, oh, ow))
    for n in range(n_):
        for c in range(c_):
            for i in range(oh):
                for j in range(ow):
                    y[n, c, i, j] = x[n, c, i * stride:i * stride + kernel, j * stride:j * stride + kernel].max()
    return y


def linear(x, w, b):
    y = np.zeros((x.shape[0], w.shape[0]))
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            y[n, o] = sum(x[n, i] * w[o, i] for i in range(w.shape[1])) + (b[o] if b is not None else 0.0)
    return y


def cross_entropy(z, t):
    total = 0.0
    for n in range(z.shape[0]):
        total += -(z[n, t[n]] - np.log(sum(np.exp(v) for v in z[n])))
    return total / z.shape[0]


def fmix32(h):
    """MurmurHash3's finalizer on a Python int."""
    mask = 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    return h ^ (h >> 16)


def dropout_keep(seed, index, p):
    """Element `index` is kept when the 24 high bits of its hash reach round(p * 2^24)."""
    h = fmix32(((index * 0x9E3779B9) + fmix32(seed)) & 0xFFFFFFFF)
    return (h >> 8) >= round(p * (1 << 24))
