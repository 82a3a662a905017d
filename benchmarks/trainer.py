"""What the Trainer costs: a training epoch through minialex.training.Trainer.fit against the same
epoch written out by hand, on the same model and batches, in one run.

    python benchmarks/trainer.py                       # alexnet-mini, batch 32, 24 steps, 7 reps
    python benchmarks/trainer.py --reps 11 --steps 40

Both loops do the same work per step: forward, cross-entropy, backward, the SGD step, and the
epoch's training loss and top-1 (loss.item() and an argmax of the logits each step, which the
Trainer reports). The batches are made once and kept in memory, so that the loader's time and
noise are out of it. The variants alternate (hand, Trainer, Trainer with the command's callbacks,
hand, ...) and each is reported as the median of its reps with the spread; the ratio is of medians.
"""
import argparse
import platform
import statistics
import time

import numpy as np

import minialex as ma
from minialex import functional as F
from minialex.training import EpochLine, FirstLossCheck, LayerDiagnostics, ProgressBar, StallWarning, Trainer


def batches(steps, batch, size, classes, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch, 3, size, size)).astype(np.float32), rng.integers(0, classes, batch))
            for _ in range(steps)]


def fresh(classes):
    ma.manual_seed(0)
    model = ma.models.AlexNet.mini(num_classes=classes)
    return model, ma.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)


def by_hand(data, classes):
    model, opt = fresh(classes)
    start, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
    model.train()
    for x, y in data:
        logits = model(ma.Tensor(x))
        loss = F.cross_entropy(logits, y)
        model.zero_grad()
        loss.backward()
        opt.step()
        seen, loss_sum = seen + len(y), loss_sum + loss.item() * len(y)
        correct += int((logits.numpy().argmax(1) == y).sum())
    return time.perf_counter() - start, loss_sum / seen


def by_trainer(data, classes, callbacks=()):
    model, opt = fresh(classes)
    start = time.perf_counter()
    history = Trainer(model, opt, data, epochs=1, callbacks=list(callbacks)).fit()
    return time.perf_counter() - start, history[0]["train_loss"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    ma.cpu.tune()
    classes, size = 10, 64
    data = batches(args.steps, args.batch, size, classes)
    variants = {"hand-written loop": lambda: by_hand(data, classes),
                "Trainer.fit": lambda: by_trainer(data, classes),
                "Trainer.fit + command callbacks": lambda: by_trainer(data, classes, [
                    FirstLossCheck(), StallWarning(), LayerDiagnostics(), ProgressBar(), EpochLine()])}
    for run in variants.values():                       # warm up: allocations, thread pools, caches
        run()
    times, losses = {k: [] for k in variants}, {}
    for _ in range(args.reps):
        for name, run in variants.items():
            seconds, loss = run()
            times[name].append(seconds)
            losses[name] = loss
    base = statistics.median(times["hand-written loop"])
    print(f"\n{platform.machine()} {platform.processor() or ''}, {ma.cpu.cpu_threads()} threads; alexnet-mini, "
          f"batch {args.batch}, {args.steps} steps per epoch, {args.reps} alternating reps (medians, min-max)")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:34s} {med:7.3f} s  ({min(ts):.3f} - {max(ts):.3f})  x{med / base:.3f} the hand loop  "
              f"train loss {losses[name]:.6f}")
    assert len({round(v, 6) for v in losses.values()}) == 1, "the loops did not compute the same epoch"


if __name__ == "__main__":
    main()
