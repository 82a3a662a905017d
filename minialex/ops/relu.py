"""ReLU: y = max(x, 0), elementwise, any shape.

Backward: dx = dy where x > 0, else 0   (the slope of max(x, 0) is 1 right of 0 and 0 left of it;
at exactly 0 we take 0, as PyTorch does).

NOTE: non-finite inputs behave as in PyTorch: relu(NaN) = NaN (np.maximum propagates NaN) and its
gradient passes dy (the test is `x <= 0`, false for NaN); relu(-inf) = 0 with gradient 0. Both are
selects, not products with a 0/1 mask, so relu(-1) is 0.0 (not -0.0) and an infinite dy never
becomes NaN.

Paper: section 3.1, "ReLU Nonlinearity" (six times faster to train than tanh on CIFAR-10).
Naive loops, forward and backward: minialex/ops/loops.py (relu_forward, relu_backward).
Fast CPU pair: minialex/cpu/relu.py.   CUDA pair: kernels/relu.cu, minialex/cuda_ops/relu.py.
float16 on the CUDA path: relu_forward_half, relu_backward_half (two halves per thread, a __half2).
"""
import numpy as np

from ..function import Function


def relu_forward(x):
    y = np.maximum(x, x.dtype.type(0))                       # same shape as x
    return y, x                                              # cache: x


def relu_backward(dy, x):
    dx = np.where(x <= 0, dy.dtype.type(0), dy)              # dy where x > 0 (or NaN), else 0
    return (dx,)


class ReLU(Function):
    reference = (relu_forward, relu_backward)
    fast = ("minialex.cpu.relu", "relu_forward", "relu_backward")
    cuda = ("minialex.cuda_ops.relu", "relu_forward", "relu_backward")


def relu(x):
    """max(x, 0) elementwise."""
    return ReLU.apply(x)
