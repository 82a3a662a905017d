"""2-D convolution (cross-correlation, as in every framework), NCHW.

Shapes:  x (N, C, H, W)   w (O, C/G, KH, KW)   b (O,)   y (N, O, OH, OW)
         OH = (H + 2*PH - KH) // SH + 1   (floor, as the paper's table: 227 -> 55 with 11x11 stride 4)
         G groups: input channels and filters split into G independent convolutions
         (the paper's two GPU "towers" are groups=2 in conv2, conv4, conv5).

Forward as one matrix product per group (im2col), the whole batch at once:
    cols[(c, i, j), (n, oh, ow)] = xpad[n, c, oh*SH + i, ow*SW + j]        (C*KH*KW, N*OH*OW)
    y[n, o, oh, ow] = (w[o, :] @ cols[group(o) rows, :])[(n, oh, ow)] + b[o]

Backward (each line inverts the forward line above it):
    db[o]  = sum over n, oh, ow of dy[n, o, oh, ow]                   b was added to every pixel
    dw     = dy_t @ cols^T,   dy_t = dy as (O, N*OH*OW)               y = w @ cols: dL/dw = dy cols^T
    dcols  = w^T @ dy_t                                               and dL/dcols = w^T dy
    dx     = col2im(dcols): each column entry is added back to the pixel it was copied from;
             overlapping windows (stride < kernel) add several entries into one pixel.
Precision: float16 inputs (mixed precision) are multiplied and summed in float32 and the result
rounded to float16 once, as tensor cores do (minialex/ops/precision.py).
The backward builds cols again from x rather than keeping them: they are KH*KW times the size
of x (conv2 of AlexNet: 25x), and x is kept by the graph anyway.

Algorithms (F.conv2d's `algorithm=`, minialex/ops/convolution.py): "im2col" is the above;
"winograd" computes the same y for stride 1 with fewer multiplications (minialex/ops/winograd.py);
"auto" takes Winograd's F(2x2, 3x3) where `use_winograd` says so and im2col elsewhere.

Paper: section 3.5 (the architecture), 11x11 stride 4 in conv1.
Naive loops, forward and backward: minialex/ops/loops.py (conv2d_forward, conv2d_backward).
Fast CPU pair: minialex/cpu/conv.py.
CUDA pair: kernels/conv.cu (im2col, col2im), kernels/gemm.cu or cuBLAS, minialex/cuda_ops/conv.py.
float16 on the CUDA path: conv_im2col_half, conv_col2im_half, conv_swap_axes_half and
conv_swap_axes_bias_half; the products through cuda.gemm on half operands (kernels/gemm_half.cu,
kernels/gemm_wmma.cu or cuBLAS, summed in float32).
"""
from typing import NamedTuple

import numpy as np

from ..function import Function
from .windows import conv_outsize, pad


class ConvCache(NamedTuple):
    x: object          # (N, C, H, W) the input: cols are built again from it in the backward
    w: object          # (O, C/G, KH, KW)
    has_bias: bool
    stride: tuple      # (SH, SW)
    padding: tuple     # (PH, PW)
    groups: int


def im2col(x, kh, kw, stride, padding):
    """(N, C, H, W) -> cols (C*KH*KW, N*OH*OW): rows (c, i, j) as in w.reshape(O, -1), columns (n, oh, ow)."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x.shape
    oh, ow = conv_outsize(h, kh, sh, ph), conv_outsize(w, kw, sw, pw)
    xp = pad(x, ph, pw)                                             # (N, C, H+2PH, W+2PW)
    cols = np.empty((c, kh, kw, n, oh, ow), x.dtype)
    for i in range(kh):
        for j in range(kw):  # offset (i, j) of every window at once
            cols[:, i, j] = xp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw].transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, n * oh * ow)


def col2im(dcols, x_shape, kh, kw, stride, padding):
    """The adjoint of im2col: (C*KH*KW, N*OH*OW) -> (N, C, H, W), overlapping entries added."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x_shape
    oh, ow = conv_outsize(h, kh, sh, ph), conv_outsize(w, kw, sw, pw)
    d = dcols.reshape(c, kh, kw, n, oh, ow)
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dcols.dtype)
    for i in range(kh):
        for j in range(kw):  # each entry goes back to the pixel it was copied from
            dxp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += d[:, i, j].transpose(1, 0, 2, 3)
    return dxp[:, :, ph:ph + h, pw:pw + w]


def conv2d_forward(x, w, b, stride, padding, groups):
    (n, _, h, wd), (o, cg, kh, kw) = x.shape, w.shape
    oh, ow = conv_outsize(h, kh, stride[0], padding[0]), conv_outsize(wd, kw, stride[1], padding[1])
    k, nl, a = cg * kh * kw, n * oh * ow, (np.float32 if x.dtype == np.float16 else x.dtype)   # float16: summed in float32
    cols = im2col(x.astype(a, copy=False), kh, kw, stride, padding)   # (C*KH*KW, N*OH*OW)
    y = w.astype(a, copy=False).reshape(groups, o // groups, k) @ cols.reshape(groups, k, nl)   # per group
    y = y.reshape(o, n, oh, ow).transpose(1, 0, 2, 3)                  # (N, O, OH, OW)
    if b is not None:
        y = y + b.astype(a, copy=False).reshape(1, o, 1, 1)
    return np.ascontiguousarray(y.astype(x.dtype, copy=False)), ConvCache(x, w, b is not None, stride, padding, groups)


def conv2d_backward(dy, cache, needs):
    x, w, has_bias, stride, padding, groups = cache
    o, cg, kh, kw = w.shape
    k, nl, a, t = cg * kh * kw, dy.shape[0] * dy.shape[2] * dy.shape[3], (np.float32 if dy.dtype == np.float16 else dy.dtype), dy.dtype
    dy_t = dy.astype(a, copy=False).transpose(1, 0, 2, 3).reshape(groups, o // groups, nl)   # (G, O/G, N*OH*OW)
    dx = dw = db = None
    if needs[0]:
        dcols = w.astype(a, copy=False).reshape(groups, o // groups, k).transpose(0, 2, 1) @ dy_t
        dx = col2im(dcols.reshape(groups * k, nl), x.shape, kh, kw, stride, padding).astype(t, copy=False)
    if needs[1]:
        cols = im2col(x.astype(a, copy=False), kh, kw, stride, padding)   # again, from x (see above)
        dw = (dy_t @ cols.reshape(groups, k, nl).transpose(0, 2, 1)).reshape(w.shape).astype(t, copy=False)
    if has_bias and needs[2]:
        db = dy.astype(a, copy=False).sum(axis=(0, 2, 3)).astype(t, copy=False)   # (O,)
    return dx, dw, db


class Conv2d(Function):
    input_names = ("x", "weight", "bias")
    reference = (conv2d_forward, conv2d_backward)
    fast = ("minialex.cpu.conv", "conv2d_forward", "conv2d_backward")
    cuda = ("minialex.cuda_ops.conv", "conv2d_forward", "conv2d_backward")
