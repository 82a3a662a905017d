"""Data parallel on one machine's CPU: what a step and its gradient all-reduce cost.

    mpiexec -n 2 python benchmarks/allreduce.py                     # AlexNet, batch 16 per process
    mpiexec -n 2 python benchmarks/allreduce.py --arch alexnet-mini --batch 64
    python benchmarks/allreduce.py --batch 32                        # one process, the same global batch

Each rank runs train steps (forward, loss, backward, the gradient all-reduce of
minialex.distributed, SGD) on random images, alternating two thread settings step by step:
"shared" (each of the machine's processes takes cores / processes threads, what minialex-train
does) and "every core" (each process starts a thread per core, as it would if nothing split them).
Rank 0 prints the median step, the all-reduce's part of it (which includes waiting for the slowest
rank) and the global images/s of each setting.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import minialex as ma  # noqa: E402
from minialex import distributed, functional as F  # noqa: E402
from minialex.cpu import threads, tuning  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=["alexnet", "alexnet-mini"], default="alexnet")
    p.add_argument("--batch", type=int, default=16, help="images per process and step")
    p.add_argument("--reps", type=int, default=4, help="steps per setting, after one warm-up each")
    args = p.parse_args()
    ma.cpu.tune()
    world = distributed.init()
    cores = threads.cpu_threads()
    settings = {"shared": max(1, cores // world.local_size), "every core": cores}
    model = ma.models.AlexNet(1000) if args.arch == "alexnet" else ma.models.AlexNet.mini()
    size = 227 if args.arch == "alexnet" else 64
    classes = 1000 if args.arch == "alexnet" else 10
    rng = np.random.default_rng(world.rank)
    x = ma.Tensor(rng.standard_normal((args.batch, 3, size, size)).astype(np.float32))
    y = rng.integers(0, classes, args.batch)
    params = list(model.parameters())
    opt = ma.optim.SGD(params, lr=1e-4, momentum=0.9)
    times = {name: ([], []) for name in settings}
    for rep in range(args.reps + 1):
        for name, n_threads in settings.items():
            os.environ["MINIALEX_THREADS"] = str(n_threads)
            tuning.set_blas_threads(n_threads)
            world.barrier()
            start = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            model.zero_grad()
            loss.backward()
            reduce_start = time.perf_counter()
            world.allreduce_gradients(params, args.batch, (loss.item(),))
            reduce_time = time.perf_counter() - reduce_start
            opt.step()
            if rep:  # the first round warms up
                times[name][0].append(time.perf_counter() - start)
                times[name][1].append(reduce_time)
    if world.is_root:
        n_params = sum(p.data.size for p in params)
        print(f"{args.arch}, {world.size} process(es), {world.local_size} on this machine, {cores} cores, "
              f"batch {args.batch} per process; {n_params / 1e6:.1f}M parameters ({4 * n_params / 1e6:.0f} MB "
              f"of gradients per step); median of {args.reps} steps")
        print("| threads per process | step (s) | of which all-reduce (s) | images/s, all processes |")
        print("|---|---|---|---|")
        for name, n_threads in settings.items():
            step, red = np.median(times[name][0]), np.median(times[name][1])
            print(f"| {name}: {n_threads} | {step:.3f} | {red:.3f} | {args.batch * world.size / step:.1f} |")


if __name__ == "__main__":
    main()
