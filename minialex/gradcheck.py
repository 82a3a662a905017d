"""Numerical gradient checking: the analytic backward against central differences.

For a random projection r of the output (so every output element matters, with a fixed seed):
    L(inputs) = sum(r * fn(*inputs))
    analytic:  backward with grad r
    numerical: dL/dx[i] ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)     error O(eps^2)
Each element must satisfy |analytic - numerical| <= atol + rtol * |numerical|.
Use float64: in float32 the differences drown in rounding error.

    ma.gradcheck(fn, inputs)                          True, or raises GradcheckError
    ma.gradcheck(fn, inputs, raise_exception=False)   a GradcheckReport: .ok, .rows, print() it
"""
import warnings

import numpy as np

from . import backend
from .function import no_grad
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
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: inputs expected at least one Tensor with requires_grad=True, got none")
    for i in checked:
        if inputs[i].dtype != np.float64:
            warnings.warn(f"gradcheck: input {i} is {inputs[i].dtype}; use float64, central "
                          f"differences in lower precision are dominated by rounding", stacklevel=2)
    rng = np.random.default_rng(seed)
    out = fn(*inputs)
    ops = _ops(out)
    r = backend.to_device(rng.standard_normal(out.shape), out.device, out.dtype)

    def projected_loss():
        with no_grad():
            return float((fn(*inputs).data * r).sum())

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

    rows, worst = [], None  # worst: (excess over tolerance, input, element, analytic, numerical)
    for i in checked:
        data = inputs[i].data
        flat = range(data.size) if samples is None or samples >= data.size else \
            rng.choice(data.size, size=samples, replace=False)
        row = {"input": i, "elements": len(flat), "max_abs": 0.0, "max_rel": 0.0, "worst": None, "ok": True}
        row_excess = None
        for f in flat:
            idx = np.unravel_index(int(f), data.shape)
            orig = data[idx].item()
            data[idx] = orig + eps
            plus = projected_loss()
            data[idx] = orig - eps
            minus = projected_loss()
            data[idx] = orig
            numerical = (plus - minus) / (2 * eps)
            a = float(analytic[i][idx])
            diff = abs(a - numerical)
            excess = diff - (atol + rtol * abs(numerical))
            row["max_abs"] = max(row["max_abs"], diff)
            row["max_rel"] = max(row["max_rel"], diff / max(abs(a), abs(numerical), 1e-12))
            if row_excess is None or excess > row_excess:
                row_excess, row["worst"] = excess, tuple(int(k) for k in idx)
            if worst is None or excess > worst[0]:
                worst = (excess, i, idx, a, numerical)
        row["ok"] = row_excess is None or row_excess <= 0
        rows.append(row)
    report = GradcheckReport(ops, rows)
    if not raise_exception:
        return report
    if worst is not None and worst[0] > 0:
        _, i, idx, a, numerical = worst
        raise GradcheckError(f"gradcheck of {', '.join(ops) or 'fn'}: input {i} element {tuple(int(k) for k in idx)}: "
                             f"analytic {a:.10g}, numerical {numerical:.10g} (|diff| {abs(a - numerical):.3g} > "
                             f"atol {atol} + rtol {rtol} * |numerical|)")
    return True
