"""The grader: many students' folders, each op in a child process with a time limit.

    grade(ops, folders, timeout=10, jobs=None, on_result=print_it) -> [OpResult]
    check(op, folder) -> (passed, lines)           # one folder, one op, as `exercises check` prints it

This process never imports a student's file. For each folder and op it writes the op's cases
(cases_ops.py) to a temporary folder, starts `python -m minialex.exercises._child` on the student's
file and waits at most `timeout` seconds (from the moment the child is ready to import the file),
then kills the child's whole process group. The child sends back the student's outputs as arrays
and one report line per case carrying a nonce sent on its stdin; this process compares the arrays
with the reference (judge.py). A report that never comes is a failure with its reason: timed out
after S s, exited with status N, killed by signal SIGSEGV, a garbled report. The student's source
is also read (never run) for imports of the library's own implementations (scan.py).

What this guards against: accidents and cheap tricks (an endless loop, sys.exit or os._exit in a
forward, a crash, a patched np.allclose or checker, a printed "pass", importing the solution). What
it does not: a hostile student. Their code runs with the grader's user's rights; run it in a
container or a throwaway account if that matters.
"""
import json
import os
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .cases import GRADIENT_CHECK, OPS
from .cases_ops import cases_for
from .judge import judge
from .scan import findings

DEFAULT_TIMEOUT = 10.0          # seconds per op, the student's code only (import included)
STARTUP = 60.0                  # seconds the child may take to start (Python, NumPy), on a busy machine
REPORT_LIMIT = 1 << 20          # bytes of report lines: more is garbled
ROOT = str(Path(__file__).resolve().parents[2])     # the folder that holds the minialex package
OWN_WORK_HINT = ("write forward and backward yourself: an exercise file may import NumPy and what its "
                 "template imports (dropout_keep_mask)")


class OpResult(NamedTuple):
    folder: str
    op: str
    file: str
    records: list           # one dict per case: folder, op, file, case, status, message, hint

    @property
    def passed(self):
        return bool(self.records) and all(r["status"] == "pass" for r in self.records)


def _record(folder, op, path, case, status, message="", hint=""):
    return dict(folder=str(folder), op=op, file=str(path), case=case, status=status, message=message, hint=hint)


def write_plan(op, cases, work):
    """WORK/plan.json and WORK/inputs.npz: what the child runs (hyper-parameter arrays by name)."""
    arrays, plan = {}, {"op": op, "grads": list(OPS[op][2]), "eps": GRADIENT_CHECK["eps"], "cases": []}
    for k, case in enumerate(cases):
        keys = []
        for i, a in enumerate(case.inputs):
            keys.append(None if a is None else f"c{k}_in{i}")
            if a is not None:
                arrays[keys[-1]] = a
        hyper = {}
        for name, v in case.hyper.items():
            if isinstance(v, np.ndarray):
                arrays[f"c{k}_{name}"], v = v, {"array": f"c{k}_{name}"}
            hyper[name] = list(v) if isinstance(v, tuple) else v
        if case.dy is not None:
            arrays[f"c{k}_dy"] = case.dy
        plan["cases"].append({"name": case.name, "kind": case.kind, "inputs": keys, "hyper": hyper,
                              "dy": None if case.dy is None else f"c{k}_dy", "probes": case.probes})
    np.savez(Path(work) / "inputs.npz", **arrays)
    (Path(work) / "plan.json").write_text(json.dumps(plan))


_live, _live_lock = set(), threading.Lock()


def _kill(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)     # the child and anything it started
    except (ProcessLookupError, PermissionError):
        pass


def kill_all():
    """Kill every child still running (on Ctrl-C)."""
    with _live_lock:
        for proc in list(_live):
            _kill(proc)


def _parse(line, nonce):
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) and message.get("nonce") == nonce else None


def _read(proc, nonce, timeout):
    """(the child's messages, 'timeout' | 'startup' | 'garbled' | None), reading until it closes its pipe."""
    messages, buffer, deadline = [], b"", time.monotonic() + STARTUP
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return messages, "timeout" if any(m.get("event") == "ready" for m in messages) else "startup"
            if not sel.select(left):
                continue
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            if len(buffer) > REPORT_LIMIT:
                return messages, "garbled"
            for line in lines:
                message = _parse(line, nonce)
                if message is None:
                    return messages, "garbled"
                messages.append(message)
                if message.get("event") == "ready":
                    deadline = time.monotonic() + timeout
    try:
        proc.wait(max(deadline - time.monotonic(), 0.01))
    except subprocess.TimeoutExpired:
        return messages, "timeout"
    return messages, None


def _last_words(log):
    try:
        lines = [line for line in Path(log).read_text(errors="replace")[-2000:].splitlines() if line.strip()]
    except OSError:
        return ""
    return f" (its last output: {lines[-1].strip()[:200]})" if lines else ""


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def run_child(op, path, work, timeout):
    """(messages, reason): the child's report, and why it stopped short: None when it did not, else
    (how the process ended, what it said last, a hint)."""
    nonce = secrets.token_hex(16)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONDONTWRITEBYTECODE="1",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log = Path(work) / "log.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "minialex.exercises._child", op, str(path), str(work)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=work, env=env,
                                start_new_session=True)
    with _live_lock:
        _live.add(proc)
    try:
        proc.stdin.write((nonce + "\n").encode())
        proc.stdin.close()
        messages, trouble = _read(proc, nonce, timeout)
    finally:
        _kill(proc)
        proc.wait()
        proc.stdout.close()
        with _live_lock:
            _live.discard(proc)
    if any(m.get("event") == "done" for m in messages) and trouble is None:
        return messages, None
    if trouble == "timeout":
        return messages, (f"timed out after {timeout:g} s", "", LOST_HINTS["timeout"])
    if trouble == "startup":
        return messages, (f"did not start within {STARTUP:g} s (is the machine overloaded?)", "", "")
    if trouble == "garbled":
        return messages, ("sent a garbled report (lines the grader did not write)", "", LOST_HINTS["garbled"])
    rc = proc.returncode
    how = f"was killed by signal {_signal_name(-rc)}" if rc < 0 else f"exited with status {rc}"
    return messages, (how, f", before its report{_last_words(log)}", LOST_HINTS["exit"])


LOST_HINTS = {
    "timeout": "an endless loop, or far too slow: a correct op passes its checks in well under a second",
    "garbled": "the student's code wrote into the grader's report pipe",
    "exit": "sys.exit or os._exit in the student's code, or a crash (NumPy called with bad memory, the "
            "memory limit of 4 GiB)"}


def _reports(cases, messages, reason):
    """{case index: report} from the child's messages; a case it never reported is "lost", with
    the reason (how the process ended, what it said last, a hint)."""
    reports = {m["case"]: m for m in messages if m.get("event") == "case" and isinstance(m.get("case"), int)}
    load = next((m["message"] for m in messages if m.get("event") == "load failed"), None)
    started = [m["case"] for m in messages if m.get("event") == "start" and m.get("case") not in reports]
    how, detail, hint = reason or ("sent no report", "", "")
    ready = any(m.get("event") == "ready" for m in messages)
    for k, case in enumerate(cases):
        if k in reports:
            continue
        if load:
            reports[k] = {"status": "error", "message": load}
        elif not started:
            when = "while importing the student's file" if ready else "before this case ran"
            reports[k] = {"status": "lost", "message": f"the process {how} {when}{detail}", "hint": hint}
        elif started[-1] == k:
            reports[k] = {"status": "lost", "message": f"the process {how} during this case{detail}", "hint": hint}
        else:
            reports[k] = {"status": "lost", "message": f"not run: the process {how} during case "
                                                       f"{cases[started[-1]].name!r}", "hint": ""}
    return reports


def _outputs(path):
    try:
        with np.load(path, allow_pickle=False) as f:
            return {key: f[key] for key in f.files}
    except (OSError, ValueError):
        return None


def judge_all(op, cases, reports, work):
    """[(case name, status, message, hint)] of the op's cases, in order."""
    passed, verdicts = set(), []
    for k, case in enumerate(cases):
        report = reports[k]
        if report["status"] == "lost":
            verdicts.append((case.name, "error", report["message"], report["hint"]))
            continue
        outputs = _outputs(Path(work) / f"out{k}.npz") if report["status"] == "ran" else None
        if report["status"] == "ran" and outputs is None:
            verdicts.append((case.name, "error", "the student's outputs could not be read", ""))
            continue
        status, message, hint = judge(op, case, report, outputs, passed)
        if status == "pass":
            passed.add(case.name)
        verdicts.append((case.name, status, message, hint))
    return verdicts


def _own_work(op, path):
    """The 'own work' verdict: None, or (status, message, hint) naming the lines."""
    found = findings(Path(path).read_text(errors="replace"))
    if not found:
        return None
    lines = "; ".join(f"line {n}: {what}" for n, what in found[:5])
    return ("fail", f"{Path(path).name} uses the library's own implementation ({lines})", OWN_WORK_HINT)


def grade_op(op, folder, timeout=DEFAULT_TIMEOUT):
    """OpResult of one student's op, the student's code run in a child process."""
    path = Path(folder) / f"{op}.py"
    cases = cases_for(op)
    if not path.is_file():
        why = f"no {path}: run  python -m minialex.exercises start {folder}  first"
        return OpResult(str(folder), op, str(path), [_record(folder, op, path, c.name, "fail", why) for c in cases])
    verdicts = []
    own = _own_work(op, path)
    if own:
        verdicts.append(("own work", *own))
    with tempfile.TemporaryDirectory(prefix="minialex-grade-") as work:
        write_plan(op, cases, work)
        messages, reason = run_child(op, path.resolve(), work, timeout)
        verdicts += judge_all(op, cases, _reports(cases, messages, reason), work)
    return OpResult(str(folder), op, str(path), [_record(folder, op, path, *v) for v in verdicts])


def grade(ops, folders, timeout=DEFAULT_TIMEOUT, jobs=None, on_result=None):
    """[OpResult] of every op of every folder, `jobs` children at a time (default: the CPUs);
    on_result(result) is called as each one comes, in the order they finish."""
    tasks = [(folder, op) for folder in folders for op in ops]
    if not jobs:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    results = []
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(tasks) or 1))) as pool:
        futures = [pool.submit(grade_op, op, folder, timeout) for folder, op in tasks]
        try:
            for future in as_completed(futures):
                results.append(future.result())
                if on_result:
                    on_result(results[-1])
        except BaseException:
            for future in futures:
                future.cancel()
            kill_all()
            raise
    order = {task: i for i, task in enumerate(tasks)}
    return sorted(results, key=lambda r: order[(r.folder, r.op)])


def grade_here(op, folder, scan=True):
    """OpResult of one op with the student's code run in THIS process: no time limit and no
    protection at all. For the library's tests and for debugging the cases; `scan=False` skips the
    own-work scan (a test that answers with the library's injected bugs imports minialex.bugs)."""
    from ._child import load, run_case
    path = (Path(folder) / f"{op}.py").resolve()
    cases = cases_for(op)
    own = _own_work(op, path) if scan else None
    verdicts = [("own work", *own)] if own else []
    with tempfile.TemporaryDirectory(prefix="minialex-grade-") as work:
        write_plan(op, cases, work)
        plan = json.loads((Path(work) / "plan.json").read_text())
        with np.load(Path(work) / "inputs.npz") as f:
            arrays = {key: f[key] for key in f.files}
        student, reports = load(op, str(path)), {}
        for k, case in enumerate(plan["cases"]):
            reports[k], outputs = run_case(student, str(path), case, arrays, plan)
            if outputs is not None:
                np.savez(Path(work) / f"out{k}.npz", **outputs)
        verdicts += judge_all(op, cases, reports, work)
    return OpResult(str(folder), op, str(path), [_record(folder, op, path, *v) for v in verdicts])
