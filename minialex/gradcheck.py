"""Numerical gradient checking: the analytic backward against central differences.

For a random projection r of the output (so every output element matters, with a fixed seed):
    L(inputs) = sum(r * fn(*inputs))
    analytic:  backward with grad r
    numerical: dL/dx[i] ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)     error O(eps^2)
Each element must satisfy |analytic - numerical| <= atol + rtol * |numerical|.
Use float64: in float32 the differences drown in rounding error.

    ma.gradcheck(fn, inputs)                          True, or raises GradcheckError
    ma.gradcheck(fn, inputs, raise_exception=False)   a GradcheckReport: .ok, .rows, print() it

The same central difference (`central_difference`) serves minialex-audit. `check_parity` holds a
kernel (device "cuda-emu" or "cuda") to its NumPy reference the same way: through a random
projection of the output, in float32.
"""
import warnings

import numpy as np

from . import backend
from .errors import check_at_least, check_positive_int, fail
from .function import cpu_path, no_grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    pass


class GradcheckReport:
    """One row per checked input: elements, max |analytic - numerical|, max relative error, the
    worst element, and whether every element passed."""

    def __init__(self, ops, rows):
        self.ops, self.rows = ops, rows
        self.ok = all(r["ok"] for r in rows)

    def __bool__(self):
        return self.ok

    def __str__(self):
        lines = [f"gradcheck of {', '.join(self.ops) or 'fn'}",
                 f"{'input':>5} {'elements':>9} {'max |a - n|':>12} {'max rel err':>12} {'worst element':>16}  result"]
        for r in self.rows:
            lines.append(f"{r['input']:>5} {r['elements']:>9} {r['max_abs']:>12.3g} {r['max_rel']:>12.3g} "
                         f"{str(r['worst']):>16}  {'pass' if r['ok'] else 'FAIL'}")
        return "\n".join(lines)


def _ops(out):
    """The op names in the graph behind `out`, in the order backward meets them."""
    names, seen, stack = [], set(), [out]
    while stack:
        t = stack.pop()
        if id(t) in seen or t._ctx is None:
            continue
        seen.add(id(t))
        if t._ctx.name() not in names:
            names.append(t._ctx.name())
        stack.extend(i for i in t._ctx.inputs if i is not None)
    return names


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, samples=None, seed=0, raise_exception=True):
    """True if fn's analytic gradients match central differences for every input that requires
    grad; raises GradcheckError naming the ops, the input and its worst element otherwise (with
    raise_exception=False: returns a GradcheckReport instead). `samples` checks only that many
    randomly chosen elements per input (for large inputs such as AlexNet's weights)."""
    inputs = _check_arguments(fn, inputs, eps, atol, rtol, samples, seed)
    checked = _checked_inputs(inputs)
    rng = np.random.default_rng(seed)
    out = _output(fn, inputs)
    ops = _ops(out)
    r = backend.to_device(rng.standard_normal(out.shape), out.device, out.dtype)
    analytic = _analytic(out, r, inputs, checked)

    def projected_loss():
        with no_grad():
            return float((fn(*inputs).data * r).sum())

    rows, worst = [], None  # worst: (excess over tolerance, input, element, analytic, numerical)
    for i in checked:
        row, row_worst = _compare(i, inputs[i].data, analytic[i], projected_loss, eps, atol, rtol, samples, rng)
        rows.append(row)
        if row_worst is not None and (worst is None or row_worst[0] > worst[0]):
            worst = row_worst
    report = GradcheckReport(ops, rows)
    if not raise_exception:
        return report
    if worst is not None and worst[0] > 0:
        _, i, idx, a, numerical = worst
        raise GradcheckError(f"gradcheck of {', '.join(ops) or 'fn'}: input {i} element {tuple(int(k) for k in idx)}: "
                             f"analytic {a:.10g}, numerical {numerical:.10g} (|diff| {abs(a - numerical):.3g} > "
                             f"atol {atol} + rtol {rtol} * |numerical|)")
    return True


def _check_arguments(fn, inputs, eps, atol, rtol, samples, seed, op="gradcheck"):
    """The inputs as a list, once every argument is what it must be (else the error naming it)."""
    if not callable(fn):
        fail(op, "fn", "a function of the inputs returning a Tensor", type(fn).__name__, TypeError)
    if isinstance(inputs, Tensor) or not hasattr(inputs, "__iter__"):
        fail(op, "inputs", "a list of inputs (Tensors; [x] for one)", type(inputs).__name__, TypeError)
    check_at_least(op, "eps", eps, 0, above=True)
    check_at_least(op, "atol", atol, 0)
    check_at_least(op, "rtol", rtol, 0)
    if samples is not None:
        check_positive_int(op, "samples", samples)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        fail(op, "seed", "an integer >= 0", repr(seed))
    return list(inputs)


def _output(fn, inputs, op="gradcheck"):
    """fn(*inputs), which must be a Tensor (the backward starts from it)."""
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        fail(op, "fn", "to return a Tensor (made by minialex ops from the inputs, so it has a graph)",
             f"{type(out).__name__}" + (" (a NumPy array: its gradient cannot be traced)"
                                        if isinstance(out, np.ndarray) else ""), TypeError)
    return out


def _checked_inputs(inputs):
    """The indices of the inputs that want a gradient (a warning for each one not in float64)."""
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: inputs expected at least one Tensor with requires_grad=True, got none")
    for i in checked:
        if inputs[i].dtype != np.float64:
            warnings.warn(f"gradcheck: input {i} is {inputs[i].dtype}; use float64, central "
                          f"differences in lower precision are dominated by rounding", stacklevel=3)
    return checked


def _analytic(out, r, inputs, checked):
    """{input index: d(sum(r * out))/d(input)} as NumPy arrays, by the backward; the inputs' own
    .grad are left as they were."""
    saved = {i: inputs[i].grad for i in checked}
    for i in checked:
        inputs[i].grad = None
    if out.requires_grad:  # else no input reaches the output: every gradient is 0
        out.backward(r)
    # an input the backward never reached has gradient 0 (it does not affect the output)
    analytic = {i: np.zeros(inputs[i].shape) if inputs[i].grad is None else backend.to_numpy(inputs[i].grad)
                for i in checked}
    for i in checked:
        inputs[i].grad = saved[i]
    return analytic


def central_difference(loss, data, idx, eps):
    """(numerical derivative, L(+eps), L(-eps)): loss() evaluated with the element data[idx] moved
    by +eps and by -eps, (L(+eps) - L(-eps)) / (2 eps); the element is put back afterwards."""
    orig = data[idx].item()
    try:
        data[idx] = orig + eps
        plus = loss()
        data[idx] = orig - eps
        minus = loss()
    finally:
        data[idx] = orig
    return (plus - minus) / (2 * eps), plus, minus


def _compare(i, data, analytic, loss, eps, atol, rtol, samples, rng):
    """(the report's row for input i, its worst element as (excess, i, element, analytic, numerical)
    or None when no element was checked): each (sampled) element's analytic gradient against its
    central difference."""
    flat = range(data.size) if samples is None or samples >= data.size else \
        rng.choice(data.size, size=samples, replace=False)
    row = {"input": i, "elements": len(flat), "max_abs": 0.0, "max_rel": 0.0, "worst": None, "ok": True}
    worst = None
    for f in flat:
        idx = np.unravel_index(int(f), data.shape)
        numerical, _, _ = central_difference(loss, data, idx, eps)
        a = float(analytic[idx])
        diff = abs(a - numerical)
        excess = diff - (atol + rtol * abs(numerical))
        if np.isnan(excess):  # a NaN on either side: the worst an element can be
            excess = np.inf
        row["max_abs"] = max(row["max_abs"], diff)
        row["max_rel"] = max(row["max_rel"], diff / max(abs(a), abs(numerical), 1e-12))
        if worst is None or excess > worst[0]:
            worst = (excess, i, idx, a, numerical)
            row["worst"] = tuple(int(k) for k in idx)
    row["ok"] = worst is None or worst[0] <= 0
    return row, worst


def check_parity(fn, shapes, device="cuda-emu", seed=0, rtol=1e-4, **kwargs):
    """Run fn(*tensors) on `device` (the kernels) and on "cpu" (the NumPy reference), from the same
    random float32 inputs of `shapes`, and compare the outputs and, through one random projection
    of the output (L = sum(r * y)), the gradients of every input. Returns {"y": err, "d input i":
    err} (max |kernel - reference| / max |reference|); AssertionError when one exceeds rtol.

        ma.check_parity(F.relu, [(4, 5)])
        ma.check_parity(lambda x, w: F.conv2d(x, w, padding=1), [(2, 3, 9, 9), (4, 3, 3, 3)])
    """
    if not callable(fn):
        fail("check_parity", "fn", "a function of the tensors returning a Tensor", type(fn).__name__, TypeError)
    check_at_least("check_parity", "rtol", rtol, 0)
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    results, r = [], None
    for dev in ("cpu", device):
        with cpu_path("reference"):
            ts = [Tensor(a, requires_grad=True, device=dev) for a in arrays]
            y = _output(lambda *t: fn(*t, **kwargs), ts, "check_parity")
            if r is None:
                r = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(np.float32)
            y.backward(Tensor(r, device=dev))
            results.append([y.numpy()] + [np.zeros(t.shape, np.float32) if t.grad is None else
                                          Tensor(t.grad, device=dev).numpy() for t in ts])
    errors = {}
    for k, (ref, got) in enumerate(zip(*results)):
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        errors["y" if k == 0 else f"d input {k - 1}"] = \
            float(np.abs(got.astype(np.float64) - ref).max() / scale) if scale > 0 else float(np.abs(got).max(initial=0))
    bad = {k: v for k, v in errors.items() if not v <= rtol}
    if bad:
        raise AssertionError(f"check_parity on {device}: relative errors above {rtol}: {bad}")
    return errors
