"""The SGD update, CUDA: kernels/sgd.cu, one fused pass, one thread per element.
Math: minialex/ops/sgd.py."""
import numpy as np

from .. import cuda


def sgd_update(w, v, g, lr, momentum, weight_decay):
    if w.size:
        cuda.launch("sgd", "sgd_update", *cuda.blocks(w.size), w, v, g, np.int32(w.size),
                    np.float32(lr), np.float32(momentum), np.float32(weight_decay))
