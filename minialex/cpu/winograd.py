"""conv2d by Winograd's minimal filtering, fast CPU pair: the math and the reference are in
minialex/ops/winograd.py; this gives the same results to float rounding, faster, by:

- each 2-D tile transform as ONE matrix over the flattened tile: BTh @ D @ BTw^T is
  (BTh (x) BTw) @ vec(D) (a Kronecker product, `_kron`), so transforming every tile of every image
  and channel is a single BLAS product with K = a_h * a_w, instead of a NumPy pass per tile entry;
- the tiles gathered once by a strided view of the padded input (as_strided: no Python loop over
  tiles), laid out (a_h, a_w, C, N, TH, TW) so that the transform's product writes V directly in the
  layout the products read;
- the transformed tiles laid out (a_h * a_w * G, C/G, tiles) so that the a_h * a_w products are
  np.matmul over a stack of plain row-major matrices (one BLAS call each, on every core);
- the gathers and the scatter-add of the input gradient split over the cores by channel, the
  output's placement by image (threads.parallel).

The transforms stay memory-bound passes: on small maps they cost about as much as the products
save (per layer times in benchmarks/RESULTS.md).
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..ops import winograd as spec  # the matrices and the tiling: the math's, not copied
from . import conv as direct
from .threads import parallel


def _kron(tile, kernel, dtype):
    """The 2-D transforms as single matrices over a flattened tile (row-major (i, j)):
    KA (m_h*m_w, a_h*a_w) = ATh (x) ATw,  KG (a_h*a_w, r_h*r_w) = Gh (x) Gw,  KB = BTh (x) BTw.
    A tile transform A @ T @ B^T is then one product KA @ vec(T): every tile of a layer in one GEMM."""
    (mh, mw), (kh, kw) = tile, kernel
    (ath, gh, bth), (atw, gw, btw) = spec.winograd_matrices(mh, kh), spec.winograd_matrices(mw, kw)
    return tuple(np.kron(p, q).astype(dtype) for p, q in ((ath, atw), (gh, gw), (bth, btw)))


def transform_input(x, kernel, padding, tile):
    """V (a_h*a_w, C, N*TH*TW) = BTh @ D @ BTw^T of every input tile D."""
    (n, c, h, w), (kh, kw), (ph, pw), (mh, mw) = x.shape, kernel, padding, tile
    _, _, th, tw = spec.tiles(x.shape, (0, 0, kh, kw), padding, tile)
    ah, aw = mh + kh - 1, mw + kw - 1
    hp, wp = th * mh + kh - 1, tw * mw + kw - 1
    d = np.empty((ah, aw, c, n, th, tw), x.dtype)                     # the tiles, gathered

    def gather(lo, hi):  # channels lo..hi-1
        xp = np.zeros((hi - lo, n, hp, wp), x.dtype)                  # padded to whole tiles, channel-major
        xp[:, :, ph:ph + h, pw:pw + w] = x[:, lo:hi].transpose(1, 0, 2, 3)
        s_c, s_n, s_h, s_w = xp.strides
        view = as_strided(xp, (ah, aw, hi - lo, n, th, tw), (s_h, s_w, s_c, s_n, s_h * mh, s_w * mw))
        np.copyto(d[:, :, lo:hi], view)
    parallel(gather, c, d.size)
    kb = _kron(tile, kernel, x.dtype)[2]
    return (kb @ d.reshape(ah * aw, -1)).reshape(ah * aw, c, n * th * tw)


def transform_filter(w, tile):
    """U (a_h*a_w, O, C/G) = Gh @ w @ Gw^T of every filter, as one product."""
    o, cg, kh, kw = w.shape
    kg = _kron(tile, (kh, kw), w.dtype)[1]
    return (kg @ w.reshape(o * cg, kh * kw).T).reshape(kg.shape[0], o, cg)


def transform_output(m, o, n, kernel, tile, out_size, bias):
    """y (N, O, OH, OW) = ATh @ M @ ATw^T of every tile (+ bias), M (a_h*a_w, O, N*TH*TW)."""
    (mh, mw), (oh, ow) = tile, out_size
    th, tw = -(-oh // mh), -(-ow // mw)
    ka = _kron(tile, kernel, m.dtype)[0]
    yt = (ka @ m.reshape(m.shape[0], -1)).reshape(mh, mw, o, n, th, tw)
    y = np.empty((n, o, oh, ow), m.dtype)
    # y[n, o, ty*mh + p, tx*mw + q] = yt[p, q, o, n, ty, tx]: a view of yt in y's order, then cut
    view = yt.transpose(3, 2, 4, 0, 5, 1)                              # (N, O, TH, mh, TW, mw)

    def place(lo, hi):  # images lo..hi-1
        full = np.empty((hi - lo, o, th, mh, tw, mw), m.dtype)
        np.copyto(full, view[lo:hi])
        np.add(full.reshape(hi - lo, o, th * mh, tw * mw)[:, :, :oh, :ow], bias, out=y[lo:hi])
    parallel(place, n, y.size)
    return y


def transform_output_adjoint(dy, kernel, tile, th, tw):
    """dM (a_h*a_w, O, N*TH*TW) = ATh^T @ dY tile @ ATw, dy cut into whole tiles."""
    n, o, oh, ow = dy.shape
    mh, mw = tile
    dyt = np.zeros((mh, mw, o, n, th, tw), dy.dtype)                  # dy's tiles, zeros past the edge

    def gather(lo, hi):  # filters lo..hi-1
        full = np.zeros((n, hi - lo, th * mh, tw * mw), dy.dtype)
        full[:, :, :oh, :ow] = dy[:, lo:hi]
        np.copyto(dyt[:, :, lo:hi], full.reshape(n, hi - lo, th, mh, tw, mw).transpose(3, 5, 1, 0, 2, 4))
    parallel(gather, o, dyt.size)
    ka = _kron(tile, kernel, dy.dtype)[0]
    return (ka.T @ dyt.reshape(mh * mw, -1)).reshape(ka.shape[1], o, n * th * tw)   # sizes given: N may be 0


def transform_input_adjoint(dv, x_shape, kernel, padding, tile):
    """dx (N, C, H, W) from dV (a_h*a_w, C, N*TH*TW): dD = BTh^T @ dV @ BTw per tile, each tile
    pixel added back to the padded input pixel it was read from (tiles overlap by r - 1)."""
    (n, c, h, w), (kh, kw), (ph, pw), (mh, mw) = x_shape, kernel, padding, tile
    _, _, th, tw = spec.tiles(x_shape, (0, 0, kh, kw), padding, tile)
    ah, aw = mh + kh - 1, mw + kw - 1
    kb = _kron(tile, kernel, dv.dtype)[2]
    dd = (kb.T @ dv.reshape(ah * aw, -1)).reshape(ah, aw, c, n, th, tw)
    dx = np.empty(x_shape, dv.dtype)

    def scatter(lo, hi):  # channels lo..hi-1
        dxp = np.zeros((hi - lo, n, th * mh + kh - 1, tw * mw + kw - 1), dv.dtype)   # channel-major
        for i in range(ah):
            for j in range(aw):
                dxp[:, :, i:i + mh * th:mh, j:j + mw * tw:mw] += dd[i, j, lo:hi]
        np.copyto(dx[:, lo:hi], dxp[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3))
    parallel(scatter, c, dd.size)
    return dx


def _products(u, v, groups):
    """M (a_h*a_w, O, T) = U @ V per position and group, as one stack of BLAS products."""
    aa, o, cg = u.shape
    t = v.shape[-1]
    return np.matmul(u.reshape(aa * groups, o // groups, cg), v.reshape(aa * groups, cg, t)).reshape(aa, o, t)


def winograd_forward(x, w, b, padding, groups, tile):
    (n, c, _, _), (o, cg, kh, kw) = x.shape, w.shape
    oh, ow, th, tw = spec.tiles(x.shape, w.shape, padding, tile)
    m = _products(transform_filter(w, tile), transform_input(x, (kh, kw), padding, tile), groups)
    bias = b.reshape(1, o, 1, 1) if b is not None else x.dtype.type(0)
    y = transform_output(m, o, n, (kh, kw), tile, (oh, ow), bias)
    if not np.isfinite(y).all():  # a non-finite input spreads through its tile: take im2col's there
        y = np.where(np.isfinite(y), y, direct.conv2d_forward(x, w, b, (1, 1), padding, groups)[0])
    return y, spec.WinogradCache(x, w, b is not None, padding, groups, tile)


def winograd_backward(dy, cache, needs):
    x, w, has_bias, padding, groups, tile = cache
    (n, c, _, _), (o, cg, kh, kw) = x.shape, w.shape
    _, _, th, tw = spec.tiles(x.shape, w.shape, padding, tile)
    dm = transform_output_adjoint(dy, (kh, kw), tile, th, tw)          # (a_h*a_w, O, T)
    aa, t = dm.shape[0], dm.shape[2]
    dm_g = dm.reshape(aa * groups, o // groups, t)
    dx = dw = db = None
    if needs[1]:
        v = transform_input(x, (kh, kw), padding, tile).reshape(aa * groups, cg, t)
        du = np.matmul(dm_g, v.transpose(0, 2, 1)).reshape(aa, o * cg)      # dU = dM V^T
        del v
        kg = _kron(tile, (kh, kw), dy.dtype)[1]
        dw = np.ascontiguousarray((kg.T @ du).T).reshape(o, cg, kh, kw)    # Gh^T dU Gw per filter
    if needs[0]:
        u = transform_filter(w, tile).reshape(aa * groups, o // groups, cg)
        dv = np.matmul(u.transpose(0, 2, 1), dm_g).reshape(aa, c, t)        # dV = U^T dM
        del dm, dm_g
        dx = transform_input_adjoint(dv, x.shape, (kh, kw), padding, tile)
    if has_bias and needs[2]:
        db = dy.sum(axis=(0, 2, 3))
    if (dx is not None and not np.isfinite(dx).all()) or (dw is not None and not np.isfinite(dw).all()):
        _, cols_cache = direct.conv2d_forward(x, w, None, (1, 1), padding, groups)
        ddx, ddw, _ = direct.conv2d_backward(dy, cols_cache, (dx is not None, dw is not None, False))
        dx = None if dx is None else np.where(np.isfinite(dx), dx, ddx)
        dw = None if dw is None else np.where(np.isfinite(dw), dw, ddw)
    return dx, dw, db
