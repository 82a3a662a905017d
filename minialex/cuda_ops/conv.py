"""conv2d, CUDA pair: im2col and col2im in kernels/conv.cu, the products through minialex.cuda.gemm
(kernels/gemm.cu or cuBLAS), the bias in kernels/bias.cu. Math: minialex/ops/conv.py.

float16 (mixed precision), as the reference: cols and dy_t are half copies (conv_im2col_half,
conv_swap_axes_half); cuda.gemm sums the half products in float32 into y_t and dcols, kept float32
until the one rounding (conv_swap_axes_bias_half adds b and rounds; conv_col2im_half adds the
overlapping entries and rounds), and into a half dw directly. db = dy_t @ ones, a product too
(float32 sums, rounded once): as Caffe computes its bias gradient, and with no block barriers,
which the emulator runs as one fiber per thread (bias_backward's 256 per channel)."""
import numpy as np

from .. import backend, cuda
from ..ops import conv as spec
from ..ops.windows import window_geometry


def conv2d_forward(x, w, b, stride, padding, groups):
    xp = backend.xp_of(x)
    half = x.dtype == np.float16
    geometry = window_geometry(x.shape, w.shape[2:], stride, padding)
    n, c, oh, ow = x.shape[0], x.shape[1], int(geometry[-2]), int(geometry[-1])
    o, cg, kh, kw = w.shape
    g, og, k, nl = groups, o // groups, cg * kh * kw, n * oh * ow
    cols = xp.empty((c * kh * kw, nl), dtype=x.dtype)                          # (C*KH*KW, N*L)
    y = xp.empty((n, o, oh, ow), dtype=x.dtype)
    cache = spec.ConvCache(x, w, b is not None, stride, padding, groups)   # cols are built again for dw
    if y.size == 0:
        return y, cache
    if cols.size:
        cuda.launch("conv", "conv_im2col_half" if half else "conv_im2col", *cuda.planes(nl, c), cols, x, *geometry)
    y_t = xp.empty((o, nl), dtype=np.float32)                                   # (O, N*L); float16: the float sums
    # y_t[group] = w[group] @ cols[group], one product per group
    cuda.gemm(y_t, w, cols, og, nl, k, a_mk=(k, 1), b_kn=(nl, 1), batch=g,
              a_batch=og * k, b_batch=k * nl, c_batch=og * nl)
    if half:  # y = half(y_t + b), made NCHW: one rounding (no bias: + 0)
        bias = b if b is not None else xp.zeros((o,), dtype=np.float16)
        cuda.launch("conv", "conv_swap_axes_bias_half", *cuda.planes(oh * ow, n * o), y, y_t, bias, np.int32(o),
                    np.int32(n), np.int32(oh * ow))
        return y, cache
    cuda.launch("conv", "conv_swap_axes", *cuda.planes(oh * ow, n * o), y, y_t, np.int32(o), np.int32(n),
                np.int32(oh * ow))
    if b is not None:
        cuda.launch("bias", "bias_forward", *cuda.blocks(y.size), y, b, np.int32(n), np.int32(o), np.int32(oh * ow))
    return y, cache


def conv2d_backward(dy, cache, needs):
    x, w, has_bias, stride, padding, groups = cache
    x_shape = x.shape
    xp = backend.xp_of(dy)
    half = dy.dtype == np.float16
    n, o, oh, ow = dy.shape
    c, h, wd = x_shape[1:]
    _, cg, kh, kw = w.shape
    g, og, k, nl = groups, o // groups, cg * kh * kw, n * oh * ow
    new = xp.zeros if dy.size == 0 else xp.empty                                # nothing to add up: zeros
    dx = new(x_shape, dtype=dy.dtype) if needs[0] else None
    dw = new(w.shape, dtype=dy.dtype) if needs[1] else None
    db = new((o,), dtype=dy.dtype) if has_bias and needs[2] else None
    if dy.size == 0:
        return dx, dw, db
    if db is not None and not half:
        cuda.fits_int32(dy.size, "dy")
        cuda.launch("bias", "bias_backward", (o,), (256,), db, dy, np.int32(n), np.int32(o), np.int32(oh * ow))
    dy_t = xp.empty((o, nl), dtype=dy.dtype)                                    # (O, N*L)
    cuda.launch("conv", "conv_swap_axes_half" if half else "conv_swap_axes", *cuda.planes(oh * ow, n * o), dy_t,
                dy, np.int32(n), np.int32(o), np.int32(oh * ow))
    if db is not None and half:  # db = dy_t @ 1: float32 sums, rounded once
        cuda.gemm(db, dy_t, xp.ones((nl,), dtype=np.float16), o, 1, nl, a_mk=(nl, 1), b_kn=(1, 1))
    if dw is not None:  # dw[group] = dy_t[group] @ cols[group]^T   (cols^T: swapped strides)
        cols = xp.empty((c * kh * kw, nl), dtype=dy.dtype)
        if cols.size:
            cuda.launch("conv", "conv_im2col_half" if half else "conv_im2col", *cuda.planes(nl, c), cols, x,
                        *window_geometry(x_shape, w.shape[2:], stride, padding))
        cuda.gemm(dw, dy_t, cols, og, k, nl, a_mk=(nl, 1), b_kn=(1, nl), batch=g,
                  a_batch=og * nl, b_batch=k * nl, c_batch=og * k)
        del cols  # back to the pool before dcols is made
    if dx is not None:  # dcols[group] = w[group]^T @ dy_t[group], then col2im (float16: dcols float32)
        dcols = xp.empty((c * kh * kw, nl), dtype=np.float32)
        cuda.gemm(dcols, w, dy_t, k, nl, og, a_mk=(1, k), b_kn=(nl, 1), batch=g,
                  a_batch=og * k, b_batch=og * nl, c_batch=k * nl)
        if dx.size:
            cuda.launch("conv", "conv_col2im_half" if half else "conv_col2im", *cuda.planes(h * wd, n * c), dx,
                        dcols, *window_geometry(x_shape, w.shape[2:], stride, padding))
    return dx, dw, db
