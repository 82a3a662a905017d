"""Each op: forward against the naive-loop reference (float64), backward against central
differences (float64), dtype kept, and bad input rejected before any computation. Every test here
runs on both CPU paths: the NumPy reference (the spec) and the fast path (tests/test_cpu.py holds
the two equal to each other in float32 too)."""
import numpy as np
import pytest

import minialex as ma
from minialex import functional as F

from minialex.ops import loops as ref


@pytest.fixture(autouse=True, params=["reference", "fast"])
def cpu_path(request):
    with ma.cpu_path(request.param):
        yield request.param


def T(a, grad=True):
    return ma.Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def rng(seed):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- conv2d
CONV_CASES = [  # N, C, H, W, O, K, stride, padding, groups  (odd sizes, stride > 1, padding, groups)
    (2, 3, 7, 9, 4, 3, 1, 0, 1),
    (2, 3, 9, 8, 5, 3, 2, 1, 1),
    (1, 4, 11, 10, 6, 5, 3, 2, 2),
    (2, 6, 6, 7, 4, 3, 1, 1, 2),
    (1, 2, 13, 13, 3, 11, 4, 0, 1),
    # many channels on a small map: the fast path's channels-last columns (minialex.cpu.conv.channels_last)
    (2, 16, 5, 4, 5, 3, 1, 1, 1),
    (2, 24, 6, 5, 4, 3, 2, 1, 2),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_forward_matches_loops(case):
    n, c, h, w, o, k, s, p, g = case
    r = rng(1)
    x, wt, b = r.standard_normal((n, c, h, w)), r.standard_normal((o, c // g, k, k)), r.standard_normal(o)
    y = F.conv2d(T(x), T(wt), T(b), stride=s, padding=p, groups=g)
    np.testing.assert_allclose(y.data, ref.conv2d_forward(x, wt, b, (s, s), (p, p), g)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES[:4] + CONV_CASES[5:])
def test_conv2d_gradcheck(case):
    n, c, h, w, o, k, s, p, g = case
    r = rng(2)
    x, wt, b = T(r.standard_normal((n, c, h, w))), T(r.standard_normal((o, c // g, k, k))), T(r.standard_normal(o))
    assert ma.gradcheck(lambda x, wt, b: F.conv2d(x, wt, b, s, p, g), [x, wt, b])


def test_conv2d_without_bias_and_input_grad():
    r = rng(3)
    x, wt = T(r.standard_normal((2, 2, 5, 5)), grad=False), T(r.standard_normal((3, 2, 3, 3)))
    y = F.conv2d(x, wt)
    np.testing.assert_allclose(y.data, ref.conv2d_forward(x.data, wt.data, None, (1, 1), (0, 0), 1)[0], atol=1e-12)
    assert ma.gradcheck(lambda x, wt: F.conv2d(x, wt, stride=2), [x, wt])
    assert x.grad is None


# ---------------------------------------------------------------- relu
def test_relu_forward_and_gradcheck():
    r = rng(4)
    x = r.standard_normal((3, 4, 5))
    x = np.where(np.abs(x) < 0.1, 0.5, x)  # away from the kink at 0
    np.testing.assert_array_equal(F.relu(T(x)).data, np.maximum(x, 0))
    assert ma.gradcheck(F.relu, [T(x)])


# ---------------------------------------------------------------- LRN
LRN_CASES = [  # C, size, alpha, beta, k: large alpha makes a wrong window visible
    (7, 5, 0.5, 0.75, 2.0),
    (3, 5, 0.8, 0.75, 1.0),     # fewer channels than size
    (6, 4, 0.3, 0.6, 1.5),      # even size: c-2 .. c+1
    (5, 1, 1.0, 0.5, 1.0),
]


@pytest.mark.parametrize("case", LRN_CASES)
def test_lrn_forward_matches_loops(case):
    c, size, alpha, beta, k = case
    x = rng(5).standard_normal((2, c, 3, 4))
    y = F.local_response_norm(T(x), size, alpha, beta, k)
    np.testing.assert_allclose(y.data, ref.lrn_forward(x, size, alpha, beta, k)[0], rtol=1e-12)


def test_lrn_paper_defaults():
    x = rng(6).standard_normal((1, 8, 3, 3)) * 30  # big activations: the 1e-4 term matters
    y = F.local_response_norm(T(x))
    np.testing.assert_allclose(y.data, ref.lrn_forward(x, 5, 1e-4, 0.75, 2.0)[0], rtol=1e-12)


@pytest.mark.parametrize("case", LRN_CASES)
def test_lrn_gradcheck(case):
    c, size, alpha, beta, k = case
    x = T(rng(7).standard_normal((2, c, 3, 2)))
    assert ma.gradcheck(lambda x: F.local_response_norm(x, size, alpha, beta, k), [x])


# ---------------------------------------------------------------- max pool
def _no_ties(shape, seed):
    return rng(seed).permutation(int(np.prod(shape))).reshape(shape) / 10.0  # distinct values


@pytest.mark.parametrize("shape,k,s", [((2, 3, 7, 7), 3, 2), ((1, 2, 9, 8), 3, 2), ((2, 1, 6, 5), 2, 2),
                                       ((1, 2, 8, 8), 3, 1)])
def test_max_pool_forward_and_gradcheck(shape, k, s):
    x = _no_ties(shape, 8)
    y = F.max_pool2d(T(x), k, s)
    np.testing.assert_array_equal(y.data, ref.max_pool2d_forward(x, (k, k), (s, s), (0, 0))[0])
    assert ma.gradcheck(lambda x: F.max_pool2d(x, k, s), [T(x)])


def test_max_pool_overlap_accumulates_and_ties_go_to_first():
    x = T(np.zeros((1, 1, 5, 5)))
    x.data[0, 0, 2, 2] = 1.0         # the centre wins all four overlapping 3x3/2 windows
    F.max_pool2d(x, 3, 2).sum().backward()
    expected = np.zeros((5, 5))
    expected[2, 2] = 4.0
    np.testing.assert_array_equal(x.grad[0, 0], expected)
    t = T(np.ones((1, 1, 3, 3)))     # all tied: the first (top-left) element takes the gradient
    F.max_pool2d(t, 3, 2).sum().backward()
    assert t.grad[0, 0, 0, 0] == 1.0 and t.grad.sum() == 1.0


def test_max_pool_padding():
    x = _no_ties((1, 2, 5, 5), 9) - 5.0  # all negative but one: padding (-inf) never wins
    y = F.max_pool2d(T(x), 3, 2, padding=1)
    np.testing.assert_array_equal(y.data, ref.max_pool2d_forward(x, (3, 3), (2, 2), (1, 1))[0])
    assert ma.gradcheck(lambda x: F.max_pool2d(x, 3, 2, 1), [T(x)])


# ---------------------------------------------------------------- dropout
def test_dropout_mask_is_the_documented_hash():
    x = T(np.ones((4, 50)), grad=False)
    y = F.dropout(x, p=0.3, seed=1234).data.ravel()
    expected = np.array([ref.dropout_keep(1234, i, 0.3) for i in range(200)])  # the documented hash, as loops
    np.testing.assert_array_equal(y != 0, expected)
    np.testing.assert_allclose(y[expected], 1 / 0.7)


def test_dropout_statistics_seed_and_eval():
    x = T(np.ones((200, 500)), grad=False)
    a, b = F.dropout(x, 0.5, seed=7).data, F.dropout(x, 0.5, seed=7).data
    np.testing.assert_array_equal(a, b)
    assert abs((a == 0).mean() - 0.5) < 0.01 and abs(a.mean() - 1.0) < 0.02  # inverted: mean kept
    assert not np.array_equal(a, F.dropout(x, 0.5, seed=8).data)
    assert F.dropout(x, 0.5, training=False) is x and F.dropout(x, 0.0) is x
    ma.manual_seed(3)
    c = F.dropout(x, 0.5).data
    ma.manual_seed(3)
    np.testing.assert_array_equal(c, F.dropout(x, 0.5).data)


def test_dropout_gradcheck():
    x = T(rng(10).standard_normal((3, 7)))
    assert ma.gradcheck(lambda x: F.dropout(x, 0.4, seed=5), [x])


# ---------------------------------------------------------------- linear, loss, flatten
def test_linear_forward_and_gradcheck():
    r = rng(11)
    x, w, b = r.standard_normal((3, 5)), r.standard_normal((4, 5)), r.standard_normal(4)
    np.testing.assert_allclose(F.linear(T(x), T(w), T(b)).data, ref.linear_forward(x, w, b)[0], rtol=1e-12)
    assert ma.gradcheck(F.linear, [T(x), T(w), T(b)])
    assert ma.gradcheck(lambda x, w: F.linear(x, w), [T(r.standard_normal((2, 3, 5))), T(w)])


def test_cross_entropy_forward_and_gradcheck():
    r = rng(12)
    z, t = r.standard_normal((5, 7)) * 3, r.integers(0, 7, 5)
    np.testing.assert_allclose(F.cross_entropy(T(z), t).item(), ref.cross_entropy_forward(z, t)[0], rtol=1e-12)
    assert ma.gradcheck(lambda z: F.cross_entropy(z, t), [T(z)])
    big = T(np.array([[1000.0, 0.0], [0.0, -1000.0]]))  # stable: no overflow
    assert np.isclose(F.cross_entropy(big, np.array([0, 0])).item(), 0.0)


def test_flatten():
    x = T(rng(13).standard_normal((2, 3, 4, 5)))
    y = F.flatten(x)
    assert y.shape == (2, 60)
    np.testing.assert_array_equal(y.data, x.data.reshape(2, 60))
    assert ma.gradcheck(lambda x: F.flatten(x) * 2.0, [x])


# ---------------------------------------------------------------- dtype
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_op_keeps_dtype(dtype):
    r = rng(14)

    def t(*shape):
        return ma.Tensor(r.standard_normal(shape).astype(dtype), requires_grad=True)
    x = t(2, 4, 9, 9)
    outs = [F.conv2d(x, t(6, 2, 3, 3), t(6), 2, 1, 2), F.relu(x), F.local_response_norm(x),
            F.max_pool2d(x), F.dropout(x), F.flatten(x), F.linear(t(3, 5), t(2, 5), t(2)),
            F.cross_entropy(t(3, 4), np.array([0, 1, 3]))]
    for y in outs:
        assert y.dtype == dtype
        y.sum().backward()
    assert x.grad.dtype == dtype


# ---------------------------------------------------------------- bad input
def _raises(exc, match, fn, *args, **kw):
    with pytest.raises(exc, match=match):
        fn(*args, **kw)


def test_bad_input_is_rejected_with_a_clear_message():
    x, w = T(np.zeros((1, 4, 5, 5))), T(np.zeros((6, 4, 3, 3)))
    _raises(ValueError, r"conv2d: x expected 4 dimensions", F.conv2d, T(np.zeros((4, 5, 5))), w)
    _raises(ValueError, r"conv2d: weight expected shape\[1\] = C/groups", F.conv2d, x, T(np.zeros((6, 3, 3, 3))))
    _raises(ValueError, r"conv2d: groups expected a divisor of the 4 input channels, got 3",
            F.conv2d, x, T(np.zeros((6, 1, 3, 3))), groups=3)
    _raises(ValueError, r"conv2d: weight expected a kernel no larger than the padded input 5x5",
            F.conv2d, x, T(np.zeros((6, 4, 7, 7))))
    _raises(ValueError, r"conv2d: stride expected integers >= 1, got 0", F.conv2d, x, w, stride=0)
    _raises(ValueError, r"conv2d: bias expected shape \(6,\)", F.conv2d, x, w, T(np.zeros(5)))
    _raises(ValueError, r"local_response_norm: size expected an integer >= 1, got 0",
            F.local_response_norm, x, size=0)
    _raises(ValueError, r"local_response_norm: x expected 4 dimensions", F.local_response_norm, T(np.zeros(3)))
    _raises(ValueError, r"max_pool2d: kernel_size expected no larger than the padded input 5x5",
            F.max_pool2d, x, 7)
    _raises(ValueError, r"max_pool2d: stride expected integers >= 1", F.max_pool2d, x, 3, 0)
    _raises(ValueError, r"dropout: p expected a probability in \[0, 1\), got 1.0", F.dropout, x, 1.0)
    _raises(ValueError, r"dropout: p expected a probability in \[0, 1\), got -0.1", F.dropout, x, -0.1)
    _raises(ValueError, r"linear: x expected last dimension 3", F.linear, T(np.zeros((2, 4))), T(np.zeros((5, 3))))
    z = T(np.zeros((2, 3)))
    _raises(TypeError, r"cross_entropy: target expected integer class labels, got dtype float64",
            F.cross_entropy, z, np.array([0.0, 1.0]))
    _raises(ValueError, r"cross_entropy: target expected labels in \[0, 3\), got label 3",
            F.cross_entropy, z, np.array([0, 3]))
    _raises(ValueError, r"cross_entropy: target expected shape \(2,\)", F.cross_entropy, z, np.array([0]))
    _raises(TypeError, r"Conv2d: input 1 \(weight\) expected dtype float64 like the other inputs, got float32",
            F.conv2d, x, ma.Tensor(np.zeros((6, 4, 3, 3), np.float32)))
    _raises(ValueError, r"Add: input 1 \(b\) expected device 'cpu' like input 0, got 'cuda-emu'",
            lambda: x + ma.Tensor(np.zeros(5), device="cuda-emu"))


# ---------------------------------------------------------------- backward against the naive loops
def _grads(fn, arrays, dy_seed=30):
    ts = [T(a) for a in arrays]
    y = fn(*ts)
    dy = rng(dy_seed).standard_normal(y.shape)
    y.backward(dy)
    return dy, [t.grad for t in ts]


@pytest.mark.parametrize("case", CONV_CASES[:4] + CONV_CASES[5:6])
def test_conv2d_backward_equals_the_loops(case):
    n, c, h, w, o, k, s, p, g = case
    r = rng(31)
    x, wt, b = r.standard_normal((n, c, h, w)), r.standard_normal((o, c // g, k, k)), r.standard_normal(o)
    dy, (dx, dw, db) = _grads(lambda x, wt, b: F.conv2d(x, wt, b, s, p, g), [x, wt, b])
    _, cache = ref.conv2d_forward(x, wt, b, (s, s), (p, p), g)
    for got, want in zip((dx, dw, db), ref.conv2d_backward(dy, cache, (True, True, True))):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


def _loops_grads(pair, arrays, dy, needs=None, **hyper):
    """The loops pair called as the engine calls a reference pair: forward, then backward on its cache."""
    forward, backward = pair
    _, cache = forward(*arrays, **hyper)
    return backward(dy, cache) if needs is None else backward(dy, cache, needs)


def test_relu_lrn_pool_linear_ce_dropout_backward_equal_the_loops():
    r = rng(32)
    x = r.standard_normal((2, 5, 4, 3))
    dy, (dx,) = _grads(F.relu, [x])
    np.testing.assert_array_equal(dx, _loops_grads((ref.relu_forward, ref.relu_backward), [x], dy)[0])
    for c, size, alpha, beta, k in LRN_CASES:
        xl = r.standard_normal((2, c, 3, 2))
        dy, (dx,) = _grads(lambda x: F.local_response_norm(x, size, alpha, beta, k), [xl])
        want, = _loops_grads((ref.lrn_forward, ref.lrn_backward), [xl], dy, size=size, alpha=alpha, beta=beta, k=k)
        np.testing.assert_allclose(dx, want, rtol=1e-11, atol=1e-12)
    xp = np.round(r.standard_normal((2, 2, 7, 6)), 1)                    # ties too
    for kernel, stride, pad in (((3, 3), (2, 2), (0, 0)), ((3, 2), (1, 2), (1, 1))):
        dy, (dx,) = _grads(lambda x: F.max_pool2d(x, kernel, stride, pad), [xp])
        want, = _loops_grads((ref.max_pool2d_forward, ref.max_pool2d_backward), [xp], dy,
                             kernel=kernel, stride=stride, padding=pad)
        np.testing.assert_array_equal(dx != 0, want != 0)               # the same winners
        np.testing.assert_allclose(dx, want, rtol=1e-15, atol=1e-15)     # (sums in another order)
    xs, w, b = r.standard_normal((3, 5)), r.standard_normal((4, 5)), r.standard_normal(4)
    dy, grads = _grads(F.linear, [xs, w, b])
    for got, want in zip(grads, _loops_grads((ref.linear_forward, ref.linear_backward), [xs, w, b], dy, (True,) * 3)):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    z, t = r.standard_normal((4, 6)), r.integers(0, 6, 4)
    zt = T(z)
    F.cross_entropy(zt, t).backward()
    want, = _loops_grads((ref.cross_entropy_forward, ref.cross_entropy_backward), [z], np.float64(1.0), target=t)
    np.testing.assert_allclose(zt.grad, want, rtol=1e-12)
    xd = r.standard_normal((3, 9))
    dy, (dx,) = _grads(lambda x: F.dropout(x, 0.4, seed=77), [xd])
    np.testing.assert_allclose(F.dropout(T(xd), 0.4, seed=77).data, ref.dropout_forward(xd, 0.4, 77, 0)[0],
                               rtol=1e-15)
    want, = _loops_grads((ref.dropout_forward, ref.dropout_backward), [xd], dy, p=0.4, seed=77, offset=0)
    np.testing.assert_allclose(dx, want, rtol=1e-15)
