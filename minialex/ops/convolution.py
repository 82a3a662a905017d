"""F.conv2d: the public 2-D convolution, its argument checks and the choice of algorithm.

    y = conv2d(x, weight, bias=None, stride=1, padding=0, groups=1, algorithm="auto")

Shapes:  x (N, C, H, W)   weight (O, C/G, KH, KW)   bias (O,)   y (N, O, OH, OW)

The math lives in the two op files below this one, each with its reference pair and Function:
    minialex/ops/conv.py        im2col: one matrix product per group, any stride
    minialex/ops/winograd.py    Winograd's minimal filtering: the same y for stride 1, fewer
                                multiplications (it falls back on conv.py's pair where its own
                                result is not finite)
"auto" takes Winograd's F(2x2, 3x3) where `use_winograd` says so and im2col elsewhere, the same
rule on every device. nn.Conv2d checks its settings with the same `check_settings` when it is
built, so a layer that could never run is refused there.
"""
import numpy as np

from ..errors import check_pair, check_positive_int, fail
from ..tensor import Tensor
from . import conv, winograd
from .precision import autocast_inputs

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


def check_settings(op, channels, filters, stride, padding, groups, algorithm):
    """(stride, padding, groups) as two (h, w) pairs and an int, or the error naming the argument:
    the checks F.conv2d (op "conv2d") and nn.Conv2d (op "Conv2d", when built) share."""
    if algorithm not in ALGORITHMS:
        fail(op, "algorithm", " or ".join(repr(a) for a in ALGORITHMS), repr(algorithm))
    given_stride = stride
    stride, padding = check_pair(op, "stride", stride), check_pair(op, "padding", padding, minimum=0)
    groups = check_positive_int(op, "groups", groups)
    if channels % groups:
        fail(op, "groups", f"a divisor of the {channels} input channels", groups)
    if filters % groups:
        fail(op, "groups", f"a divisor of the {filters} filters (weight.shape[0])", groups)
    if algorithm == "winograd" and stride != (1, 1):  # "auto" never takes Winograd for a stride
        fail(op, "stride", "1 with algorithm='winograd' (use 'im2col' or 'auto' for strided convolutions)",
             repr(given_stride))
    return stride, padding, groups


def _winograd_tile(op, weight_shape, out_shape, tile):
    """The (m_h, m_w) tile for algorithm="winograd": the given one checked, or the one with the
    fewest multiplications."""
    (kh, kw), (oh, ow) = weight_shape[2:], out_shape
    if max(kh, kw) > winograd.MAX_TILE_INPUT:
        fail(op, "weight", f"a kernel of at most {winograd.MAX_TILE_INPUT} taps per side with "
             f"algorithm='winograd' (use 'im2col' or 'auto')", f"kernel {kh}x{kw}")
    if tile is None:
        tile = (winograd.choose_tile(kh, oh), winograd.choose_tile(kw, ow))
        if None in tile:
            fail(op, "weight", f"a kernel of at most {winograd.MAX_TILE_INPUT - 1} taps per side with "
                 f"algorithm='winograd' and no tile (tile=1 takes {winograd.MAX_TILE_INPUT})", f"kernel {kh}x{kw}")
        return tile
    given, tile = tile, check_pair(op, "tile", tile)
    if max(tile[0] + kh, tile[1] + kw) - 1 > winograd.MAX_TILE_INPUT:
        fail(op, "tile", f"m + kernel - 1 <= {winograd.MAX_TILE_INPUT} per axis (kernel {kh}x{kw})", repr(given))
    return tile


def _check_tensors(op, x, weight, bias):
    """x, weight (and bias, when given) Tensors of floating point: a convolution of integers would
    have integer gradients, which no optimizer can take."""
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t is None and name == "bias":
            continue
        if not isinstance(t, Tensor):
            fail(op, name, "a Tensor", type(t).__name__ + (" (wrap it: ma.Tensor(array))" if hasattr(t, "shape") else ""),
                 TypeError)
        if t.dtype.kind != "f":
            fail(op, name, "a floating-point Tensor (float32 or float64)", f"dtype {t.dtype}", TypeError)


def conv2d(x, weight, bias=None, stride=1, padding=0, groups=1, algorithm="auto", *, tile=None):
    """y = conv(x, weight) + bias, NCHW; weight (O, C/groups, KH, KW). See minialex/ops/conv.py.

    algorithm: "auto" (Winograd where `use_winograd` says so), "im2col", or "winograd" (stride 1
    only). tile: Winograd's outputs per tile, m or (m_h, m_w) (default: winograd.choose_tile)."""
    op = "conv2d"
    _check_tensors(op, x, weight, bias)
    x, weight, bias = autocast_inputs(x, weight, bias)   # (mixed precision: float16 copies)
    if x.ndim != 4:
        fail(op, "x", "4 dimensions (N, C, H, W)", f"shape {x.shape}")
    if weight.ndim != 4:
        fail(op, "weight", "4 dimensions (O, C/groups, KH, KW)", f"shape {weight.shape}")
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    if min(o, cg, kh, kw) < 1 or c < 1:
        fail(op, "weight" if c else "x", "at least one filter, one channel and a 1x1 kernel" if c else
             "at least one channel", f"shape {weight.shape if c else x.shape}")
    stride, padding, groups = check_settings(op, c, o, stride, padding, groups, algorithm)
    if cg * groups != c:
        fail(op, "weight", f"shape[1] = C/groups = {c}/{groups} = {c // groups} (x has {c} channels)",
             f"shape {weight.shape}")
    if bias is not None and bias.shape != (o,):
        fail(op, "bias", f"shape ({o},), one per filter", f"shape {bias.shape}")
    if kh > h + 2 * padding[0] or kw > w + 2 * padding[1]:
        fail(op, "weight", f"a kernel no larger than the padded input "
             f"{h + 2 * padding[0]}x{w + 2 * padding[1]}", f"kernel {kh}x{kw}")
    if tile is not None and algorithm != "winograd":
        fail(op, "tile", "None unless algorithm='winograd'", f"tile={tile!r} with algorithm={algorithm!r}")
    if algorithm == "auto":                      # (float16: im2col, whose error float16 keeps small)
        if x.dtype != np.float16 and use_winograd(x.shape, weight.shape, stride, groups):
            algorithm, tile = "winograd", (2, 2)
        else:
            algorithm = "im2col"
    if algorithm == "im2col":
        return conv.Conv2d.apply(x, weight, bias, stride=stride, padding=padding, groups=groups)
    out_shape = (h + 2 * padding[0] - kh + 1, w + 2 * padding[1] - kw + 1)
    tile = _winograd_tile(op, weight.shape, out_shape, tile)
    return winograd.WinogradConv2d.apply(x, weight, bias, padding=padding, groups=groups, tile=tile)
