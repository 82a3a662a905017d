"""Each exercise's cases: inputs that make the usual mistakes show, and what each difference means
(the fields are described in cases.py). `cases_for(op)` gives the same cases, inputs and dy on
every call: the grader computes the answers from them and sends the inputs to the student's process.
"""
import numpy as np

from ..ops.dropout import dropout_keep_mask
from .cases import Case, channel_mask, finish, reference, tied_pixels, window_masks

FROM_X = ("no gradient flows where x <= 0: decide from the input x, not the output y (y = max(x, 0) is "
          "never negative, so a test on y lets every gradient through)")
PADDING_NEVER_WINS = ("only windows that reach into the padding differ: padding never wins (pad with -inf, or "
                      "skip the pixels outside the image); every input here is negative, so a border of 0 wins")
WINDOW_SIZE = "OH = (H + 2*PH - KH) // SH + 1 (floor), and OW likewise with W, PW, KW, SW"


def _away(r, shape):
    """Random values at least 0.1 from 0 (ReLU's kink)."""
    z = r.standard_normal(shape)
    return np.where(np.abs(z) < 0.1, 0.5, z)


def _relu(r):
    cases = [Case("values", [_away(r, (3, 4, 5))]),
             Case("negative inputs and zero", [np.array([-2.0, -0.0, 0.0, 1e-9, 3.0, -1e-9, 0.0, 0.5])]),
             Case("gradient check", [_away(r, (2, 7))], probes="all inputs")]
    for c in finish("relu", cases, r):
        x = c.inputs[0]
        c.hints = {"y": "y = max(x, 0)", "dx": "dx = dy where x > 0, else 0"}
        c.places = {"y": [(x == 0, "at x == 0: relu(0) is 0"), (x < 0, "relu of a negative x is 0"),
                          (x > 0, "y = x where x > 0")],
                    "dx": [(x == 0, "only at x == 0 exactly: the slope there is taken as 0, so dx = dy only "
                                    "where x > 0 (strictly)"),
                           (x < 0, FROM_X), (x <= 0, FROM_X), (x > 0, "where x > 0, dx = dy: the slope is 1")]}
    return cases


def _lrn(r):
    cases = []
    for ch, n, alpha, beta, k in ((7, 5, 0.5, 0.75, 2.0), (3, 5, 0.8, 0.75, 1.0), (6, 4, 0.3, 0.6, 1.5)):
        name = f"C={ch}, size={n}" + (" (C < size)" if ch < n else "") + (" (even size)" if n % 2 == 0 else "")
        cases.append(Case(name, [r.standard_normal((2, ch, 3, 4))], dict(size=n, alpha=alpha, beta=beta, k=k)))
    cases.append(Case("gradient check", [r.standard_normal((2, 5, 2, 3))], dict(size=5, alpha=0.5, beta=0.75, k=2.0),
                      probes="all inputs"))
    for c in finish("lrn", cases, r):
        shape, n = c.inputs[0].shape, c.hyper["size"]
        edges = [m for m in range(shape[1]) if m < n // 2 or m >= shape[1] - n // 2]
        c.hints = {"y": "s[c] = k + alpha * sum of a[m]^2 over m = c - size//2 .. c + (size-1)//2, clipped to "
                        "0 .. C-1; y = a / s^beta",
                   "dx": "dx[m] = dy[m] s[m]^-beta - 2 alpha beta a[m] * (sum of dy[c] y[c] / s[c] over the "
                         "channels c whose window holds m): a[m] also sits inside the s[c] of its neighbours"}
        edge_hint = (f"only the edge channels differ (channels {', '.join(map(str, edges))} of {shape[1]}): the "
                     "window clips at channels 0 and C-1 (a channel outside counts as nothing: not wrapped "
                     "around, not repeated)")
        c.places = {"y": [(channel_mask(shape, edges), edge_hint)], "dx": [(channel_mask(shape, edges), edge_hint)]}
    cases[1].after = [(cases[0].name, "C < size here: every window is clipped at both ends (the case with "
                                      "C > size passes)")]
    cases[2].after = [(cases[0].name, "the size is even here (the odd size passes): the window is "
                                      "c - size//2 .. c + (size-1)//2, one more channel before c than after; the "
                                      "backward's mirrored window is m - (size-1)//2 .. m + size//2")]
    return cases


def _max_pool2d(r):
    distinct = r.permutation(2 * 3 * 7 * 7).reshape(2, 3, 7, 7) / 10.0
    ties = np.round(r.standard_normal((2, 2, 7, 7)))                  # integers: windows share their max
    g33 = dict(kernel=(3, 3), stride=(2, 2), padding=(0, 0))
    cases = [Case("3x3 stride 2 (overlapping)", [distinct], g33),
             Case("padding 1, every input negative", [-1.0 - distinct], dict(g33, padding=(1, 1))),
             Case("ties", [ties], g33),
             Case("3x2 window, stride (2, 1), padding 1, every input negative", [-1.0 - distinct[:, :, :6]],
                  dict(kernel=(3, 2), stride=(2, 1), padding=(1, 1))),
             Case("gradient check", [distinct[:1, :2]], g33, probes="all inputs")]
    for c in finish("max_pool2d", cases, r):
        x = c.inputs[0]
        border_out, border_px, overlap = window_masks(x.shape, **c.hyper)
        c.hints = {"y": "y = the max over each KHxKW window, windows every SH rows and SW columns",
                   "y shape": WINDOW_SIZE,
                   "dx": "each window's dy goes to the pixel that won it; a pixel that wins several overlapping "
                         "windows gets the sum of their dy"}
        c.places = {"y": [(np.broadcast_to(border_out, x.shape[:2] + border_out.shape), PADDING_NEVER_WINS)],
                    "dx": [(tied_pixels(x, **c.hyper), "only at ties: each window sends its dy to ONE pixel, the "
                                                       "first maximum in row-major order (not every tied pixel, "
                                                       "not the last one)"),
                           (np.broadcast_to(border_px, x.shape), PADDING_NEVER_WINS),
                           (np.broadcast_to(overlap, x.shape), "only pixels where windows overlap: a pixel that "
                                                               "wins several windows adds their dy (+=, not =)")]}
    return cases


def _conv2d_case(r, n, ch, h, w, o, k, s, p, g, bias=True, name=None):
    x, wt = r.standard_normal((n, ch, h, w)), r.standard_normal((o, ch // g, k, k))
    name = name or f"stride {s}, padding {p}, groups {g}"
    return Case(name, [x, wt, r.standard_normal(o) if bias else None], dict(stride=(s, s), padding=(p, p), groups=g))


def _conv2d(r):
    cases = [_conv2d_case(r, 2, 3, 7, 9, 4, 3, 1, 0, 1), _conv2d_case(r, 2, 3, 9, 8, 5, 3, 2, 1, 1),
             _conv2d_case(r, 2, 4, 7, 6, 6, 3, 1, 0, 2), _conv2d_case(r, 1, 4, 11, 10, 6, 5, 3, 2, 2),
             _conv2d_case(r, 2, 2, 5, 5, 3, 3, 1, 1, 1, bias=False, name="no bias (b is None: db is None)"),
             _conv2d_case(r, 2, 2, 5, 5, 3, 3, 1, 1, 1, name="gradient check")]
    cases[-1].probes = "all inputs"
    for c in finish("conv2d", cases, r):
        (x, wt, b), (o, g) = c.inputs, (c.inputs[1].shape[0], c.hyper["groups"])
        border_out, _, _ = window_masks(x.shape, wt.shape[2:], c.hyper["stride"], c.hyper["padding"])
        c.hints = {"y": "y[n, o] = b[o] + sum over c, i, j of xpad[n, c, oh*SH + i, ow*SW + j] * w[o, c, i, j]",
                   "y shape": WINDOW_SIZE,
                   "dx": "dx: each w[o, c, i, j] goes back, times dy, to the pixel of x it multiplied (a full "
                         "convolution of dy with the filter rotated by 180 degrees)",
                   "dw": "dw[o, c, i, j] = sum over n, oh, ow of dy[n, o, oh, ow] * xpad[n, c, oh*SH + i, ow*SW + j]",
                   "db": "db[o] sums dy over n, oh and ow: shape (O,)"}
        c.places = {"y": [(np.broadcast_to(border_out, (x.shape[0], o) + border_out.shape),
                           "only outputs whose window reaches into the padding: pad x with PH rows and PW "
                           "columns of zeros on each side")]}
        if g > 1:
            own = ("only with groups, in group 2 and up: filter o reads only the input channels of its own group "
                   "g = o // (O/G), channels g*C/G .. (g+1)*C/G - 1 (w holds C/G input channels)")
            c.places["y"].insert(0, (channel_mask(c.want["y"].shape, range(o // g, o)), own))
            c.places["dx"] = [(channel_mask(x.shape, range(x.shape[1] // g, x.shape[1])), own)]
            c.places["dw"] = [(channel_mask(wt.shape, range(o // g, o), axis=0), own)]
            c.after = [(cases[0].name, "only with groups (the case without groups passes): filter o reads only "
                                       "the input channels of its group g = o // (O/G), channels g*C/G .. "
                                       "(g+1)*C/G - 1, and sends its gradient back there only")]
        c.wrong = {"dx": [(reference("conv2d", [x, wt[:, :, ::-1, ::-1], b], c.hyper, c.dy)["dx"],
                           "dx used the filter as it is, not rotated by 180 degrees: w[o, c, i, j] goes back to "
                           "the pixel it multiplied")]}
        if x.shape[0] > 1:
            c.wrong["dw"] = [(reference("conv2d", [x[:1], wt, b], c.hyper, c.dy[:1])["dw"],
                              "dw holds the first image's share only: every image used the same filter, so dw "
                              "adds the shares of the whole batch")]
    return cases


def _dropout(r):
    x = r.standard_normal((6, 50))
    cases = [Case(f"p={p}, offset {offset}", [x], dict(p=p, seed=11, offset=offset))
             for p, offset in ((0.5, 0), (0.2, 300))]
    for c in finish("dropout", cases, r):
        p = c.hyper["p"]
        c.hints = {"y": "keep = dropout_keep_mask(seed, x.shape, p, offset); y = x / (1 - p) where kept, else 0",
                   "dx": "dx = dy / (1 - p) where the forward kept, else 0: the same mask (recompute it from the "
                         "seed, p and offset the cache holds)"}
        c.factors = {"y": {1 - p: "y = x / (1 - p) where kept: the kept units are scaled up by 1/(1-p)"},
                     "dx": {1 - p: "the forward scaled the kept units by 1/(1-p), so their gradient is scaled too"}}
    keep0 = dropout_keep_mask(11, x.shape, 0.2, 0)
    cases[1].wrong = {"y": [(np.where(keep0, x / 0.8, 0), "the mask of offset 0: element i's counter is offset + i, "
                                                           "so pass offset to dropout_keep_mask")]}
    cases[1].after = [(cases[0].name, "the offset (the case with offset 0 passes): pass it to dropout_keep_mask, "
                                      "in the forward and in the backward")]
    return cases


def _linear(r):
    cases = [Case("values", [r.standard_normal((3, 5)), r.standard_normal((4, 5)), r.standard_normal(4)]),
             Case("square layer", [r.standard_normal((3, 4)), r.standard_normal((4, 4)), r.standard_normal(4)]),
             Case("gradient check", [r.standard_normal((2, 3)), r.standard_normal((4, 3)), r.standard_normal(4)],
                  probes="all inputs")]
    for c in finish("linear", cases, r):
        c.hints = {"y": "y = x w^T + b", "dx": "dx = dy w: shape (N, in)",
                   "dw": "dw = dy^T x: w's shape (out, in), summed over the batch", "db": "db = sum over n of dy"}
        c.wrong = {"dw": [(c.want["dw"].T, "dw is transposed: dw = dy^T x, shape (out, in), not x^T dy")]}
    return cases


def _cross_entropy(r):
    cases = [Case("batch of 4", [r.standard_normal((4, 5)) * 3], dict(target=np.array([1, 0, 3, 3]))),
             Case("large logits", [np.array([[1000.0, 0.0], [0.0, -1000.0], [5.0, 1005.0]])],
                  dict(target=np.array([1, 1, 0]))),
             Case("gradient check", [r.standard_normal((3, 4))], dict(target=np.array([0, 2, 1])), probes="all inputs")]
    for c in finish("cross_entropy", cases, r):
        n = c.inputs[0].shape[0]
        c.hints = {"y": "loss = the MEAN over the rows of -log softmax(z)[target]",
                   "dz": "dz = dloss * (softmax(z) - onehot(target)) / N"}
        c.factors = {"y": {n: "the loss is the MEAN over the N rows, not their sum"},
                     "dz": {n: "dz = dloss * (p - onehot) / N: divide by the batch N, as the loss does",
                            -1.0: "the sign: dz = p - onehot, not onehot - p"}}
    stable = "subtract each row's max before exp: it changes nothing mathematically and keeps exp from overflowing"
    cases[1].hints = {"y": stable, "dz": stable}
    return cases


def _sgd(r):
    w, v, g = (r.standard_normal((3, 4)) for _ in range(3))
    hyper = dict(lr=0.1, momentum=0.9, weight_decay=0.05)
    c, = finish("sgd", [Case("one step with momentum and weight decay", [w, v, g], hyper, kind="update")], r)
    c.hints = {"v": "v <- momentum * v - weight_decay * lr * w - lr * g",
               "w": "w <- w + v, with this step's v"}
    in_place = "update {} in place (v *= ..., w += ...): a new array made inside update never reaches the caller"
    decay_outside = reference("sgd", [w, v, g], dict(hyper, weight_decay=0.0), None)["v"]
    c.wrong = {"v": [(v, in_place.format("v")),
                     (decay_outside, "the weight decay belongs inside v: v <- momentum * v - weight_decay * lr * w "
                                     "- lr * g (decaying w outside v skips the momentum)")],
               "w": [(w, in_place.format("w"))]}
    return [c]


CASES = {"relu": _relu, "lrn": _lrn, "max_pool2d": _max_pool2d, "conv2d": _conv2d, "dropout": _dropout,
         "linear": _linear, "cross_entropy": _cross_entropy, "sgd": _sgd}


def cases_for(op):
    """The op's cases, each with its dy, the reference's answers and its hints (the same every call)."""
    return CASES[op](np.random.default_rng(7))
