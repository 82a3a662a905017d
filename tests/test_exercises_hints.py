"""The stricter checker: every injected bug and every planted mistake is caught, and its hint names
the place where the student's result differs. A student's code runs here in this process
(grade_here), which is fast; test_exercises.py runs the same checks through child processes."""
import pytest

from minialex import bugs
from minialex.exercises.grade import grade_here

BUG_OP = {"LRN": "lrn", "max-pool": "max_pool2d", "conv": "conv2d", "dropout": "dropout", "ReLU": "relu",
          "loss": "cross_entropy", "fully connected": "linear", "optimizer": "sgd"}
# bug: (the first case it fails, a fragment of that case's hint)
BUG_HINTS = {
    "lrn-no-cross-channel": ("C=7, size=5", "also sits inside the s[c] of its neighbours"),
    "pool-all-ties": ("ties", "only at ties"),
    "conv-filter-not-rotated": ("stride 1, padding 0, groups 1", "not rotated by 180 degrees"),
    "conv-bias-wrong-axis": ("stride 1, padding 0, groups 1", "db[o] sums dy over n, oh and ow"),
    "conv-dw-one-image": ("stride 1, padding 0, groups 1", "the first image's share only"),
    "dropout-no-scale": ("p=0.5, offset 0", "their gradient is scaled too"),
    "relu-mask-from-output": ("values", "decide from the input x, not the output y"),
    "ce-not-divided-by-batch": ("batch of 4", "divide by the batch N"),
    "linear-dw-transposed": ("values", "dw is transposed"),
    "weight-decay-outside-momentum": ("one step with momentum and weight decay", "the weight decay belongs inside v"),
}


def _grade(tmp_path, op, code, scan=True):
    (tmp_path / f"{op}.py").write_text(code)
    return grade_here(op, tmp_path, scan=scan)


def _first_failure(result):
    return next(r for r in result.records if r["status"] != "pass")


def test_every_injected_bug_has_its_expected_hint():
    assert set(BUG_HINTS) == {b.name for b in bugs.BUGS}


@pytest.mark.parametrize("name", sorted(BUG_HINTS))
def test_each_injected_bug_is_caught_and_its_hint_names_the_place(name, tmp_path):
    op = BUG_OP[bugs.get(name).layers]
    line = f"update = BY_NAME[{name!r}].pair" if op == "sgd" else f"forward, backward = BY_NAME[{name!r}].pair"
    result = _grade(tmp_path, op, f"from minialex.bugs import BY_NAME\n{line}\n", scan=False)
    first = _first_failure(result)
    case, fragment = BUG_HINTS[name]
    assert (first["case"], first["status"]) == (case, "fail") and fragment in first["hint"], first


# ----- students' own code, right, then with one planted mistake

RELU = """import numpy as np


def forward(x):
    y = np.maximum(x, 0)
    return y, x


def backward(dy, x):
    return (np.where(x > 0, dy, 0),)
"""

POOL = """import numpy as np


def forward(x, kernel, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    y = np.full(x.shape[:2] + (oh, ow), -np.inf)
    won = np.zeros(y.shape, int)
    for i in range(kh):
        for j in range(kw):
            v = xp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw]
            won = np.where(v > y, i * kw + j, won)
            y = np.maximum(y, v)
    return y, (won, x.shape, kernel, stride, padding)


def backward(dy, cache):
    won, (n, c, h, w), (kh, kw), (sh, sw), (ph, pw) = cache
    oh, ow = dy.shape[2:]
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += np.where(won == i * kw + j, dy, 0)
    return (dxp[:, :, ph:ph + h, pw:pw + w],)
"""

LRN = """import numpy as np


def window_sum(a, before, after):
    c = a.shape[1]
    padded = np.pad(a, ((0, 0), (before, after), (0, 0), (0, 0)))
    return sum(padded[:, d:d + c] for d in range(before + after + 1))


def forward(x, size, alpha, beta, k):
    s = k + alpha * window_sum(x * x, size // 2, (size - 1) // 2)
    y = x * s ** -beta
    return y, (x, y, s, size, alpha, beta)


def backward(dy, cache):
    x, y, s, size, alpha, beta = cache
    back = window_sum(dy * y / s, (size - 1) // 2, size // 2)
    return (dy * s ** -beta - 2 * alpha * beta * x * back,)
"""

CONV = """import numpy as np


def forward(x, w, b, stride, padding, groups):
    (sh, sw), (ph, pw) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    o, cg, kh, kw = w.shape
    oh, ow, og = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1, o // groups
    y = np.zeros((x.shape[0], o, oh, ow))
    for g in range(groups):
        xg = xp[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw]
                y[:, g * og:(g + 1) * og] += np.einsum("ncij,oc->noij", patch, w[g * og:(g + 1) * og, :, i, j])
    if b is not None:
        y += b.reshape(1, o, 1, 1)
    return y, (xp, w, b is not None, stride, padding, groups)


def backward(dy, cache):
    xp, w, has_bias, (sh, sw), (ph, pw), groups = cache
    o, cg, kh, kw = w.shape
    (oh, ow), og = dy.shape[2:], o // groups
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for g in range(groups):
        dyg, wg = dy[:, g * og:(g + 1) * og], w[g * og:(g + 1) * og]
        for i in range(kh):
            for j in range(kw):
                at = (slice(None), slice(g * cg, (g + 1) * cg), slice(i, i + sh * oh, sh), slice(j, j + sw * ow, sw))
                dw[g * og:(g + 1) * og, :, i, j] = np.einsum("noij,ncij->oc", dyg, xp[at])
                dxp[at] += np.einsum("noij,oc->ncij", dyg, wg[:, :, i, j])
    dx = dxp[:, :, ph:xp.shape[2] - ph, pw:xp.shape[3] - pw]
    return dx, dw, (dy.sum(axis=(0, 2, 3)) if has_bias else None)
"""

DROPOUT = """import numpy as np
from minialex.ops.dropout import dropout_keep_mask


def forward(x, p, seed, offset):
    keep = dropout_keep_mask(seed, x.shape, p, offset)
    return np.where(keep, x / (1 - p), 0), (keep, p)


def backward(dy, cache):
    keep, p = cache
    return (np.where(keep, dy / (1 - p), 0),)
"""

CROSS_ENTROPY = """import numpy as np


def forward(z, target):
    shifted = z - z.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_p[np.arange(z.shape[0]), target].mean(), (np.exp(log_p), target)


def backward(dloss, cache):
    p, target = cache
    dz = p.copy()
    dz[np.arange(len(target)), target] -= 1
    return (dloss * dz / len(target),)
"""

# mistake: (op, the right code, (text, its wrong version), the first case it fails, what its hint or message says)
PLANTED = {
    "pool padded with 0": ("max_pool2d", POOL, ("constant_values=-np.inf", "constant_values=0"),
                           "padding 1, every input negative", "padding never wins"),
    "pool ties to the last max": ("max_pool2d", POOL, ("v > y", "v >= y"), "ties", "only at ties"),
    "relu slope 1 at 0": ("relu", RELU, ("x > 0, dy", "x >= 0, dy"), "negative inputs and zero", "only at x == 0"),
    "relu x modified in place": ("relu", RELU, ("y = np.maximum(x, 0)", "x[x < 0] = 0\n    y = x"), "values",
                                 "forward changed its input x in place"),
    "relu x modified by backward": ("relu", RELU, ("    return (np.where(x > 0, dy, 0),)",
                                                   "    x[x <= 0] = 0\n    return (np.where(x > 0, dy, 0),)"),
                                    "values", "backward changed the forward's input x in place"),
    "lrn window wrapped around": ("lrn", LRN, (
        "    padded = np.pad(a, ((0, 0), (before, after), (0, 0), (0, 0)))\n"
        "    return sum(padded[:, d:d + c] for d in range(before + after + 1))",
        "    return sum(np.roll(a, d, axis=1) for d in range(-after, before + 1))"),
        "C=7, size=5", "only the edge channels"),
    "lrn even window mirrored": ("lrn", LRN, ("window_sum(x * x, size // 2, (size - 1) // 2)",
                                              "window_sum(x * x, (size - 1) // 2, size // 2)"),
                                 "C=6, size=4 (even size)", "the size is even here"),
    "conv groups ignored": ("conv2d", CONV, ("xg = xp[:, g * cg:(g + 1) * cg]", "xg = xp[:, :cg]"),
                            "stride 1, padding 0, groups 2", "only with groups"),
    "conv padded with the edge": ("conv2d", CONV, ("(ph, ph), (pw, pw)))", "(ph, ph), (pw, pw)), mode='edge')"),
                                "stride 2, padding 1, groups 1", "reaches into the padding"),
    "dropout offset ignored": ("dropout", DROPOUT, ("x.shape, p, offset)", "x.shape, p)"), "p=0.2, offset 300",
                               "pass offset to dropout_keep_mask"),
    "cross-entropy without the max": ("cross_entropy", CROSS_ENTROPY, ("shifted = z - z.max(axis=1, keepdims=True)",
                                                                       "shifted = z"),
                                      "large logits", "subtract each row's max"),
}


@pytest.mark.parametrize("op,code", [("relu", RELU), ("max_pool2d", POOL), ("lrn", LRN), ("conv2d", CONV),
                                     ("dropout", DROPOUT), ("cross_entropy", CROSS_ENTROPY)])
def test_the_students_code_passes_without_the_mistakes(op, code, tmp_path):
    result = _grade(tmp_path, op, code)
    assert result.passed, [r for r in result.records if r["status"] != "pass"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")     # exp overflowing: the mistake itself
@pytest.mark.parametrize("name", sorted(PLANTED))
def test_each_planted_mistake_is_caught_where_it_shows(name, tmp_path):
    op, code, (right, wrong), case, said = PLANTED[name]
    assert code.count(right) == 1
    first = _first_failure(_grade(tmp_path, op, code.replace(right, wrong)))
    assert first["case"] == case and first["status"] == "fail", first
    assert said in first["hint"] + first["message"], first


def test_contract_errors_and_exceptions_name_the_students_file_and_line(tmp_path):
    only_y = RELU.replace("    return y, x\n", "    return y\n")
    first = _first_failure(_grade(tmp_path, "relu", only_y))
    assert first["message"] == ("forward returned an array of shape (3, 4, 5), expected a pair (y, cache) "
                                "(relu.py, line 6)")
    bare = RELU.replace("return (np.where(x > 0, dy, 0),)", "return np.where(x > 0, dy, 0)")
    first = _first_failure(_grade(tmp_path, "relu", bare))
    assert first["message"].startswith("backward returned an array of shape (3, 4, 5), expected a tuple of 1 "
                                       "gradient(s) (dx; a single one as (dx,)) (relu.py, line 10)")
    typo = RELU.replace("y = np.maximum(x, 0)", "y = np.maximum(x, zero)")
    first = _first_failure(_grade(tmp_path, "relu", typo))
    assert first["message"] == ("forward raised NameError: name 'zero' is not defined "
                                "(relu.py, line 5, in forward: y = np.maximum(x, zero))")
    float32 = RELU.replace("y = np.maximum(x, 0)", "y = np.maximum(x, 0).astype(np.float32)")
    first = _first_failure(_grade(tmp_path, "relu", float32))
    assert first["message"] == "y has dtype float32, expected float64 like the inputs"
    first = _first_failure(_grade(tmp_path, "relu", RELU.replace("def backward(", "def backwards(")))
    assert first["message"] == "relu.py defines no function backward"
    todo = RELU.replace("    return (np.where(x > 0, dy, 0),)", "    raise NotImplementedError('later')")
    first = _first_failure(_grade(tmp_path, "relu", todo))
    assert (first["status"], first["message"]) == ("todo", "backward: later")
