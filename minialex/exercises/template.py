"""The exercise files: every op's math from its docstring, and forward/backward stubs to fill in."""
from pathlib import Path

from ..ops import conv, cross_entropy, dropout, linear, lrn, pool, relu, sgd

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

Use NumPy (the library's own ops are the solutions: a file that imports them is flagged).
{in_place}

The math, from minialex/ops/{module}.py:
{doc}"""
import numpy as np
{extra}

def {fwd_sig}:
    raise NotImplementedError("write {op}'s {fwd_name}")
{bwd}'''


IN_PLACE = {"op": "Return new arrays: the checker fails a forward or backward that changes its inputs in place.",
            "sgd": "update changes w and v in place (the caller's arrays) and leaves g as it is."}


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
            fwd_sig, fwd_name = _signature(fwd), "update"
        else:
            fwd_sig, fwd_name = _signature(fwd), "forward"
            bwd_code = (f"\n\n# {bwd}\ndef {_signature(bwd)}:\n"
                        f"    raise NotImplementedError(\"write {op}'s backward\")\n")
        text = TEMPLATE.format(op=op, dir=folder, module=module.__name__.rsplit(".", 1)[1], doc=doc, extra=extra,
                               fwd_sig=fwd_sig, fwd_name=fwd_name, bwd=bwd_code,
                               in_place=IN_PLACE["sgd" if op == "sgd" else "op"])
        text = text.replace(f"def {fwd_sig}:", f"# {fwd}\ndef {fwd_sig}:")   # the contract above the stub
        path.write_text(text)
        written.append(path)
    return written, kept
