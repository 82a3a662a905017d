"""Softmax cross-entropy, mean over the batch.

Shapes:  logits z (N, K)   target t (N,) integer class labels in [0, K)   loss: a scalar

Forward, stable (subtracting the row max changes nothing mathematically, avoids exp overflow):
    log p[n, k] = z[n, k] - m[n] - log sum_j exp(z[n, j] - m[n]),   m[n] = max_j z[n, j]
    loss = -(1/N) sum_n log p[n, t[n]]           (NaN for an empty batch, as in PyTorch)
Backward, fused (softmax and log cancel):
    dz[n, k] = dloss * (p[n, k] - [k == t[n]]) / N

Paper: section 4 ("maximizes the multinomial logistic regression objective").
Naive loops, forward and backward: minialex/ops/loops.py (cross_entropy_forward, cross_entropy_backward).
CUDA pair: kernels/cross_entropy.cu (one block per row), minialex/cuda_ops/cross_entropy.py.
Precision: float16 logits (mixed precision) are cast to float32 first (a differentiable cast):
the exponentials need float32's range and the log of their sum its precision; the loss is float32.
"""
from typing import NamedTuple

import numpy as np

from .. import backend
from ..errors import fail
from ..function import Function
from ..tensor import Tensor
from .basic import cast


class CrossEntropyCache(NamedTuple):
    probs: object      # (N, K) softmax of the logits
    target: object     # (N,) int32 labels


def cross_entropy_forward(z, target):
    n = z.shape[0]
    shifted = z - z.max(axis=1, keepdims=True)                                    # (N, K)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))          # (N, K)
    loss = -log_p[np.arange(n), target].sum() / n if n else np.nan                # ()
    return np.asarray(loss, dtype=z.dtype), CrossEntropyCache(np.exp(log_p), target)


def cross_entropy_backward(dloss, cache):
    probs, target = cache
    n = probs.shape[0]
    dz = probs.copy()                                                             # p
    dz[np.arange(n), target] -= 1                                                 # p - onehot
    return (dz * (dloss / max(n, 1)),)


class CrossEntropy(Function):
    reference = (cross_entropy_forward, cross_entropy_backward)
    cuda = ("minialex.cuda_ops.cross_entropy", "cross_entropy_forward", "cross_entropy_backward")


def cross_entropy(logits, target):
    """Mean softmax cross-entropy of logits (N, K) against integer labels (N,)."""
    op = "cross_entropy"
    if logits.ndim != 2:
        fail(op, "logits", "2 dimensions (N, K)", f"shape {logits.shape}")
    t = np.asarray(backend.to_numpy(target.data if isinstance(target, Tensor) else target))
    if t.dtype.kind not in "iu":
        fail(op, "target", "integer class labels", f"dtype {t.dtype}", TypeError)
    n, k = logits.shape
    if t.shape != (n,):
        fail(op, "target", f"shape ({n},), one label per logits row", f"shape {t.shape}")
    if n and (t.min() < 0 or t.max() >= k):
        bad = t[(t < 0) | (t >= k)][0]
        fail(op, "target", f"labels in [0, {k})", f"label {bad}")
    if logits.dtype == np.float16:       # mixed precision: the softmax and the log of its sum in float32
        logits = cast(logits, np.float32)
    return CrossEntropy.apply(logits, target=backend.to_device(t.astype(np.int32), logits.device))
