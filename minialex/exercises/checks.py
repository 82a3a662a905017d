"""The exercise files and their checker (see minialex/exercises/__init__.py)."""
import importlib.util
import traceback
from pathlib import Path

import numpy as np

from ..function import Function, cpu_path
from ..gradcheck import gradcheck
from ..ops import conv, cross_entropy, dropout, linear, lrn, pool, relu, sgd
from ..tensor import Tensor

# op: (module with the math, the student's functions and their signatures)
EXERCISES = {
    "relu": (relu, "forward(x) -> (y, cache)", "backward(dy, cache) -> (dx,)"),
    "lrn": (lrn, "forward(x, size, alpha, beta, k) -> (y, cache)", "backward(dy, cache) -> (dx,)"),
    "max_pool2d": (pool, "forward(x, kernel, stride, padding) -> (y, cache)   # each a pair (h, w)",
                   "backward(dy, cache) -> (dx,)"),
    "conv2d": (conv, "forward(x, w, b, stride, padding, groups) -> (y, cache)   # stride, padding pairs; b may be None",
               "backward(dy, cache) -> (dx, dw, db)   # db None when b was None"),
    "dropout": (dropout, "forward(x, p, seed, offset) -> (y, cache)   # keep = dropout_keep_mask(seed, x.shape, p, offset)",
                "backward(dy, cache) -> (dx,)"),
    "linear": (linear, "forward(x, w, b) -> (y, cache)   # x (N, in), w (out, in)", "backward(dy, cache) -> (dx, dw, db)"),
    "cross_entropy": (cross_entropy, "forward(z, target) -> (loss, cache)   # loss: a 0-d array",
                      "backward(dloss, cache) -> (dz,)"),
    "sgd": (sgd, "update(w, v, g, lr, momentum, weight_decay)   # in place on w and v", None),
}

TEMPLATE = '''"""Exercise: {op}. Fill in the functions below; check with
    python -m minialex.exercises check {op} {dir}

The math, from minialex/ops/{module}.py:
{doc}"""
import numpy as np
{extra}

def {fwd_sig}:
    raise NotImplementedError("write {op}'s {fwd_name}")
{bwd}'''


def _signature(text):
    return text.split(" -> ")[0].split("   #")[0]


def start(folder, force=False):
    """Write <folder>/<op>.py for every exercise; returns (written, kept) paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, kept = [], []
    for op, (module, fwd, bwd) in EXERCISES.items():
        path = folder / f"{op}.py"
        if path.exists() and not force:
            kept.append(path)
            continue
        doc = "\n".join("    " + line if line else "" for line in module.__doc__.strip("\n").splitlines()
                        if not line.startswith(("Naive loops", "Fast CPU", "CUDA pair", "CUDA:", "kernels/")))
        extra = "from minialex.ops.dropout import dropout_keep_mask  # the counter-based mask (given)\n" \
            if op == "dropout" else ""
        if op == "sgd":
            bwd_code = ""
            fwd_sig, fwd_name = _signature(fwd), "update (in place on w and v)"
        else:
            fwd_sig, fwd_name = _signature(fwd), "forward"
            bwd_code = (f"\n\n# {bwd}\ndef {_signature(bwd)}:\n"
                        f"    raise NotImplementedError(\"write {op}'s backward\")\n")
        text = TEMPLATE.format(op=op, dir=folder, module=module.__name__.rsplit(".", 1)[1], doc=doc, extra=extra,
                               fwd_sig=fwd_sig, fwd_name=fwd_name, bwd=bwd_code)
        text = text.replace(f"def {fwd_sig}:", f"# {fwd}\ndef {fwd_sig}:")   # the contract above the stub
        path.write_text(text)
        written.append(path)
    return written, kept


def _load(op, folder):
    path = Path(folder) / f"{op}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: run  python -m minialex.exercises start {folder}  first")
    spec = importlib.util.spec_from_file_location(f"minialex_exercise_{op}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _op(student):
    class Student(Function):
        reference = (student.forward, student.backward)
    Student.__name__ = "Yours"
    return Student.apply


def _t(a, grad=True):
    return Tensor(np.asarray(a, np.float64), requires_grad=grad)


def _close(got, want, what, hint):
    got, want = np.asarray(got, float), np.asarray(want, float)
    if got.shape != want.shape:
        raise AssertionError(f"{what}: shape {got.shape}, expected {want.shape}. Hint: {hint}")
    if not np.allclose(got, want, rtol=1e-7, atol=1e-9, equal_nan=True):
        i = np.unravel_index(int(np.argmax(np.abs(got - want))), got.shape)
        raise AssertionError(f"{what}: at {tuple(int(k) for k in i)} got {got[i]:.6g}, expected {want[i]:.6g}. "
                             f"Hint: {hint}")


def _grads(fn, arrays, seed=0):
    """(y, input gradients) of fn on float64 tensors for a random output gradient."""
    ts = [None if a is None else _t(a) for a in arrays]
    y = fn(*ts)
    dy = np.random.default_rng(seed).standard_normal(y.shape)
    y.backward(dy)
    return y.data, [None if t is None else t.grad for t in ts]


def _gradcheck(fn, arrays, hint):
    ts = [_t(a) for a in arrays]
    report = gradcheck(fn, ts, raise_exception=False)
    if not report.ok:
        bad = [r for r in report.rows if not r["ok"]][0]
        raise AssertionError(f"numerical gradient check of input {bad['input']} failed at {bad['worst']} "
                             f"(max relative error {bad['max_rel']:.3g}). Hint: {hint}")


class _Cases:
    """What each op's cases are made of: the student's op (`mine`), the library's (`ref`) and one
    random generator, consumed in the order the cases are listed."""

    def __init__(self, mine, ref):
        self.mine, self.ref = mine, ref
        self.r = np.random.default_rng(7)

    def same_as_reference(self, arrays, hint, **hyper):
        """A case: forward and backward equal to the reference's on `arrays` (hint: forward's, backward's)."""
        def run():
            with cpu_path("reference"):
                want_y, want_g = _grads(lambda *t: self.ref(*t, **hyper), arrays)
            got_y, got_g = _grads(lambda *t: self.mine(*t, **hyper), arrays)
            _close(got_y, want_y, "forward", hint[0])
            for i, (g, w) in enumerate(zip(got_g, want_g)):
                if w is not None:
                    _close(g, w, f"backward, gradient of input {i}", hint[1])
        return run

    def gradchecked(self, arrays, hint, **hyper):
        """A case: the student's backward against central differences."""
        return lambda: _gradcheck(lambda *t: self.mine(*t, **hyper), arrays, hint)

    def away(self, shape):
        """Random values at least 0.1 from ReLU's kink."""
        z = self.r.standard_normal(shape)
        return np.where(np.abs(z) < 0.1, 0.5, z)


def _relu_cases(c):
    edge = np.array([-2.0, -0.0, 0.0, 1e-9, 3.0, -1e-9])
    return [("values", c.same_as_reference([c.away((3, 4, 5))], ("y = max(x, 0)", "dx = dy where x > 0, else 0"))),
            ("gradient check", c.gradchecked([c.away((2, 7))], "the slope is 1 right of 0 and 0 left of it")),
            ("negative inputs and zero", c.same_as_reference([edge], (
                "relu(-2) is 0", "no gradient flows where x <= 0; decide from the input x, not the output "
                "(y is never negative)")))]


def _lrn_cases(c):
    cases = [(7, 5, 0.5, 0.75, 2.0), (3, 5, 0.8, 0.75, 1.0), (6, 4, 0.3, 0.6, 1.5)]
    return [(f"C={ch}, size={n}" + (" (C < size)" if ch < n else "") + (" (even size)" if n % 2 == 0 else ""),
             c.same_as_reference([c.r.standard_normal((2, ch, 3, 4))], (
                 "s[c] = k + alpha * sum of a^2 over channels c - size//2 .. c + (size-1)//2, clipped",
                 "a[m] also sits inside the s[c] of every channel c whose window holds m: add that term"),
                 size=n, alpha=al, beta=be, k=k)) for ch, n, al, be, k in cases] + \
        [("gradient check", c.gradchecked([c.r.standard_normal((2, 5, 2, 3))], "see the backward formula",
                                          size=5, alpha=0.5, beta=0.75, k=2.0))]


def _max_pool2d_cases(c):
    distinct = c.r.permutation(2 * 3 * 7 * 7).reshape(2, 3, 7, 7) / 10.0
    ties = np.zeros((1, 2, 5, 5))
    return [("3x3 stride 2 (overlapping)", c.same_as_reference([distinct], (
                "max over each window", "dy goes to the pixel that won; overlapping windows add"),
                kernel=(3, 3), stride=(2, 2), padding=(0, 0))),
            ("padding 1", c.same_as_reference([distinct - 3.0], (
                "padding never wins (treat it as -infinity)", "padding gets no gradient"),
                kernel=(3, 3), stride=(2, 2), padding=(1, 1))),
            ("ties", c.same_as_reference([ties], (
                "the max of equal values", "with ties, the gradient goes to ONE pixel: the first maximum "
                "in row-major order, not to every tied pixel"), kernel=(3, 3), stride=(2, 2), padding=(0, 0))),
            ("gradient check", c.gradchecked([distinct], "each window sends dy to its winner",
                                             kernel=(3, 3), stride=(2, 2), padding=(0, 0)))]


def _conv2d_cases(c):
    r = c.r
    cases = [(2, 3, 7, 9, 4, 3, 1, 0, 1), (2, 3, 9, 8, 5, 3, 2, 1, 1), (1, 4, 11, 10, 6, 5, 3, 2, 2)]
    out = []
    for n, ch, h, w, o, k, s, p, g in cases:
        arrays = [r.standard_normal((n, ch, h, w)), r.standard_normal((o, ch // g, k, k)), r.standard_normal(o)]
        hyper = dict(stride=(s, s), padding=(p, p), groups=g)
        out.append((f"stride {s}, padding {p}, groups {g}", c.same_as_reference(arrays, (
            "y[n,o] = sum over c, i, j of xpad[n, c, oh*s+i, ow*s+j] w[o, c, i, j] + b[o]",
            "db sums dy over n, oh, ow; dw sums over the whole batch; dx gets each w back at the pixel "
            "it was applied to (the rotated filter)"), **hyper)))
    out.append(("gradient check", c.gradchecked([r.standard_normal((2, 2, 5, 5)), r.standard_normal((3, 2, 3, 3)),
                                                 r.standard_normal(3)], "see the backward formulas",
                                                stride=(1, 1), padding=(1, 1), groups=1)))
    return out


def _dropout_cases(c):
    x = c.r.standard_normal((6, 50))
    return [(f"p={p}, offset {offset}", c.same_as_reference([x], (
                "keep = dropout_keep_mask(seed, x.shape, p, offset); y = x / (1 - p) where kept, else 0",
                "the kept units were scaled by 1/(1-p), and the backward uses the forward's mask (the same "
                "seed and offset): their gradient is scaled too"), p=p, seed=11, offset=offset))
            for p, offset in ((0.5, 0), (0.2, 300))]


def _linear_cases(c):
    r = c.r
    return [("values", c.same_as_reference([r.standard_normal((3, 5)), r.standard_normal((4, 5)), r.standard_normal(4)],
                                           ("y = x w^T + b", "dx = dy w, dw = dy^T x (shape (out, in)), db = sum_n dy"))),
            ("square layer", c.same_as_reference([r.standard_normal((3, 4)), r.standard_normal((4, 4)), r.standard_normal(4)],
                                                 ("y = x w^T + b", "dw = dy^T x, not x^T dy (a square w hides the shape error)"))),
            ("gradient check", c.gradchecked([r.standard_normal((2, 3)), r.standard_normal((4, 3)), r.standard_normal(4)],
                                             "see the backward formulas"))]


def _cross_entropy_cases(c):
    t = np.array([1, 0, 3, 3])

    def stable():
        big = _t(np.array([[1000.0, 0.0], [0.0, -1000.0]]))
        loss = float(c.mine(big, target=np.array([1, 1])).data)
        if not np.isfinite(loss) or abs(loss - 1000.0) > 1e-6:
            raise AssertionError(f"logits of +-1000 gave loss {loss}, expected 1000. Hint: subtract each row's "
                                 "max before exp (it changes nothing mathematically and avoids overflow)")
    return [("batch of 4", c.same_as_reference([c.r.standard_normal((4, 5)) * 3], (
                "loss = the MEAN over rows of -log softmax(z)[target]",
                "dz = (softmax(z) - onehot(target)) / N: divide by the batch"), target=t)),
            ("large logits", stable),
            ("gradient check", c.gradchecked([c.r.standard_normal((3, 4))], "dz = (p - onehot) / N",
                                             target=np.array([0, 2, 1])))]


# op: (the library's Function, the cases that hold a student's op to it)
_CASES = {"relu": (relu.ReLU, _relu_cases), "lrn": (lrn.LocalResponseNorm, _lrn_cases),
          "max_pool2d": (pool.MaxPool2d, _max_pool2d_cases), "conv2d": (conv.Conv2d, _conv2d_cases),
          "dropout": (dropout.Dropout, _dropout_cases), "linear": (linear.Linear, _linear_cases),
          "cross_entropy": (cross_entropy.CrossEntropy, _cross_entropy_cases)}


def _cases(op, mine):
    """[(name, callable that raises AssertionError with a hint)] for one exercise."""
    if op not in _CASES:
        return []
    function, cases = _CASES[op]
    return cases(_Cases(mine, function.apply))


def _sgd_cases(student):
    r = np.random.default_rng(8)

    def step():
        w0, v0, g = r.standard_normal((3, 4)), r.standard_normal((3, 4)), r.standard_normal((3, 4))
        w, v = w0.copy(), v0.copy()
        student.update(w, v, g, 0.1, 0.9, 0.05)
        v_want = 0.9 * v0 - 0.05 * 0.1 * w0 - 0.1 * g
        _close(v, v_want, "velocity", "v <- momentum * v - weight_decay * lr * w - lr * g (the decay inside v)")
        _close(w, w0 + v_want, "weights", "w <- w + v, with the v of this step (update w and v in place)")
    return [("one step with momentum and weight decay", step)]


def check(op, folder):
    """(passed, lines of the report) for the student's <folder>/<op>.py."""
    lines = [f"== {op}"]
    try:
        student = _load(op, folder)
    except Exception as e:
        return False, lines + [f"  cannot load: {type(e).__name__}: {e}"]
    cases = _sgd_cases(student) if op == "sgd" else _cases(op, _op(student))
    passed = True
    for name, run in cases:
        try:
            run()
            lines.append(f"  pass  {name}")
        except NotImplementedError as e:
            passed = False
            lines.append(f"  TODO  {name}: {e}")
        except AssertionError as e:
            passed = False
            lines.append(f"  FAIL  {name}: {e}")
        except Exception as e:  # a crash in the student's code: where, and the engine's word on it
            passed = False
            where = traceback.extract_tb(e.__traceback__)[-1]
            lines.append(f"  FAIL  {name}: {type(e).__name__}: {e} (line {where.lineno} of {Path(where.filename).name})")
    lines.append(f"  {op}: {'all checks pass' if passed else 'not yet'}")
    return passed, lines
