"""Max pooling, NCHW, with overlapping windows (paper section 3.4: 3x3 windows, stride 2).

    y[n, c, oh, ow] = max over i < KH, j < KW of xpad[n, c, oh*SH + i, ow*SW + j]
    OH = (H + 2*PH - KH) // SH + 1       (floor, as the paper's table: 55 -> 27 -> 13 -> 6)
    padding never wins: only pixels inside the image are candidates.

Forward keeps `argmax` = i*KW + j of the winning offset: scanning the window row by row, the first
pixel is taken, then any strictly larger one, so ties go to the first maximum (as in PyTorch and
cuDNN); a NaN is always taken, so a window holding NaN gives NaN (its last NaN wins, as in PyTorch).
Backward: each dy goes to the input pixel that won its window; where windows overlap
(stride < kernel) a pixel that won several windows receives the sum of their gradients.

Naive loops, forward and backward: minialex/ops/loops.py (max_pool2d_forward, max_pool2d_backward).
Fast CPU pair: minialex/cpu/pool.py.   CUDA pair: kernels/pool.cu, minialex/cuda_ops/pool.py.
float16 on the CUDA path: pool_forward_half, pool_backward_half.
"""
from typing import NamedTuple

import numpy as np

from ..errors import check_pair, fail
from ..function import Function
from .windows import conv_outsize, pad


class PoolCache(NamedTuple):
    argmax: object     # (N, C, OH, OW) int32: i*KW + j of each window's winner
    x_shape: tuple
    kernel: tuple      # (KH, KW)
    stride: tuple      # (SH, SW)
    padding: tuple     # (PH, PW)


def max_pool2d_forward(x, kernel, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x.shape
    oh, ow = conv_outsize(h, kh, sh, ph), conv_outsize(w, kw, sw, pw)
    xp = pad(x, ph, pw)                                             # (N, C, H+2PH, W+2PW)
    inside = pad(np.ones((1, 1, h, w), bool), ph, pw, value=False)  # pixels of the image, not padding
    y = np.zeros((n, c, oh, ow), x.dtype)
    argmax = np.full((n, c, oh, ow), -1, np.int32)                  # -1: nothing taken yet
    for i in range(kh):
        for j in range(kw):  # offset (i, j) of every window at once: (N, C, OH, OW) views
            v = xp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw]
            real = inside[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw]
            take = real & ((argmax < 0) | (v > y) | np.isnan(v))      # the first, a larger one, a NaN
            y = np.where(take, v, y)
            argmax = np.where(take, np.int32(i * kw + j), argmax)
    return y, PoolCache(argmax, x.shape, kernel, stride, padding)


def max_pool2d_backward(dy, cache):
    argmax, (n, c, h, w), (kh, kw), (sh, sw), (ph, pw) = cache
    oh, ow = dy.shape[2:]
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dy.dtype)
    for i in range(kh):
        for j in range(kw):  # windows whose winner sat at offset (i, j) send dy to that pixel
            dxp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += np.where(argmax == i * kw + j, dy, 0)
    return (dxp[:, :, ph:ph + h, pw:pw + w],)


class MaxPool2d(Function):
    reference = (max_pool2d_forward, max_pool2d_backward)
    fast = ("minialex.cpu.pool", "max_pool2d_forward", "max_pool2d_backward")
    cuda = ("minialex.cuda_ops.pool", "max_pool2d_forward", "max_pool2d_backward")


def max_pool2d(x, kernel_size=3, stride=2, padding=0):
    """Max over KHxKW windows every `stride` pixels (overlapping when stride < kernel_size)."""
    op = "max_pool2d"
    if x.ndim != 4:
        fail(op, "x", "4 dimensions (N, C, H, W)", f"shape {x.shape}")
    kernel = check_pair(op, "kernel_size", kernel_size)
    stride = check_pair(op, "stride", stride)
    padding = check_pair(op, "padding", padding, minimum=0)
    if padding[0] * 2 > kernel[0] or padding[1] * 2 > kernel[1]:
        fail(op, "padding", f"at most half the kernel {kernel}", padding)
    h, w = x.shape[2:]
    if kernel[0] > h + 2 * padding[0] or kernel[1] > w + 2 * padding[1]:
        fail(op, "kernel_size", f"no larger than the padded input {h + 2 * padding[0]}x{w + 2 * padding[1]}",
             kernel)
    return MaxPool2d.apply(x, kernel=kernel, stride=stride, padding=padding)
