"""Own work: a student file that uses the library's own implementation of an op is flagged.

Read from the source (ast), never run: an import of minialex (any module but the helpers the
templates give: `from minialex.ops.dropout import dropout_keep_mask`), a string naming one of its
modules (for importlib or __import__), or a name of a reference, fast or CUDA pair or of an op's
Function class (relu_forward, conv2d_backward, Conv2d, ...) that the file uses without defining it.
A file that does not parse is left to the grader's child, which names the syntax error.
"""
import ast
import re

from ..ops import conv, cross_entropy, dropout, linear, lrn, pool, relu, sgd

ALLOWED = {("minialex.ops.dropout", "dropout_keep_mask")}      # given by the dropout template
_MODULE_TEXT = re.compile(r"^minialex$|minialex[./\\]")


def _pair_names(holder):
    names = set()
    for pair in (holder.reference, getattr(holder, "fast", None), getattr(holder, "cuda", None)):
        if callable(pair):
            names.add(pair.__name__)
        for item in pair if isinstance(pair, tuple) else ():
            names.add(item if isinstance(item, str) else item.__name__)
    return {n for n in names if not n.startswith("minialex.")}


LIBRARY_NAMES = set().union(*(_pair_names(f) | {f.__name__} for f in (
    relu.ReLU, lrn.LocalResponseNorm, pool.MaxPool2d, conv.Conv2d, dropout.Dropout, linear.Linear,
    cross_entropy.CrossEntropy, sgd.SGDUpdate)))


def _defined(tree):
    """Names the file binds itself: functions, classes, arguments, assignments, imports from elsewhere."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, ast.arg):
            found.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            found.add(node.id)
    return found


def _imports(node):
    """[(line, 'the import as written')] of minialex's modules outside ALLOWED."""
    if isinstance(node, ast.Import):
        return [(node.lineno, f"import {a.name}") for a in node.names if _MODULE_TEXT.search(a.name)]
    if isinstance(node, ast.ImportFrom) and node.module and _MODULE_TEXT.search(node.module):
        names = [a.name for a in node.names if (node.module, a.name) not in ALLOWED]
        return [(node.lineno, f"from {node.module} import {', '.join(names)}")] if names else []
    return []


def findings(source):
    """[(line, what)] of the file's uses of the library's own implementations, in line order."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    defined, found = _defined(tree), []
    for node in ast.walk(tree):
        found += _imports(node)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if _MODULE_TEXT.search(node.value) or node.value in LIBRARY_NAMES:
                found.append((node.lineno, f"names {node.value[:60]!r}"))
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        if name in LIBRARY_NAMES and name not in defined:
            found.append((node.lineno, f"uses {name}, the library's own"))
    first = {}
    for line, what in sorted(set(found)):       # one finding per line, an import before a name
        if line not in first or what.startswith(("import", "from")):
            first[line] = what
    return sorted(first.items())
