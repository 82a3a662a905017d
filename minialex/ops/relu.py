"""ReLU: y = max(x, 0), elementwise, any shape.

Backward: dx = dy where x > 0, else 0   (the slope of max(x, 0) is 1 right of 0 and 0 left of it;
at exactly 0 we take 0, as PyTorch does).

Paper: section 3.1, "ReLU Nonlinearity" (six times faster to train than tanh on CIFAR-10).
CUDA path: kernels/relu.cu.
"""
from ..function import Function


def relu_forward(x):
    mask = x > 0                         # (same shape as x), bool
    return x * mask, mask


def relu_backward(dy, mask):
    return (dy * mask,)


class ReLU(Function):
    numpy = (relu_forward, relu_backward)


def relu(x):
    """max(x, 0) elementwise."""
    return ReLU.apply(x)
