"""conv2d, fast CPU pair: the same product as the reference in minialex/ops/conv.py (equal to float
rounding: the products may sum in another order), made faster by:

- im2col as one strided copy of a window view (as_strided) instead of a slice per kernel offset,
  and col2im adding whole (OH, OW) blocks per row offset; both split over the cores by image;
- a second column layout, channels-last, where a pixel has many more channels than an output row
  has pixels (`channels_last`): NumPy pays per run of contiguous numbers it moves, and there a run
  is a pixel's Cg channels instead of an OW-long row;
"""
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..ops.windows import conv_outsize, pad
from .threads import parallel


class FastConvCache(NamedTuple):
    x: object          # (N, C, H, W): the columns are built again for dw (they are KH*KW times x)
    w_mat: object      # (G, O/G, K), K in the columns' order
    channels_last: bool
    w_shape: tuple
    has_bias: bool
    stride: tuple
    padding: tuple


def channels_last(cg, ow):
    """The column layout: channels-last where a pixel's Cg channels are a much longer run than an
    output row's OW pixels (AlexNet's conv3 - conv5: 256 - 384 channels on 13-wide maps)."""
    return cg >= 4 * ow


def im2col(x, kh, kw, stride, padding, out):
    """(N, C, H, W) -> out (C*KH*KW, N*OH*OW): rows (c, i, j), columns (n, oh, ow)."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x.shape
    oh, ow = conv_outsize(h, kh, sh, ph), conv_outsize(w, kw, sw, pw)
    xp = pad(x, ph, pw)                                        # (N, C, H+2PH, W+2PW)
    s_n, s_c, s_h, s_w = xp.strides
    # windows[c, i, j, n, oh, ow] = xp[n, c, oh*SH + i, ow*SW + j]: a view, no copy
    windows = as_strided(xp, (c, kh, kw, n, oh, ow), (s_c, s_h, s_w, s_n, s_h * sh, s_w * sw))
    o6 = out.reshape(c, kh, kw, n, oh, ow)
    parallel(lambda lo, hi: np.copyto(o6[:, :, :, lo:hi], windows[:, :, :, lo:hi]), n, out.size)
    return out


def col2im(dcols, x_shape, kh, kw, stride, padding):
    """The adjoint of im2col: (C*KH*KW, N*OH*OW) -> (N, C, H, W), overlapping entries added."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x_shape
    oh, ow = conv_outsize(h, kh, sh, ph), conv_outsize(w, kw, sw, pw)
    d = dcols.reshape(c, kh, kw, n, oh, ow).transpose(3, 0, 1, 2, 4, 5)  # (N, C, KH, KW, OH, OW) view
    dxp = np.empty((n, c, h + 2 * ph, w + 2 * pw), dcols.dtype)

    def add_back(lo, hi):  # images lo..hi-1
        dxp[lo:hi].fill(0)
        # Per column offset j, first add the KH row offsets into rows[h, ow]; with SH = 1 those
        # adds run over whole (OH, OW) blocks, and only KW adds go through short OW-long rows of dxp.
        rows = np.empty((hi - lo, c, h + 2 * ph, ow), dcols.dtype)
        for j in range(kw):
            rows.fill(0)
            for i in range(kh):
                rows[:, :, i:i + sh * oh:sh] += d[lo:hi, :, i, j]
            dxp[lo:hi, :, :, j:j + sw * ow:sw] += rows
    parallel(add_back, n, dxp.size * kh * kw)
    return dxp[:, :, ph:ph + h, pw:pw + w]


def im2col_channels_last(x, kh, kw, stride, padding, groups, out):
    """(N, C, H, W) -> out (G, N*OH*OW, KH*KW*Cg): rows (n, oh, ow), columns (i, j, c) of group g."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x.shape
    cg = c // groups
    oh, ow = conv_outsize(h, kh, sh, ph), conv_outsize(w, kw, sw, pw)
    xl = np.empty((n, h + 2 * ph, w + 2 * pw, c), x.dtype)      # padded, channels last
    o7 = out.reshape(groups, n, oh, ow, kh, kw, cg)
    s_n, s_h, s_w, s_c = xl.strides
    # windows[g, n, oh, ow, i, j, c] = xl[n, oh*SH + i, ow*SW + j, g*Cg + c]: a view, no copy
    windows = as_strided(xl, o7.shape, (cg * s_c, s_n, s_h * sh, s_w * sw, s_h, s_w, s_c))

    def copy(lo, hi):  # images lo..hi-1
        xl[lo:hi].fill(0)
        np.copyto(xl[lo:hi, ph:ph + h, pw:pw + w], x[lo:hi].transpose(0, 2, 3, 1))
        np.copyto(o7[:, lo:hi], windows[:, lo:hi])               # runs of Cg channels
    parallel(copy, n, out.size)
    return out


def col2im_channels_last(dcols, x_shape, kh, kw, stride, padding, groups):
    """The adjoint of im2col_channels_last: (G, N*OH*OW, KH*KW*Cg) -> dx (N, C, H, W)."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x_shape
    cg = c // groups
    oh, ow = conv_outsize(h, kh, sh, ph), conv_outsize(w, kw, sw, pw)
    d = dcols.reshape(groups, n, oh, ow, kh, kw, cg)
    dxl = np.empty((n, h + 2 * ph, w + 2 * pw, c), dcols.dtype)  # padded, channels last
    dx = np.empty(x_shape, dcols.dtype)

    def add_back(lo, hi):  # images lo..hi-1
        dxl[lo:hi].fill(0)
        for g in range(groups):
            for i in range(kh):  # one slice-add per kernel offset, runs of Cg channels
                for j in range(kw):
                    dxl[lo:hi, i:i + sh * oh:sh, j:j + sw * ow:sw, g * cg:(g + 1) * cg] += d[g, lo:hi, :, :, i, j]
        np.copyto(dx[lo:hi], dxl[lo:hi, ph:ph + h, pw:pw + w].transpose(0, 3, 1, 2))
    parallel(add_back, n, dxl.size * kh * kw)
    return dx


def columns(x, w_shape, stride, padding, groups, last):
    """The im2col matrix: (G, N*L, K) channels-last, else (G, K, N*L)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w_shape
    oh, ow = conv_outsize(h, kh, stride[0], padding[0]), conv_outsize(wd, kw, stride[1], padding[1])
    nl, k = n * oh * ow, cg * kh * kw
    if last:
        return im2col_channels_last(x, kh, kw, stride, padding, groups, np.empty((groups, nl, k), x.dtype))
    return im2col(x, kh, kw, stride, padding, np.empty((c * kh * kw, nl), x.dtype)).reshape(groups, k, nl)


def conv2d_forward(x, w, b, stride, padding, groups):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    g, k = groups, cg * kh * kw
    oh, ow = conv_outsize(h, kh, stride[0], padding[0]), conv_outsize(wd, kw, stride[1], padding[1])
    last = channels_last(cg, ow)
    cols = columns(x, w.shape, stride, padding, g, last)
    if last:  # columns (G, N*L, K), K in (i, j, c) order: the product reads them transposed
        cols_g = cols.transpose(0, 2, 1)                                               # (G, K, N*L) view
        w_mat = np.ascontiguousarray(w.reshape(o, cg, kh * kw).transpose(0, 2, 1)).reshape(g, o // g, k)
    else:
        cols_g = cols                                                                  # (G, K, N*L)
        w_mat = w.reshape(g, o // g, k)
    y_t = np.matmul(w_mat, cols_g)                                      # (G, O/G, N*L)
    y = np.empty((n, o, oh, ow), x.dtype)
    y_view = y_t.reshape(o, n, oh, ow).transpose(1, 0, 2, 3)            # the product's (O, N, ...) order
    bias = b.reshape(1, o, 1, 1) if b is not None else x.dtype.type(0)
    parallel(lambda lo, hi: np.add(y_view[lo:hi], bias, out=y[lo:hi]), n, y.size)   # layout and bias
    return y, FastConvCache(x, w_mat, last, w.shape, b is not None, stride, padding)


def conv2d_backward(dy, cache, needs):
    x, w_mat, last, w_shape, has_bias, stride, padding = cache
    x_shape = x.shape
    o, cg, kh, kw = w_shape
    n, oh, ow = dy.shape[0], dy.shape[2], dy.shape[3]
    g, k, nl = w_mat.shape[0], w_mat.shape[2], n * oh * ow
    db = dy.sum(axis=(0, 2, 3)) if has_bias and needs[2] else None       # (O,)
    dy_t = np.empty((o, n, oh, ow), dy.dtype)
    parallel(lambda lo, hi: np.copyto(dy_t[:, lo:hi], dy[lo:hi].transpose(1, 0, 2, 3)), n, dy.size)
    dy_g = dy_t.reshape(g, o // g, nl)                                   # (G, O/G, N*L)
    dw = dx = None
    if needs[1]:
        cols = columns(x, w_shape, stride, padding, g, last)
        cols_t = cols if last else cols.transpose(0, 2, 1)                  # (G, N*L, K)
        dw = np.matmul(dy_g, cols_t)                                      # (G, O/G, K)
        if last:  # back from (i, j, c) order
            dw = np.ascontiguousarray(dw.reshape(o, kh * kw, cg).transpose(0, 2, 1))
        dw = dw.reshape(w_shape)
    if needs[0] and last:
        dcols = np.matmul(dy_g.transpose(0, 2, 1), w_mat)                # (w_mat^T dy)^T: (G, N*L, K)
        dx = col2im_channels_last(dcols, x_shape, kh, kw, stride, padding, g)
    elif needs[0]:
        dcols = np.matmul(w_mat.transpose(0, 2, 1), dy_g)                # (G, Cg*KH*KW, N*L)
        dx = col2im(dcols, x_shape, kh, kw, stride, padding)              # (N, C, H, W)
    return dx, dw, db
