"""CPU benchmark: one AlexNet train step (forward, loss, backward, SGD) in minialex and PyTorch.

    python benchmarks/cpu.py                 # alexnet at batch 16 and alexnet-mini at batch 64
    python benchmarks/cpu.py --reps 7 --skip-mini
    python benchmarks/cpu.py --no-reference  # only the fast CPU path (the reference is slow on alexnet)
    python benchmarks/cpu.py --algorithm winograd   # every stride-1 convolution by Winograd, largest tiles

In ONE process, alternating minialex's fast CPU path, its reference path (the plain NumPy spec of
each op) and PyTorch step by step (so all see the same machine state), after a warm-up: the min
and median step time of each, the ratio minialex / PyTorch per repetition (its median is the
headline), a per-layer forward/backward breakdown for minialex's fast path (with each convolution's
algorithm, and PyTorch's time for the same layer on the same input), the share of
the step spent in matrix products (every np.matmul call timed inside the real step) versus everything
else, the step's main matrix products alone in NumPy (its BLAS) against PyTorch's on the same arrays,
and the peak memory (RSS) of each
library's steps, measured in a fresh child process so one does not inherit the other's peak.
PyTorch is skipped with a message if it is not installed.
"""
import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import minialex as ma  # noqa: E402
from minialex import functional as F  # noqa: E402

TUNED = ma.cpu.tune()  # malloc and OpenBLAS settings for training (minialex/cpu/tuning.py), as minialex-train does

CONFIGS = {"alexnet": 16, "alexnet-mini": 64}


ALGORITHM = "auto"  # --algorithm: for the stride-1 convolutions (conv1 is strided: always im2col)


def make_minialex(arch, batch, path="fast"):
    ma.set_cpu_path(path)
    ma.manual_seed(0)
    model = ma.models.AlexNet(1000) if arch == "alexnet" else ma.models.AlexNet.mini(10)
    for i in range(2, 6):
        getattr(model, f"conv{i}").algorithm = ALGORITHM
    opt = ma.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = ma.Tensor(rng.standard_normal((batch, 3, model.input_size, model.input_size)).astype(np.float32))
    y = rng.integers(0, model.num_classes, batch)

    def step():
        with ma.cpu_path(path):
            loss = F.cross_entropy(model(x), y)
            model.zero_grad()
            loss.backward()
            opt.step()
    return model, step


def make_torch(arch, batch):
    import torch
    nn = torch.nn
    torch.manual_seed(0)
    if arch == "alexnet":
        c, k, fc, classes, size = [96, 256, 384, 384, 256], [(11, 4, 0), (5, 1, 2)], [9216, 4096, 4096], 1000, 227
    else:
        c, k, fc, classes, size = [32, 64, 96, 96, 64], [(5, 2, 2), (5, 1, 2)], [576, 512, 512], 10, 64
    model = nn.Sequential(
        nn.Conv2d(3, c[0], k[0][0], k[0][1], k[0][2]), nn.ReLU(), nn.MaxPool2d(3, 2), nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0),
        nn.Conv2d(c[0], c[1], k[1][0], k[1][1], k[1][2]), nn.ReLU(), nn.MaxPool2d(3, 2), nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0),
        nn.Conv2d(c[1], c[2], 3, 1, 1), nn.ReLU(), nn.Conv2d(c[2], c[3], 3, 1, 1), nn.ReLU(),
        nn.Conv2d(c[3], c[4], 3, 1, 1), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(fc[0], fc[1]), nn.ReLU(), nn.Dropout(0.5), nn.Linear(fc[1], fc[2]), nn.ReLU(),
        nn.Linear(fc[2], classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((batch, 3, size, size)).astype(np.float32))
    y = torch.tensor(rng.integers(0, classes, batch))

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, step


def timed(step):
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


class GemmClock:
    """Times every np.matmul call while active: all matrix products of minialex's fast CPU path
    (and of linear's reference, which the fast path runs) are np.matmul calls; an `a @ b` would
    not be seen."""

    def __init__(self):
        self.seconds = 0.0
        self._real = np.matmul

    def _timed(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self._real(*args, **kwargs)
        self.seconds += time.perf_counter() - t0
        return out

    def __enter__(self):
        self.seconds = 0.0
        np.matmul = self._timed
        return self

    def __exit__(self, *exc):
        np.matmul = self._real


def gemm_shares(step, reps):  # of the fast path
    """Per rep, (seconds in matrix products) / (seconds of the whole step), measured inside the real
    step. One untimed step first, so that the peer's last step does not weigh on the first rep."""
    step()
    shares = []
    for _ in range(reps):
        with GemmClock() as clock:
            total = timed(step)
        shares.append(clock.seconds / total)
    return shares


def algorithm_of(out):
    """Which convolution ran: "im2col", or "winograd F(mxm, rxr)" from the op's cache."""
    kind = type(out._ctx).__name__ if out._ctx is not None else ""
    if kind == "WinogradConv2d":
        cache = out._ctx.cache
        (mh, mw), (kh, kw) = cache.tile, cache.w.shape[2:]
        return f"winograd F({mh}x{mw}, {kh}x{kw})"
    return "im2col" if kind == "Conv2d" else ""


def torch_layer_seconds(layer, h):
    """Forward and backward seconds of one PyTorch layer on input h (best of 3)."""
    import torch
    best = (float("inf"), 0.0, 0.0)
    for _ in range(3):
        x = torch.tensor(h, requires_grad=True)
        t0 = time.perf_counter()
        out = layer(x)
        t1 = time.perf_counter()
        out.backward(torch.ones_like(out))
        t2 = time.perf_counter()
        best = min(best, (t2 - t0, t1 - t0, t2 - t1))
    return best[1], best[2]


def breakdown(model, batch, tmodel=None):
    """Per layer of minialex: forward and backward seconds, the seconds of matrix products in them,
    the convolution algorithm, and (with tmodel, the same layers in PyTorch's order) PyTorch's
    forward + backward seconds on the same input."""
    rng = np.random.default_rng(1)
    h = rng.standard_normal((batch, 3, model.input_size, model.input_size)).astype(np.float32)
    rows = []
    for i, name in enumerate(model.layer_order):
        layer = getattr(model, name)
        fwd, bwd, gemm = [], [], []
        for _ in range(3):
            x = ma.Tensor(h, requires_grad=name != "conv1")
            layer.zero_grad()  # as in a train step: no accumulation into last rep's gradients
            with GemmClock() as clock:
                t0 = time.perf_counter()
                out = layer(x)
                t1 = time.perf_counter()
                algorithm = algorithm_of(out)
                out.backward(np.ones(out.shape, np.float32))
                t2 = time.perf_counter()
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            gemm.append(clock.seconds)
        best = int(np.argmin(np.add(fwd, bwd)))
        theirs = sum(torch_layer_seconds(tmodel[i], h)) if tmodel is not None else float("nan")
        rows.append((name, fwd[best], bwd[best], gemm[best], algorithm, theirs))
        h = out.numpy()
    return rows


# Matrix products of the step, NumPy's (its BLAS) against PyTorch's on the same float32 arrays:
# name -> (A's shape, B's shape, transpose B), the products minialex's layers make (cpu/conv.py,
# cpu/winograd.py, ops/linear.py) at the benchmark's batch.
PRODUCTS = {
    "alexnet": {"fc6 forward: x W^T": ((16, 9216), (4096, 9216), True),
                "fc6 weight gradient: dy^T x": ((4096, 16), (16, 9216), False),
                "conv2 im2col forward: W cols": ((256, 2400), (2400, 16 * 27 * 27), False),
                "conv4 F(2x2, 3x3): 16 products U V": ((16, 384, 384), (16, 384, 16 * 49), False)},
    "alexnet-mini": {"fc6 forward: x W^T": ((64, 576), (512, 576), True),
                     "conv2 im2col forward: W cols": ((64, 800), (800, 64 * 15 * 15), False),
                     "conv3 im2col forward: W cols": ((96, 576), (576, 64 * 7 * 7), False)},
}


def product_peers(arch, reps):
    """(name, GFLOP, NumPy seconds, PyTorch seconds): medians of alternating reps on the same arrays."""
    import torch
    rng = np.random.default_rng(2)
    rows = []
    for name, (a_shape, b_shape, transpose) in PRODUCTS[arch].items():
        a = rng.standard_normal(a_shape, dtype=np.float32)
        b = rng.standard_normal(b_shape, dtype=np.float32)
        b_view = np.swapaxes(b, -1, -2) if transpose else b
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        tb_view = tb.transpose(-1, -2) if transpose else tb
        flop = 2 * np.prod(a_shape) * b_view.shape[-1]
        mine, theirs = [], []
        for rep in range(reps + 1):  # the first of each is a warm-up
            seconds = timed(lambda: np.matmul(a, b_view)), timed(lambda: torch.matmul(ta, tb_view))
            if rep:
                mine.append(seconds[0])
                theirs.append(seconds[1])
        rows.append((name, flop / 1e9, float(np.median(mine)), float(np.median(theirs))))
    return rows


def peak_rss(lib, arch, batch):
    """Peak RSS (MiB) of a child process that builds the model and runs 3 steps."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and exec.
    make = f"make_minialex({arch!r}, {batch}, {lib[9:]!r})" if lib.startswith("minialex") else \
        f"make_torch({arch!r}, {batch})"
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import cpu; cpu.ALGORITHM = {ALGORITHM!r}; "
            f"m, s = cpu.{make}; [s() for _ in range(3)]; "
            f"print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        return float("nan")
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--skip-mini", action="store_true")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-reference", action="store_true", help="skip the reference CPU path's row")
    p.add_argument("--algorithm", choices=["auto", "im2col", "winograd"], default="auto",
                   help="convolution algorithm of conv2 - conv5 (default: auto, as the model)")
    args = p.parse_args()
    global ALGORITHM
    ALGORITHM = args.algorithm
    try:
        import torch
        torch.set_num_threads(os.cpu_count())
    except ImportError:
        torch = None
        print("PyTorch is not installed: timing minialex alone (pip install torch to compare)")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}"
          + (f", torch {torch.__version__}" if torch else "") + f", {time.strftime('%Y-%m-%d')}; minialex "
          f"threads {ma.cpu.cpu_threads()}, CPU path {ma.get_cpu_path()}, conv2 - conv5 algorithm {ALGORITHM}, tune: {TUNED}")
    for arch, batch in CONFIGS.items():
        if args.skip_mini and arch == "alexnet-mini":
            continue
        model, ma_step = make_minialex(arch, batch, "fast")
        steps = {"minialex": ma_step}
        if not args.no_reference:
            steps["minialex (reference path)"] = make_minialex(arch, batch, "reference")[1]
        ma.set_cpu_path("fast")
        tmodel = None
        if torch:
            tmodel, steps["PyTorch"] = make_torch(arch, batch)
        for s in steps.values():
            s()  # warm-up
        times = {k: [] for k in steps}
        for _ in range(args.reps):
            for k, s in steps.items():
                times[k].append(timed(s))
        print(f"\n## {arch}, batch {batch}: one train step (forward, loss, backward, SGD), {args.reps} reps alternating")
        print("| library | min (s) | median (s) | images/s (median) | peak RSS (MiB) |\n|---|---|---|---|---|")
        for k, t in times.items():
            lib = {"minialex": "minialex-fast", "minialex (reference path)": "minialex-reference"}.get(k, "torch")
            mem = float("nan") if args.no_memory else peak_rss(lib, arch, batch)
            print(f"| {k} | {min(t):.3f} | {np.median(t):.3f} | {batch / np.median(t):.1f} | {mem:.0f} |")
        if torch:
            for k in [k for k in times if k.startswith("minialex")]:
                ratios = [a / b for a, b in zip(times[k], times["PyTorch"])]
                print(f"\n{k} / PyTorch step time: median {np.median(ratios):.2f} (per rep: "
                      f"{', '.join(f'{r:.2f}' for r in ratios)})")
        others = [1 - share for share in gemm_shares(ma_step, args.reps)]
        rows = breakdown(model, batch, tmodel)
        total = sum(r[1] + r[2] for r in rows)
        gemm = sum(r[3] for r in rows)
        print("\n| layer | algorithm | forward (ms) | backward (ms) | of which GEMM (ms) | PyTorch fwd+bwd (ms) | "
              "x PyTorch |\n|---|---|---|---|---|---|---|")
        for name, f, b, g, algorithm, theirs in rows:
            print(f"| {name} | {algorithm} | {f * 1e3:.1f} | {b * 1e3:.1f} | {g * 1e3:.1f} | {theirs * 1e3:.1f} | "
                  f"{(f + b) / theirs:.2f} |")
        print(f"\nlayers total {total * 1e3:.0f} ms; matrix products {gemm * 1e3:.0f} ms; everything else "
              f"(im2col/col2im, LRN, pooling, ReLU, dropout, layouts) {(total - gemm) * 1e3:.0f} ms = "
              f"{(total - gemm) / total:.0%} of the layers.\nInside the whole train step (loss and SGD included): "
              f"everything but the matrix products {np.median(others):.1%}, median of {args.reps} "
              f"(per rep: {', '.join(f'{o:.1%}' for o in others)})")
        if torch:
            print("\n| matrix product (float32) | GFLOP | NumPy ms | GFLOP/s | PyTorch ms | GFLOP/s | NumPy / PyTorch |"
                  "\n|---|---|---|---|---|---|---|")
            for name, gflop, mine, theirs in product_peers(arch, args.reps):
                print(f"| {name} | {gflop:.2f} | {mine * 1e3:.1f} | {gflop / mine:.0f} | {theirs * 1e3:.1f} | "
                      f"{gflop / theirs:.0f} | {mine / theirs:.2f} |")


if __name__ == "__main__":
    main()
