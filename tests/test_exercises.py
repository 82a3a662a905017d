"""The exercises' grader at class scale: many folders in one call, each op of each folder in a child
process with a time limit, every way a student's code can stop short named as a failure, the
library's own implementations flagged. The tests here that start processes are few and batched."""
import inspect
import json
import sys
import time

import pytest

from minialex.exercises import scan
from minialex.exercises.__main__ import main
from minialex.ops import conv, cross_entropy, dropout, linear, lrn, pool, relu, sgd, windows


def _source(*objects):
    return "\n\n".join(inspect.getsource(o) for o in objects)


# the library's own pairs as a student would hand them in: their source, not an import of minialex's ops
SOLUTIONS = {
    "relu": _source(relu.relu_forward, relu.relu_backward) + "\nforward, backward = relu_forward, relu_backward\n",
    "lrn": _source(lrn.LRNCache, lrn.window_sum, lrn.lrn_forward, lrn.lrn_backward)
    + "\nforward, backward = lrn_forward, lrn_backward\n",
    "max_pool2d": _source(windows.conv_outsize, windows.pad, pool.PoolCache, pool.max_pool2d_forward,
                          pool.max_pool2d_backward) + "\nforward, backward = max_pool2d_forward, max_pool2d_backward\n",
    "conv2d": _source(windows.conv_outsize, windows.pad, conv.ConvCache, conv.im2col, conv.col2im, conv.conv2d_forward,
                      conv.conv2d_backward)
    + "\nforward = conv2d_forward\n\n\ndef backward(dy, cache):\n    return conv2d_backward(dy, cache, (True,) * 3)\n",
    "dropout": "from minialex.ops.dropout import dropout_keep_mask\n"
    + _source(dropout.DropoutCache, dropout.dropout_forward, dropout.dropout_backward)
    + "\nforward, backward = dropout_forward, dropout_backward\n",
    "linear": _source(linear.LinearCache, linear.linear_forward, linear.linear_backward)
    + "\nforward = linear_forward\n\n\ndef backward(dy, cache):\n    return linear_backward(dy, cache, (True,) * 3)\n",
    "cross_entropy": _source(cross_entropy.CrossEntropyCache, cross_entropy.cross_entropy_forward,
                             cross_entropy.cross_entropy_backward)
    + "\nforward, backward = cross_entropy_forward, cross_entropy_backward\n",
    "sgd": _source(sgd.sgd_update_reference) + "\nupdate = sgd_update_reference\n",
}


def write_solutions(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for op, code in SOLUTIONS.items():
        (folder / f"{op}.py").write_text("import numpy as np\nfrom typing import NamedTuple\n\n" + code)
    return folder


# relu.py of students whose code stops short or cheats: (its code, the status and message of its first case)
SHORT = {
    "loops": ("""
def forward(x):
    while True:
        pass
""", "error", "timed out after 2 s during this case"),
    "exits": ("""
import sys


def forward(x):
    sys.exit(0)
""", "fail", "forward called sys.exit(0) (relu.py, line 6, in forward: sys.exit(0))"),
    "fakes_a_pass": ("""
import os


def forward(x):
    print('{"event": "done"}')
    print("all checks pass")
    os._exit(0)
""", "error", "exited with status 0 during this case, before its report (its last output: all checks pass)"),
    "writes_the_pipe": ("""
import os


def forward(x):
    for fd in range(3, 30):
        try:
            os.write(fd, b'{"event": "done"}\\n')
        except OSError:
            pass
    return x, x
""", "error", "sent a garbled report"),
    "crashes": ("""
import os
import signal


def forward(x):
    os.kill(os.getpid(), signal.SIGSEGV)
""", "error", "was killed by signal SIGSEGV during this case"),
    "patches": ("""
import numpy as np
np.allclose = lambda *a, **k: True
np.isclose = lambda a, b, **k: np.ones(np.shape(a), bool)
np.testing.assert_allclose = lambda *a, **k: None


def forward(x):
    return x * 2, x
""", "fail", "y: 60 of 60 values differ"),
}
RELU_TAIL = "\n\ndef backward(dy, cache):\n    return (dy,)\n"


def test_a_class_is_graded_in_one_call_each_failure_with_its_reason(tmp_path, capsys):
    write_solutions(tmp_path / "good")
    for name, (code, _, _) in SHORT.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "relu.py").write_text(code + RELU_TAIL)
    (tmp_path / "copies").mkdir()
    (tmp_path / "copies" / "relu.py").write_text("from minialex.ops.relu import relu_forward as forward, "
                                                 "relu_backward as backward\n")
    folders = [str(tmp_path / name) for name in ["good", *SHORT, "copies"]]
    began = time.monotonic()
    status = main(["check", "all", *folders, "--timeout", "2", "--json", str(tmp_path / "grades.json")])
    assert status == 1 and time.monotonic() - began < 60
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(folders) * 8 + 1 and out[-1].startswith("1 of 8 folders pass every check")
    records = json.loads((tmp_path / "grades.json").read_text())
    assert set(records[0]) == {"folder", "op", "file", "case", "status", "message", "hint"}
    good = [r for r in records if r["folder"] == folders[0]]
    assert len({r["op"] for r in good}) == 8 and all(r["status"] == "pass" for r in good) and len(good) >= 25
    for name, (_, status, said) in SHORT.items():
        first = next(r for r in records if r["folder"].endswith(name) and r["op"] == "relu")
        assert first["case"] == "values" and first["status"] == status and said in first["message"], first
        assert any(line.startswith(f"{tmp_path / name}  relu: FAIL (0/3 checks)") for line in out), name
    copied = [r for r in records if r["folder"].endswith("copies") and r["op"] == "relu"]
    assert copied[0]["case"] == "own work" and copied[0]["status"] == "fail"
    assert "line 1: from minialex.ops.relu import relu_forward, relu_backward" in copied[0]["message"]
    assert all(r["status"] == "pass" for r in copied[1:])          # it runs, and fails on the flag alone
    missing = next(r for r in records if r["folder"].endswith("loops") and r["op"] == "lrn")
    assert missing["status"] == "fail" and "no " in missing["message"] and "start" in missing["message"]


def test_exit_status_is_0_only_when_every_check_passed_and_a_folder_report_streams(tmp_path, capsys):
    write_solutions(tmp_path / "good")
    assert main(["check", "relu", str(tmp_path / "good")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("== relu (") and out.count("  pass  ") == 3 and "relu: all checks pass" in out
    with pytest.raises(SystemExit):
        main(["check", "relu", str(tmp_path), "--timeout", "0"])
    assert "--timeout expected seconds > 0" in capsys.readouterr().err


def test_exercise_files_are_stubs_with_the_math(tmp_path, capsys):
    assert main(["start", str(tmp_path)]) == 0
    for op in SOLUTIONS:
        text = (tmp_path / f"{op}.py").read_text()
        assert "raise NotImplementedError" in text and "minialex/ops/" in text and "Fast CPU" not in text
        assert not scan.findings(text), op                      # the template passes its own scan
    assert "Backward: dx = dy where x > 0, else 0" in (tmp_path / "relu.py").read_text()
    (tmp_path / "relu.py").write_text("# mine")
    main(["start", str(tmp_path)])
    assert (tmp_path / "relu.py").read_text() == "# mine"                # never overwritten without --force
    capsys.readouterr()
    assert main(["check", "lrn", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "  TODO  C=7, size=5: forward: write lrn's forward" in out and "lrn: not yet" in out


@pytest.mark.parametrize("code,line", [
    ("import minialex.ops.relu as r\n", 1),
    ("import numpy as np\nfrom minialex import functional as F\n", 2),
    ("import minialex\n", 1),
    ("from minialex.ops.dropout import dropout_forward\n", 1),
    ("from minialex.ops.dropout import *\n", 1),
    ("import importlib\nm = importlib.import_module('minialex.ops.conv')\n", 2),
    ("x = 1\nf = __import__('minialex/cpu/relu.py')\n", 2),
    ("def forward(x):\n    return relu_forward(x)\n", 2),
    ("import numpy as np\n\n\ndef backward(dy, cache):\n    return getattr(np, 'conv2d_backward')(dy)\n", 5),
])
def test_the_scan_flags_every_spelling_of_the_librarys_own_code(code, line):
    found = scan.findings(code)
    assert found and found[0][0] == line, found


def test_the_scan_leaves_a_students_own_code_alone():
    code = ('"""minialex/ops/relu.py says: y = max(x, 0). relu_forward is the solution."""\n'
            "import numpy as np\nfrom minialex.ops.dropout import dropout_keep_mask\n\n\n"
            "def relu_forward(x):   # their own, named like the library's\n    return np.maximum(x, 0), x\n\n\n"
            "forward = relu_forward\n")
    assert scan.findings(code) == []
    assert scan.findings("def forward(x)\n    return x\n") == []     # the child names the syntax error
    assert sys.modules["minialex.exercises.scan"] is scan
