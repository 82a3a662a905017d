"""2-D convolution by Winograd's minimal filtering (Lavin and Gray, "Fast Algorithms for
Convolutional Neural Networks", 2015): the same y as minialex/ops/conv.py for stride 1, with fewer
multiplications.

One dimension first. F(m, r) computes m outputs of a correlation with an r-tap filter,
    y[i] = sum over k of d[i + k] * g[k]          i = 0..m-1,  d of length a = m + r - 1,
with a multiplications instead of m * r:
    y = AT @ ((G @ g) * (BT @ d))                  AT (m, a),  G (a, r),  BT (a, a)
(* is element-wise: the only multiplications that involve both d and g; AT, G and BT hold small
constants, and G @ g is computed once per filter, not once per tile).

Where the matrices come from (Toom-Cook). Read the filter and a data tile as polynomials,
g(x) = sum g[k] x^k and h(x) = sum h[i] x^i (h of length m). Their product s(x) = g(x) h(x) has
a = m + r - 1 coefficients: the LINEAR convolution s = S(g) h, S(g)[i + k, i] = g[k]. A polynomial
of degree a - 1 is fixed by its values at a - 1 points p_0 .. p_{a-2} plus its leading coefficient
(the "point at infinity"), and there each value is ONE multiplication:
    s(p_j) = g(p_j) * h(p_j),      s_inf = g[r-1] * h[m-1].
Lagrange interpolation gives s back from those a numbers:
    s(x) = sum over j of s(p_j) * N_j(x) / f_j  +  s_inf * M(x),
    N_j(x) = prod over l != j of (x - p_l),   f_j = N_j(p_j),   M(x) = prod over all l of (x - p_l)
(s - s_inf M has degree a - 2 and takes the values s(p_j), as M vanishes at every p_j). So
S(g) = C diag(G g) Vm, where Vm evaluates h at the points (Vm[j, i] = p_j^i, the infinity row picks
h[m-1]), G evaluates g there divided by f_j, and C's columns are N_j's and M's coefficients.
The correlation we want is the transpose of that convolution, y = S(g)^T d, hence
    AT = Vm^T:   AT[i, j] = p_j^i                      (infinity column: 1 in the last row)
    G:           G[j, k]  = p_j^k / f_j                (infinity row: 1 in the last column)
    BT = C^T:    BT[j, :] = the coefficients of N_j    (infinity row: those of M)
`winograd_matrices(m, r)` builds them exactly in fractions from the points 0, 1, -1, 1/2, -2, 2,
-1/2, 3, -3 (the first a - 1) and infinity; F(2, 3) gives
    AT = [[1, 1, 1, 0],        G = [[-1,   0,   0],     BT = [[-1,  0, 1, 0],
          [0, 1, -1, 1]]            [1/2, 1/2, 1/2],           [ 0,  1, 1, 0],
                                    [1/2,-1/2, 1/2],           [ 0, -1, 1, 0],
                                    [ 0,   0,   1]]            [ 0, -1, 0, 1]]
(Lavin and Gray's F(2, 3) up to the signs of rows, which G and BT share).

Two dimensions nest the 1-D algorithm along each axis (Lavin and Gray, section 4): for an
(a_h, a_w) input tile D and filter w,
    Y = ATh @ ((Gh @ w @ Gw^T) * (BTh @ D @ BTw^T)) @ ATw^T        an (m_h, m_w) output tile,
and over channels the element-wise product becomes a sum, so for each of the a_h * a_w positions
(xi, nu) of a tile it is one matrix product over the whole batch:
    U[xi, nu] = (Gh w Gw^T)[o, c] at (xi, nu)        filters transformed once   (a_h, a_w, O, C)
    V[xi, nu] = (BTh D BTw^T)[c, tile] at (xi, nu)   every input tile            (a_h, a_w, C, tiles)
    M[xi, nu] = U[xi, nu] @ V[xi, nu]                                          (a_h, a_w, O, tiles)
    y tile    = ATh @ M[:, :, o, tile] @ ATw^T                                 (m_h, m_w)
Tiles start every m pixels of the output and overlap by r - 1 input pixels; the output is cut
into ceil(OH / m_h) x ceil(OW / m_w) tiles, the input zero-padded to cover the last ones.

Multiplications per output tile: a_h * a_w instead of m_h * m_w * r_h * r_w:
    F(2x2, 3x3): 16 for 36 (2.25x fewer)        F(4x4, 3x3): 36 for 144 (4x)
    F(2x2, 5x5): 36 for 100 (2.8x)              F(4x4, 5x5): 64 for 400 (6.25x)
(on a 13x13 map F(4x4, 3x3) computes 16x16 outputs for 169 wanted: 2.6x in practice).

Why error grows with the tile. AT, G and BT are exact, but their entries grow with the points:
powers p^(m-1) (up to (-2)^3 = -8 in F(4, 3)) and 1/f_j down to 1/15 in F(4, 3) and 1/90 in
F(4, 5). Float rounding of the transformed values is amplified by the products of the matrices'
norms, and values of opposite signs cancel in the output transform. Pairing a point with its reciprocal (2 with 1/2)
keeps the powers balanced: with 0, 1, -1, 1/2, -2 F(4, 3)'s error is 2.5x smaller than with
0, 1, -1, 2, -2. Measured against the float64 result on random inputs (4 images, 96 - 256
channels, relative to the largest |y|): float32 im2col 5e-7; F(2x2, 3x3) 7e-7, F(4x4, 3x3) 5e-6,
F(2x2, 5x5) 2e-6, F(4x4, 5x5) 1e-5 (tests/test_winograd.py holds each to a bound). Lavin and
Gray report the same trend (section 5). The extra error is harmless for training, but it is ten
times im2col's: two runs that differ only in the tile can then part ways where a ReLU or a
max-pool sits on a near-tie. So algorithm="auto" takes only the tiles with im2col's accuracy
(a = 4: F(2x2, 3x3)); larger tiles are there for the asking (algorithm="winograd", tile=).

Backward: each step above is linear, so the gradients run the same steps transposed (the adjoint;
it is the same as a Winograd "full" correlation of dy with the filter rotated by 180 degrees,
tile for tile):
    dM[xi, nu] = ATh^T @ dY tile @ ATw                    (a_h, a_w, O, tiles), dy cut into tiles
    dU[xi, nu] = dM[xi, nu] @ V[xi, nu]^T,  dw = Gh^T @ dU @ Gw       (M = U V, as dw = dy cols^T)
    dV[xi, nu] = U[xi, nu]^T @ dM[xi, nu],  dD = BTh^T @ dV @ BTw     (dV added back to the pixels
                                                                        of the overlapping tiles)
    db[o]      = sum over n, oh, ow of dy[n, o, oh, ow]
V is computed again from x in the backward: nothing of the size of an im2col matrix is kept.

Non-finite numbers: a tile's transform mixes all its pixels, so one inf in x would turn the whole
tile (and, through 0 * inf, every product) into NaN, where a direct convolution spoils only the
outputs whose windows hold it. So wherever a Winograd result (y, dx or dw) is not finite, that
result is the im2col convolution's instead, as PyTorch's CPU convolution would give.

Groups: channels and filters split into G independent convolutions, as in minialex/ops/conv.py.
Fast CPU pair: minialex/cpu/winograd.py.
CUDA pair: kernels/winograd.cu (the transforms), cuBLAS batched products, minialex/cuda_ops/winograd.py.
float16 on the CUDA path: the same float32 kernels on float32 copies, the results rounded once.
"""
from fractions import Fraction
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ..function import Function
from . import conv as direct

POINTS = (Fraction(0), Fraction(1), Fraction(-1), Fraction(1, 2), Fraction(-2), Fraction(2), Fraction(-1, 2),
          Fraction(3), Fraction(-3))   # see "Why error grows": 1/2 before 2: F(4, 3)'s error 2.5x smaller
MAX_TILE_INPUT = 8      # a = m + r - 1 at most: beyond it float32 errors grow past ~1e-4
TILES = (2, 4)          # the output tile sides m that choose_tile picks from
AUTO_TILE_INPUT = 4     # algorithm="auto": tiles with a <= 4 only, as accurate as im2col (see above)


class WinogradCache(NamedTuple):
    x: object          # (N, C, H, W) the input: V is recomputed from it in the backward
    w: object          # (O, C/G, KH, KW)
    has_bias: bool
    padding: tuple     # (PH, PW)
    groups: int
    tile: tuple        # (m_h, m_w) outputs per tile along each axis


def _coefficients(roots):
    """Ascending coefficients of prod (x - root), exact."""
    c = [Fraction(1)]
    for p in roots:
        c = [Fraction(0)] + c                        # times x
        for i in range(len(c) - 1):
            c[i] -= p * c[i + 1]                     # minus p times the old polynomial
    return c


@lru_cache(maxsize=None)
def winograd_matrices(m, r):
    """(AT (m, a), G (a, r), BT (a, a)) of F(m, r), a = m + r - 1, as float64 (see the docstring)."""
    a = m + r - 1
    if a > len(POINTS) + 1:
        raise ValueError(f"winograd: F({m}, {r}) needs {a - 1} points, {len(POINTS)} are defined")
    p = POINTS[:a - 1]
    at = [[p[j] ** i for j in range(a - 1)] + [Fraction(int(i == m - 1))] for i in range(m)]
    g, bt = [], []
    for j in range(a - 1):
        others = p[:j] + p[j + 1:]
        f = np.prod([p[j] - q for q in others], dtype=object) if others else Fraction(1)
        g.append([p[j] ** k / f for k in range(r)])
        bt.append(_coefficients(others) + [Fraction(0)])
    g.append([Fraction(int(k == r - 1)) for k in range(r)])
    bt.append(_coefficients(p))
    return tuple(np.array(mat, dtype=np.float64) for mat in (at, g, bt))


def choose_tile(kernel, out_size):
    """The output tile side m for one axis: of TILES (a = m + r - 1 <= MAX_TILE_INPUT), the one with
    the fewest multiplications a * ceil(out / m) along the axis; the smaller tile on a tie (its
    error is smaller). 13 wide, 3 taps: m = 4 (6 x 4 = 24 against 4 x 7 = 28)."""
    best = None
    for m in TILES:
        a = m + kernel - 1
        if a > MAX_TILE_INPUT:
            continue
        cost = a * -(-out_size // m)
        if best is None or cost < best[0]:
            best = (cost, m)
    return best[1] if best else None


def tiles(x_shape, w_shape, padding, tile):
    """(OH, OW, TH, TW): the output size and how many tiles cover it."""
    (h, w), (kh, kw), (ph, pw), (mh, mw) = x_shape[2:], w_shape[2:], padding, tile
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    return oh, ow, -(-oh // mh), -(-ow // mw)


def transform_input(x, kernel, padding, tile):
    """V (a_h, a_w, C, N*TH*TW): BTh @ D @ BTw^T for every input tile D."""
    (n, c, h, w), (kh, kw), (ph, pw), (mh, mw) = x.shape, kernel, padding, tile
    oh, ow, th, tw = tiles(x.shape, (0, 0, kh, kw), padding, tile)
    ah, aw = mh + kh - 1, mw + kw - 1
    xp = np.zeros((n, c, th * mh + kh - 1, tw * mw + kw - 1), x.dtype)   # zeros cover the last tiles
    xp[:, :, ph:ph + h, pw:pw + w] = x
    d = np.empty((ah, aw, c, n, th, tw), x.dtype)
    for i in range(ah):
        for j in range(aw):  # pixel (i, j) of every tile at once
            d[i, j] = xp[:, :, i:i + mh * th:mh, j:j + mw * tw:mw].transpose(1, 0, 2, 3)
    bth, btw = winograd_matrices(mh, kh)[2].astype(x.dtype), winograd_matrices(mw, kw)[2].astype(x.dtype)
    v = np.einsum("ai,bj,ijcnyx->abcnyx", bth, btw, d)
    return v.reshape(ah, aw, c, n * th * tw)


def transform_filter(w, tile):
    """U (a_h, a_w, O, C/G): Gh @ w @ Gw^T for every filter."""
    (o, cg, kh, kw), (mh, mw) = w.shape, tile
    gh, gw = winograd_matrices(mh, kh)[1].astype(w.dtype), winograd_matrices(mw, kw)[1].astype(w.dtype)
    return np.einsum("ak,bl,ockl->aboc", gh, gw, w)


def products(u, v, groups):
    """M[xi, nu] = U[xi, nu] @ V[xi, nu] per group: (a_h, a_w, O, C/G) x (a_h, a_w, C, T) -> (a_h, a_w, O, T)."""
    ah, aw, o, cg = u.shape
    t = v.shape[-1]
    m = u.reshape(ah, aw, groups, o // groups, cg) @ v.reshape(ah, aw, groups, cg, t)
    return m.reshape(ah, aw, o, t)


def winograd_forward(x, w, b, padding, groups, tile):
    if x.dtype == np.float16:     # mixed precision: transforms and products in float32, rounded once
        y, cache = winograd_forward(x.astype(np.float32), w.astype(np.float32),
                                    None if b is None else b.astype(np.float32), padding, groups, tile)
        return y.astype(np.float16), cache
    (n, _, _, _), (o, _, kh, kw), (mh, mw) = x.shape, w.shape, tile
    oh, ow, th, tw = tiles(x.shape, w.shape, padding, tile)
    m = products(transform_filter(w, tile), transform_input(x, (kh, kw), padding, tile), groups)
    ath, atw = winograd_matrices(mh, kh)[0].astype(x.dtype), winograd_matrices(mw, kw)[0].astype(x.dtype)
    y = np.einsum("pa,qb,abonyx->noypxq", ath, atw, m.reshape(ath.shape[1], atw.shape[1], o, n, th, tw))
    y = y.reshape(n, o, th * mh, tw * mw)[:, :, :oh, :ow]          # whole tiles, cut to the output
    if b is not None:
        y = y + b.reshape(1, o, 1, 1)
    y = np.ascontiguousarray(y)
    if not np.isfinite(y).all():  # a non-finite input spreads through its tile: take im2col's there
        y = _where_finite(y, direct.conv2d_forward(x, w, b, (1, 1), padding, groups)[0])
    return y, WinogradCache(x, w, b is not None, padding, groups, tile)


def winograd_backward(dy, cache, needs):
    if dy.dtype == np.float16:    # (the cache holds float32 copies: see winograd_forward)
        grads = winograd_backward(dy.astype(np.float32), cache, needs)
        return tuple(None if g is None else g.astype(np.float16) for g in grads)
    x, w, has_bias, padding, groups, tile = cache
    (n, c, h, wd), (o, cg, kh, kw), (mh, mw) = x.shape, w.shape, tile
    oh, ow, th, tw = tiles(x.shape, w.shape, padding, tile)
    ath, atw = winograd_matrices(mh, kh)[0].astype(dy.dtype), winograd_matrices(mw, kw)[0].astype(dy.dtype)
    ah, aw = ath.shape[1], atw.shape[1]
    dyp = np.zeros((n, o, th * mh, tw * mw), dy.dtype)              # dy cut into whole tiles
    dyp[:, :, :oh, :ow] = dy
    dm = np.einsum("pa,qb,noypxq->abonyx", ath, atw, dyp.reshape(n, o, th, mh, tw, mw))
    dm = dm.reshape(ah, aw, groups, o // groups, n * th * tw)        # (a_h, a_w, G, O/G, T)
    dx = dw = db = None
    if needs[1]:
        v = transform_input(x, (kh, kw), padding, tile).reshape(ah, aw, groups, cg, n * th * tw)
        du = (dm @ v.transpose(0, 1, 2, 4, 3)).reshape(ah, aw, o, cg)   # dU = dM V^T
        gh, gw = winograd_matrices(mh, kh)[1].astype(dy.dtype), winograd_matrices(mw, kw)[1].astype(dy.dtype)
        dw = np.ascontiguousarray(np.einsum("ak,bl,aboc->ockl", gh, gw, du))
    if needs[0]:
        u = transform_filter(w, tile).reshape(ah, aw, groups, o // groups, cg)
        dv = (u.transpose(0, 1, 2, 4, 3) @ dm).reshape(ah, aw, c, n, th, tw)   # dV = U^T dM
        bth, btw = winograd_matrices(mh, kh)[2].astype(dy.dtype), winograd_matrices(mw, kw)[2].astype(dy.dtype)
        dd = np.einsum("ai,bj,abcnyx->ijcnyx", bth, btw, dv)          # (a_h, a_w, C, N, TH, TW)
        dxp = np.zeros((n, c, th * mh + kh - 1, tw * mw + kw - 1), dy.dtype)
        for i in range(ah):
            for j in range(aw):  # each tile pixel back to where it was copied from; tiles overlap
                dxp[:, :, i:i + mh * th:mh, j:j + mw * tw:mw] += dd[i, j].transpose(1, 0, 2, 3)
        dx = np.ascontiguousarray(dxp[:, :, padding[0]:padding[0] + h, padding[1]:padding[1] + wd])
    if has_bias and needs[2]:
        db = dy.sum(axis=(0, 2, 3))
    if (dx is not None and not np.isfinite(dx).all()) or (dw is not None and not np.isfinite(dw).all()):
        _, cols_cache = direct.conv2d_forward(x, w, None, (1, 1), padding, groups)
        ddx, ddw, _ = direct.conv2d_backward(dy, cols_cache, (dx is not None, dw is not None, False))
        dx = None if dx is None else _where_finite(dx, ddx)
        dw = None if dw is None else _where_finite(dw, ddw)
    return dx, dw, db


def _where_finite(winograd, im2col):
    """Winograd's result where it is finite, im2col's elsewhere (see the docstring)."""
    return np.where(np.isfinite(winograd), winograd, im2col)


class WinogradConv2d(Function):
    input_names = ("x", "weight", "bias")
    reference = (winograd_forward, winograd_backward)
    fast = ("minialex.cpu.winograd", "winograd_forward", "winograd_backward")
    cuda = ("minialex.cuda_ops.winograd", "winograd_forward", "winograd_backward")

    @classmethod
    def name(cls):
        return "conv2d (winograd)"
