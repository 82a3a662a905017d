"""The grader's child process: runs one student file on one op's cases and sends back what it got.

    python -m minialex.exercises._child OP FILE WORK     (started by grade.py, the nonce on stdin)

WORK holds plan.json and inputs.npz, written by the grader; this process reads both and the nonce
before it imports the student's file, then runs each case and writes the student's outputs to
WORK/out<k>.npz. It judges nothing: the grader compares those arrays with the reference in its
own process, so a student's code that patches NumPy or anything else here changes no verdict.
Its reports go to the grader on a pipe of their own, one JSON line per event, each carrying the
nonce: a student's print goes to the log (stderr) and cannot pass for a report, and a report that
never comes (an endless loop, os._exit, a crash) is the grader's to name. This guards against
accidents and cheap tricks, not against a hostile student: their code runs with this process's rights.
"""
import importlib.util
import inspect
import json
import os
import resource
import signal
import sys
import traceback
from pathlib import Path

import numpy as np

SAVE = np.savez          # taken before the student's code runs (it may replace np.savez)
LIMITS = ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, 64 << 20), (resource.RLIMIT_AS, 4 << 30))


class StudentError(Exception):
    """The student's code raised, or returned something outside the contract: the message says where."""


class Todo(Exception):
    """NotImplementedError: the student has not written this yet."""


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} value(s)"
    return "None" if value is None else f"a {type(value).__name__}"


def _where(tb, path, fn):
    """'relu.py, line 14, in forward: <the line>': the last frame of the student's file, else the
    line that defines fn."""
    frames = [f for f in traceback.extract_tb(tb) if os.path.realpath(f.filename) == path]
    if frames:
        return f"{Path(path).name}, line {frames[-1].lineno}, in {frames[-1].name}: {(frames[-1].line or '').strip()}"
    code = getattr(fn, "__code__", None)
    return f"{Path(code.co_filename).name}, line {code.co_firstlineno}: def {fn.__name__}" if code else Path(path).name


def _call(part, fn, path, *args, **kwargs):
    """(fn's result, the line it returned from): the student's function, any exception it raises
    (SystemExit too) turned into a StudentError that names the student's file and line."""
    code, returned = getattr(fn, "__code__", None), {}

    def profile(frame, event, arg):
        if event == "return" and frame.f_code is code:
            returned["line"] = frame.f_lineno
    sys.setprofile(profile)
    try:
        result = fn(*args, **kwargs)
    except NotImplementedError as e:
        raise Todo(f"{part}: {e}" if str(e) else f"{part} is not written yet") from None
    except KeyboardInterrupt:
        raise
    except SystemExit as e:
        raise StudentError(f"{part} called sys.exit({e.code!r}) ({_where(e.__traceback__, path, fn)})") from None
    except BaseException as e:
        raise StudentError(f"{part} raised {type(e).__name__}: {e} ({_where(e.__traceback__, path, fn)})") from None
    finally:
        sys.setprofile(None)
    line = returned.get("line")
    return result, (f"{Path(code.co_filename).name}, line {line}" if line else _where(None, path, fn))


def _array(value, what, where):
    """value as a NumPy array (a copy), or a StudentError."""
    try:
        a = np.array(value, copy=True)
    except Exception as e:
        raise StudentError(f"{what} is {_describe(value)}, expected a NumPy array ({where}): {e}") from None
    if a.dtype.kind in "OUSVM":
        raise StudentError(f"{what} is {_describe(value)}, expected a NumPy array of numbers ({where})")
    return a


def _forward(student, path, inputs, hyper):
    result, where = _call("forward", student.forward, path, *inputs, **hyper)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise StudentError(f"forward returned {_describe(result)}, expected a pair (y, cache) ({where})")
    return _array(result[0], "forward's y", where), result[1]


def _takes_needs(fn):
    """Whether backward is the engine's backward(dy, cache, needs) (a reference pair's): it gets
    needs, True for each input there is; the exercise's backward(dy, cache) does not."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) >= 3


def run_pair(student, path, case, arrays, plan):
    """forward, then backward on its cache, then forward at the gradient check's probes: {name: array}."""
    fresh = lambda: [None if key is None else arrays[key].copy() for key in case["inputs"]]   # noqa: E731
    hyper = {k: arrays[v["array"]].copy() if isinstance(v, dict) else tuple(v) if isinstance(v, list) else v
             for k, v in case["hyper"].items()}
    inputs, out = fresh(), {}
    out["y"], cache = _forward(student, path, inputs, hyper)
    out.update({f"forward_x{i}": x.copy() for i, x in enumerate(inputs) if x is not None})
    dy = arrays[case["dy"]].copy()
    needs = (tuple(x is not None for x in inputs),) if _takes_needs(student.backward) else ()
    grads, where = _call("backward", student.backward, path, dy, cache, *needs)
    names = plan["grads"]
    if not isinstance(grads, (tuple, list)) or len(grads) != len(names):
        raise StudentError(f"backward returned {_describe(grads)}, expected a tuple of {len(names)} gradient(s) "
                           f"({', '.join(names)}; a single one as ({names[0]},)) ({where})")
    out.update({name: _array(g, f"backward's {name}", where) for name, g in zip(names, grads) if g is not None})
    out.update({f"backward_x{i}": x.copy() for i, x in enumerate(inputs) if x is not None})
    out["backward_dy"] = dy
    for p, (i, j) in enumerate(case["probes"]):
        for sign in "+-":
            inputs = fresh()
            inputs[i].flat[j] += plan["eps"] if sign == "+" else -plan["eps"]
            out[f"probe{p}{sign}"], _ = _forward(student, path, inputs, hyper)
    return out


def run_update(student, path, case, arrays, plan):
    """update(w, v, g, lr, momentum, weight_decay), in place: {"w", "v", "after_g"}."""
    w, v, g = (arrays[key].copy() for key in case["inputs"])
    h = case["hyper"]
    _call("update", student.update, path, w, v, g, h["lr"], h["momentum"], h["weight_decay"])
    return {"w": _array(w, "w", path), "v": _array(v, "v", path), "after_g": g}


def load(op, path):
    """The student's module, imported from its file (never by the grader's own process)."""
    spec = importlib.util.spec_from_file_location(f"minialex_exercise_{op}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_case(student, path, case, arrays, plan):
    """(report, outputs) of one case: report["status"] is "ran", "todo" or "error"."""
    names = ("update",) if case["kind"] == "update" else ("forward", "backward")
    missing = [name for name in names if not callable(getattr(student, name, None))]
    if missing:
        return {"status": "error", "message": f"{Path(path).name} defines no function {' or '.join(missing)}"}, None
    try:
        run = run_update if case["kind"] == "update" else run_pair
        return {"status": "ran"}, run(student, path, case, arrays, plan)
    except Todo as e:
        return {"status": "todo", "message": str(e)}, None
    except StudentError as e:
        return {"status": "error", "message": str(e)}, None
    except Exception as e:      # something the student's code returned broke a step of this process
        return {"status": "error", "message": f"{type(e).__name__}: {e} ({_where(e.__traceback__, path, None)})"}, None


def _load_failure(op, path, e):
    if isinstance(e, SystemExit):
        return f"importing {Path(path).name} called sys.exit({e.code!r}) ({_where(e.__traceback__, path, None)})"
    if isinstance(e, SyntaxError):
        return f"cannot import {Path(path).name}: SyntaxError: {e}"
    return f"cannot import {Path(path).name}: {type(e).__name__}: {e} ({_where(e.__traceback__, path, None)})"


def _sandbox():
    """Limits on this process (no core file, files up to 64 MiB, 4 GiB of memory) before the
    student's code runs; a file too large is an error in their code, not a killed process."""
    for what, value in LIMITS:
        _, hard = resource.getrlimit(what)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        try:
            resource.setrlimit(what, (value, value))
        except (ValueError, OSError):       # a system that will not lower this one: go on without
            pass
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def main(argv):
    op, path, work = argv[0], os.path.realpath(argv[1]), Path(argv[2])
    nonce = sys.stdin.readline().strip()
    pipe = os.fdopen(os.dup(1), "w")              # the reports' own pipe (not inherited by children)
    os.dup2(2, 1)                                 # the student's prints go to the log

    def send(**message):
        pipe.write(json.dumps({"nonce": nonce, **message}) + "\n")
        pipe.flush()
    plan = json.loads((work / "plan.json").read_text())
    with np.load(work / "inputs.npz", allow_pickle=False) as f:
        arrays = {key: f[key] for key in f.files}
    _sandbox()
    send(event="ready")
    try:
        student = load(op, path)
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        send(event="load failed", message=_load_failure(op, path, e))
        student = None
    for k, case in enumerate(plan["cases"] if student is not None else []):
        send(event="start", case=k)
        report, outputs = run_case(student, path, case, arrays, plan)
        if outputs is not None:
            SAVE(work / f"out{k}.npz", **outputs)
        send(event="case", case=k, **report)
    send(event="done")
    os._exit(0)                                   # no atexit handler or thread of the student's runs after


if __name__ == "__main__":
    main(sys.argv[1:])
