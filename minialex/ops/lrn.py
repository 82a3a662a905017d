"""Local response normalization across channels, the paper's formula (section 3.3), NCHW.

    b[c] = a[c] / s[c]^beta,   s[c] = k + alpha * sum_{j in window(c)} a[j]^2
    window(c) = channels c - size//2 .. c + (size-1)//2, clipped to 0 .. C-1
    (for odd size, the `size` channels centred on c: the paper's n = 5 gives c-2 .. c+2)

Backward, with y = b and t[c] = dy[c] * y[c] / s[c]:
    dx[m] = dy[m] * s[m]^-beta  -  2 * alpha * beta * a[m] * sum_{c : m in window(c)} t[c]
    (first term: a[m] in the numerator; second: a[m]^2 inside every s[c] whose window holds m,
     d(s^-beta)/ds = -beta s^(-beta-1), ds[c]/da[m] = 2 alpha a[m])

NOTE: the paper's alpha multiplies the plain sum. PyTorch (nn.LocalResponseNorm), Caffe and the
original cuda-convnet code divide alpha by `size` first: their alpha=size*a equals our alpha=a.
Paper hyper-parameters: k=2, n=5, alpha=1e-4, beta=0.75 (our defaults).
CUDA path: kernels/lrn.cu.
"""
import numpy as np

from .. import backend, cuda
from ..errors import check_positive_int, fail
from ..function import Function


def channel_window_sum(a, before, after):
    """out[:, c] = sum of a[:, j] for j in c-before .. c+after, clipped to the channel range."""
    out = np.zeros_like(a)
    n_channels = a.shape[1]
    for d in range(-before, after + 1):  # one slice-add per offset: out[:, c] += a[:, c + d]
        if abs(d) >= n_channels:
            continue
        if d >= 0:
            out[:, :n_channels - d] += a[:, d:]
        else:
            out[:, -d:] += a[:, :n_channels + d]
    return out


def _power(s, exponent):
    """s ** exponent; for the paper's beta = 0.75, s^-0.75 = 1 / (sqrt(s) * sqrt(sqrt(s))):
    two square roots are several times faster than a general power."""
    if exponent == -0.75:
        r = np.sqrt(s)
        return 1.0 / (r * np.sqrt(r))
    return s ** exponent


def lrn_forward(x, size, alpha, beta, k):
    y, scale, s_pow = np.empty_like(x), np.empty_like(x), np.empty_like(x)

    def normalize(lo, hi):  # images lo..hi-1, so the cores can share the work
        a = x[lo:hi]
        s = channel_window_sum(a * a, size // 2, (size - 1) // 2)          # sum of a^2
        s *= alpha                                                          # in place: no temporaries
        s += k                                                              # s: (N, C, H, W)
        scale[lo:hi] = s
        s_pow[lo:hi] = _power(s, -beta)                                     # s^-beta, kept for backward
        np.multiply(a, s_pow[lo:hi], out=y[lo:hi])                          # b = a / s^beta
    backend.parallel(normalize, x.shape[0], x.size)
    return y, (x, y, scale, s_pow, size, alpha, beta)


def lrn_backward(dy, cache):
    x, y, scale, s_pow, size, alpha, beta = cache
    dx = np.empty_like(dy)

    def differentiate(lo, hi):  # images lo..hi-1, so the cores can share the work
        t = dy[lo:hi] * y[lo:hi]
        t /= scale[lo:hi]                                                   # dy[c] * a[c] * s[c]^(-beta-1)
        # m lies in window(c) exactly when c lies in m - (size-1)//2 .. m + size//2: the mirrored window
        back = channel_window_sum(t, (size - 1) // 2, size // 2)
        back *= x[lo:hi]
        back *= 2 * alpha * beta
        np.multiply(dy[lo:hi], s_pow[lo:hi], out=dx[lo:hi])
        dx[lo:hi] -= back
    backend.parallel(differentiate, dy.shape[0], dy.size)
    return (dx,)


def _sizes(x):
    n, c = x.shape[:2]
    return np.int32(n), np.int32(c), np.int32(x.size // (n * c))         # N, C, H*W


def lrn_forward_cuda(x, size, alpha, beta, k):
    xp = backend.xp_of(x)
    y, scale = xp.empty_like(x), xp.empty_like(x)
    cuda.launch("lrn", "lrn_forward", *cuda.blocks(x.size), y, scale, x, *_sizes(x),
                np.int32(size), np.float32(alpha), np.float32(beta), np.float32(k))
    return y, (x, y, scale, size, alpha, beta)


def lrn_backward_cuda(dy, cache):
    x, y, scale, size, alpha, beta = cache
    dx = backend.xp_of(dy).empty_like(dy)
    cuda.launch("lrn", "lrn_backward", *cuda.blocks(x.size), dx, dy, x, y, scale, *_sizes(x),
                np.int32(size), np.float32(alpha), np.float32(beta))
    return (dx,)


class LocalResponseNorm(Function):
    numpy = (lrn_forward, lrn_backward)
    cuda = (lrn_forward_cuda, lrn_backward_cuda)


def local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """The paper's LRN (alpha NOT divided by size; PyTorch's alpha = size * ours). See module docstring."""
    op = "local_response_norm"
    if x.ndim != 4:
        fail(op, "x", "4 dimensions (N, C, H, W)", f"shape {x.shape}")
    size = check_positive_int(op, "size", size)
    if k <= 0:
        fail(op, "k", "a number > 0 (s = k + alpha*sum must stay positive)", k)
    if alpha < 0:
        fail(op, "alpha", "a number >= 0", alpha)
    return LocalResponseNorm.apply(x, size=size, alpha=float(alpha), beta=float(beta), k=float(k))
