"""The shape of the package's imports: no circles outside the engine core, ops/ above its fast and
CUDA pairs, minialex.cuda below the engine, and every module importable on its own.

The import graph is read from the source: every `import` and `from ... import` anywhere in a
module (inside functions too: a lazy import is still a dependency), resolved to the package's
modules. Importing a.b.c from outside package a.b also runs a/b/__init__.py, so that is an edge
too (the top package, minialex/__init__.py, imports nearly everything and is left out).
"""
import ast
import os
import subprocess
import sys
from pathlib import Path

import minialex

PACKAGE = Path(minialex.__file__).resolve().parent
ENGINE_CORE = {"minialex.function", "minialex.ops.basic", "minialex.tensor"}   # may import one another


def _modules():
    """{dotted name: path} of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _targets(name, path):
    """The modules of the package that `name` imports, each import resolved (see the docstring)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . / .. / ... import
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for a in node.names:  # `from p import m` imports the module p.m where there is one
                found.add(f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module)
    targets = set()
    for t in found:
        if not t.startswith("minialex"):
            continue
        parts = t.split(".")
        for k in range(2, len(parts) + 1):  # the module and the packages above it, minialex's own excepted
            above = ".".join(parts[:k])
            if above in MODULES and above != name and (k == len(parts) or not name.startswith(above + ".")):
                targets.add(above)
    return targets


GRAPH = {name: _targets(name, path) for name, path in MODULES.items()}


def _reachable(start):
    """Every module that importing `start` imports, directly or through others."""
    seen, stack = set(), [start]
    while stack:
        for t in GRAPH[stack.pop()]:
            if t not in seen:
                seen.add(t)
                stack.append(t)
    return seen


def import_circles():
    """The strongly connected components of more than one module: sets of modules that import one
    another, each reachable from every other."""
    reach = {m: _reachable(m) for m in GRAPH}
    circles = []
    for m in sorted(GRAPH):
        circle = {m} | {o for o in reach[m] if m in reach[o]}
        if len(circle) > 1 and circle not in circles:
            circles.append(circle)
    return circles


def test_the_graph_reader_sees_every_spelling_of_an_import():
    """The reader itself: relative at any depth, absolute, a module named in `from p import m`, lazy
    imports inside functions, and the package above a module."""
    assert {"minialex.backend", "minialex.kernel_source", "minialex.emulator"} <= GRAPH["minialex.cuda"]
    assert "minialex.ops.windows" in GRAPH["minialex.cpu.conv"]                     # from ..ops.windows import
    assert {"minialex.ops.pool", "minialex.ops"} <= GRAPH["minialex.cpu.pool"]       # from ..ops import pool as spec
    assert "minialex.graph" in GRAPH["minialex.audit"]                               # inside a function
    assert "minialex.cpu" in GRAPH["minialex.data.loader"]                           # cpu/__init__.py runs too
    assert "minialex.cpu" not in GRAPH["minialex.cpu.relu"]                          # not its own package
    assert "minialex" not in set().union(*GRAPH.values())
    assert ENGINE_CORE in import_circles()                                          # the circle finder finds it


def test_no_import_circle_outside_the_engine_core():
    others = [sorted(c) for c in import_circles() if c != ENGINE_CORE]
    assert not others, f"modules that import one another (directly or around a circle): {others}"


def test_op_files_import_neither_their_fast_nor_their_cuda_pair():
    """An op file names its pairs, ("minialex.cpu.relu", "relu_forward", "relu_backward"); the
    engine imports them (minialex.function.resolve). The pairs import the op file for its spec."""
    ops = [m for m in MODULES if m.startswith("minialex.ops.")]
    assert len(ops) >= 12
    for m in ops:
        wrong = sorted(t for t in GRAPH[m] if t.startswith(("minialex.cpu", "minialex.cuda")))  # cuda_ops too
        assert not wrong, f"{m} imports {wrong}"
        for node in ast.walk(ast.parse(MODULES[m].read_text())):   # nor by a call: importlib, __import__
            if isinstance(node, ast.Call):
                called = getattr(node.func, "attr", getattr(node.func, "id", ""))
                assert called not in ("import_module", "__import__"), f"{m} imports at run time, line {node.lineno}"
    assert "minialex.ops.dropout" in GRAPH["minialex.cpu.dropout"]                   # the allowed direction
    assert "minialex.ops.pool" in GRAPH["minialex.cuda_ops.pool"]


def test_cuda_and_the_emulator_stand_below_the_engine():
    engine = {"minialex.tensor", "minialex.function", "minialex.nn", "minialex.gradcheck"}
    below = _reachable("minialex.cuda")
    assert "minialex.emulator" in below
    wrong = sorted(m for m in below if m in engine or m == "minialex.ops" or m.startswith("minialex.ops."))
    assert not wrong, f"minialex.cuda imports engine modules: {wrong}"
    assert "minialex.cuda" not in _reachable("minialex.emulator")


def test_data_and_run_folders_take_process_facts_from_the_neutral_module_not_the_fast_ops():
    for m in ("minialex.data.folder", "minialex.data.store", "minialex.runfolder", "minialex.system"):
        assert not any(t.startswith("minialex.cpu") for t in _reachable(m)), m
    assert GRAPH["minialex.system"] == set()


ALONE = r"""
import importlib, sys, types
root, names, order = sys.argv[1], sys.argv[2].split(), sys.argv[3]
failed = []
for name in names:
    for k in [k for k in sys.modules if k == "minialex" or k.startswith("minialex.")]:
        del sys.modules[k]
    package = types.ModuleType("minialex")      # the package without running its __init__.py
    package.__path__ = [root]
    sys.modules["minialex"] = package
    try:
        importlib.import_module(name)
    except Exception as e:
        failed.append(f"{name}: {type(e).__name__}: {e}")
for k in [k for k in sys.modules if k == "minialex" or k.startswith("minialex.")]:
    del sys.modules[k]
package = types.ModuleType("minialex")          # __init__.py's imports in another order
package.__path__, package.__package__ = [root], "minialex"
sys.modules["minialex"] = package
import ast
tree = ast.parse(open(root + "/__init__.py").read())
imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
for node in (imports[::-1] if order == "reversed" else imports):
    try:
        exec(compile(ast.Module([node], []), "minialex/__init__.py", "exec"), package.__dict__)
    except Exception as e:
        failed.append(f"__init__.py line {node.lineno}: {type(e).__name__}: {e}")
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def _python(*args):
    env = dict(os.environ, PYTHONPATH=str(PACKAGE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=PACKAGE.parent, env=env,
                          timeout=300)


def test_every_module_imports_on_its_own_and_the_package_in_any_order():
    """Each module in a fresh set of modules, without the package's __init__.py having run first
    (so nothing it imports early can hide a missing import or a circle), then __init__.py's own
    imports in reverse order."""
    names = [m for m in MODULES if m != "minialex" and not m.endswith("__main__")]
    run = _python("-c", ALONE, str(PACKAGE), " ".join(names), "reversed")
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_fresh_process_may_start_from_any_module():
    for name in ("minialex.nn", "minialex.cuda_ops.conv", "minialex.ops.relu", "minialex.function",
                 "minialex.emulator"):
        run = _python("-c", f"import {name}; import minialex as ma; "
                            "print(ma.functional.relu(ma.Tensor([-1.0, 2.0])).data.tolist())")
        assert run.returncode == 0 and run.stdout.strip() == "[0.0, 2.0]", (name, run.stdout, run.stderr)


MODULE_LINES, FUNCTION_LINES = 500, 60      # a module holds one job; a function fits on a screen


def _sizes():
    """(modules over MODULE_LINES, functions over FUNCTION_LINES) of the package, as text."""
    long_modules, long_functions = [], []
    for name, path in MODULES.items():
        text = path.read_text()
        if text.count("\n") > MODULE_LINES:
            long_modules.append(f"{name} ({text.count(chr(10))} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    node.end_lineno - node.lineno + 1 > FUNCTION_LINES:
                long_functions.append(f"{name}.{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    return long_modules, long_functions


def test_no_module_over_500_lines_and_no_function_over_60():
    long_modules, long_functions = _sizes()
    assert not long_modules and not long_functions, (long_modules, long_functions)


def test_the_size_reader_counts_what_it_should(monkeypatch, tmp_path):
    big = tmp_path / "big.py"
    big.write_text("def long():\n" + "    x = 1\n" * 70 + "\n" * 450)
    monkeypatch.setitem(MODULES, "minialex.big", big)
    long_modules, long_functions = _sizes()
    assert long_modules == ["minialex.big (521 lines)"] and long_functions == ["minialex.big.long (71 lines)"]
