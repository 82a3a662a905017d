"""The judge: a student's outputs for one case against the reference's, and the hint that says where
they differ. It runs in the grader's own process, on arrays the student's process sent back, so
nothing the student's code changed there (NumPy's functions, the checks) takes part in it.

    judge(case, report, outputs, passed) -> (status, message, hint)

status: "pass", "fail" (wrong values, an input changed in place, an exception or a broken contract
in the student's code) or "todo" (NotImplementedError: not written yet).
"""
import numpy as np

from .cases import GRADIENT_CHECK, OPS

RTOL, ATOL = 1e-7, 1e-9          # float64 against float64: the same math, another order of sums


def _at(index):
    return "(" + ", ".join(str(int(i)) for i in index) + ("," if len(index) == 1 else "") + ")"


def _changed(before, after, what):
    """A message if `after` is not `before` (an input the student's code changed in place)."""
    if after is None or (after.shape == before.shape and np.array_equal(after, before, equal_nan=True)):
        return None
    if after.shape != before.shape:
        return f"{what}: its shape went from {before.shape} to {after.shape}"
    diff = after != before
    i = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return (f"{what}: {int(diff.sum())} of {diff.size} values, e.g. at {_at(i)}: was {before[i]:.6g}, "
            f"now {after[i]:.6g}")


def _in_place(op, case, outputs):
    """(message, hint) for the first input the student's code changed in place, or None."""
    names = OPS[op][1]
    if case.kind == "update":
        checks = [("update changed its input g in place", case.inputs[2], outputs.get("after_g"))]
    else:
        checks = [(f"forward changed its input {names[i]} in place", x, outputs.get(f"forward_x{i}"))
                  for i, x in enumerate(case.inputs) if x is not None]
        checks += [(f"backward changed the forward's input {names[i]} in place (through the cache)", x,
                    outputs.get(f"backward_x{i}")) for i, x in enumerate(case.inputs) if x is not None]
        checks.append(("backward changed dy in place", case.dy, outputs.get("backward_dy")))
    for what, before, after in checks:
        message = _changed(before, after, what)
        if message:
            return message, ("compute into new arrays (y = np.maximum(x, 0), not x[x < 0] = 0): the caller's "
                             "arrays must stay as they were; copy one (x.copy()) before changing it")
    return None


def _factor(got, want):
    """c where got == c * want everywhere (c != 1), else None."""
    scale = float(np.sum(want * want))
    if scale == 0 or not np.all(np.isfinite(got)):
        return None
    c = float(np.sum(got * want)) / scale
    if np.isclose(c, 1.0) or not np.allclose(got, c * want, rtol=1e-6, atol=1e-9):
        return None
    return c


def diagnose(case, part, got, want, bad, passed):
    """The hint for a part that differs: a known wrong answer, a factor, where the differences lie,
    an earlier case that passed, else the part's formula."""
    for array, hint in case.wrong.get(part, []):
        if array.shape == got.shape and np.allclose(got, array, rtol=RTOL, atol=ATOL):
            return hint
    if (~np.isfinite(got) & np.isfinite(want)).any():
        return "NaN or infinity where the value is finite: " + case.hints.get(part, "")
    c = _factor(got, want)
    if c is not None:
        for factor, hint in case.factors.get(part, {}).items():
            if np.isclose(c, factor, rtol=1e-6):
                return hint
        return f"{part} is {c:.4g} times the right value everywhere: " + case.hints.get(part, "")
    for mask, hint in case.places.get(part, []):
        mask = np.broadcast_to(mask, bad.shape)
        if not mask.all() and not (bad & ~mask).any():
            return hint
    return _after(case, passed) or case.hints.get(part, "")


def _after(case, passed):
    return next((hint for name, hint in case.after if name in passed), None)


def _compare(case, part, got, want, passed):
    """(message, hint) if the student's `part` differs from the reference's, else None."""
    if want is None:
        return None if got is None else (f"{part} is an array, expected None (that input was None)",
                                         "return None as the gradient of an input that was None")
    if got is None:
        return f"{part} is None, expected an array of shape {want.shape}", case.hints.get(part, "")
    if got.dtype != want.dtype:
        return (f"{part} has dtype {got.dtype}, expected {want.dtype} like the inputs",
                "keep the inputs' dtype: np.zeros_like(x) or np.zeros(shape, x.dtype), not a float32 or int array")
    if got.shape != want.shape:
        hint = next((h for a, h in case.wrong.get(part, []) if a.shape == got.shape), None)
        return (f"{part} has shape {got.shape}, expected {want.shape}",
                hint or case.hints.get(f"{part} shape", case.hints.get(part, "")))
    bad = ~np.isclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True)
    if not bad.any():
        return None
    gap = np.where(bad, np.nan_to_num(np.abs(got - want), nan=np.inf), -1.0)
    i = np.unravel_index(int(np.argmax(gap)), gap.shape)
    return (f"{part}: {int(bad.sum())} of {bad.size} values differ; at {_at(i)} got {got[i]:.6g}, "
            f"expected {want[i]:.6g}", diagnose(case, part, got, want, bad, passed))


def _gradient_check(op, case, outputs):
    """(message, hint) where the student's backward disagrees with central differences of their own
    forward, else None."""
    names, grads = OPS[op][1], OPS[op][2]
    for p, (i, j) in enumerate(case.probes):
        grad = outputs.get(grads[i])
        if grad is None or grad.shape != case.inputs[i].shape:
            return (f"{grads[i]} has shape {None if grad is None else grad.shape}, expected {names[i]}'s "
                    f"shape {case.inputs[i].shape}", case.hints.get(grads[i], ""))
        plus, minus = outputs[f"probe{p}+"], outputs[f"probe{p}-"]
        if plus.shape != case.dy.shape:
            return f"y has shape {plus.shape}, expected {case.dy.shape}", case.hints.get("y", "")
        numeric = float(np.sum(case.dy * (plus - minus))) / (2 * GRADIENT_CHECK["eps"])
        mine = float(grad.flat[j])
        if not abs(numeric - mine) <= 1e-5 * max(1.0, abs(numeric), abs(mine)):
            at = _at(np.unravel_index(j, case.inputs[i].shape))
            return (f"{grads[i]} at {at} is {mine:.6g}, but your forward's slope there (central differences) "
                    f"is {numeric:.6g}",
                    "your backward does not match your own forward: " + case.hints.get(grads[i], ""))
    return None


def judge(op, case, report, outputs, passed):
    """(status, message, hint) of one case, from the student's process's report on it and the
    arrays it sent; `passed` holds the names of the op's cases that passed so far."""
    if report["status"] == "todo":
        return "todo", report["message"], ""
    if report["status"] != "ran":
        return "fail", report["message"], _after(case, passed) or ""
    found = _in_place(op, case, outputs)
    if found is None and case.probes:
        found = _gradient_check(op, case, outputs)
    elif found is None:
        parts = ("v", "w") if case.kind == "update" else ("y",) + OPS[op][2]
        for part in parts:
            found = _compare(case, part, outputs.get(part), case.want[part], passed)
            if found:
                break
    return ("pass", "", "") if found is None else ("fail", *found)
