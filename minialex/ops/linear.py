"""Fully connected layer: y = x W^T + b.

Shapes:  x (N, in)   w (out, in)   b (out,)   y (N, out)   (leading axes beyond N are allowed)

Backward (y = x W^T + b):
    dx = dy W          (N, in)
    dw = dy^T x        (out, in)    summed over the batch, as the loss is
    db = sum_n dy      (out,)

Paper: fc6, fc7 (4096 units) and fc8 (1000-way, into the softmax), section 3.5.
CUDA path: kernels/gemm.cu (or cuBLAS), kernels/bias.cu for db.
"""
import numpy as np

from .. import backend, cuda
from ..errors import fail
from ..function import Function


def linear_forward(x, w, b):
    x2 = x.reshape(-1, x.shape[-1])                  # (N, in)
    y = np.matmul(x2, w.T)                           # (N, out)
    if b is not None:
        y += b
    return y.reshape(*x.shape[:-1], w.shape[0]), (x2, w, x.shape, b is not None)


def linear_backward(dy, cache):
    x2, w, x_shape, has_b = cache
    dy2 = dy.reshape(-1, w.shape[0])                 # (N, out)
    dx = np.matmul(dy2, w).reshape(x_shape)          # (N, in)
    dw = np.matmul(dy2.T, x2, out=backend.scratch(w.shape, w.dtype))  # (out, in); fc6's is 151 MB: reuse it
    db = dy2.sum(axis=0) if has_b else None          # (out,)
    return dx, dw, db


def linear_forward_cuda(x, w, b):
    xp = backend.xp_of(x)
    x2 = x.reshape(-1, x.shape[-1])                                   # (N, in)
    n, (out_f, in_f) = x2.shape[0], w.shape
    y = xp.empty((n, out_f), dtype=np.float32)
    cuda.gemm(y, x2, w, n, out_f, in_f, a_mk=(in_f, 1), b_kn=(1, in_f))  # x @ W^T: W read transposed
    if b is not None:
        cuda.launch("bias", "bias_forward", *cuda.blocks(y.size), y, b, np.int32(n), np.int32(out_f), np.int32(1))
    return y.reshape(*x.shape[:-1], out_f), (x2, w, x.shape, b is not None)


def linear_backward_cuda(dy, cache):
    x2, w, x_shape, has_b = cache
    xp = backend.xp_of(dy)
    n, (out_f, in_f) = x2.shape[0], w.shape
    dx = xp.empty((n, in_f), dtype=np.float32)
    cuda.gemm(dx, dy, w, n, in_f, out_f, a_mk=(out_f, 1), b_kn=(in_f, 1))    # dy @ W
    dw = xp.empty(w.shape, dtype=np.float32)
    cuda.gemm(dw, dy, x2, out_f, in_f, n, a_mk=(1, out_f), b_kn=(in_f, 1))   # dy^T @ x
    db = None
    if has_b:
        db = xp.empty((out_f,), dtype=np.float32)
        cuda.launch("bias", "bias_backward", (out_f,), (256,), db, dy, np.int32(n), np.int32(out_f), np.int32(1))
    return dx.reshape(x_shape), dw, db


class Linear(Function):
    numpy = (linear_forward, linear_backward)
    cuda = (linear_forward_cuda, linear_backward_cuda)


def linear(x, weight, bias=None):
    """y = x @ weight.T + bias; weight (out_features, in_features)."""
    op = "linear"
    if weight.ndim != 2:
        fail(op, "weight", "2 dimensions (out_features, in_features)", f"shape {weight.shape}")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        fail(op, "x", f"last dimension {weight.shape[1]} (= weight.shape[1], in_features)",
             f"shape {x.shape}")
    if bias is not None and bias.shape != (weight.shape[0],):
        fail(op, "bias", f"shape ({weight.shape[0]},)", f"shape {bias.shape}")
    return Linear.apply(x, weight, bias)
