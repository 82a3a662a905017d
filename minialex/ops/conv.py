"""2-D convolution (cross-correlation, as in every framework), NCHW.

Shapes:  x (N, C, H, W)   w (O, C/G, KH, KW)   b (O,)   y (N, O, OH, OW)
         OH = (H + 2*PH - KH) // SH + 1   (floor, as the seed table: 227 -> 55 with 11x11 stride 4)
         G groups: input channels and filters split into G independent convolutions
         (the paper's two GPU "towers" are groups=2 in conv2, conv4, conv5).

Forward as one matrix product per group (im2col), the whole batch at once:
    cols[(c, i, j), (n, oh, ow)] = xpad[n, c, oh*SH + i, ow*SW + j]        (C*KH*KW, N*OH*OW)
    y[n, o, oh, ow] = (w[o, :] @ cols[group(o) rows, :])[(n, oh, ow)] + b[o]
    (one big GEMM per group keeps BLAS / cuBLAS busy; the batch is part of the columns)
    NumPy path, many channels on a small map (channels_last): the same matrix is stored transposed,
    (N*OH*OW, KH*KW*Cg) with columns (i, j, c), and w's columns reordered to (i, j, c) to match.

Backward (each line inverts the forward line above it):
    db[o]  = sum over n, oh, ow of dy[n, o, oh, ow]                   b was added to every pixel
    dw     = dy_t @ cols^T,   dy_t = dy as (O, N*OH*OW)               y = w @ cols: dL/dw = dy cols^T
    dcols  = w^T @ dy_t                                               and dL/dcols = w^T dy
    dx     = col2im(dcols): each column entry is added back to the pixel it was copied from;
             overlapping windows (stride < kernel) add several entries into one pixel.

Paper: section 3.5 (the architecture), 11x11 stride 4 in conv1.
CUDA path: kernels/conv.cu (im2col, col2im as a gather), kernels/gemm.cu.
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import backend, cuda
from ..errors import check_positive_int, fail, pair
from ..function import Function


def conv_outsize(size, kernel, stride, padding):
    """Output length along one axis (floor division, like Caffe, PyTorch and the seed table)."""
    return (size + 2 * padding - kernel) // stride + 1


def _pad(x, ph, pw, value=0.0):
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def im2col(x, kh, kw, stride, padding):
    """(N, C, H, W) -> cols (C*KH*KW, N*OH*OW): rows (c, i, j) as in w.reshape(O, -1), columns (n, oh, ow)."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x.shape
    oh, ow = conv_outsize(h, kh, sh, ph), conv_outsize(w, kw, sw, pw)
    xp = _pad(x, ph, pw)                                  # (N, C, H+2PH, W+2PW)
    s_n, s_c, s_h, s_w = xp.strides
    # A strided view, no copy: windows[c, i, j, n, oh, ow] = xp[n, c, oh*SH + i, ow*SW + j]
    windows = as_strided(xp, (c, kh, kw, n, oh, ow), (s_c, s_h, s_w, s_n, s_h * sh, s_w * sw))
    cols = backend.scratch((c * kh * kw, n * oh * ow), x.dtype)  # reused between steps: no page faults
    out = cols.reshape(c, kh, kw, n, oh, ow)
    # the one copy: (C*KH*KW, N*OH*OW); images split over the cores (a strided copy is CPU-bound)
    backend.parallel(lambda lo, hi: np.copyto(out[:, :, :, lo:hi], windows[:, :, :, lo:hi]), n, cols.size)
    return cols


def col2im(dcols, x_shape, kh, kw, stride, padding):
    """The adjoint of im2col: (C*KH*KW, N*OH*OW) -> (N, C, H, W), overlapping entries added."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x_shape
    oh, ow = conv_outsize(h, kh, sh, ph), conv_outsize(w, kw, sw, pw)
    dcols = dcols.reshape(c, kh, kw, n, oh, ow).transpose(3, 0, 1, 2, 4, 5)  # (N, C, KH, KW, OH, OW) view
    dxp = backend.scratch((n, c, h + 2 * ph, w + 2 * pw), dcols.dtype)

    def add_back(lo, hi):  # images lo..hi-1, so the cores can share the work
        dxp[lo:hi].fill(0)
        # Offset (i, j) of window (oh, ow) is pixel (oh*SH + i, ow*SW + j). Per column offset j,
        # first add the KH row offsets into rows[h, ow]; with SH = 1 those adds run over whole
        # (OH, OW) blocks, one long loop each, and only KW adds go through short OW-long rows of dxp.
        rows = np.empty((hi - lo, c, h + 2 * ph, ow), dcols.dtype)
        for j in range(kw):
            rows.fill(0)
            for i in range(kh):
                rows[:, :, i:i + sh * oh:sh] += dcols[lo:hi, :, i, j]
            dxp[lo:hi, :, :, j:j + sw * ow:sw] += rows
    backend.parallel(add_back, n, dxp.size * kh * kw)
    return dxp[:, :, ph:ph + h, pw:pw + w]                            # (N, C, H, W), a view when padded


def channels_last(cg, ow):
    """The NumPy path's choice of column layout. im2col and col2im move runs of contiguous numbers:
    in NCHW a run is one output row (OW numbers), in channels-last the Cg channels of one pixel.
    NumPy pays per run, so channels-last wins where a pixel has many more channels than a row has
    pixels: the 13x13 maps of conv3-5 (256-384 channels; im2col and col2im about 2x faster), not
    conv2 (96 channels, 27 wide) or conv1 (3 channels)."""
    return cg >= 4 * ow


def im2col_channels_last(x, kh, kw, stride, padding, groups):
    """(N, C, H, W) -> cols (G, N*OH*OW, KH*KW*Cg): rows (n, oh, ow), columns (i, j, c) of group g."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x.shape
    cg = c // groups
    oh, ow = conv_outsize(h, kh, sh, ph), conv_outsize(w, kw, sw, pw)
    xl = np.empty((n, h + 2 * ph, w + 2 * pw, c), x.dtype)             # padded, channels last
    cols = backend.scratch((groups, n * oh * ow, kh * kw * cg), x.dtype)
    out = cols.reshape(groups, n, oh, ow, kh, kw, cg)
    s_n, s_h, s_w, s_c = xl.strides
    # A strided view, no copy: windows[g, n, oh, ow, i, j, c] = xl[n, oh*SH + i, ow*SW + j, g*Cg + c]
    windows = as_strided(xl, out.shape, (cg * s_c, s_n, s_h * sh, s_w * sw, s_h, s_w, s_c))

    def copy(lo, hi):  # images lo..hi-1, so the cores can share the work
        xl[lo:hi].fill(0)
        np.copyto(xl[lo:hi, ph:ph + h, pw:pw + w], x[lo:hi].transpose(0, 2, 3, 1))
        np.copyto(out[:, lo:hi], windows[:, lo:hi])                       # runs of Cg channels
    backend.parallel(copy, n, cols.size)
    return cols


def col2im_channels_last(dcols, x_shape, kh, kw, stride, padding, groups):
    """The adjoint of im2col_channels_last: (G, N*OH*OW, KH*KW*Cg) -> dx (N, C, H, W)."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x_shape
    cg = c // groups
    oh, ow = conv_outsize(h, kh, sh, ph), conv_outsize(w, kw, sw, pw)
    d = dcols.reshape(groups, n, oh, ow, kh, kw, cg)
    dxl = np.empty((n, h + 2 * ph, w + 2 * pw, c), dcols.dtype)        # padded, channels last
    dx = np.empty(x_shape, dcols.dtype)

    def add_back(lo, hi):  # images lo..hi-1, so the cores can share the work
        dxl[lo:hi].fill(0)
        for g in range(groups):
            for i in range(kh):  # one slice-add per kernel offset, runs of Cg channels
                for j in range(kw):
                    dxl[lo:hi, i:i + sh * oh:sh, j:j + sw * ow:sw, g * cg:(g + 1) * cg] += d[g, lo:hi, :, :, i, j]
        np.copyto(dx[lo:hi], dxl[lo:hi, ph:ph + h, pw:pw + w].transpose(0, 3, 1, 2))
    backend.parallel(add_back, n, dxl.size * kh * kw)
    return dx


def conv2d_forward(x, w, b, stride, padding, groups, need_dx=True):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    g, k = groups, cg * kh * kw
    oh, ow = conv_outsize(h, kh, stride[0], padding[0]), conv_outsize(wd, kw, stride[1], padding[1])
    last = channels_last(cg, ow)
    if last:  # columns stored (G, N*L, K), K in (i, j, c) order: the product reads them transposed
        cols = im2col_channels_last(x, kh, kw, stride, padding, g).transpose(0, 2, 1)   # (G, K, N*L) view
        w_mat = w.reshape(o, cg, kh * kw).transpose(0, 2, 1).reshape(g, o // g, k)     # (i, j, c): a copy
    else:
        cols = im2col(x, kh, kw, stride, padding).reshape(g, k, n * oh * ow)  # (G, Cg*KH*KW, N*L)
        w_mat = w.reshape(g, o // g, k)
    y_t = np.matmul(w_mat, cols, out=backend.scratch((g, o // g, n * oh * ow), x.dtype))
    y = backend.scratch((n, o, oh, ow), x.dtype)                            # (N, O, OH, OW)
    y_view = y_t.reshape(o, n, oh, ow).transpose(1, 0, 2, 3)                # the GEMM's (O, N, ...) order
    bias = b.reshape(1, o, 1, 1) if b is not None else x.dtype.type(0)
    # one pass for layout and bias, images split over the cores
    backend.parallel(lambda lo, hi: np.add(y_view[lo:hi], bias, out=y[lo:hi]), n, y.size)
    return y, (cols, w_mat, last, w.shape, x.shape, b is not None, stride, padding, need_dx)


def conv2d_backward(dy, cache):
    cols, w_mat, last, w_shape, x_shape, has_b, stride, padding, need_dx = cache
    g, k, nl = cols.shape
    o, cg, kh, kw = w_shape
    db = dy.sum(axis=(0, 2, 3)) if has_b else None                          # (O,)
    dy_t = backend.scratch((o, dy.shape[0], dy.shape[2], dy.shape[3]), dy.dtype)
    backend.parallel(lambda lo, hi: np.copyto(dy_t[:, lo:hi], dy[lo:hi].transpose(1, 0, 2, 3)),
                     dy.shape[0], dy.size)                                  # (O, N, OH, OW)
    dy_t = dy_t.reshape(g, o // g, nl)                                      # (G, O/G, N*L)
    dw = np.matmul(dy_t, cols.transpose(0, 2, 1))                           # (G, O/G, K)
    if last:  # back from (i, j, c) order
        dw = np.ascontiguousarray(dw.reshape(o, kh * kw, cg).transpose(0, 2, 1))
    dw = dw.reshape(w_shape)                                                # (O, Cg, KH, KW)
    dx = None
    if need_dx and last:
        dcols = np.matmul(dy_t.transpose(0, 2, 1), w_mat,                  # (w_mat^T dy_t)^T:
                          out=backend.scratch((g, nl, k), dy.dtype))        # (G, N*L, K)
        dx = col2im_channels_last(dcols, x_shape, kh, kw, stride, padding, g)
    elif need_dx:
        dcols = np.matmul(w_mat.transpose(0, 2, 1), dy_t,
                          out=backend.scratch((g, k, nl), dy.dtype))        # (G, Cg*KH*KW, N*L)
        dx = col2im(dcols, x_shape, kh, kw, stride, padding)                # (N, C, H, W)
    return dx, dw, db


def window_geometry(x_shape, kernel, stride, padding):
    """The int32 size arguments shared by the windowed kernels (conv_im2col, conv_col2im,
    pool_forward, pool_backward): N C H W KH KW SH SW PH PW OH OW."""
    n, c, h, w = x_shape
    kh, kw = kernel
    oh, ow = conv_outsize(h, kh, stride[0], padding[0]), conv_outsize(w, kw, stride[1], padding[1])
    return [np.int32(v) for v in (n, c, h, w, kh, kw, *stride, *padding, oh, ow)]


def conv2d_forward_cuda(x, w, b, stride, padding, groups, need_dx=True):
    xp = backend.xp_of(x)
    geometry = window_geometry(x.shape, w.shape[2:], stride, padding)
    n, c, oh, ow = x.shape[0], x.shape[1], int(geometry[-2]), int(geometry[-1])
    o, cg, kh, kw = w.shape
    g, og, k, nl = groups, o // groups, cg * kh * kw, n * oh * ow
    cols = xp.empty((c * kh * kw, nl), dtype=np.float32)                        # (C*KH*KW, N*L)
    cuda.launch("conv", "conv_im2col", *cuda.planes(nl, c), cols, x, *geometry)
    y_t = xp.empty((o, nl), dtype=np.float32)                                   # (O, N*L)
    # y_t[group] = w[group] @ cols[group], one product per group
    cuda.gemm(y_t, w, cols, og, nl, k, a_mk=(k, 1), b_kn=(nl, 1), batch=g,
              a_batch=og * k, b_batch=k * nl, c_batch=og * nl)
    y = xp.empty((n, o, oh, ow), dtype=np.float32)
    cuda.launch("conv", "conv_swap01", *cuda.planes(oh * ow, n * o), y, y_t, np.int32(o), np.int32(n),
                np.int32(oh * ow))
    if b is not None:
        cuda.launch("bias", "bias_forward", *cuda.blocks(y.size), y, b, np.int32(n), np.int32(o), np.int32(oh * ow))
    return y, (cols, w, x.shape, b is not None, stride, padding, need_dx)


def conv2d_backward_cuda(dy, cache):
    cols, w, x_shape, has_b, stride, padding, need_dx = cache
    xp = backend.xp_of(dy)
    n, o, oh, ow = dy.shape
    _, c, h, wd = x_shape
    _, cg, kh, kw = w.shape
    k, nl = cg * kh * kw, n * oh * ow
    g = c // cg
    og = o // g
    db = None
    if has_b:
        db = xp.empty((o,), dtype=np.float32)
        cuda.launch("bias", "bias_backward", (o,), (256,), db, dy, np.int32(n), np.int32(o), np.int32(oh * ow))
    dy_t = xp.empty((o, nl), dtype=np.float32)                                  # (O, N*L)
    cuda.launch("conv", "conv_swap01", *cuda.planes(oh * ow, n * o), dy_t, dy, np.int32(n), np.int32(o),
                np.int32(oh * ow))
    dw = xp.empty(w.shape, dtype=np.float32)
    # dw[group] = dy_t[group] @ cols[group]^T   (cols^T: swapped strides)
    cuda.gemm(dw, dy_t, cols, og, k, nl, a_mk=(nl, 1), b_kn=(1, nl), batch=g,
              a_batch=og * nl, b_batch=k * nl, c_batch=og * k)
    dx = None
    if need_dx:
        dcols = xp.empty(cols.shape, dtype=np.float32)
        # dcols[group] = w[group]^T @ dy_t[group]
        cuda.gemm(dcols, w, dy_t, k, nl, og, a_mk=(1, k), b_kn=(nl, 1), batch=g,
                  a_batch=og * k, b_batch=og * nl, c_batch=k * nl)
        dx = xp.empty(x_shape, dtype=np.float32)
        cuda.launch("conv", "conv_col2im", *cuda.planes(h * wd, n * c), dx, dcols,
                    *window_geometry(x_shape, w.shape[2:], stride, padding))
    return dx, dw, db


class Conv2d(Function):
    numpy = (conv2d_forward, conv2d_backward)
    cuda = (conv2d_forward_cuda, conv2d_backward_cuda)


def conv2d(x, weight, bias=None, stride=1, padding=0, groups=1):
    """y = conv(x, weight) + bias, NCHW; weight (O, C/groups, KH, KW). See the module docstring."""
    op = "conv2d"
    if x.ndim != 4:
        fail(op, "x", "4 dimensions (N, C, H, W)", f"shape {x.shape}")
    if weight.ndim != 4:
        fail(op, "weight", "4 dimensions (O, C/groups, KH, KW)", f"shape {weight.shape}")
    stride, padding = pair(op, "stride", stride), pair(op, "padding", padding, minimum=0)
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
    return Conv2d.apply(x, weight, bias, stride=stride, padding=padding, groups=groups,
                        need_dx=x.requires_grad)
