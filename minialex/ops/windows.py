"""Sliding windows, shared by conv2d and max_pool2d: the output size, padding, and the geometry
arguments of the windowed kernels."""
import numpy as np


def conv_outsize(size, kernel, stride, padding):
    """Output length along one axis: (size + 2*padding - kernel) // stride + 1 (floor, as in
    Caffe, PyTorch and the paper's table: 227 -> 55 with 11x11 stride 4)."""
    return (size + 2 * padding - kernel) // stride + 1


def pad(x, ph, pw, value=0.0):
    """(N, C, H, W) -> (N, C, H + 2*ph, W + 2*pw), the border filled with `value`."""
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def window_geometry(x_shape, kernel, stride, padding):
    """The int32 size arguments shared by the windowed kernels (conv_im2col, conv_col2im,
    pool_forward, pool_backward): N C H W KH KW SH SW PH PW OH OW."""
    n, c, h, w = x_shape
    kh, kw = kernel
    oh, ow = conv_outsize(h, kh, stride[0], padding[0]), conv_outsize(w, kw, stride[1], padding[1])
    return [np.int32(v) for v in (n, c, h, w, kh, kw, *stride, *padding, oh, ow)]
