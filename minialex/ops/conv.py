"""2-D convolution (cross-correlation, as in every framework), NCHW.

Shapes:  x (N, C, H, W)   w (O, C/G, KH, KW)   b (O,)   y (N, O, OH, OW)
         OH = (H + 2*PH - KH) // SH + 1   (floor, as the paper's table: 227 -> 55 with 11x11 stride 4)
         G groups: input channels and filters split into G independent convolutions
         (the paper's two GPU "towers" are groups=2 in conv2, conv4, conv5).

Forward as one matrix product per group (im2col), the whole batch at once:
    cols[(c, i, j), (n, oh, ow)] = xpad[n, c, oh*SH + i, ow*SW + j]        (C*KH*KW, N*OH*OW)
    y[n, o, oh, ow] = (w[o, :] @ cols[group(o) rows, :])[(n, oh, ow)] + b[o]

Backward (each line inverts the forward line above it):
    db[o]  = sum over n, oh, ow of dy[n, o, oh, ow]                   b was added to every pixel
    dw     = dy_t @ cols^T,   dy_t = dy as (O, N*OH*OW)               y = w @ cols: dL/dw = dy cols^T
    dcols  = w^T @ dy_t                                               and dL/dcols = w^T dy
    dx     = col2im(dcols): each column entry is added back to the pixel it was copied from;
             overlapping windows (stride < kernel) add several entries into one pixel.
The backward builds cols again from x rather than keeping them: they are KH*KW times the size
of x (conv2 of AlexNet: 25x), and x is kept by the graph anyway.

Algorithms (`algorithm=`): "im2col" is the above; "winograd" computes the same y for stride 1
with fewer multiplications (minialex/ops/winograd.py); "auto" takes Winograd's F(2x2, 3x3) where
`use_winograd` says so and im2col elsewhere, the same rule on every device.

Paper: section 3.5 (the architecture), 11x11 stride 4 in conv1.
Naive loops, forward and backward: minialex/ops/loops.py (conv2d_forward, conv2d_backward).
Fast CPU pair: minialex/cpu/conv.py.
CUDA pair: kernels/conv.cu (im2col, col2im), kernels/gemm.cu or cuBLAS, minialex/cuda_ops/conv.py.
"""
from typing import NamedTuple

import numpy as np

from ..cpu import conv as fast
from ..cuda_ops import conv as kernels
from ..errors import check_pair, check_positive_int, fail
from ..function import Function
from .windows import conv_outsize, pad


class ConvCache(NamedTuple):
    x: object          # (N, C, H, W) the input: cols are built again from it in the backward
    w: object          # (O, C/G, KH, KW)
    has_bias: bool
    stride: tuple      # (SH, SW)
    padding: tuple     # (PH, PW)
    groups: int


def im2col(x, kh, kw, stride, padding):
    """(N, C, H, W) -> cols (C*KH*KW, N*OH*OW): rows (c, i, j) as in w.reshape(O, -1), columns (n, oh, ow)."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x.shape
    oh, ow = conv_outsize(h, kh, sh, ph), conv_outsize(w, kw, sw, pw)
    xp = pad(x, ph, pw)                                             # (N, C, H+2PH, W+2PW)
    cols = np.empty((c, kh, kw, n, oh, ow), x.dtype)
    for i in range(kh):
        for j in range(kw):  # offset (i, j) of every window at once
            cols[:, i, j] = xp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw].transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, n * oh * ow)


def col2im(dcols, x_shape, kh, kw, stride, padding):
    """The adjoint of im2col: (C*KH*KW, N*OH*OW) -> (N, C, H, W), overlapping entries added."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x_shape
    oh, ow = conv_outsize(h, kh, sh, ph), conv_outsize(w, kw, sw, pw)
    d = dcols.reshape(c, kh, kw, n, oh, ow)
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dcols.dtype)
    for i in range(kh):
        for j in range(kw):  # each entry goes back to the pixel it was copied from
            dxp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += d[:, i, j].transpose(1, 0, 2, 3)
    return dxp[:, :, ph:ph + h, pw:pw + w]


def conv2d_forward(x, w, b, stride, padding, groups):
    (n, _, h, wd), (o, cg, kh, kw) = x.shape, w.shape
    oh, ow = conv_outsize(h, kh, stride[0], padding[0]), conv_outsize(wd, kw, stride[1], padding[1])
    k, nl = cg * kh * kw, n * oh * ow
    cols = im2col(x, kh, kw, stride, padding)                          # (C*KH*KW, N*OH*OW)
    y = w.reshape(groups, o // groups, k) @ cols.reshape(groups, k, nl)   # (G, O/G, N*OH*OW), per group
    y = y.reshape(o, n, oh, ow).transpose(1, 0, 2, 3)                  # (N, O, OH, OW)
    if b is not None:
        y = y + b.reshape(1, o, 1, 1)
    return np.ascontiguousarray(y), ConvCache(x, w, b is not None, stride, padding, groups)


def conv2d_backward(dy, cache, needs):
    x, w, has_bias, stride, padding, groups = cache
    o, cg, kh, kw = w.shape
    k, nl = cg * kh * kw, dy.shape[0] * dy.shape[2] * dy.shape[3]
    dy_t = dy.transpose(1, 0, 2, 3).reshape(groups, o // groups, nl)   # (G, O/G, N*OH*OW)
    dx = dw = db = None
    if needs[0]:
        dcols = w.reshape(groups, o // groups, k).transpose(0, 2, 1) @ dy_t   # (G, Cg*KH*KW, N*OH*OW)
        dx = col2im(dcols.reshape(groups * k, nl), x.shape, kh, kw, stride, padding)
    if needs[1]:
        cols = im2col(x, kh, kw, stride, padding)                      # again, from x (see above)
        dw = (dy_t @ cols.reshape(groups, k, nl).transpose(0, 2, 1)).reshape(w.shape)
    if has_bias and needs[2]:
        db = dy.sum(axis=(0, 2, 3))                                    # (O,)
    return dx, dw, db


class Conv2d(Function):
    input_names = ("x", "weight", "bias")
    reference = (conv2d_forward, conv2d_backward)
    fast = (fast.conv2d_forward, fast.conv2d_backward)
    cuda = (kernels.conv2d_forward, kernels.conv2d_backward)


ALGORITHMS = ("auto", "im2col", "winograd")
WINOGRAD_MIN_CHANNELS = 128  # below, the transforms cost more than the products save (see use_winograd)


def use_winograd(x_shape, w_shape, stride, groups):
    """The "auto" rule: Winograd F(2x2, r) (a tile of 2 + r - 1 <= winograd.AUTO_TILE_INPUT, as
    accurate as im2col: kernels of 2 or 3 taps per side) for stride 1 with at least
    WINOGRAD_MIN_CHANNELS input channels and filters per group; im2col elsewhere. AlexNet: conv3 -
    conv5 (3x3, 192 - 384 channels per group); conv1 (11x11, stride 4) and conv2 (5x5, whose tiles
    are larger) stay im2col, as do alexnet-mini's 64 - 96 channel layers: measured on 2 CPU cores
    (benchmarks/RESULTS.md), Winograd's transforms made those 1.4 - 2x slower than im2col."""
    o, cg, kh, kw = w_shape
    return (tuple(stride) == (1, 1) and 2 + max(kh, kw) - 1 <= winograd.AUTO_TILE_INPUT
            and min(kh, kw) >= 2 and cg >= WINOGRAD_MIN_CHANNELS and o // groups >= WINOGRAD_MIN_CHANNELS)


def conv2d(x, weight, bias=None, stride=1, padding=0, groups=1, algorithm="auto", *, tile=None):
    """y = conv(x, weight) + bias, NCHW; weight (O, C/groups, KH, KW). See the module docstring.

    algorithm: "auto" (Winograd where `use_winograd` says so), "im2col", or "winograd" (stride 1
    only). tile: Winograd's outputs per tile, m or (m_h, m_w) (default: winograd.choose_tile)."""
    op = "conv2d"
    if x.ndim != 4:
        fail(op, "x", "4 dimensions (N, C, H, W)", f"shape {x.shape}")
    if weight.ndim != 4:
        fail(op, "weight", "4 dimensions (O, C/groups, KH, KW)", f"shape {weight.shape}")
    stride, padding = check_pair(op, "stride", stride), check_pair(op, "padding", padding, minimum=0)
    groups = check_positive_int(op, "groups", groups)
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    if c % groups:
        fail(op, "groups", f"a divisor of the {c} input channels", groups)
    if o % groups:
        fail(op, "groups", f"a divisor of the {o} filters (weight.shape[0])", groups)
    if cg * groups != c:
        fail(op, "weight", f"shape[1] = C/groups = {c}/{groups} = {c // groups} (x has {c} channels)",
             f"shape {weight.shape}")
    if bias is not None and bias.shape != (o,):
        fail(op, "bias", f"shape ({o},), one per filter", f"shape {bias.shape}")
    if kh > h + 2 * padding[0] or kw > w + 2 * padding[1]:
        fail(op, "weight", f"a kernel no larger than the padded input "
             f"{h + 2 * padding[0]}x{w + 2 * padding[1]}", f"kernel {kh}x{kw}")
    if algorithm not in ALGORITHMS:
        fail(op, "algorithm", " or ".join(repr(a) for a in ALGORITHMS), repr(algorithm))
    if tile is not None and algorithm != "winograd":
        fail(op, "tile", "None unless algorithm='winograd'", f"tile={tile!r} with algorithm={algorithm!r}")
    if algorithm == "auto":
        if use_winograd(x.shape, weight.shape, stride, groups):
            algorithm, tile = "winograd", (2, 2)
        else:
            algorithm = "im2col"
    if algorithm == "im2col":
        return Conv2d.apply(x, weight, bias, stride=stride, padding=padding, groups=groups)
    if stride != (1, 1):
        fail(op, "stride", "1 with algorithm='winograd' (use 'im2col' or 'auto' for strided convolutions)",
             stride)
    oh, ow = h + 2 * padding[0] - kh + 1, w + 2 * padding[1] - kw + 1
    if max(kh, kw) > winograd.MAX_TILE_INPUT:
        fail(op, "weight", f"a kernel of at most {winograd.MAX_TILE_INPUT} taps per side with "
             f"algorithm='winograd' (use 'im2col' or 'auto')", f"kernel {kh}x{kw}")
    if tile is None:  # algorithm="winograd" with no tile: the fewest multiplications
        tile = (winograd.choose_tile(kh, oh), winograd.choose_tile(kw, ow))
        if None in tile:
            fail(op, "weight", f"a kernel of at most {winograd.MAX_TILE_INPUT - 1} taps per side with "
                 f"algorithm='winograd' and no tile (tile=1 takes {winograd.MAX_TILE_INPUT})", f"kernel {kh}x{kw}")
    else:
        given, tile = tile, check_pair(op, "tile", tile)
        if max(tile[0] + kh, tile[1] + kw) - 1 > winograd.MAX_TILE_INPUT:
            fail(op, "tile", f"m + kernel - 1 <= {winograd.MAX_TILE_INPUT} per axis "
                 f"(kernel {kh}x{kw})", repr(given))
    return winograd.WinogradConv2d.apply(x, weight, bias, padding=padding, groups=groups, tile=tile)


from . import winograd  # noqa: E402  (it computes im2col's result where its own is not finite)
