"""The SGD update as an op, so that the optimizer never branches on the device.

    v <- momentum * v - weight_decay * lr * w - lr * g
    w <- w + v                                       (in place, on w's and v's arrays)

Not differentiable: minialex.optim.SGD applies it under no_grad.
CUDA path: kernels/sgd.cu, one fused pass (the NumPy path makes four).
"""
import numpy as np

from .. import backend, cuda
from ..function import Function


# elements per chunk: 1 MiB per float32 array, so a chunk's arrays and temporaries stay in cache,
# and few enough calls (AlexNet on 2 cores: 52 ms per update, against 74 ms with 64K-element chunks)
CHUNK = 1 << 18


def sgd_update_numpy(w, v, g, lr, momentum, weight_decay):
    # Chunk by chunk: each numpy operation below reads and writes whole arrays, so on the full
    # 62M-parameter model every line would stream ~250 MB through memory; on a cache-sized chunk
    # the four lines touch memory about once.
    w_flat, v_flat, g_flat = w.reshape(-1), v.reshape(-1), g.reshape(-1)   # views of w and v

    def update(lo, hi):  # chunks lo..hi-1, shared by the cores: one core alone cannot fill the memory bus
        for s in range(lo * CHUNK, min(hi * CHUNK, w_flat.size), CHUNK):
            wc, vc, gc = w_flat[s:s + CHUNK], v_flat[s:s + CHUNK], g_flat[s:s + CHUNK]
            vc *= momentum                      # momentum * v
            vc -= (weight_decay * lr) * wc      # - weight_decay * lr * w
            vc -= lr * gc                       # - lr * g
            wc += vc                            # w <- w + v
    backend.parallel(update, -(-w_flat.size // CHUNK), w_flat.size)
    return w, None


def sgd_update_cuda(w, v, g, lr, momentum, weight_decay):
    cuda.launch("sgd", "sgd_update", *cuda.blocks(w.size), w, v, g, np.int32(w.size),
                np.float32(lr), np.float32(momentum), np.float32(weight_decay))
    return w, None


class SGDUpdate(Function):
    numpy = (sgd_update_numpy, None)
    cuda = (sgd_update_cuda, None)
