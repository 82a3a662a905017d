"""Linear, CUDA pair: the products through minialex.cuda.gemm (kernels/gemm.cu or cuBLAS), the bias
in kernels/bias.cu. Math: minialex/ops/linear.py.

float16 (mixed precision): cuda.gemm takes the half operands and sums in float32, as the reference
does, rounding once: straight into a half C where nothing follows (no bias, dx, dw, and db = ones
@ dy, a product too: see minialex/cuda_ops/conv.py); with a bias into a float32 C, which
bias_forward_half adds b to and rounds once."""
import numpy as np

from .. import backend, cuda
from ..ops import linear as spec


def linear_forward(x, w, b):
    xp = backend.xp_of(x)
    x2 = x.reshape(-1, x.shape[-1])                                   # (N, in)
    n, (out_f, in_f) = x2.shape[0], w.shape
    half_bias = x.dtype == np.float16 and b is not None               # the sum stays float until b is in
    y = xp.empty((n, out_f), dtype=np.float32 if half_bias else x.dtype)
    cuda.gemm(y, x2, w, n, out_f, in_f, a_mk=(in_f, 1), b_kn=(1, in_f))  # x @ W^T: W read transposed
    if half_bias:
        y_f, y = y, xp.empty((n, out_f), dtype=np.float16)
        if y.size:  # y = half(y_f + b), two elements per thread
            cuda.launch("bias", "bias_forward_half", *cuda.blocks((y.size + 1) // 2), y, y_f, b, np.int32(n),
                        np.int32(out_f), np.int32(1))
    elif b is not None and y.size:
        cuda.launch("bias", "bias_forward", *cuda.blocks(y.size), y, b, np.int32(n), np.int32(out_f), np.int32(1))
    return y.reshape(*x.shape[:-1], out_f), spec.LinearCache(x2, w, x.shape, b is not None)


def linear_backward(dy, cache, needs):
    x2, w, x_shape, has_bias = cache
    xp = backend.xp_of(dy)
    n, (out_f, in_f) = x2.shape[0], w.shape
    dy = dy.reshape(n, out_f)
    dx = dw = db = None
    if needs[0]:
        dx = xp.empty((n, in_f), dtype=dy.dtype)
        cuda.gemm(dx, dy, w, n, in_f, out_f, a_mk=(out_f, 1), b_kn=(in_f, 1))    # dy @ W
        dx = dx.reshape(x_shape)
    if needs[1]:
        dw = xp.empty(w.shape, dtype=dy.dtype)
        cuda.gemm(dw, dy, x2, out_f, in_f, n, a_mk=(1, out_f), b_kn=(in_f, 1))   # dy^T @ x
    if has_bias and needs[2]:
        db = xp.zeros((out_f,), dtype=dy.dtype)
        if db.size and dy.size and dy.dtype == np.float16:   # db = 1 @ dy: float32 sums, rounded once
            cuda.gemm(db, xp.ones((n,), dtype=np.float16), dy, 1, out_f, n, a_mk=(n, 1), b_kn=(out_f, 1))
        elif db.size and dy.size:
            cuda.fits_int32(dy.size, "dy")
            cuda.launch("bias", "bias_backward", (out_f,), (256,), db, dy, np.int32(n), np.int32(out_f), np.int32(1))
    return dx, dw, db
