"""ReLU: y = max(x, 0), elementwise, any shape.

Backward: dx = dy where x > 0, else 0   (the slope of max(x, 0) is 1 right of 0 and 0 left of it;
at exactly 0 we take 0, as PyTorch does).

Paper: section 3.1, "ReLU Nonlinearity" (six times faster to train than tanh on CIFAR-10).
CUDA path: kernels/relu.cu.
"""
import numpy as np

from .. import backend, cuda
from ..function import Function


def relu_forward(x):
    x_flat = np.ascontiguousarray(x).reshape(-1)
    y, mask = np.empty(x.shape, x.dtype), np.empty(x.shape, bool)   # mask: x > 0
    y_flat, mask_flat = y.reshape(-1), mask.reshape(-1)

    def rectify(lo, hi):  # a slice of the elements: the cores share the work
        np.greater(x_flat[lo:hi], 0, out=mask_flat[lo:hi])
        np.multiply(x_flat[lo:hi], mask_flat[lo:hi], out=y_flat[lo:hi])
    backend.parallel(rectify, x.size, x.size)
    return y, mask


def relu_backward(dy, mask):
    dy_flat, mask_flat = np.ascontiguousarray(dy).reshape(-1), mask.reshape(-1)
    dx = np.empty(dy.shape, dy.dtype)
    dx_flat = dx.reshape(-1)
    backend.parallel(lambda lo, hi: np.multiply(dy_flat[lo:hi], mask_flat[lo:hi], out=dx_flat[lo:hi]),
                     dy.size, dy.size)
    return (dx,)


def relu_forward_cuda(x):
    y = backend.xp_of(x).empty_like(x)
    cuda.launch("relu", "relu_forward", *cuda.blocks(x.size), y, x, np.int32(x.size))
    return y, x


def relu_backward_cuda(dy, x):
    dx = backend.xp_of(dy).empty_like(dy)
    cuda.launch("relu", "relu_backward", *cuda.blocks(x.size), dx, dy, x, np.int32(x.size))
    return (dx,)


class ReLU(Function):
    numpy = (relu_forward, relu_backward)
    cuda = (relu_forward_cuda, relu_backward_cuda)


def relu(x):
    """max(x, 0) elementwise."""
    return ReLU.apply(x)
