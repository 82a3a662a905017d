"""Known wrong backward passes, to inject on purpose: mistakes students really make.

    minialex-audit --list-bugs
    minialex-audit --inject lrn-no-cross-channel --explain
    with bugs.inject("relu-mask-from-output"): ...      # inside: the CPU runs the wrong op

`inject(name)` swaps the op's CPU pair (reference and fast) for the wrong one and puts the right
ones back when the block ends, whatever happens in it: nothing is left behind. Each bug names the
layers it shows up in and the line of the op's docstring math that it breaks.
"""
import contextlib
from typing import NamedTuple

import numpy as np

from .ops import conv, convolution, cross_entropy, dropout, linear, lrn, pool, relu, sgd
from .ops.windows import pad


class Bug(NamedTuple):
    name: str
    target: object       # the Function class (or the SGD update holder) whose CPU pair is replaced
    layers: str          # the kind of layer it shows up in
    summary: str
    explain: str
    breaks: str          # a fragment of the op module's docstring: the line it breaks is quoted
    pair: object         # the wrong (forward, backward), or the wrong update function


# ----- the wrong code -----

def _lrn_no_cross_channel(dy, cache):
    return (dy * cache.scale ** -cache.beta,)          # only the numerator's term


def _pool_forward_keeping_x(x, kernel, stride, padding):
    y, cache = pool.max_pool2d_forward(x, kernel, stride, padding)
    return y, (x, y, cache)


def _pool_to_every_tie(dy, cache):
    x, y, (argmax, x_shape, (kh, kw), (sh, sw), (ph, pw)) = cache
    n, c, h, w = x_shape
    oh, ow = dy.shape[2:]
    xp = pad(x, ph, pw, value=-np.inf)
    dxp = np.zeros(xp.shape, dy.dtype)
    for i in range(kh):
        for j in range(kw):  # every pixel equal to its window's max gets the window's gradient
            hit = xp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] == y
            dxp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += np.where(hit, dy, 0)
    return (dxp[:, :, ph:ph + h, pw:pw + w],)


def _conv_filter_not_rotated(dy, cache, needs):
    w = cache.w
    flipped = cache._replace(w=np.ascontiguousarray(w[:, :, ::-1, ::-1]))
    dx, _, _ = conv.conv2d_backward(dy, flipped, (needs[0], False, False))
    _, dw, db = conv.conv2d_backward(dy, cache, (False, needs[1], needs[2]))
    return dx, dw, db


def _conv_bias_wrong_axis(dy, cache, needs):
    dx, dw, _ = conv.conv2d_backward(dy, cache, (needs[0], needs[1], False))
    return dx, dw, dy.sum(axis=0) if cache.has_bias and needs[2] else None   # (O, OH, OW): over n only


def _conv_dw_one_image(dy, cache, needs):
    x, w, has_bias, stride, padding, groups = cache
    dx, _, db = conv.conv2d_backward(dy, cache, (needs[0], False, needs[2]))
    n = x.shape[0]
    cols = conv.im2col(x, w.shape[2], w.shape[3], stride, padding)
    first = cols.reshape(cols.shape[0], n, -1)[:, :1].reshape(cols.shape[0], -1)   # image 0's columns
    dw = None
    if needs[1]:
        o, cg, kh, kw = w.shape
        dy0 = dy[:1].transpose(1, 0, 2, 3).reshape(groups, o // groups, -1)
        dw = (dy0 @ first.reshape(groups, cg * kh * kw, -1).transpose(0, 2, 1)).reshape(w.shape)
    return dx, dw, db


def _dropout_no_scale(dy, cache):
    keep = dropout.dropout_keep_mask(cache.seed, dy.shape, cache.p, cache.offset)
    return (np.where(keep, dy, 0),)


def _relu_forward_keeping_y(x):
    y, _ = relu.relu_forward(x)
    return y, y


def _relu_mask_from_output(dy, y):
    return (np.where(y >= 0, dy, 0),)                   # y = max(x, 0) is never negative: all pass


def _ce_not_divided(dloss, cache):
    probs, target = cache
    dz = probs.copy()
    dz[np.arange(probs.shape[0]), target] -= 1
    return (dz * dloss,)


def _linear_dw_transposed(dy, cache, needs):
    dx, _, db = linear.linear_backward(dy, cache, (needs[0], False, needs[2]))
    dy2 = dy.reshape(-1, cache.w.shape[0])
    return dx, (np.matmul(cache.x2.T, dy2) if needs[1] else None), db      # (in, out), not (out, in)


def _sgd_decay_outside_momentum(w, v, g, lr, momentum, weight_decay):
    v *= momentum
    v -= lr * g
    w += v
    w -= weight_decay * lr * w


BUGS = [
    Bug("lrn-no-cross-channel", lrn.LocalResponseNorm, "LRN",
        "LRN backward without the cross-channel term",
        "Each a[m] also sits inside s[c] of its neighbours c, so its gradient has a second term: "
        "-2 alpha beta a[m] times the sum of dy[c] y[c] / s[c] over the channels whose window holds m. "
        "Dropping it treats s as a constant.",
        "dx[m] = dy[m] * s[m]^-beta  -  2 * alpha * beta", (lrn.lrn_forward, _lrn_no_cross_channel)),
    Bug("pool-all-ties", pool.MaxPool2d, "max-pool",
        "max-pool backward sending the gradient to every tied maximum",
        "A window's output is one pixel's value, so its gradient goes to that one pixel (the first "
        "maximum). Sending it to every pixel equal to the max multiplies it by the number of ties "
        "(after a ReLU, windows of zeros tie everywhere).",
        "Backward: each dy goes to the input pixel that won its window", (_pool_forward_keeping_x, _pool_to_every_tie)),
    Bug("conv-filter-not-rotated", conv.Conv2d, "conv",
        "conv backward with the filter not rotated",
        "The input gradient is a full convolution of dy with the filter rotated by 180 degrees "
        "(the adjoint of the forward correlation). Using the filter as it is sends each dy to the "
        "mirrored pixels.",
        "dcols  = w^T @ dy_t", (conv.conv2d_forward, _conv_filter_not_rotated)),
    Bug("conv-bias-wrong-axis", conv.Conv2d, "conv",
        "the bias gradient summed over the wrong axes",
        "b[o] is added to every pixel of every image in channel o, so db[o] sums dy over n, oh and ow; "
        "summing over n alone leaves an (O, OH, OW) array that is not b's gradient.",
        "db[o]  = sum over n, oh, ow of dy[n, o, oh, ow]", (conv.conv2d_forward, _conv_bias_wrong_axis)),
    Bug("conv-dw-one-image", conv.Conv2d, "conv",
        "the weight gradient from the first image only",
        "The loss sums over the batch and every image used the same filter, so dw adds every image's "
        "contribution; using one image forgets the others.",
        "dw     = dy_t @ cols^T", (conv.conv2d_forward, _conv_dw_one_image)),
    Bug("dropout-no-scale", dropout.Dropout, "dropout",
        "dropout backward without the 1/(1-p) scale",
        "The forward multiplied the kept units by 1/(1-p), so their gradient is multiplied by it too.",
        "Backward:  dx = dy / (1 - p) where keep, else 0", (dropout.dropout_forward, _dropout_no_scale)),
    Bug("relu-mask-from-output", relu.ReLU, "ReLU",
        "ReLU backward from the output instead of the input (y >= 0)",
        "Whether dy passes depends on the input: x > 0. The output y = max(x, 0) is 0 for every "
        "negative input, and y >= 0 is always true, so every gradient passes.",
        "Backward: dx = dy where x > 0, else 0", (_relu_forward_keeping_y, _relu_mask_from_output)),
    Bug("ce-not-divided-by-batch", cross_entropy.CrossEntropy, "loss",
        "the cross-entropy gradient not divided by the batch",
        "The loss is the MEAN over the N rows, so each row's gradient p - onehot is divided by N.",
        "dz[n, k] = dloss * (p[n, k] - [k == t[n]]) / N", (cross_entropy.cross_entropy_forward, _ce_not_divided)),
    Bug("linear-dw-transposed", linear.Linear, "fully connected",
        "the weight gradient transposed (x^T dy instead of dy^T x)",
        "w is (out, in) and y = x w^T, so dw = dy^T x has w's shape; x^T dy is its transpose, which "
        "only fits a square layer, with the wrong values.",
        "dw = dy^T x", (linear.linear_forward, _linear_dw_transposed)),
    Bug("weight-decay-outside-momentum", sgd.SGDUpdate, "optimizer",
        "the weight decay applied outside the momentum",
        "The paper's rule puts the decay inside the velocity: v <- m v - wd lr w - lr g; w <- w + v. "
        "Decaying w after the step makes the decay skip the momentum's accumulation.",
        "v <- momentum * v - weight_decay * lr * w - lr * g", _sgd_decay_outside_momentum),
]
BY_NAME = {b.name: b for b in BUGS}


def get(name):
    if name not in BY_NAME:
        raise ValueError(f"no injected bug named {name!r}; known: {', '.join(BY_NAME)}")
    return BY_NAME[name]


@contextlib.contextmanager
def inject(name):
    """Within the block the op runs the wrong code on the CPU; afterwards exactly as before."""
    bug = get(name)
    saved = (bug.target.__dict__.get("reference"), bug.target.__dict__.get("fast"))
    min_channels = convolution.WINOGRAD_MIN_CHANNELS
    try:
        bug.target.reference, bug.target.fast = bug.pair, None
        if bug.target is conv.Conv2d:  # algorithm="auto" then takes im2col in every layer, bug included
            convolution.WINOGRAD_MIN_CHANNELS = float("inf")
        yield bug
    finally:
        bug.target.reference, bug.target.fast = saved
        convolution.WINOGRAD_MIN_CHANNELS = min_channels


def broken_line(bug):
    """The line of the op module's docstring that the bug breaks."""
    doc = __import__(bug.target.__module__, fromlist=["_"]).__doc__
    for line in doc.splitlines():
        if bug.breaks in line:
            return line.strip()
    return bug.breaks
