"""Local response normalization across channels, the paper's formula (section 3.3), NCHW.

    b[c] = a[c] / s[c]^beta,   s[c] = k + alpha * sum_{j in window(c)} a[j]^2
    window(c) = channels c - size//2 .. c + (size-1)//2, clipped to 0 .. C-1
    (for odd size, the `size` channels centred on c: the paper's n = 5 gives c-2 .. c+2)

Backward, with y = b and t[c] = dy[c] * y[c] / s[c]:
    dx[m] = dy[m] * s[m]^-beta  -  2 * alpha * beta * a[m] * sum_{c : m in window(c)} t[c]
    (first term: a[m] in the numerator; second: a[m]^2 inside every s[c] whose window holds m,
     d(s^-beta)/ds = -beta s^(-beta-1), ds[c]/da[m] = 2 alpha a[m])
    m lies in window(c) exactly when c lies in m - (size-1)//2 .. m + size//2: the mirrored window.

NOTE: the paper's alpha multiplies the plain sum. PyTorch (nn.LocalResponseNorm), Caffe and the
original cuda-convnet code divide alpha by `size` first: their alpha=size*a equals our alpha=a.
Paper hyper-parameters: k=2, n=5, alpha=1e-4, beta=0.75 (our defaults).
Precision: float16 inputs (mixed precision) are normalised in float32 — a[j]^2 overflows float16
above 256, and a sum of small squares loses them — and the output rounded to float16 once.
Naive loops, forward and backward: minialex/ops/loops.py (lrn_forward, lrn_backward).
Fast CPU pair: minialex/cpu/lrn.py.   CUDA pair: kernels/lrn.cu, minialex/cuda_ops/lrn.py.
float16 on the CUDA path: lrn_forward_half, lrn_backward_half.
"""
from typing import NamedTuple

import numpy as np

from ..errors import check_finite, check_positive_int, fail
from ..function import Function


class LRNCache(NamedTuple):
    x: object          # (N, C, H, W) the input a
    y: object          # (N, C, H, W) the output b
    scale: object      # (N, C, H, W) s
    size: int
    alpha: float
    beta: float


def window_sum(a, before, after):
    """out[:, c] = sum of a[:, c - before .. c + after], channels outside 0 .. C-1 counting as 0."""
    c = a.shape[1]
    padded = np.pad(a, ((0, 0), (before, after), (0, 0), (0, 0)))     # (N, C + before + after, H, W)
    return sum(padded[:, d:d + c] for d in range(before + after + 1))


def lrn_forward(x, size, alpha, beta, k):
    xa = x.astype(np.float32 if x.dtype == np.float16 else x.dtype, copy=False)   # float16: the sums in float32
    scale = k + alpha * window_sum(xa * xa, size // 2, (size - 1) // 2)   # s: (N, C, H, W)
    y = xa * scale ** -beta                                            # b = a / s^beta
    return y.astype(x.dtype, copy=False), LRNCache(xa, y, scale, size, alpha, beta)


def lrn_backward(dy, cache):
    x, y, scale, size, alpha, beta = cache                             # (x, y, scale: in the sums' dtype)
    d = dy.astype(x.dtype, copy=False)
    t = d * y / scale                                                  # dy[c] * a[c] * s[c]^(-beta-1)
    back = window_sum(t, (size - 1) // 2, size // 2)                   # over the mirrored window
    dx = d * scale ** -beta - 2 * alpha * beta * x * back
    return (dx.astype(dy.dtype, copy=False),)


class LocalResponseNorm(Function):
    reference = (lrn_forward, lrn_backward)
    fast = ("minialex.cpu.lrn", "lrn_forward", "lrn_backward")
    cuda = ("minialex.cuda_ops.lrn", "lrn_forward", "lrn_backward")


def local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """The paper's LRN (alpha NOT divided by size; PyTorch's alpha = size * ours). See module docstring."""
    op = "local_response_norm"
    if x.ndim != 4:
        fail(op, "x", "4 dimensions (N, C, H, W)", f"shape {x.shape}")
    size = check_positive_int(op, "size", size)
    alpha, beta, k = (check_finite(op, name, v) for name, v in (("alpha", alpha), ("beta", beta), ("k", k)))
    if k <= 0:
        fail(op, "k", "a number > 0 (s = k + alpha*sum must stay positive)", k)
    if alpha < 0:
        fail(op, "alpha", "a number >= 0", alpha)
    return LocalResponseNorm.apply(x, size=size, alpha=alpha, beta=beta, k=k)
