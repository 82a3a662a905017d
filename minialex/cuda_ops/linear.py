"""Linear, CUDA pair: the products through minialex.cuda.gemm (kernels/gemm.cu or cuBLAS), the bias
in kernels/bias.cu. Math: minialex/ops/linear.py."""
import numpy as np

from .. import backend, cuda
from ..ops import linear as spec


def linear_forward(x, w, b):
    xp = backend.xp_of(x)
    x2 = x.reshape(-1, x.shape[-1])                                   # (N, in)
    n, (out_f, in_f) = x2.shape[0], w.shape
    y = xp.empty((n, out_f), dtype=np.float32)
    cuda.gemm(y, x2, w, n, out_f, in_f, a_mk=(in_f, 1), b_kn=(1, in_f))  # x @ W^T: W read transposed
    if b is not None and y.size:
        cuda.launch("bias", "bias_forward", *cuda.blocks(y.size), y, b, np.int32(n), np.int32(out_f), np.int32(1))
    return y.reshape(*x.shape[:-1], out_f), spec.LinearCache(x2, w, x.shape, b is not None)


def linear_backward(dy, cache, needs):
    x2, w, x_shape, has_bias = cache
    xp = backend.xp_of(dy)
    n, (out_f, in_f) = x2.shape[0], w.shape
    dy = dy.reshape(n, out_f)
    dx = dw = db = None
    if needs[0]:
        dx = xp.empty((n, in_f), dtype=np.float32)
        cuda.gemm(dx, dy, w, n, in_f, out_f, a_mk=(out_f, 1), b_kn=(in_f, 1))    # dy @ W
        dx = dx.reshape(x_shape)
    if needs[1]:
        dw = xp.empty(w.shape, dtype=np.float32)
        cuda.gemm(dw, dy, x2, out_f, in_f, n, a_mk=(1, out_f), b_kn=(in_f, 1))   # dy^T @ x
    if has_bias and needs[2]:
        db = xp.zeros((out_f,), dtype=np.float32)
        if db.size and dy.size:
            cuda.fits_int32(dy.size, "dy")
            cuda.launch("bias", "bias_backward", (out_f,), (256,), db, dy, np.int32(n), np.int32(out_f), np.int32(1))
    return dx, dw, db
