"""The SGD update as an op, so that the optimizer never branches on the device.

    v <- momentum * v - weight_decay * lr * w - lr * g
    w <- w + v                                       (in place, on w's and v's arrays)

Not differentiable: minialex.optim.SGD applies it under no_grad.
CUDA path: kernels/sgd.cu, one fused pass (the NumPy path makes four).
"""
import numpy as np

from .. import cuda
from ..function import Function


def sgd_update_numpy(w, v, g, lr, momentum, weight_decay):
    v *= momentum                           # momentum * v
    v -= (weight_decay * lr) * w            # - weight_decay * lr * w
    v -= lr * g                             # - lr * g
    w += v                                  # w <- w + v
    return w, None


def sgd_update_cuda(w, v, g, lr, momentum, weight_decay):
    cuda.launch("sgd", "sgd_update", *cuda.blocks(w.size), w, v, g, np.int32(w.size),
                np.float32(lr), np.float32(momentum), np.float32(weight_decay))
    return w, None


class SGDUpdate(Function):
    numpy = (sgd_update_numpy, None)
    cuda = (sgd_update_cuda, None)
