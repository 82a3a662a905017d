"""The SGD update, fast CPU version: the reference's four in-place lines (minialex/ops/sgd.py), in
the same order (equal bit for bit), run chunk by chunk and split over the cores.

On the whole model each line would stream every parameter through memory (~250 MB for AlexNet);
on a cache-sized chunk the four lines touch memory about once. 2^18 elements (1 MiB of float32)
per chunk: the measurements behind that size are in benchmarks/RESULTS.md.
"""
from .threads import parallel

CHUNK = 1 << 18


def sgd_update(w, v, g, lr, momentum, weight_decay):
    w_flat, v_flat, g_flat = w.reshape(-1), v.reshape(-1), g.reshape(-1)   # views: all are C-contiguous

    def update(lo, hi):  # chunks lo..hi-1
        for s in range(lo * CHUNK, min(hi * CHUNK, w_flat.size), CHUNK):
            wc, vc, gc = w_flat[s:s + CHUNK], v_flat[s:s + CHUNK], g_flat[s:s + CHUNK]
            vc *= momentum
            vc -= weight_decay * lr * wc
            vc -= lr * gc
            wc += vc
    parallel(update, -(-w_flat.size // CHUNK), w_flat.size)
