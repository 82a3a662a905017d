"""Fully connected layer: y = x W^T + b.

Shapes:  x (N, in)   w (out, in)   b (out,)   y (N, out)   (leading axes beyond N are allowed)

Backward (y = x W^T + b):
    dx = dy W          (N, in)
    dw = dy^T x        (out, in)    summed over the batch, as the loss is
    db = sum_n dy      (out,)

Paper: fc6, fc7 (4096 units) and fc8 (1000-way, into the softmax), section 3.5.
Naive loops, forward and backward: minialex/ops/loops.py (linear_forward, linear_backward).
CUDA pair: minialex/cuda_ops/linear.py (minialex.cuda.gemm: kernels/gemm.cu or cuBLAS;
kernels/bias.cu). On the CPU the reference is already one BLAS product per line: no fast pair.
float16 on the CUDA path: cuda.gemm on half operands, summed in float32 (kernels/gemm_half.cu,
kernels/gemm_wmma.cu or cuBLAS), and bias_forward_half (kernels/bias.cu).
Precision: float16 inputs (mixed precision) are multiplied and summed in float32 and rounded to
float16 once, as tensor cores do (minialex/ops/precision.py); under ma.autocast() float32 inputs
and weights are cast to float16 first.
"""
from typing import NamedTuple

import numpy as np

from ..errors import fail
from ..function import Function
from .precision import autocast_inputs


class LinearCache(NamedTuple):
    x2: object         # (N, in) x with its leading axes flattened
    w: object          # (out, in)
    x_shape: tuple
    has_bias: bool


def linear_forward(x, w, b):
    a = np.float32 if x.dtype == np.float16 else x.dtype   # float16 in: products summed in float32
    x2 = x.reshape(-1, x.shape[-1])                  # (N, in)
    y = np.matmul(x2.astype(a, copy=False), w.T.astype(a, copy=False))   # (N, out)
    if b is not None:
        y += b.astype(a, copy=False)
    y = y.astype(x.dtype, copy=False)                # rounded once to the inputs' dtype
    return y.reshape(*x.shape[:-1], w.shape[0]), LinearCache(x2, w, x.shape, b is not None)


def linear_backward(dy, cache, needs):
    x2, w, x_shape, has_bias = cache
    a, t = (np.float32 if dy.dtype == np.float16 else dy.dtype), dy.dtype
    dy2 = dy.reshape(-1, w.shape[0]).astype(a, copy=False)             # (N, out)
    dx = np.matmul(dy2, w.astype(a, copy=False)).astype(t, copy=False).reshape(x_shape) if needs[0] else None
    dw = np.matmul(dy2.T, x2.astype(a, copy=False)).astype(t, copy=False) if needs[1] else None   # (out, in)
    db = dy2.sum(axis=0).astype(t, copy=False) if has_bias and needs[2] else None               # (out,)
    return dx, dw, db


class Linear(Function):
    input_names = ("x", "weight", "bias")
    reference = (linear_forward, linear_backward)
    cuda = ("minialex.cuda_ops.linear", "linear_forward", "linear_backward")


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
    x, weight, bias = autocast_inputs(x, weight, bias)   # (mixed precision: float16 copies)
    return Linear.apply(x, weight, bias)
