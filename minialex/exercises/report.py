"""What `exercises check` prints and writes: one folder's report op by op, one line per student and
op for a class, and the JSON records (one per student, op and case)."""
import json
import os
from pathlib import Path

from .grade import DEFAULT_TIMEOUT, grade, grade_op

LABEL = {"pass": "pass", "fail": "FAIL", "todo": "TODO", "error": "FAIL"}


def op_lines(result):
    """One op of one folder: a line per case (with its message and hint), then the verdict."""
    lines = [f"== {result.op} ({result.file})"]
    for r in result.records:
        text = f"  {LABEL[r['status']]:<4}  {r['case']}"
        text += f": {r['message']}" if r["message"] else ""
        text += f". Hint: {r['hint']}" if r["hint"] else ""
        lines.append(text)
    lines.append(f"  {result.op}: {'all checks pass' if result.passed else 'not yet'}")
    return lines


def summary_line(result):
    """One line for a student's op: the verdict, how many checks pass, the first failure."""
    n, ok = len(result.records), sum(r["status"] == "pass" for r in result.records)
    first = next((r for r in result.records if r["status"] != "pass"), None)
    text = f"{result.folder}  {result.op}: {'pass' if result.passed else LABEL[first['status']]} ({ok}/{n} checks)"
    return text + (f"  {first['case']}: {first['message']}" if first else "")


def check(op, folder, timeout=DEFAULT_TIMEOUT):
    """(passed, lines of the report) for the student's <folder>/<op>.py, run in a child process."""
    result = grade_op(op, folder, timeout)
    return result.passed, op_lines(result)


def write_json(path, results):
    """A JSON list of records {folder, op, file, case, status, message, hint}, written whole."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps([r for result in results for r in result.records], indent=1) + "\n")
    os.replace(partial, path)


class _InOrder:
    """Prints one folder's ops in their order as soon as each and those before it are done."""

    def __init__(self, ops):
        self.ops, self.done = list(ops), {}

    def __call__(self, result):
        self.done[result.op] = result
        while self.ops and self.ops[0] in self.done:
            print("\n".join(op_lines(self.done[self.ops.pop(0)])), flush=True)


def run_check(ops, folders, timeout=DEFAULT_TIMEOUT, jobs=None, json_path=None):
    """Grade, print as results come, write the JSON; the exit status: 0 only if every check of
    every folder passed."""
    results = []

    def collect(result):
        results.append(result)
        show(result)
    show = _InOrder(ops) if len(folders) == 1 else (lambda r: print(summary_line(r), flush=True))
    try:
        grade(ops, folders, timeout, jobs, on_result=collect)
    finally:
        if json_path:
            write_json(json_path, results)
    if len(folders) > 1:
        passing = [f for f in folders if all(r.passed for r in results if r.folder == str(f))]
        print(f"{len(passing)} of {len(folders)} folders pass every check ({', '.join(ops)})")
    return 0 if results and all(r.passed for r in results) else 1
