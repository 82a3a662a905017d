"""Max-pooling over an unevenly padded input: the one layer ONNX files need that minialex's own lack.

ONNX's MaxPool takes four pads, [top, left, bottom, right]; minialex's MaxPool2d pads the same on
both sides, at most half the kernel. Caffe computes pooled sizes rounding up (ceil), and Caffe2's
converter wrote that as extra padding at the end: the ONNX model zoo's bvlc_alexnet pools with
pads [0, 0, 1, 1] (on its 224x224 input: 54 -> 27 -> 13 -> 6 where minialex's floor gives 26).

    pad_inf(x, (t, l, b, r))   (N, C, H, W) -> (N, C, t+H+b, l+W+r), the new pixels -inf
    backward: dx = dy[:, :, t:t+H, l:l+W]   (a padded pixel feeds no input pixel)

A max over a window never takes a -inf pad while the window holds an image pixel, which ONNX
guarantees (each pad < kernel): so this is ONNX's MaxPool, whose pads never win either.
"""
import numpy as np

from .. import functional as F, nn
from ..backend import xp_of
from ..errors import check_pair, fail
from ..function import Function


def pad_inf_forward(x, pads):
    t, l, b, r = pads
    y = xp_of(x).pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=-np.inf)  # (N, C, t+H+b, l+W+r)
    return y, (pads, x.shape)


def pad_inf_backward(dy, cache):
    (t, l, _, _), (_, _, h, w) = cache
    dx = xp_of(dy).ascontiguousarray(dy[:, :, t:t + h, l:l + w])                  # (N, C, H, W), fresh
    return (dx,)


class PadInf(Function):
    input_names = ("x",)
    reference = (pad_inf_forward, pad_inf_backward)   # written with the input's array module: any device


def pad_inf(x, pads):
    """x (N, C, H, W) with pads = (top, left, bottom, right) rows and columns of -inf around it."""
    if x.ndim != 4:
        fail("pad_inf", "x", "4 dimensions (N, C, H, W)", f"shape {x.shape}")
    return PadInf.apply(x, pads=tuple(int(p) for p in pads))


class MaxPool2dPadded(nn.Module):
    """MaxPool2d(kernel_size, stride) over x padded by pads = (top, left, bottom, right) pixels
    that never win (ONNX MaxPool's pads; floor output size, as ONNX's ceil_mode=0)."""

    def __init__(self, kernel_size, stride, pads):
        super().__init__()
        op = "MaxPool2dPadded"
        kernel, stride = check_pair(op, "kernel_size", kernel_size), check_pair(op, "stride", stride)
        if len(pads) != 4 or any(isinstance(p, bool) or not hasattr(p, "__index__") or p < 0 for p in pads):
            fail(op, "pads", "four ints >= 0 (top, left, bottom, right)", repr(pads))
        pads = tuple(int(p) for p in pads)
        if max(pads[0], pads[2]) >= kernel[0] or max(pads[1], pads[3]) >= kernel[1]:
            fail(op, "pads", f"each smaller than the kernel {kernel} (a window of pads only)", repr(pads))
        self.kernel_size, self.stride, self.pads = kernel, stride, pads

    def forward(self, x):
        return F.max_pool2d(pad_inf(x, self.pads), self.kernel_size, self.stride)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, pads={self.pads}"
