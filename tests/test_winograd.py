"""Winograd convolution (minialex/ops/winograd.py) on the CPU: the transform matrices, the
reference against im2col and against central differences in float64, the fast path against the
reference, float32 accuracy per tile, non-finite inputs, the algorithm= argument and its "auto"
rule, and what a convolution keeps for its backward."""
import numpy as np
import pytest

import minialex as ma
from minialex import functional as F
from minialex.cpu import winograd as fast
from minialex.ops import conv, winograd


def rng(seed):
    return np.random.default_rng(seed)


def direct_1d(d, g, m):
    return np.array([d[i:i + len(g)] @ g for i in range(m)])


@pytest.mark.parametrize("m,r", [(2, 3), (4, 3), (3, 3), (2, 5), (4, 5), (2, 2), (5, 2), (1, 3), (3, 1), (6, 3), (2, 7)])
def test_one_dimensional_f_m_r_is_the_correlation(m, r):
    """y = AT ((G g) * (BT d)): m outputs of an r-tap correlation from m + r - 1 multiplications."""
    at, g, bt = winograd.winograd_matrices(m, r)
    assert at.shape == (m, m + r - 1) and g.shape == (m + r - 1, r) and bt.shape == (m + r - 1, m + r - 1)
    r_ = rng(m * 10 + r)
    for _ in range(3):
        d, f = r_.standard_normal(m + r - 1), r_.standard_normal(r)
        np.testing.assert_allclose(at @ ((g @ f) * (bt @ d)), direct_1d(d, f, m), rtol=1e-12, atol=1e-12)


def test_f2_3_matrices_are_the_documented_ones():
    at, g, bt = winograd.winograd_matrices(2, 3)
    np.testing.assert_array_equal(at, [[1, 1, 1, 0], [0, 1, -1, 1]])
    np.testing.assert_array_equal(g, [[-1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    np.testing.assert_array_equal(bt, [[-1, 0, 1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]])


def test_too_many_points_is_an_error():
    with pytest.raises(ValueError, match="points"):
        winograd.winograd_matrices(8, 5)


@pytest.mark.parametrize("kernel,out,want", [(3, 13, 4), (3, 7, 4), (3, 4, 4), (3, 5, 2), (3, 2, 2), (5, 27, 4), (5, 3, 4), (7, 20, 2)])
def test_choose_tile_takes_the_fewest_multiplications(kernel, out, want):
    assert winograd.choose_tile(kernel, out) == want


# (N, C, H, W, O, (KH, KW), (PH, PW), groups, tile): partial last tiles, rectangular kernels and
# tiles, groups, no padding and padding beyond the kernel's reach
CASES = [
    (2, 4, 13, 13, 6, (3, 3), (1, 1), 1, (2, 2)),
    (2, 4, 13, 13, 6, (3, 3), (1, 1), 1, (4, 4)),
    (2, 4, 11, 9, 8, (5, 5), (2, 2), 2, (2, 2)),
    (1, 4, 12, 12, 4, (5, 5), (2, 2), 2, (4, 4)),
    (3, 3, 7, 9, 4, (3, 3), (0, 0), 1, (2, 4)),
    (2, 6, 10, 8, 4, (3, 5), (1, 2), 2, (4, 2)),
    (1, 2, 5, 6, 3, (2, 2), (3, 1), 1, (3, 3)),
    (2, 3, 4, 4, 2, (3, 3), (1, 1), 1, (4, 4)),   # one tile, most of it past the edge
]


def _arrays(case, seed, dtype=np.float64):
    n, c, h, w, o, (kh, kw), _, g, _ = case
    r = rng(seed)
    return (r.standard_normal((n, c, h, w)).astype(dtype), r.standard_normal((o, c // g, kh, kw)).astype(dtype),
            r.standard_normal(o).astype(dtype))


@pytest.mark.parametrize("case", CASES)
def test_reference_equals_im2col_in_float64(case):
    *_, padding, groups, tile = case
    x, w, b = _arrays(case, 1)
    y, cache = winograd.winograd_forward(x, w, b, padding, groups, tile)
    y_ref, cache_ref = conv.conv2d_forward(x, w, b, (1, 1), padding, groups)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
    dy = rng(2).standard_normal(y.shape)
    for got, want in zip(winograd.winograd_backward(dy, cache, (True, True, True)),
                         conv.conv2d_backward(dy, cache_ref, (True, True, True))):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CASES[:3] + CASES[5:7])
def test_reference_gradients_match_central_differences(case):
    *_, padding, groups, tile = case
    x, w, b = _arrays(case, 3)
    ts = [ma.Tensor(a, requires_grad=True) for a in (x[:1], w, b)]
    with ma.cpu_path("reference"):
        assert ma.gradcheck(lambda x_, w_, b_: F.conv2d(x_, w_, b_, padding=padding, groups=groups,
                                                        algorithm="winograd", tile=tile), ts)


@pytest.mark.parametrize("case", CASES)
def test_fast_path_equals_the_reference(case):
    *_, padding, groups, tile = case
    x, w, b = _arrays(case, 4)
    y, cache = winograd.winograd_forward(x, w, b, padding, groups, tile)
    y_fast, cache_fast = fast.winograd_forward(x, w, b, padding, groups, tile)
    np.testing.assert_allclose(y_fast, y, rtol=1e-11, atol=1e-11)
    dy = rng(5).standard_normal(y.shape)
    for needs in ((True, True, True), (True, False, False), (False, True, True)):
        want = winograd.winograd_backward(dy, cache, needs)
        got = fast.winograd_backward(dy, cache_fast, needs)
        for g_, w_ in zip(got, want):
            assert (g_ is None) == (w_ is None)
            if w_ is not None:
                np.testing.assert_allclose(g_, w_, rtol=1e-11, atol=1e-11)


# float32 against float64, relative to the largest |value|, per tile: bounds a few times what is
# measured (the module docstring's table); a wrong constant gives errors near 1.
TOLERANCE = {((2, 2), 3): 2e-6, ((4, 4), 3): 2e-5, ((2, 2), 5): 1e-5, ((4, 4), 5): 4e-5}


@pytest.mark.parametrize("tile,k", list(TOLERANCE))
@pytest.mark.parametrize("path", ["reference", "fast"])
def test_float32_accuracy_per_tile(tile, k, path):
    r = rng(6)
    x, w = r.standard_normal((2, 64, 13, 13)), r.standard_normal((48, 64, k, k))
    pair = (winograd.winograd_forward, winograd.winograd_backward) if path == "reference" else \
        (fast.winograd_forward, fast.winograd_backward)
    y64, c64 = winograd.winograd_forward(x, w, None, (k // 2,) * 2, 1, tile)
    dy = r.standard_normal(y64.shape)
    y32, c32 = pair[0](x.astype(np.float32), w.astype(np.float32), None, (k // 2,) * 2, 1, tile)
    assert y32.dtype == np.float32
    got = [y32, *pair[1](dy.astype(np.float32), c32, (True, True, False))[:2]]
    want = [y64, *winograd.winograd_backward(dy, c64, (True, True, False))[:2]]
    for name, g_, w_ in zip(("y", "dx", "dw"), got, want):
        err = np.abs(g_ - w_).max() / np.abs(w_).max()
        assert err < TOLERANCE[(tile, k)], f"{name}: {err:.1e}"


def test_float32_f2x2_3x3_is_as_accurate_as_im2col():
    """Why "auto" takes F(2x2, 3x3) only: its error is of im2col's order (here within 3x of it)."""
    r = rng(7)
    x, w = r.standard_normal((4, 128, 13, 13)), r.standard_normal((96, 128, 3, 3))
    exact = conv.conv2d_forward(x, w, None, (1, 1), (1, 1), 1)[0]
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    err_w = np.abs(fast.winograd_forward(x32, w32, None, (1, 1), 1, (2, 2))[0] - exact).max()
    err_i = np.abs(conv.conv2d_forward(x32, w32, None, (1, 1), (1, 1), 1)[0] - exact).max()
    assert err_w < 3 * err_i


@pytest.mark.parametrize("path", ["reference", "fast"])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_input_spoils_only_the_windows_that_hold_it(path, bad):
    """As im2col: NaN/inf only where a window holds the bad pixel, not over the whole tile."""
    r = rng(8)
    x, w, b = r.standard_normal((2, 3, 9, 9)), r.standard_normal((4, 3, 3, 3)), r.standard_normal(4)
    x[0, 1, 4, 5] = bad
    w[1, 2, 0, 0] = 0.0  # 0 * inf = NaN in im2col too: the pattern must follow it
    with ma.cpu_path(path):
        ts = [ma.Tensor(a, requires_grad=True) for a in (x, w, b)]
        y = F.conv2d(*ts, padding=1, algorithm="winograd", tile=4)
        dy = r.standard_normal(y.shape)
        dy[1, 2, 3, 3] = np.inf
        y.backward(dy)
        ref = [ma.Tensor(a, requires_grad=True) for a in (x, w, b)]
        y_ref = F.conv2d(*ref, padding=1, algorithm="im2col")
        y_ref.backward(dy)
    assert not np.isfinite(y_ref.numpy()).all() and np.isfinite(y_ref.numpy()).any()
    for got, want in ((y.numpy(), y_ref.numpy()), (ts[0].grad, ref[0].grad), (ts[1].grad, ref[1].grad)):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-9, atol=1e-9)


def _op(y):
    return type(y._ctx).__name__


@pytest.mark.parametrize("shape,kernel,stride,groups,want", [
    ((1, 128, 6, 6), (128, 128, 3, 3), 1, 1, "WinogradConv2d"),   # conv3-like
    ((1, 256, 6, 6), (256, 128, 3, 3), 1, 2, "WinogradConv2d"),   # 128 channels per group
    ((1, 128, 6, 6), (128, 128, 2, 3), 1, 1, "WinogradConv2d"),   # 2x3: F(2x2, 2x3)
    ((1, 128, 6, 6), (128, 128, 3, 3), 2, 1, "Conv2d"),           # strided
    ((1, 128, 6, 6), (128, 128, 5, 5), 1, 1, "Conv2d"),           # 5x5: its tiles are less accurate
    ((1, 96, 6, 6), (128, 96, 3, 3), 1, 1, "Conv2d"),             # few channels
    ((1, 128, 6, 6), (96, 128, 3, 3), 1, 1, "Conv2d"),            # few filters
    ((1, 256, 6, 6), (256, 64, 3, 3), 1, 4, "Conv2d"),            # 64 channels per group
    ((1, 128, 6, 6), (128, 128, 1, 1), 1, 1, "Conv2d"),           # 1x1: a plain product
])
def test_auto_rule(shape, kernel, stride, groups, want):
    x = ma.Tensor(np.zeros(shape, np.float32), requires_grad=True)
    w = ma.Tensor(np.zeros(kernel, np.float32), requires_grad=True)
    assert _op(F.conv2d(x, w, stride=stride, padding=1, groups=groups)) == want
    assert _op(F.conv2d(x, w, stride=stride, padding=1, groups=groups, algorithm="im2col")) == "Conv2d"


def test_auto_on_alexnet_takes_winograd_for_conv3_to_conv5():
    model = ma.models.AlexNet(10)
    x = rng(9).standard_normal((1, 3, 227, 227))
    assert [_op(y) for y in _conv_outputs(model, x)] == ["Conv2d"] * 2 + ["WinogradConv2d"] * 3
    assert [_op(y) for y in _conv_outputs(ma.models.AlexNet.mini(10), x[:, :, :64, :64])] == ["Conv2d"] * 5


def _conv_outputs(model, x):
    outs = []
    hook = lambda module, inputs, y: outs.append(y)  # noqa: E731
    handles = [getattr(model, f"conv{i}").register_forward_hook(hook) for i in range(1, 6)]
    model(ma.Tensor(x.astype(np.float32)))
    for h in handles:
        h.remove()
    return outs


@pytest.mark.parametrize("kwargs,match", [
    (dict(algorithm="fft"), "algorithm"),
    (dict(algorithm="winograd", stride=2), "stride"),
    (dict(algorithm="im2col", tile=2), "tile"),
    (dict(tile=2), "tile"),
    (dict(algorithm="winograd", tile=7), "tile"),
    (dict(algorithm="winograd", tile=0), "tile"),
])
def test_bad_algorithm_arguments_are_named(kwargs, match):
    x, w = ma.Tensor(np.zeros((1, 2, 8, 8), np.float32)), ma.Tensor(np.zeros((2, 2, 3, 3), np.float32))
    with pytest.raises((ValueError, TypeError), match=f"conv2d: {match}"):
        F.conv2d(x, w, padding=1, **kwargs)


def test_winograd_refuses_a_kernel_with_no_tile():
    x, w = ma.Tensor(np.zeros((1, 1, 12, 12), np.float32)), ma.Tensor(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="conv2d: weight"):
        F.conv2d(x, w, algorithm="winograd")


def test_nn_conv2d_takes_the_algorithm():
    layer = ma.nn.Conv2d(16, 16, 3, padding=1, algorithm="im2col")
    assert "algorithm='im2col'" in repr(layer)
    x = ma.Tensor(rng(10).standard_normal((1, 16, 6, 6)).astype(np.float32))
    assert _op(layer(x)) == "Conv2d"
    layer.algorithm = "winograd"
    assert _op(layer(x)) == "WinogradConv2d"
    assert "algorithm" not in repr(ma.nn.Conv2d(16, 16, 3))
    with pytest.raises(ValueError, match="Conv2d: algorithm"):
        ma.nn.Conv2d(16, 16, 3, algorithm="direct")


@pytest.mark.parametrize("kwargs,match", [
    (dict(groups=3), r"groups expected a divisor of the 4 input channels, got 3"),
    (dict(groups=4), r"groups expected a divisor of the 6 filters \(weight.shape\[0\]\), got 4"),
    (dict(stride=0), r"stride expected integers >= 1, got 0"),
    (dict(padding=-1), r"padding expected integers >= 0, got -1"),
    (dict(algorithm="fft"), r"algorithm expected 'auto' or 'im2col' or 'winograd', got 'fft'"),
    (dict(algorithm="winograd", stride=2), r"stride expected 1 with algorithm='winograd' .*got 2$"),
])
def test_nn_conv2d_refuses_when_built_what_f_conv2d_refuses_when_run(kwargs, match):
    """One home for the settings' checks (ops/convolution.py check_settings): the same words,
    each naming its op."""
    x, w = ma.Tensor(np.zeros((1, 4, 8, 8), np.float32)), ma.Tensor(np.zeros((6, 4, 3, 3), np.float32))
    with pytest.raises(ValueError, match="^Conv2d: " + match):
        ma.nn.Conv2d(4, 6, 3, **kwargs)
    with pytest.raises(ValueError, match="^conv2d: " + match):
        F.conv2d(x, w, **kwargs)


def kept_arrays(y):
    """The arrays y's op keeps for its backward (NumPy's or CuPy's)."""
    return [a for a in y._ctx.cache if hasattr(a, "nbytes") and hasattr(a, "shape")]


@pytest.mark.parametrize("path", ["reference", "fast"])
@pytest.mark.parametrize("algorithm", ["im2col", "winograd"])
def test_a_convolution_keeps_no_column_matrix(path, algorithm):
    """What the backward keeps: x and w (the columns, KH*KW times x, are built again)."""
    x = ma.Tensor(rng(11).standard_normal((4, 16, 15, 15)).astype(np.float32), requires_grad=True)
    w = ma.Tensor(rng(12).standard_normal((32, 16, 5, 5)).astype(np.float32), requires_grad=True)
    with ma.cpu_path(path):
        y = F.conv2d(x, w, padding=2, algorithm=algorithm)
        kept = kept_arrays(y)
        assert sum(a.nbytes for a in kept) <= x.data.nbytes + w.data.nbytes
        assert any(a is x.data for a in kept)
        y.backward(np.ones(y.shape, np.float32))
    assert x.grad.shape == x.shape and w.grad.shape == w.shape


@pytest.mark.parametrize("path", ["reference", "fast"])
@pytest.mark.parametrize("algorithm", ["winograd", "auto"])
def test_an_empty_batch_gives_empty_and_zero_gradients(path, algorithm):
    """N = 0 (auto takes Winograd here: 128 channels): y and dx empty, dw and db zero, as im2col."""
    x = ma.Tensor(np.zeros((0, 128, 6, 6), np.float32), requires_grad=True)
    w = ma.Tensor(rng(13).standard_normal((128, 128, 3, 3)).astype(np.float32), requires_grad=True)
    b = ma.Tensor(np.ones(128, np.float32), requires_grad=True)
    with ma.cpu_path(path):
        y = F.conv2d(x, w, b, padding=1, algorithm=algorithm)
        assert _op(y) == "WinogradConv2d" and y.shape == (0, 128, 6, 6)
        y.sum().backward()
    assert x.grad.shape == (0, 128, 6, 6)
    assert w.grad.shape == w.shape and not w.grad.any() and not b.grad.any()


def test_winograd_kernel_limits_name_the_tile_that_fits():
    x = ma.Tensor(np.zeros((1, 1, 12, 12), np.float32))
    with pytest.raises(ValueError, match=r"conv2d: weight .*tile=1 takes 8.*got kernel 8x8"):
        F.conv2d(x, ma.Tensor(np.zeros((1, 1, 8, 8), np.float32)), algorithm="winograd")
    w8 = ma.Tensor(rng(14).standard_normal((1, 1, 8, 8)))
    x64 = ma.Tensor(rng(15).standard_normal((1, 1, 12, 12)))
    np.testing.assert_allclose(F.conv2d(x64, w8, algorithm="winograd", tile=1).data,
                               F.conv2d(x64, w8, algorithm="im2col").data, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match=r"conv2d: weight expected a kernel of at most 8 taps"):
        F.conv2d(x, ma.Tensor(np.zeros((1, 1, 9, 9), np.float32)), algorithm="winograd", tile=1)
    with pytest.raises(ValueError, match=r"conv2d: tile .*got 7$"):
        F.conv2d(x, ma.Tensor(np.zeros((1, 1, 3, 3), np.float32)), algorithm="winograd", tile=7)
    np.testing.assert_allclose(F.conv2d(x64, ma.Tensor(np.ones((1, 1, 3, 3))), algorithm="winograd",
                                        tile=np.array([2, 4])).data,
                               F.conv2d(x64, ma.Tensor(np.ones((1, 1, 3, 3)))).data, rtol=1e-10, atol=1e-10)


def test_conv_errors_name_the_argument_and_strided_winograd_layers_are_refused_when_built():
    x = ma.Tensor(np.zeros((1, 2, 8, 8), np.float64))
    w = ma.Tensor(np.zeros((2, 2, 3, 3), np.float32))
    for algorithm in ["im2col", "winograd"]:
        with pytest.raises(TypeError, match=r"input 1 \(weight\) expected dtype float64 .*got float32"):
            F.conv2d(x, w, algorithm=algorithm)
    with pytest.raises(ValueError, match=r"Conv2d: stride expected 1 with algorithm='winograd'.*got 2"):
        ma.nn.Conv2d(2, 2, 3, stride=2, algorithm="winograd")
    assert ma.nn.Conv2d(2, 2, 3, stride=(1, 1), algorithm="winograd").algorithm == "winograd"
