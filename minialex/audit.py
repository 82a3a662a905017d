"""minialex-audit: check every gradient of a whole model against numerical derivatives.

    minialex-audit                                  # alexnet-mini, float64, reference CPU path
    minialex-audit --device cuda-emu                # ... and every kernel against the reference
    minialex-audit --list-bugs
    minialex-audit --inject pool-all-ties --explain # see the audit catch a known mistake
    minialex-audit --graph graph.png                # the audited model's graph

Checks, each a row of the table (exit status 0 when every row passes, 1 otherwise):
1. Each layer alone, on the activation that reaches it: d(input), d(weight), d(bias) at sampled
   coordinates, analytic (the layer's backward) against central differences of a random
   projection of its output, in float64. ReLU and max-pool get inputs away from their kinks
   (nonzero, no ties), where a central difference is exact to O(eps^2).
2. Max-pool's tie rule on an input of exact ties: each window sends its gradient to one pixel, so
   sum(dx) equals sum(dy).
3. The loss alone, and one SGD step against the paper's update written out.
4. The whole model: sampled coordinates of every parameter and of the input, through every layer.
   A coordinate whose +eps and -eps evaluations flip a ReLU or a max-pool decision sits on a kink,
   where the function has no derivative and any numerical check "fails": it is reported as a kink,
   not an error (this is why a whole-model gradient check sometimes fails on one bias).
5. With --device: each layer's kernels against the reference, forward and backward, in float32.

Before any of it, the environment (system.check_environment) and every flag are checked, the
device is tried, and the memory the audit needs is compared with what the machine has: each
problem is one line "minialex-audit: error: ...", exit status 2.
"""
import argparse
import os
import sys

import numpy as np

from . import bugs, random, system
from . import functional as F
from .function import cpu_path, no_grad
from .gradcheck import central_difference
from .models import AlexNet
from .nn import Parameter
from .optim import SGD
from .tensor import Tensor

EPS, TOL, KERNEL_TOL = 1e-5, 1e-4, 1e-4
ARCHS = {"alexnet-mini": (AlexNet.mini, 64), "alexnet": (AlexNet, 227)}
# The settings' bounds (inclusive): a batch beyond a few examples checks nothing more, and every
# example and class costs memory (MEMORY); a coordinate sample costs two forward passes.
BOUNDS = {"classes": (2, 100_000), "batch": (2, 256), "samples": (1, 10_000), "seed": (0, 2**63 - 1)}
# Peak memory of the audit, in bytes: (base, per example, per class), measured (peak RSS of
# `minialex-audit --samples 1` at a few batches and class counts on a 2-core Linux machine) and
# rounded up by half again.
MEMORY = {"alexnet-mini": (100 << 20, 10 << 20, 30 << 10), "alexnet": (2800 << 20, 60 << 20, 150 << 10)}
GRAPH_SUFFIXES = (".png", ".svg", ".dot")


def _rel_errors(analytic, numerical, scale=0.0, noise=0.0):
    """Per coordinate |a - n| / max(|a|, |n|, floor). The floor: a millionth of the tensor's largest
    gradient `scale`, or the gradient whose TOL-th part is ten times what rounding leaves in a
    central difference (`noise`); a coordinate with a gradient below it is judged against what a
    numerical derivative can resolve there, not against its own tiny size."""
    a, n = np.asarray(analytic, float), np.asarray(numerical, float)
    floor = max(1e-6 * max(np.abs(a).max(initial=0), np.abs(n).max(initial=0), scale), 10 * noise / TOL, 1e-12)
    return np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)


class Row:
    def __init__(self, section, layer, tensor, samples=0, err=0.0, worst=None, status="pass", note=""):
        self.section, self.layer, self.tensor, self.samples = section, layer, tensor, samples
        self.err, self.worst, self.status, self.note = err, worst, status, note


def _check_function(fn, tensors, names, samples, rng, section, layer, kinks=None):
    """Rows for d(each tensor) of L = sum(r * fn()) at `samples` coordinates each."""
    with no_grad():
        shape = fn().shape
    r = rng.standard_normal(shape)
    for t in tensors:
        t.grad = None
    try:
        out = fn()
        out.backward(r)
    except Exception as e:  # a backward that breaks the contract (a wrong shape) is a failure
        return [Row(section, layer, name, status="FAIL", note=f"{type(e).__name__}: {e}") for name in names]
    decisions = []  # kinks(y) of the +eps and the -eps evaluation

    def loss():
        with no_grad() if kinks is None else _nothing():
            y = fn()
        decisions.append(None if kinks is None else kinks(y))
        return float((y.data * r).sum())

    rows = []
    for t, name in zip(tensors, names):
        analytic = np.zeros(t.shape) if t.grad is None else np.asarray(t.grad, float)
        picks = rng.choice(t.size, size=min(samples, t.size), replace=False)
        a, n, kinked, noise = [], [], [], 0.0
        for f in picks:
            idx = np.unravel_index(int(f), t.shape)
            decisions.clear()
            numerical, plus, minus = central_difference(loss, t.data, idx, EPS)
            a.append(analytic[idx])
            n.append(numerical)
            noise = max(noise, 2.2e-16 * (abs(plus) + abs(minus)) / (2 * EPS))
            kinked.append(kinks is not None and not _same(*decisions))
        err = _rel_errors(a, n, float(np.abs(analytic).max(initial=0)), noise)
        clean = [e for e, k in zip(err, kinked) if not k]
        worst = int(np.argmax(err)) if len(err) else 0
        status = "pass" if not clean or max(clean) <= TOL else "FAIL"
        note = f"{sum(kinked)} on a kink" if any(kinked) else ""
        rows.append(Row(section, layer, name, len(picks), float(max(clean) if clean else 0.0),
                        tuple(int(k) for k in np.unravel_index(int(picks[worst]), t.shape)), status, note))
    return rows


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def _decision_hooks(model, found):
    """Forward hooks recording every ReLU's on/off pattern and every max-pool's winners (by the
    reference rule, from the layer's input), whatever code the layers run."""
    from .ops.pool import max_pool2d_forward
    from .errors import check_pair
    handles = []
    for name, m in model.named_modules():
        kind = type(m).__name__
        if kind == "ReLU":
            handles.append(m.register_forward_hook(lambda mod, inp, out: found.append(inp[0].data > 0)))
        elif kind == "MaxPool2d":
            def winners(mod, inp, out):
                k, s, p = (check_pair("audit", "pool", v, 0) for v in (mod.kernel_size, mod.stride, mod.padding))
                found.append(max_pool2d_forward(inp[0].data, k, s, p)[1].argmax)
            handles.append(m.register_forward_hook(winners))
    return handles


def _away_from_kinks(name, x, rng):
    """A fresh input for an isolated ReLU (|x| >= 0.01) or max-pool (distinct values in [0, 1))."""
    if name.startswith("relu"):
        z = rng.standard_normal(x.shape)
        return np.where(np.abs(z) < 0.01, np.sign(z + 1e-300) * 0.01 + z, z)
    return rng.permutation(x.size).reshape(x.shape) / x.size      # gaps 1/size, far above 2 eps


def memory_needed(arch, classes, batch):
    """About how many bytes the audit of `arch` takes at peak (MEMORY)."""
    base, per_example, per_class = MEMORY[arch]
    return base + batch * per_example + classes * per_class


def available_memory():
    """Bytes this machine can still give (Linux's MemAvailable), or None where it cannot be asked."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def problems(arch="alexnet-mini", classes=10, batch=2, samples=4, device=None, seed=0, graph=None):
    """What is wrong with the audit's settings, before any work: each a message naming the setting
    as the command spells it ("--batch expected ..."); [] when they are all fine."""
    found = []
    if arch not in ARCHS:
        found.append(f"--arch expected one of {', '.join(sorted(ARCHS))}, got {arch!r}")
    for name, value in (("classes", classes), ("batch", batch), ("samples", samples), ("seed", seed)):
        low, high = BOUNDS[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
            found.append(f"--{name} expected an integer from {low} to {high}, got {value!r}")
    if device not in (None, "cuda-emu", "cuda") and not str(device).startswith("cuda:"):
        found.append(f"--device expected cuda-emu or cuda, got {device!r}")
    if graph is not None:
        found += _graph_problems(graph)
    if not found:
        need, have = memory_needed(arch, classes, batch), available_memory()
        if have is not None and need > have:
            found.append(f"--batch {batch} and --classes {classes} need about {need / 2**30:.1f} GiB for {arch} in "
                         f"float64, and {have / 2**30:.1f} GiB is available: use a smaller --batch or --classes")
    return found


def _graph_problems(graph):
    """--graph: a .png, .svg or .dot file that can be written, in a folder that exists."""
    path = os.fspath(graph)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.splitext(path)[1] not in GRAPH_SUFFIXES:
        return [f"--graph expected a .png, .svg or .dot file name, got {path!r}"]
    if not os.path.isdir(folder):
        return [f"--graph {path}: its folder {folder} does not exist"]
    if os.path.isdir(path):
        return [f"--graph {path} is a folder, not a file"]
    if not os.access(path if os.path.exists(path) else folder, os.W_OK):
        return [f"--graph {path} cannot be written (permission denied)"]
    return []


def audit(arch="alexnet-mini", classes=10, batch=2, samples=4, device=None, seed=0, graph=None):
    """The rows of the audit (see the module docstring); ValueError first when a setting is wrong
    (`problems`)."""
    found = problems(arch, classes, batch, samples, device, seed, graph)
    if found:
        raise ValueError("audit: " + "; ".join(m.lstrip("-") for m in found))
    build, size = ARCHS[arch]
    rng = np.random.default_rng(seed)
    with cpu_path("reference"):
        random.manual_seed(seed)
        model = build(num_classes=classes).double()
        x_host = rng.standard_normal((batch, 3, size, size))
        target = rng.integers(0, classes, batch)
        rows, activations = _layer_rows(model, x_host, target, samples, rng)     # 1-3
        rows += _whole_model_rows(model, x_host, target, samples, rng, seed, graph)  # 4
        if device:                                                                # 5
            rows += _kernel_rows(model, activations, target, device, rng)
    return rows


def _layer_rows(model, x_host, target, samples, rng):
    """(rows, {layer: the activation that reaches it}): checks 1-3, each layer alone on the
    activation that reaches it, then the loss and one SGD step."""
    h, rows, activations = x_host, [], {}
    for i, name in enumerate(model.layer_order):
        layer = getattr(model, name)
        activations[name] = h
        fresh = name.startswith(("relu", "pool"))
        x = Tensor(_away_from_kinks(name, h, rng) if fresh else h.copy(), requires_grad=True)
        params = [p for p in layer.parameters()]
        names = ["d input"] + [n for n, _ in layer.named_parameters()]

        def run(layer=layer, x=x, k=i):
            random.manual_seed(1000 + k)          # the same dropout mask at every evaluation
            return layer(x)
        rows += _check_function(run, [x] + params, names, samples, rng, "each layer alone", name)
        if name.startswith("pool"):
            rows.append(_tie_rule(layer, name, h.shape, rng))
        with no_grad():
            random.manual_seed(1000 + i)
            h = layer(Tensor(h)).data
    logits = Tensor(h.copy(), requires_grad=True)
    rows += _check_function(lambda: F.cross_entropy(logits, target), [logits], ["d logits"], samples, rng,
                            "each layer alone", "loss")
    rows.append(_sgd_row(rng))
    return rows, activations


def _whole_model_rows(model, x_host, target, samples, rng, seed, graph):
    """Check 4: sampled coordinates of the input and of every parameter through the whole model,
    kinks told apart; and the graph drawn when asked."""
    x = Tensor(x_host.copy(), requires_grad=True)
    params = list(model.named_parameters())
    decisions, rows = [], []

    def whole():
        random.manual_seed(seed + 7)
        decisions.clear()
        out = F.cross_entropy(model(x), target)
        out.decisions = list(decisions)
        return out
    handles = _decision_hooks(model, decisions)
    try:
        for (name, p) in [("input", x)] + params:
            layer, _, kind = name.partition(".")
            rows += _check_function(whole, [p], [kind or "x"], samples, rng, "the whole model", layer,
                                    kinks=lambda out: out.decisions)
    finally:
        for h in handles:
            h.remove()
    if graph:
        from .graph import draw_graph
        model.zero_grad()
        out = whole()
        out.backward()
        draw_graph(out, graph, names={id(p): n for n, p in params})
    return rows


def _tie_rule(layer, name, shape, rng):
    x = Tensor(np.zeros(shape), requires_grad=True)            # every window a tie
    y = layer(x)
    dy = rng.uniform(0.5, 1.5, y.shape)
    try:
        y.backward(dy)
        got, want = float(x.grad.sum()), float(dy.sum())
        err = abs(got - want) / abs(want)
        return Row("each layer alone", name, "ties: sum dx = sum dy", 1, err, None, "pass" if err <= 1e-12 else "FAIL",
                   "" if err <= 1e-12 else f"sum dx {got:.4g}, sum dy {want:.4g}")
    except Exception as e:
        return Row("each layer alone", name, "ties: sum dx = sum dy", status="FAIL", note=f"{type(e).__name__}: {e}")


def _sgd_row(rng):
    w0, v0, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    lr, m, wd = 0.1, 0.9, 0.01
    p = Parameter(w0.copy())
    opt = SGD([p], lr=lr, momentum=m, weight_decay=wd)
    opt.velocity[0] = v0.copy()
    p.grad = g
    opt.step()
    v = m * v0 - wd * lr * w0 - lr * g                              # the paper's rule, written out
    err = float(np.abs(p.data - (w0 + v)).max() / np.abs(w0 + v).max())
    return Row("each layer alone", "optimizer", "SGD step (paper's rule)", 12, err, None,
               "pass" if err <= 1e-12 else "FAIL")


def _kernel_rows(model, activations, target, device, rng):
    rows = []
    for i, name in enumerate(model.layer_order):
        layer = getattr(model, name)
        h = activations[name].astype(np.float32)
        results = []
        for dev in ("cpu", device):
            x = Tensor(h, requires_grad=True, device=dev)
            params = [(p, Parameter(p.numpy().astype(np.float32), device=dev)) for p in layer.parameters()]
            saved = [(p, p.data, p.device) for p, _ in params]
            for p, q in params:                                    # the layer's own parameters, in float32 on dev
                p.data, p.device, p.grad = q.data, dev, None
            try:
                random.manual_seed(2000 + i)
                y = layer(x)
                r = np.random.default_rng(i).standard_normal(y.shape).astype(np.float32)
                y.backward(Tensor(r, device=dev))
                results.append([y.numpy()] + [Tensor(t.grad, device=dev).numpy() for t in [x] + [p for p, _ in params]])
            finally:
                for p, data, dev0 in saved:
                    p.data, p.device, p.grad = data, dev0, None
        worst = max(float(np.abs(a.astype(float) - b).max() / max(np.abs(b).max(), 1e-30))
                    for a, b in zip(results[1], results[0]))
        rows.append(Row(f"kernels ({device}) against the reference", name, "y and gradients", 0, worst, None,
                        "pass" if worst <= KERNEL_TOL else "FAIL"))
    return rows


def report(rows):
    lines, section = [], None
    for r in rows:
        if r.section != section:
            section = r.section
            lines += ["", f"## {section}", f"{'layer':10} {'tensor':24} {'samples':>7} {'max rel err':>12} "
                                           f"{'worst coordinate':>20}  result"]
        worst = "" if r.worst is None else str(r.worst)
        lines.append(f"{r.layer:10} {r.tensor:24} {r.samples:>7} {r.err:>12.2e} {worst:>20}  {r.status}"
                     + (f"  ({r.note})" if r.note else ""))
    failed = [r for r in rows if r.status == "FAIL"]
    layers = list(dict.fromkeys(r.layer for r in failed))
    lines += ["", f"{len(rows) - len(failed)} of {len(rows)} checks pass"
              + (f"; FAILED in: {', '.join(layers)}" if failed else "")]
    if any("kink" in r.note for r in rows):
        lines.append("(a kink: the coordinate's +eps and -eps evaluations flip a ReLU or max-pool decision; "
                     "no derivative exists there, so that sample is not held against the layer)")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="minialex-audit", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--arch", choices=sorted(ARCHS), default="alexnet-mini")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--samples", type=int, default=4, help="coordinates checked per tensor (4)")
    p.add_argument("--device", choices=["cuda-emu", "cuda"], help="also check each layer's kernels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inject", metavar="BUG", help="run with a known wrong backward (see --list-bugs)")
    p.add_argument("--explain", action="store_true", help="with --inject: what the bug does wrong")
    p.add_argument("--list-bugs", action="store_true")
    p.add_argument("--graph", metavar="FILE", help="draw the audited model's graph (.png, .svg for slides, or .dot)")
    args = p.parse_args(argv)
    environment = system.check_environment()
    if environment:
        _refuse(p, environment, usage=False)
    if args.list_bugs:
        for b in bugs.BUGS:
            print(f"{b.name:32} {b.layers:16} {b.summary}")
        return 0
    _check_flags(p, args)
    try:
        if args.inject:
            with bugs.inject(args.inject) as bug:
                rows = audit(args.arch, args.classes, args.batch, args.samples, args.device, args.seed, args.graph)
        else:
            rows = audit(args.arch, args.classes, args.batch, args.samples, args.device, args.seed, args.graph)
    except RuntimeError as e:  # no CuPy or GPU, no compiler for the emulator
        print(f"minialex-audit: error: {e}", file=sys.stderr)
        return 2
    print(f"minialex-audit: {args.arch}, {args.classes} classes, batch {args.batch}, float64, reference CPU path"
          + (f", kernels on {args.device}" if args.device else "") + (f", INJECTED: {args.inject}" if args.inject else ""))
    print(report(rows))
    if args.inject and args.explain:
        print(f"\n{bug.name}: {bug.summary}\n  {bug.explain}\n  It breaks this line of "
              f"{bug.target.__module__.replace('.', '/')}.py:\n    {bugs.broken_line(bug)}")
    return 1 if any(r.status == "FAIL" for r in rows) else 0


def _check_flags(p, args):
    """Every flag checked before any work (each problem said, then exit status 2); the device is
    tried on a tiny ReLU, so a missing GPU or compiler is found now, not after the whole audit."""
    found = problems(args.arch, args.classes, args.batch, args.samples, args.device, args.seed, args.graph)
    if args.inject and args.inject not in bugs.BY_NAME:
        found.append(f"--inject: no bug named {args.inject!r}; see --list-bugs")
    if args.explain and not args.inject:
        found.append("--explain expected with --inject BUG (it explains the injected bug)")
    if found:
        _refuse(p, found)
    if args.device:
        try:
            F.relu(Tensor(np.ones((1, 1, 2, 2), np.float32), device=args.device))
        except RuntimeError as e:  # no CuPy or GPU, no compiler for the emulator
            _refuse(p, [f"--device {args.device}: {e}"])


def _refuse(p, messages, usage=True):
    """Each message as "minialex-audit: error: ...", then exit status 2 (SystemExit, as argparse)."""
    if usage:
        p.print_usage(sys.stderr)
    p.exit(2, "".join(f"{p.prog}: error: {m}\n" for m in messages))


if __name__ == "__main__":
    sys.exit(main())
