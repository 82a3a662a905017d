"""A tour of minialex's ops: check every backward against numerical derivatives, print a table.

    python examples/gradcheck_tour.py

For each op, in float64 on small odd shapes: the largest difference between the hand-written
gradient and central differences (f(x+eps) - f(x-eps)) / 2eps, for every input element. A failing
op prints FAIL with the element ma.gradcheck names, and the tour goes on to the next one.

Two inputs are chosen with care, because a central difference only measures a derivative where
the function is smooth between x - eps and x + eps:
- max-pool gets distinct values (a permutation): with ties (equal values in a window) a small nudge
  changes which pixel is the max, the function has a kink there, and the numerical derivative
  lands halfway between the two one-sided slopes while the analytic one picks a side;
- dropout gets a fixed seed: each evaluation of f must drop the same units, or f(x+eps) and
  f(x-eps) are two different functions and their difference means nothing.
"""
import sys
import time

import numpy as np

import minialex as ma
from minialex import functional as F


def t(rng, *shape):
    return ma.Tensor(rng.standard_normal(shape), requires_grad=True)  # float64: kept as given


def worst_difference(fn, inputs, eps=1e-6):
    """max |analytic - numerical| over every element of every input (what ma.gradcheck bounds)."""
    r = np.random.default_rng(0).standard_normal(fn(*inputs).shape)
    for x in inputs:
        x.grad = None
    fn(*inputs).backward(r)
    worst = 0.0
    for x in inputs:
        for idx in np.ndindex(*x.shape):
            orig = x.data[idx]
            x.data[idx] = orig + eps
            plus = float((fn(*inputs).data * r).sum())
            x.data[idx] = orig - eps
            minus = float((fn(*inputs).data * r).sum())
            x.data[idx] = orig
            worst = max(worst, abs(x.grad[idx] - (plus - minus) / (2 * eps)))
    return worst


def main():
    rng = np.random.default_rng(1)
    distinct = ma.Tensor(rng.permutation(2 * 3 * 7 * 7).reshape(2, 3, 7, 7) / 10.0, requires_grad=True)
    labels = np.array([1, 0, 3])
    cases = [
        ("conv2d stride 2, pad 1", lambda x, w, b: F.conv2d(x, w, b, 2, 1), [t(rng, 2, 3, 7, 7), t(rng, 4, 3, 3, 3), t(rng, 4)]),
        ("conv2d groups=2", lambda x, w: F.conv2d(x, w, groups=2), [t(rng, 1, 4, 6, 5), t(rng, 6, 2, 3, 3)]),
        ("relu", F.relu, [t(rng, 3, 5)]),
        ("local_response_norm, alpha 0.5", lambda x: F.local_response_norm(x, 5, 0.5, 0.75, 2.0), [t(rng, 2, 7, 3, 3)]),
        ("max_pool2d 3/2 (overlapping)", lambda x: F.max_pool2d(x, 3, 2), [distinct]),
        ("dropout p=0.5, fixed seed", lambda x: F.dropout(x, 0.5, seed=3), [t(rng, 4, 6)]),
        ("linear", F.linear, [t(rng, 3, 5), t(rng, 4, 5), t(rng, 4)]),
        ("cross_entropy", lambda z: F.cross_entropy(z, labels), [t(rng, 3, 4)]),
    ]
    print(f"{'op':34} {'elements':>9} {'max |analytic - numerical|':>27} {'ma.gradcheck':>13} {'ms':>7}")
    failed = 0
    for name, fn, inputs in cases:
        start = time.perf_counter()
        worst = worst_difference(fn, inputs)
        try:
            ok = ma.gradcheck(fn, inputs)
        except ma.GradcheckError as e:  # it raises, naming the worst element, when a gradient is wrong
            ok, failed = False, failed + 1
            reason = str(e)
        n = sum(x.size for x in inputs)
        print(f"{name:34} {n:>9} {worst:>27.2e} {'pass' if ok else 'FAIL':>13} {(time.perf_counter() - start) * 1e3:>7.0f}")
        if not ok:
            print(f"    {reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
