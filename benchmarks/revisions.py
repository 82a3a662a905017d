"""minialex's own train-step time in two source trees (two revisions), measured alternately.

    git worktree add /tmp/before <commit>
    python benchmarks/revisions.py /tmp/before . --arch alexnet --batch 16 --rounds 7

Two versions of a package cannot share one process, so each round starts one child process per
tree, in alternating order: it builds the model (seeded), applies the CPU tuning that minialex-train
applies (at import in older trees, ma.cpu.tune() in newer ones, unless --no-tune), runs a warm-up step, then times
--steps train steps (forward, loss, backward, SGD) and reports their median. Printed: each tree's
median over the rounds, and the median of the per-round ratios second / first with their range.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

CHILD = r'''
import sys, time, json
sys.path.insert(0, sys.argv[1])
import numpy as np
import minialex as ma
from minialex import functional as F
arch, batch, steps, tune = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "tune"
if tune and hasattr(ma, "cpu") and hasattr(ma.cpu, "tune"):
    ma.cpu.tune()
ma.manual_seed(0)
model = ma.models.AlexNet(1000) if arch == "alexnet" else ma.models.AlexNet.mini(10)
opt = ma.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
rng = np.random.default_rng(0)
x = ma.Tensor(rng.standard_normal((batch, 3, model.input_size, model.input_size)).astype(np.float32))
y = rng.integers(0, model.num_classes, batch)
def step():
    loss = F.cross_entropy(model(x), y)
    model.zero_grad()
    loss.backward()
    opt.step()
step()
times = []
for _ in range(steps):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
print(json.dumps(times))
'''


def child(tree, args):
    out = subprocess.run([sys.executable, "-c", CHILD, os.path.abspath(tree), args.arch, str(args.batch),
                          str(args.steps), "no-tune" if args.no_tune else "tune"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{tree}: the child failed:\n{out.stderr[-3000:]}")
    return float(np.median(json.loads(out.stdout.strip().splitlines()[-1])))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("first")
    p.add_argument("second")
    p.add_argument("--arch", choices=["alexnet", "alexnet-mini"], default="alexnet")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--no-tune", action="store_true", help="skip ma.cpu.tune() (trees that tune at import still do)")
    args = p.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}; {args.arch} batch {args.batch}, {args.rounds} rounds of {args.steps} steps")
    medians = {args.first: [], args.second: []}
    for r in range(args.rounds):
        order = [args.first, args.second] if r % 2 == 0 else [args.second, args.first]
        for tree in order:
            medians[tree].append(child(tree, args))
        print(f"round {r + 1}: {args.first} {medians[args.first][-1]:.3f} s, {args.second} {medians[args.second][-1]:.3f} s",
              flush=True)
    ratios = [b / a for a, b in zip(medians[args.first], medians[args.second])]
    for tree, m in medians.items():
        print(f"{tree}: median step {np.median(m):.3f} s (rounds {min(m):.3f} - {max(m):.3f})")
    print(f"second / first: median {np.median(ratios):.3f} (rounds {min(ratios):.3f} - {max(ratios):.3f})")


if __name__ == "__main__":
    main()
