"""Softmax cross-entropy, mean over the batch.

Shapes:  logits z (N, K)   target t (N,) integer class labels in [0, K)   loss: a scalar

Forward, stable (subtracting the row max changes nothing mathematically, avoids exp overflow):
    log p[n, k] = z[n, k] - m[n] - log sum_j exp(z[n, j] - m[n]),   m[n] = max_j z[n, j]
    loss = -(1/N) sum_n log p[n, t[n]]
Backward, fused (softmax and log cancel):
    dz[n, k] = dloss * (p[n, k] - [k == t[n]]) / N

Paper: section 4 ("maximizes the multinomial logistic regression objective").
CUDA path: kernels/softmax.cu (one block per row).
"""
import numpy as np

from .. import backend, cuda
from ..errors import fail
from ..function import Function
from ..tensor import Tensor


def cross_entropy_forward(z, target):
    n = z.shape[0]
    xp = backend.xp_of(z)
    shifted = z - z.max(axis=1, keepdims=True)                                    # (N, K)
    log_p = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))          # (N, K)
    loss = -log_p[xp.arange(n), target].sum() / z.dtype.type(n)                   # ()
    return xp.asarray(loss, dtype=z.dtype), (xp.exp(log_p), target)               # probs: (N, K)


def cross_entropy_backward(dloss, cache):
    probs, target = cache
    n = probs.shape[0]
    dz = probs.copy()                                                             # p
    dz[backend.xp_of(dz).arange(n), target] -= 1                                  # p - onehot
    return (dz * (dloss / n),)


def cross_entropy_forward_cuda(z, target):
    xp = backend.xp_of(z)
    n, k = z.shape
    row_loss, probs = xp.empty((n,), dtype=np.float32), xp.empty_like(z)
    cuda.launch("softmax", "softmax_forward", (n,), (256,), row_loss, probs, z, target, np.int32(n), np.int32(k))
    return row_loss.sum(), (probs, target)                 # the mean: each row holds -log p / N


def cross_entropy_backward_cuda(dloss, cache):
    probs, target = cache
    n, k = probs.shape
    dz = backend.xp_of(probs).empty_like(probs)
    cuda.launch("softmax", "softmax_backward", *cuda.blocks(dz.size), dz, probs, target, dloss,
                np.int32(n), np.int32(k))
    return (dz,)


class CrossEntropy(Function):
    numpy = (cross_entropy_forward, cross_entropy_backward)
    cuda = (cross_entropy_forward_cuda, cross_entropy_backward_cuda)


def cross_entropy(logits, target):
    """Mean softmax cross-entropy of logits (N, K) against integer labels (N,)."""
    op = "cross_entropy"
    if logits.ndim != 2:
        fail(op, "logits", "2 dimensions (N, K)", f"shape {logits.shape}")
    t = backend.to_numpy(target.data if isinstance(target, Tensor) else target)
    t = np.asarray(t)
    if t.dtype.kind not in "iu":
        fail(op, "target", "integer class labels", f"dtype {t.dtype}", TypeError)
    n, k = logits.shape
    if t.shape != (n,):
        fail(op, "target", f"shape ({n},), one label per logits row", f"shape {t.shape}")
    if n and (t.min() < 0 or t.max() >= k):
        bad = t[(t < 0) | (t >= k)][0]
        fail(op, "target", f"labels in [0, {k})", f"label {bad}")
    return CrossEntropy.apply(logits, target=backend.to_device(t.astype(np.int32), logits.device))
