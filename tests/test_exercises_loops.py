"""The naive loops (minialex/ops/loops.py) take their reference pair's arguments and caches: each
loops pair is called here exactly as the engine calls the reference pair, and the two agree."""
import inspect

import numpy as np
import pytest

import minialex as ma
from minialex.ops import conv, cross_entropy, dropout, linear, loops, lrn, pool, relu, sgd

R = np.random.default_rng(40)
DISTINCT = R.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) / 10.0 - 30.0      # no ties, all negative

# op: (its Function, its inputs, its hyper-parameters): shapes with padding, stride and groups
CASES = {
    "relu": (relu.ReLU, [R.standard_normal((2, 3, 4))], {}),
    "lrn": (lrn.LocalResponseNorm, [R.standard_normal((2, 6, 3, 2))], dict(size=4, alpha=0.7, beta=0.75, k=1.5)),
    "max_pool2d": (pool.MaxPool2d, [DISTINCT], dict(kernel=(3, 2), stride=(2, 1), padding=(1, 1))),
    "conv2d": (conv.Conv2d, [R.standard_normal((2, 4, 6, 5)), R.standard_normal((6, 2, 3, 2)), R.standard_normal(6)],
               dict(stride=(2, 1), padding=(1, 0), groups=2)),
    "dropout": (dropout.Dropout, [R.standard_normal((3, 20))], dict(p=0.3, seed=17, offset=500)),
    "linear": (linear.Linear, [R.standard_normal((2, 3, 5)), R.standard_normal((4, 5)), R.standard_normal(4)], {}),
    "cross_entropy": (cross_entropy.CrossEntropy, [R.standard_normal((4, 6)) * 3], dict(target=np.array([5, 0, 2, 2]))),
}


def _through_the_engine(function, inputs, hyper):
    """y and the input gradients of function.apply on float64 tensors, its pair as the engine calls it."""
    ts = [ma.Tensor(a.copy(), requires_grad=True) for a in inputs]
    with ma.cpu_path("reference"):
        y = function.apply(*ts, **hyper)
        y.backward(np.random.default_rng(41).standard_normal(y.shape))
    return y.data, [t.grad for t in ts]


@pytest.mark.parametrize("op", sorted(CASES))
def test_each_loops_pair_runs_where_its_reference_pair_runs(op):
    function, inputs, hyper = CASES[op]
    forward, backward = function.reference
    mine = (getattr(loops, forward.__name__), getattr(loops, backward.__name__))
    for theirs, ours in zip((forward, backward), mine):
        assert inspect.signature(ours).parameters.keys() == inspect.signature(theirs).parameters.keys(), ours

    class Loops(function):      # the same op, its reference pair replaced by the loops
        reference, fast, cuda = mine, None, None
    want_y, want_grads = _through_the_engine(function, inputs, hyper)
    got_y, got_grads = _through_the_engine(Loops, inputs, hyper)
    np.testing.assert_allclose(got_y, want_y, rtol=1e-12, atol=1e-14)
    for got, want in zip(got_grads, want_grads):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)
    assert np.abs(want_grads[0]).max() > 0.1                 # a case where a wrong gradient shows


@pytest.mark.parametrize("op", sorted(CASES))
def test_a_loops_backward_takes_the_reference_forwards_cache_and_the_other_way(op):
    function, inputs, hyper = CASES[op]
    forward, backward = function.reference
    mine = (getattr(loops, forward.__name__), getattr(loops, backward.__name__))
    y, cache = forward(*inputs, **hyper)
    y_loops, cache_loops = mine[0](*inputs, **hyper)
    assert type(cache_loops) is type(cache) and y_loops.dtype == y.dtype and y_loops.shape == y.shape
    dy = np.random.default_rng(42).standard_normal(y.shape)
    extra = ((True,) * len(inputs),) if len(inspect.signature(backward).parameters) == 3 else ()
    want = backward(dy, cache, *extra)
    for got in (mine[1](dy, cache, *extra), backward(dy, cache_loops, *extra)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-13)


def test_the_sgd_loop_updates_in_place_as_the_reference_does():
    w, v, g = (R.standard_normal((3, 4)) for _ in range(3))
    want_w, want_v = w.copy(), v.copy()
    sgd.sgd_update_reference(want_w, want_v, g, 0.1, 0.9, 0.05)
    loops.sgd_update(w, v, g, 0.1, 0.9, 0.05)
    np.testing.assert_allclose(w, want_w, rtol=1e-14)
    np.testing.assert_allclose(v, want_v, rtol=1e-14)
