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
    x1 = np.atleast_1d(x)                    # a view (0-d becomes (1,)): the cores split its first axis
    y, mask = np.empty(x1.shape, x.dtype), np.empty(x1.shape, bool)     # mask: x > 0

    def rectify(lo, hi):  # rows lo..hi-1
        np.greater(x1[lo:hi], 0, out=mask[lo:hi])
        np.multiply(x1[lo:hi], mask[lo:hi], out=y[lo:hi])
    backend.parallel(rectify, x1.shape[0], x1.size)
    return y.reshape(x.shape), mask.reshape(x.shape)


def relu_backward(dy, mask):
    dy1, mask1 = np.atleast_1d(dy), np.atleast_1d(mask)
    dx = np.empty(dy1.shape, dy.dtype)
    backend.parallel(lambda lo, hi: np.multiply(dy1[lo:hi], mask1[lo:hi], out=dx[lo:hi]), dy1.shape[0], dy1.size)
    return (dx.reshape(dy.shape),)


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
