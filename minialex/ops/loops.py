"""Every op as naive loops, forward AND backward: one output element, one gradient term at a time.

The first step from the formulas in the op files' docstrings to code: read a loop here, then the
same op as array code (the reference pair in minialex/ops/<op>.py), then as a kernel
(kernels/<op>.cu), where each thread runs one iteration of these outer loops. Slow on purpose:
use small shapes. The tests hold the references equal to these loops in float64.

Backward here is the chain rule spelled out: for every way an input element influenced an output
element, add dL/d(output) * d(output)/d(input) into the input's gradient.
"""
import math

import numpy as np


def _pad(x, p, value=0.0):
    return np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=value)


def _out(size, k, s, p):
    return (size + 2 * p - k) // s + 1


# ----- conv2d -----

def conv2d_forward(x, w, b, stride=(1, 1), padding=(0, 0), groups=1):
    n_, c_, h_, w_ = x.shape
    o_, cg, kh, kw = w.shape
    og = o_ // groups
    xp = _pad(x, padding)
    oh, ow = _out(h_, kh, stride[0], padding[0]), _out(w_, kw, stride[1], padding[1])
    y = np.zeros((n_, o_, oh, ow))
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
    return y


def conv2d_backward(x, w, dy, stride=(1, 1), padding=(0, 0), groups=1):
    """(dx, dw, db): y[n,o,i,j] = b[o] + sum_c,di,dj xpad[n, c, i*s+di, j*s+dj] * w[o,c,di,dj], so each
    term sends dy * w to that pixel of x and dy * x to that weight, and every y sends dy to b[o]."""
    n_, c_, h_, w_ = x.shape
    o_, cg, kh, kw = w.shape
    og = o_ // groups
    xp = _pad(x, padding)
    dxp, dw, db = np.zeros_like(xp), np.zeros_like(w), np.zeros(o_)
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
    return dxp[:, :, padding[0]:padding[0] + h_, padding[1]:padding[1] + w_], dw, db


# ----- relu -----

def relu_forward(x):
    y = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        y[idx] = x[idx] if (x[idx] > 0 or math.isnan(x[idx])) else 0.0
    return y


def relu_backward(x, dy):
    dx = np.zeros_like(dy)
    for idx in np.ndindex(*x.shape):
        dx[idx] = 0.0 if x[idx] <= 0 else dy[idx]         # slope 1 right of 0, 0 left of it and at 0
    return dx


# ----- local response normalization -----

def _window(c, c_, size):
    return range(max(0, c - size // 2), min(c_ - 1, c + (size - 1) // 2) + 1)


def lrn_forward(x, size, alpha, beta, k):
    n_, c_, h_, w_ = x.shape
    y = np.zeros_like(x)
    for n, c, i, j in np.ndindex(n_, c_, h_, w_):
        s = k + alpha * sum(x[n, m, i, j] ** 2 for m in _window(c, c_, size))
        y[n, c, i, j] = x[n, c, i, j] / s ** beta
    return y


def lrn_backward(x, dy, size, alpha, beta, k):
    """y[c] = a[c] s[c]^-beta with s[c] = k + alpha sum_{m in window(c)} a[m]^2: a[m] reaches y[m]
    through the numerator and every y[c] whose window holds m through s[c]."""
    n_, c_, h_, w_ = x.shape
    dx = np.zeros_like(x)
    for n, c, i, j in np.ndindex(n_, c_, h_, w_):
        window = _window(c, c_, size)
        s = k + alpha * sum(x[n, m, i, j] ** 2 for m in window)
        dx[n, c, i, j] += dy[n, c, i, j] * s ** -beta                          # the numerator
        for m in window:                                                       # inside s[c]
            ds_da = 2 * alpha * x[n, m, i, j]
            dx[n, m, i, j] += dy[n, c, i, j] * x[n, c, i, j] * -beta * s ** (-beta - 1) * ds_da
    return dx


# ----- max pooling -----

def _winner(x, n, c, i, j, kernel, stride, padding):
    """(row, col) in x of the first maximum (a NaN wins) of window (i, j); padding never wins."""
    best, at = None, None
    for di in range(kernel[0]):
        for dj in range(kernel[1]):
            r, s = i * stride[0] - padding[0] + di, j * stride[1] - padding[1] + dj
            if 0 <= r < x.shape[2] and 0 <= s < x.shape[3]:
                v = x[n, c, r, s]
                if at is None or v > best or math.isnan(v):
                    best, at = v, (r, s)
    return at


def max_pool2d_forward(x, kernel, stride, padding=(0, 0)):
    n_, c_, h_, w_ = x.shape
    oh, ow = _out(h_, kernel[0], stride[0], padding[0]), _out(w_, kernel[1], stride[1], padding[1])
    y = np.zeros((n_, c_, oh, ow))
    for n, c, i, j in np.ndindex(n_, c_, oh, ow):
        y[n, c, i, j] = x[(n, c) + _winner(x, n, c, i, j, kernel, stride, padding)]
    return y


def max_pool2d_backward(x, dy, kernel, stride, padding=(0, 0)):
    """Each window's dy goes to its winner alone (the max does not move for a small change of the
    other pixels); a pixel that wins several overlapping windows adds their gradients."""
    dx = np.zeros_like(x)
    for n, c, i, j in np.ndindex(*dy.shape):
        dx[(n, c) + _winner(x, n, c, i, j, kernel, stride, padding)] += dy[n, c, i, j]
    return dx


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


def dropout_forward(x, p, seed, offset=0):
    y = np.zeros_like(x)
    for flat, idx in enumerate(np.ndindex(*x.shape)):
        y[idx] = x[idx] / (1 - p) if dropout_keep(seed, (offset + flat) & 0xFFFFFFFF, p) else 0.0
    return y


def dropout_backward(dy, p, seed, offset=0):
    dx = np.zeros_like(dy)
    for flat, idx in enumerate(np.ndindex(*dy.shape)):
        dx[idx] = dy[idx] / (1 - p) if dropout_keep(seed, (offset + flat) & 0xFFFFFFFF, p) else 0.0
    return dx


# ----- linear -----

def linear_forward(x, w, b):
    y = np.zeros((x.shape[0], w.shape[0]))
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            y[n, o] = sum(x[n, i] * w[o, i] for i in range(w.shape[1])) + (b[o] if b is not None else 0.0)
    return y


def linear_backward(x, w, dy):
    """y[n,o] = b[o] + sum_i x[n,i] w[o,i]: dy[n,o] goes to x[n,i] times w[o,i], to w[o,i] times x[n,i]."""
    dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros(w.shape[0])
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            db[o] += dy[n, o]
            for i in range(w.shape[1]):
                dx[n, i] += dy[n, o] * w[o, i]
                dw[o, i] += dy[n, o] * x[n, i]
    return dx, dw, db


# ----- softmax cross-entropy -----

def cross_entropy_forward(z, t):
    total = 0.0
    for n in range(z.shape[0]):
        total += -(z[n, t[n]] - math.log(sum(math.exp(v) for v in z[n])))
    return total / z.shape[0]


def cross_entropy_backward(z, t, dloss=1.0):
    """loss = -(1/N) sum_n (z[n,t[n]] - log sum_k exp z[n,k]): dz[n,k] = (p[n,k] - [k == t[n]]) / N."""
    dz = np.zeros_like(z)
    n_ = z.shape[0]
    for n in range(n_):
        total = sum(math.exp(v) for v in z[n])
        for k in range(z.shape[1]):
            dz[n, k] = dloss * (math.exp(z[n, k]) / total - (1.0 if k == t[n] else 0.0)) / n_
    return dz
