"""The SGD update of one parameter, the paper's rule (section 5):

    v <- momentum * v - weight_decay * lr * w - lr * g
    w <- w + v                                       (in place, on w's and v's arrays)

Not a graph op (it changes parameters, it is not differentiated): minialex.optim.SGD calls
`sgd_update`, which runs the update that minialex.function.implementation picks for the device.
Fast CPU update: minialex/cpu/sgd.py.   CUDA: kernels/sgd.cu (one fused pass), minialex/cuda_ops/sgd.py.
"""
from ..function import implementation


def sgd_update_reference(w, v, g, lr, momentum, weight_decay):
    v *= momentum                          # momentum * v
    v -= weight_decay * lr * w             # - weight_decay * lr * w
    v -= lr * g                            # - lr * g
    w += v                                 # w <- w + v


class SGDUpdate:
    reference = sgd_update_reference
    fast = ("minialex.cpu.sgd", "sgd_update")
    cuda = ("minialex.cuda_ops.sgd", "sgd_update")


def sgd_update(w, v, g, lr, momentum, weight_decay, device):
    """Update the arrays w (the parameter) and v (its velocity) in place from the gradient g;
    all three C-contiguous, of one shape and dtype, on `device`."""
    update, _ = implementation(SGDUpdate, device)
    update(w, v, g, lr, momentum, weight_decay)
