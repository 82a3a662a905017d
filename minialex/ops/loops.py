"""Every op as naive loops, forward AND backward: one output element, one gradient term at a time.

The first step from the formulas in the op files' docstrings to code: read a loop here, then the
same op as array code (the reference pair in minialex/ops/<op>.py), then as a kernel
(kernels/<op>.cu), where each thread runs one iteration of these outer loops. Slow on purpose:
use small shapes. The tests hold the references equal to these loops in float64.

Each pair here is called exactly as its reference pair is, and keeps the same cache:
    forward(*arrays, **hyper) -> (y, cache)
    backward(dy, cache) -> (dx,)   or, for conv2d and linear, backward(dy, cache, needs) -> (dx, dw, db)
so a loops pair can stand in for its reference pair (or take its cache) anywhere.

Backward here is the chain rule spelled out: for every way an input element influenced an output
element, add dL/d(output) * d(output)/d(input) into the input's gradient.
"""
import math

import numpy as np

from .conv import ConvCache
from .cross_entropy import CrossEntropyCache
from .dropout import DropoutCache
from .linear import LinearCache
from .lrn import LRNCache
from .pool import PoolCache


def _pad(x, p, value=0.0):
    return np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=value)


def _out(size, k, s, p):
    return (size + 2 * p - k) // s + 1


# ----- conv2d -----

def conv2d_forward(x, w, b, stride, padding, groups):
    n_, c_, h_, w_ = x.shape
    o_, cg, kh, kw = w.shape
    og = o_ // groups
    xp = _pad(x, padding)
    oh, ow = _out(h_, kh, stride[0], padding[0]), _out(w_, kw, stride[1], padding[1])
    y = np.zeros((n_, o_, oh, ow), x.dtype)
    for n in range(n_):
        for o in range(o_):
            g = o // og                                    # filter o sees only its group's channels
            for i in range(oh):
                for j in range(ow):
                    total = b[o] if b is not None else 0.0
                    for c in range(cg):
                        for di in range(kh):
                            for dj in range(kw):
                                total += xp[n, g * cg + c, i * stride[0] + di, j * stride[1] + dj] * w[o, c, di, dj]
                    y[n, o, i, j] = total
    return y, ConvCache(x, w, b is not None, stride, padding, groups)


def conv2d_backward(dy, cache, needs):
    """(dx, dw, db): y[n,o,i,j] = b[o] + sum_c,di,dj xpad[n, c, i*s+di, j*s+dj] * w[o,c,di,dj], so each
    term sends dy * w to that pixel of x and dy * x to that weight, and every y sends dy to b[o].
    A gradient that `needs` does not ask for is None (db also when there was no bias)."""
    x, w, has_bias, stride, padding, groups = cache
    n_, c_, h_, w_ = x.shape
    o_, cg, kh, kw = w.shape
    og = o_ // groups
    xp = _pad(x, padding)
    dxp, dw, db = np.zeros_like(xp), np.zeros_like(w), np.zeros(o_, dy.dtype)
    for n in range(n_):
        for o in range(o_):
            g = o // og
            for i in range(dy.shape[2]):
                for j in range(dy.shape[3]):
                    g_out = dy[n, o, i, j]
                    db[o] += g_out
                    for c in range(cg):
                        for di in range(kh):
                            for dj in range(kw):
                                r, s = i * stride[0] + di, j * stride[1] + dj
                                dw[o, c, di, dj] += g_out * xp[n, g * cg + c, r, s]
                                dxp[n, g * cg + c, r, s] += g_out * w[o, c, di, dj]
    dx = dxp[:, :, padding[0]:padding[0] + h_, padding[1]:padding[1] + w_]
    return (dx if needs[0] else None, dw if needs[1] else None, db if has_bias and needs[2] else None)


# ----- relu -----

def relu_forward(x):
    y = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        y[idx] = x[idx] if (x[idx] > 0 or math.isnan(x[idx])) else 0.0
    return y, x                                            # cache: x


def relu_backward(dy, x):
    dx = np.zeros_like(dy)
    for idx in np.ndindex(*x.shape):
        dx[idx] = 0.0 if x[idx] <= 0 else dy[idx]         # slope 1 right of 0, 0 left of it and at 0
    return (dx,)


# ----- local response normalization -----

def _window(c, c_, size):
    return range(max(0, c - size // 2), min(c_ - 1, c + (size - 1) // 2) + 1)


def lrn_forward(x, size, alpha, beta, k):
    n_, c_, h_, w_ = x.shape
    y, scale = np.zeros_like(x), np.zeros_like(x)
    for n, c, i, j in np.ndindex(n_, c_, h_, w_):
        s = k + alpha * sum(x[n, m, i, j] ** 2 for m in _window(c, c_, size))
        scale[n, c, i, j] = s
        y[n, c, i, j] = x[n, c, i, j] / s ** beta
    return y, LRNCache(x, y, scale, size, alpha, beta)


def lrn_backward(dy, cache):
    """y[c] = a[c] s[c]^-beta with s[c] = k + alpha sum_{m in window(c)} a[m]^2: a[m] reaches y[m]
    through the numerator and every y[c] whose window holds m through s[c]."""
    x, _, scale, size, alpha, beta = cache
    n_, c_, h_, w_ = x.shape
    dx = np.zeros_like(x)
    for n, c, i, j in np.ndindex(n_, c_, h_, w_):
        s = scale[n, c, i, j]
        dx[n, c, i, j] += dy[n, c, i, j] * s ** -beta                          # the numerator
        for m in _window(c, c_, size):                                         # inside s[c]
            ds_da = 2 * alpha * x[n, m, i, j]
            dx[n, m, i, j] += dy[n, c, i, j] * x[n, c, i, j] * -beta * s ** (-beta - 1) * ds_da
    return (dx,)


# ----- max pooling -----

def _winner(x, n, c, i, j, kernel, stride, padding):
    """The offset di*KW + dj in window (i, j) of its first maximum (a NaN wins); padding never wins."""
    best, at = None, None
    for di in range(kernel[0]):
        for dj in range(kernel[1]):
            r, s = i * stride[0] - padding[0] + di, j * stride[1] - padding[1] + dj
            if 0 <= r < x.shape[2] and 0 <= s < x.shape[3]:
                v = x[n, c, r, s]
                if at is None or v > best or math.isnan(v):
                    best, at = v, di * kernel[1] + dj
    return at


def max_pool2d_forward(x, kernel, stride, padding):
    n_, c_, h_, w_ = x.shape
    oh, ow = _out(h_, kernel[0], stride[0], padding[0]), _out(w_, kernel[1], stride[1], padding[1])
    y = np.zeros((n_, c_, oh, ow), x.dtype)
    argmax = np.zeros((n_, c_, oh, ow), np.int32)
    for n, c, i, j in np.ndindex(n_, c_, oh, ow):
        at = _winner(x, n, c, i, j, kernel, stride, padding)
        di, dj = divmod(at, kernel[1])
        argmax[n, c, i, j] = at
        y[n, c, i, j] = x[n, c, i * stride[0] - padding[0] + di, j * stride[1] - padding[1] + dj]
    return y, PoolCache(argmax, x.shape, kernel, stride, padding)


def max_pool2d_backward(dy, cache):
    """Each window's dy goes to its winner alone (the max does not move for a small change of the
    other pixels); a pixel that wins several overlapping windows adds their gradients."""
    argmax, x_shape, kernel, stride, padding = cache
    dx = np.zeros(x_shape, dy.dtype)
    for n, c, i, j in np.ndindex(*dy.shape):
        di, dj = divmod(int(argmax[n, c, i, j]), kernel[1])
        dx[n, c, i * stride[0] - padding[0] + di, j * stride[1] - padding[1] + dj] += dy[n, c, i, j]
    return (dx,)


# ----- dropout -----

def _fmix32(h):
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def dropout_keep(seed, index, p):
    """Element `index` (its counter: offset + flat C-order index) is kept when the 24 high bits of its
    hash reach round(p * 2^24)."""
    h = _fmix32(((index * 0x9E3779B9) + _fmix32(seed)) & 0xFFFFFFFF)
    return (h >> 8) >= round(p * (1 << 24))


def dropout_forward(x, p, seed, offset):
    y = np.zeros_like(x)
    for flat, idx in enumerate(np.ndindex(*x.shape)):
        y[idx] = x[idx] / (1 - p) if dropout_keep(seed, (offset + flat) & 0xFFFFFFFF, p) else 0.0
    return y, DropoutCache(seed, p, offset)


def dropout_backward(dy, cache):
    seed, p, offset = cache                                # the forward's mask, recomputed from its seed
    dx = np.zeros_like(dy)
    for flat, idx in enumerate(np.ndindex(*dy.shape)):
        dx[idx] = dy[idx] / (1 - p) if dropout_keep(seed, (offset + flat) & 0xFFFFFFFF, p) else 0.0
    return (dx,)


# ----- linear -----

def linear_forward(x, w, b):
    x2 = x.reshape(-1, x.shape[-1])                        # (N, in): leading axes flattened
    y = np.zeros((x2.shape[0], w.shape[0]), x.dtype)
    for n in range(x2.shape[0]):
        for o in range(w.shape[0]):
            y[n, o] = sum(x2[n, i] * w[o, i] for i in range(w.shape[1])) + (b[o] if b is not None else 0.0)
    return y.reshape(*x.shape[:-1], w.shape[0]), LinearCache(x2, w, x.shape, b is not None)


def linear_backward(dy, cache, needs):
    """y[n,o] = b[o] + sum_i x[n,i] w[o,i]: dy[n,o] goes to x[n,i] times w[o,i], to w[o,i] times x[n,i]."""
    x2, w, x_shape, has_bias = cache
    dy2 = dy.reshape(-1, w.shape[0])
    dx, dw, db = np.zeros_like(x2), np.zeros_like(w), np.zeros(w.shape[0], dy.dtype)
    for n in range(x2.shape[0]):
        for o in range(w.shape[0]):
            db[o] += dy2[n, o]
            for i in range(w.shape[1]):
                dx[n, i] += dy2[n, o] * w[o, i]
                dw[o, i] += dy2[n, o] * x2[n, i]
    return (dx.reshape(x_shape) if needs[0] else None, dw if needs[1] else None,
            db if has_bias and needs[2] else None)


# ----- softmax cross-entropy -----

def cross_entropy_forward(z, target):
    """loss = -(1/N) sum_n log p[n, t[n]], p the softmax of each row (its max subtracted first)."""
    n_ = z.shape[0]
    probs = np.zeros_like(z)
    total = 0.0
    for n in range(n_):
        m = max(z[n])
        log_sum = math.log(sum(math.exp(v - m) for v in z[n]))
        for k in range(z.shape[1]):
            probs[n, k] = math.exp(z[n, k] - m - log_sum)
        total += -(z[n, target[n]] - m - log_sum)
    loss = total / n_ if n_ else math.nan
    return np.asarray(loss, z.dtype), CrossEntropyCache(probs, target)


def cross_entropy_backward(dloss, cache):
    """dz[n,k] = dloss * (p[n,k] - [k == t[n]]) / N."""
    probs, target = cache
    n_ = probs.shape[0]
    dz = np.zeros_like(probs)
    for n in range(n_):
        for k in range(probs.shape[1]):
            dz[n, k] = dloss * (probs[n, k] - (1.0 if k == target[n] else 0.0)) / max(n_, 1)
    return (dz,)


# ----- the SGD update (not a graph op: in place on w and v) -----

def sgd_update(w, v, g, lr, momentum, weight_decay):
    """As minialex/ops/sgd.py's sgd_update_reference, one element at a time."""
    for idx in np.ndindex(*w.shape):
        v[idx] = momentum * v[idx] - weight_decay * lr * w[idx] - lr * g[idx]
        w[idx] = w[idx] + v[idx]
