"""The cases each exercise is held to, and what a difference in each part of the result means.

A case holds the inputs (float64, chosen so that the usual mistakes show), the output gradient dy,
the reference's answer for each part of the result ("y", then the gradients "dx", "dw", ...), and
the hints the judge (judge.py) picks from by where and how the student's result differs:
    places   part -> [(mask, hint)]   every difference lies inside mask: only at x == 0, only the
                                      edge channels, only at ties, only windows reaching the padding
    wrong    part -> [(array, hint)]  the result is a known wrong answer (dw of one image, dw^T)
    factors  part -> {c: hint}        the result is c times the right one (1 - p, the batch N, -1)
    after    [(case name, hint)]      that earlier case passed and this one fails (only with groups)
    hints    part -> hint             when none of those says more
The ops' own cases are in cases_ops.py; this module holds the machinery and the reference answers.
"""
from dataclasses import dataclass, field

import numpy as np

from ..ops import conv, cross_entropy, dropout, linear, lrn, pool, relu, sgd

# op: (its reference pair, its inputs' names, the gradients' names)
OPS = {
    "relu": ((relu.relu_forward, relu.relu_backward), ("x",), ("dx",)),
    "lrn": ((lrn.lrn_forward, lrn.lrn_backward), ("x",), ("dx",)),
    "max_pool2d": ((pool.max_pool2d_forward, pool.max_pool2d_backward), ("x",), ("dx",)),
    "conv2d": ((conv.conv2d_forward, conv.conv2d_backward), ("x", "w", "b"), ("dx", "dw", "db")),
    "dropout": ((dropout.dropout_forward, dropout.dropout_backward), ("x",), ("dx",)),
    "linear": ((linear.linear_forward, linear.linear_backward), ("x", "w", "b"), ("dx", "dw", "db")),
    "cross_entropy": ((cross_entropy.cross_entropy_forward, cross_entropy.cross_entropy_backward),
                      ("z",), ("dz",)),
    "sgd": ((sgd.sgd_update_reference, None), ("w", "v", "g"), ("w", "v")),
}
TAKES_NEEDS = ("conv2d", "linear")       # their reference backward takes (dy, cache, needs)
GRADIENT_CHECK = dict(eps=1e-6, samples=6)


@dataclass
class Case:
    name: str
    inputs: list                           # float64 arrays; None for an absent optional input
    hyper: dict = field(default_factory=dict)
    kind: str = "pair"                     # "pair": forward then backward; "update": sgd, in place
    probes: list = field(default_factory=list)   # [(input, flat index)]: a gradient check there
    hints: dict = field(default_factory=dict)
    places: dict = field(default_factory=dict)
    wrong: dict = field(default_factory=dict)
    factors: dict = field(default_factory=dict)
    after: list = field(default_factory=list)
    dy: object = None                      # the output gradient given to backward
    want: dict = field(default_factory=dict)   # part -> the reference's array (None: no gradient)


def reference(op, inputs, hyper, dy):
    """{part: array} of the reference pair on (copies of) the inputs: "y" and each gradient."""
    (forward, backward), _, grads = OPS[op]
    inputs = [None if a is None else a.copy() for a in inputs]
    if op == "sgd":
        w, v, g = inputs
        forward(w, v, g, hyper["lr"], hyper["momentum"], hyper["weight_decay"])
        return {"w": w, "v": v}
    y, cache = forward(*inputs, **hyper)
    got = backward(dy, cache, tuple(a is not None for a in inputs)) if op in TAKES_NEEDS else backward(dy, cache)
    return {"y": np.asarray(y), **dict(zip(grads, got))}


def finish(op, cases, r):
    """Fill in each case's dy (random, for the reference y's shape), its answers and its probes."""
    for case in cases:
        _finish(op, case, r)
    return cases


def _finish(op, case, r):
    if case.kind == "pair":
        y, _ = OPS[op][0][0](*[None if a is None else a.copy() for a in case.inputs], **case.hyper)
        case.dy = r.standard_normal(np.shape(y))
    case.want = reference(op, case.inputs, case.hyper, case.dy)
    if case.probes == "all inputs":
        case.probes = [(i, int(j)) for i, a in enumerate(case.inputs) if a is not None
                       for j in r.choice(a.size, min(a.size, GRADIENT_CHECK["samples"]), replace=False)]


def window_masks(x_shape, kernel, stride, padding):
    """For a windowed op (conv, pool): (outputs whose window reaches into the padding (OH, OW),
    pixels inside such a window (H, W), pixels in two windows or more (H, W))."""
    (h, w), (kh, kw), (sh, sw), (ph, pw) = x_shape[2:], kernel, stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    border_out = np.zeros((oh, ow), bool)
    border_px, count = np.zeros((h, w), bool), np.zeros((h, w), int)
    for i in range(oh):
        for j in range(ow):  # window (i, j) covers rows r0 .. r0+kh-1 and columns c0 .. c0+kw-1 of x
            r0, c0 = i * sh - ph, j * sw - pw
            border_out[i, j] = r0 < 0 or c0 < 0 or r0 + kh > h or c0 + kw > w
            rows, cols = slice(max(r0, 0), min(r0 + kh, h)), slice(max(c0, 0), min(c0 + kw, w))
            count[rows, cols] += 1
            border_px[rows, cols] |= border_out[i, j]
    return border_out, border_px, count >= 2


def tied_pixels(x, kernel, stride, padding):
    """Pixels equal to the maximum of a window that holds that maximum twice or more."""
    (h, w), (kh, kw), (sh, sw), (ph, pw) = x.shape[2:], kernel, stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    tied = np.zeros(x.shape, bool)
    for i in range(oh):
        for j in range(ow):
            rows = slice(max(i * sh - ph, 0), min(i * sh - ph + kh, h))
            cols = slice(max(j * sw - pw, 0), min(j * sw - pw + kw, w))
            window = x[:, :, rows, cols]
            top = window == window.max(axis=(2, 3), keepdims=True)
            tied[:, :, rows, cols] |= top & (top.sum(axis=(2, 3), keepdims=True) >= 2)
    return tied


def channel_mask(shape, channels, axis=1):
    """A mask of `shape`, True on the given channels along `axis`."""
    keep = np.zeros(shape[axis], bool)
    keep[list(channels)] = True
    return np.broadcast_to(keep.reshape([-1 if a == axis else 1 for a in range(len(shape))]), shape)
