"""Max pooling, NCHW, with overlapping windows (paper section 3.4: 3x3 windows, stride 2).

    y[n, c, oh, ow] = max over i < KH, j < KW of xpad[n, c, oh*SH + i, ow*SW + j]
    OH = (H + 2*PH - KH) // SH + 1       (floor, as the seed table: 55 -> 27 -> 13 -> 6)
    padding is -inf, so it never wins.

Forward keeps `argmax` = i*KW + j of the winning offset; ties go to the first maximum in
row-major window order (as PyTorch and cuDNN do).
Backward: each dy goes to the input pixel that won its window; where windows overlap
(stride < kernel) a pixel that won several windows receives the sum of their gradients.

CUDA path: kernels/pool.cu (forward writes the argmax; backward gathers per input pixel).
"""
import numpy as np

from .. import backend, cuda
from ..errors import fail, pair
from ..function import Function
from .conv import _pad, conv_outsize, window_geometry


def max_pool2d_forward(x, kernel, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x.shape
    oh, ow = conv_outsize(h, kh, sh, ph), conv_outsize(w, kw, sw, pw)
    xp = _pad(x, ph, pw, value=-np.inf)                    # (N, C, H+2PH, W+2PW)

    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    argmax = np.empty(y.shape, dtype=np.int8 if kh * kw < 128 else np.int32)

    def pool(lo, hi):  # images lo..hi-1, so the cores can share the work
        def window(k):  # the k-th offset (i, j) of every window at once: a (hi-lo, C, OH, OW) view
            i, j = divmod(k, kw)
            return xp[lo:hi, :, i:i + sh * oh:sh, j:j + sw * ow:sw]
        y_, a_ = y[lo:hi], argmax[lo:hi]
        np.copyto(y_, window(0))
        for k in range(1, kh * kw):
            np.maximum(y_, window(k), out=y_)             # the max first: one fast pass per offset
        # argmax = the first offset k (row-major) holding the max. Walking k from last to first and
        # overwriting where window(k) == y leaves the smallest such k. The arithmetic update
        # a -= eq * (a - k) is several times faster than a masked copy or a boolean index.
        a_.fill(kh * kw - 1)
        for k in range(kh * kw - 2, -1, -1):
            a_ -= (window(k) == y_) * (a_ - a_.dtype.type(k))
    backend.parallel(pool, n, x.size * kh * kw)
    return y, (argmax, x.shape, kernel, stride, padding)


def max_pool2d_backward(dy, cache):
    argmax, x_shape, (kh, kw), (sh, sw), (ph, pw) = cache
    n, c, h, w = x_shape
    oh, ow = dy.shape[2:]
    dxp = np.empty((n, c, h + 2 * ph, w + 2 * pw), dtype=dy.dtype)

    def unpool(lo, hi):  # images lo..hi-1, so the cores can share the work
        dxp[lo:hi].fill(0)
        for i in range(kh):
            for j in range(kw):  # windows whose winner sat at offset (i, j) send dy to that pixel
                dxp[lo:hi, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += dy[lo:hi] * (argmax[lo:hi] == i * kw + j)
    backend.parallel(unpool, n, dxp.size * kh * kw)
    return (dxp[:, :, ph:ph + h, pw:pw + w],)


def max_pool2d_forward_cuda(x, kernel, stride, padding):
    xp = backend.xp_of(x)
    geometry = window_geometry(x.shape, kernel, stride, padding)
    shape = (*x.shape[:2], int(geometry[-2]), int(geometry[-1]))
    y, argmax = xp.empty(shape, dtype=np.float32), xp.empty(shape, dtype=np.int32)
    cuda.launch("pool", "pool_forward", *cuda.blocks(y.size), y, argmax, x, *geometry)
    return y, (argmax, x.shape, kernel, stride, padding)


def max_pool2d_backward_cuda(dy, cache):
    argmax, x_shape, kernel, stride, padding = cache
    dx = backend.xp_of(dy).empty(x_shape, dtype=np.float32)
    cuda.launch("pool", "pool_backward", *cuda.blocks(dx.size), dx, dy, argmax,
                *window_geometry(x_shape, kernel, stride, padding))
    return (dx,)


class MaxPool2d(Function):
    numpy = (max_pool2d_forward, max_pool2d_backward)
    cuda = (max_pool2d_forward_cuda, max_pool2d_backward_cuda)


def max_pool2d(x, kernel_size=3, stride=2, padding=0):
    """Max over KHxKW windows every `stride` pixels (overlapping when stride < kernel_size)."""
    op = "max_pool2d"
    if x.ndim != 4:
        fail(op, "x", "4 dimensions (N, C, H, W)", f"shape {x.shape}")
    kernel = pair(op, "kernel_size", kernel_size)
    stride = pair(op, "stride", stride)
    padding = pair(op, "padding", padding, minimum=0)
    if padding[0] * 2 > kernel[0] or padding[1] * 2 > kernel[1]:
        fail(op, "padding", f"at most half the kernel {kernel}", padding)
    h, w = x.shape[2:]
    if kernel[0] > h + 2 * padding[0] or kernel[1] > w + 2 * padding[1]:
        fail(op, "kernel_size", f"no larger than the padded input {h + 2 * padding[0]}x{w + 2 * padding[1]}",
             kernel)
    return MaxPool2d.apply(x, kernel=kernel, stride=stride, padding=padding)
