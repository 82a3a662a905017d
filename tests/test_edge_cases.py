"""Edge cases and non-finite numbers, the same on every device and CPU path: NaN propagates as in
PyTorch, an infinity never becomes NaN through a 0/1 mask, empty tensors work, mixed dtypes are
refused; SGD, shared parameters, gradcheck, Tensor.to and the emulator's GPU limits."""
import numpy as np
import pytest

import minialex as ma
from minialex import cuda
from minialex import functional as F

from .test_cuda import _gpu_available

nan, inf = np.nan, np.inf
DEVICES = ["cpu-reference", "cpu-fast", "cuda-emu",
           pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not _gpu_available(), reason="no CUDA GPU")])]


@pytest.fixture(params=DEVICES)
def device(request):
    """The device name; "cpu-reference" and "cpu-fast" are "cpu" on that CPU path."""
    name = request.param
    with ma.cpu_path(name[4:] if name.startswith("cpu-") else "fast"):
        yield "cpu" if name.startswith("cpu-") else name


def run(device, fn, x, dy):
    """(y, dx) of fn at x (float32) for the output gradient dy, as NumPy arrays."""
    t = ma.Tensor(np.asarray(x, np.float32), requires_grad=True, device=device)
    y = fn(t)
    y.backward(ma.Tensor(np.broadcast_to(np.float32(dy), y.shape).copy(), device=device))
    return y.numpy(), ma.Tensor(t.grad, device=device).numpy()


def test_relu_of_non_finite_numbers_as_pytorch(device):
    x = [nan, -inf, inf, -1.0, 2.0, 0.0, -0.5]
    y, dx = run(device, F.relu, x, inf)             # an infinite upstream gradient everywhere
    np.testing.assert_array_equal(y, [nan, 0.0, inf, 0.0, 2.0, 0.0, 0.0])
    assert not np.signbit(y[1:]).any()              # relu(-1) is 0.0, not -0.0
    np.testing.assert_array_equal(dx, [inf, 0.0, inf, 0.0, inf, 0.0, 0.0])  # NaN passes dy; no inf*0


def test_max_pool_with_nan_and_infinite_gradients(device):
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = nan             # two NaNs in the first 2x2 window
    y, dx = run(device, lambda t: F.max_pool2d(t, 2, 2), x, inf)
    np.testing.assert_array_equal(y[0, 0], [[nan, 7.0], [13.0, 15.0]])
    expected = np.zeros((4, 4), np.float32)
    expected[1, 0] = expected[1, 3] = expected[3, 1] = expected[3, 3] = inf   # the last NaN wins its window
    np.testing.assert_array_equal(dx[0, 0], expected)   # 0 elsewhere, not inf * 0 = NaN


def test_max_pool_window_of_minus_infinity_sends_its_gradient_into_the_image(device):
    x = np.full((1, 1, 3, 3), -inf, np.float32)
    y, dx = run(device, lambda t: F.max_pool2d(t, 3, 2, padding=1), x, 1.0)
    np.testing.assert_array_equal(y, -inf)
    np.testing.assert_array_equal(dx[0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])  # each window's first real pixel


def test_dropout_masks_out_infinity_as_zero(device):
    drop = lambda t: F.dropout(t, 0.5, seed=3)  # noqa: E731
    keep = run(device, drop, np.ones((4, 257)), 1.0)[0] != 0
    assert 0.3 < keep.mean() < 0.7
    x = np.full((4, 257), inf, np.float32)
    x[1] = nan
    y, dx = run(device, drop, x, inf)
    np.testing.assert_array_equal(y[~keep], 0.0)             # dropped: 0, not inf * 0 = NaN
    assert np.isinf(y[0][keep[0]]).all() and np.isnan(y[1][keep[1]]).all()   # a kept NaN stays NaN
    np.testing.assert_array_equal(dx, np.where(keep, inf, 0.0))


def test_a_nan_weight_reaches_the_loss(device):
    """The training loop's NaN guard reads the loss: a NaN anywhere in the network must get there."""
    ma.manual_seed(0)
    model = ma.models.AlexNet.mini(num_classes=10).to(device)
    model.conv1.weight.data[0, 0, 0, 0] = nan
    x = ma.Tensor(np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32), device=device)
    assert np.isnan(F.cross_entropy(model(x), np.array([1, 2])).item())


# ----- empty tensors -----

def test_empty_batches_work_on_every_device(device):
    def t(*shape):
        return ma.Tensor(np.zeros(shape, np.float32), requires_grad=True, device=device)
    x = t(0, 4, 9, 9)
    outs = {"conv2d": F.conv2d(x, t(6, 2, 3, 3), t(6), 2, 1, 2), "relu": F.relu(x),
            "lrn": F.local_response_norm(x), "max_pool2d": F.max_pool2d(x), "dropout": F.dropout(x, 0.5),
            "linear": F.linear(t(0, 5), t(2, 5), t(2)), "relu of (0,)": F.relu(t(0))}
    shapes = {"conv2d": (0, 6, 5, 5), "relu": (0, 4, 9, 9), "lrn": (0, 4, 9, 9), "max_pool2d": (0, 4, 4, 4),
              "dropout": (0, 4, 9, 9), "linear": (0, 2), "relu of (0,)": (0,)}
    for name, y in outs.items():
        assert y.shape == shapes[name], name
        y.sum().backward()
    loss = F.cross_entropy(t(0, 7), np.zeros(0, np.int64))
    assert np.isnan(loss.item())                            # the mean of nothing, as PyTorch gives
    loss.backward()


def test_mean_over_an_empty_axis_is_nan():
    x = ma.Tensor(np.zeros((0, 3)), requires_grad=True)
    m = x.mean(axis=0)
    assert m.shape == (3,) and np.isnan(m.data).all()
    m.sum().backward()
    assert x.grad.shape == (0, 3)
    assert np.isnan(x.mean().item())


# ----- SGD and parameters -----

@pytest.mark.parametrize("how", ["transposed import", "non-contiguous .data"])
def test_sgd_updates_a_parameter_whose_array_was_not_contiguous(device, how):
    w0 = np.arange(12, dtype=np.float32).reshape(4, 3)
    if how == "transposed import":
        p = ma.nn.Parameter(w0.T, device=device)              # (3, 4), a transposed view as given
    else:
        p = ma.nn.Parameter(np.zeros((3, 4), np.float32), device=device)
        p.data = ma.backend.xp_for(device).asarray(w0).T      # a non-contiguous view put in place
    p.grad = ma.Tensor(np.ones((3, 4), np.float32), device=device).data
    ma.optim.SGD([p], lr=0.5).step()
    np.testing.assert_array_equal(p.numpy(), w0.T - 0.5)


def test_a_shared_parameter_is_listed_and_stepped_once():
    shared = ma.nn.Linear(3, 3)
    model = ma.nn.Sequential(shared, ma.nn.ReLU(), shared)
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    assert list(model.state_dict()) == ["0.weight", "0.bias"]
    other = ma.nn.Module()
    other.a, other.b = ma.nn.Linear(2, 2), ma.nn.Linear(2, 2)
    other.b.weight = other.a.weight                           # one Parameter in two modules
    assert len(other.parameters()) == 3
    w0 = shared.weight.data.copy()
    x = ma.Tensor(np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32))
    model(x).sum().backward()
    grad = shared.weight.grad.copy()                          # both uses, accumulated
    ma.optim.SGD(model.parameters() + [shared.weight], lr=0.1).step()
    np.testing.assert_allclose(shared.weight.data, w0 - 0.1 * grad, rtol=1e-6)


# ----- the basic ops: powers, dtypes -----

def test_power_zero_has_gradient_zero_at_zero():
    x = ma.Tensor(np.array([0.0, 2.0, -1.5]), requires_grad=True)
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 0.0])
    x.grad = None
    (x ** 1).sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 1.0, 1.0])


def test_numpy_scalars_and_mixed_dtypes_never_make_float64():
    x = ma.Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    for y in (x ** np.float64(2), x ** np.int64(3), x * np.float64(2.0), x + np.array([1.0, 2.0])):
        assert y.dtype == np.float32
        y.sum().backward()
    assert x.grad.dtype == np.float32
    with pytest.raises(TypeError, match=r"Mul: input 1 \(b\) expected dtype int64 like the other inputs, got float32"):
        ma.Tensor(np.array([1, 2])) * x
    with pytest.raises(TypeError, match=r"Add: input 1 \(b\) expected dtype float32 like the other inputs, got float64"):
        x + ma.Tensor(np.zeros(2))
    with pytest.raises(TypeError, match="pow: exponent expected a constant real number"):
        x ** x


# ----- gradcheck -----

def test_gradcheck_with_an_input_that_does_not_reach_the_output():
    a = ma.Tensor(np.ones(3), requires_grad=True)
    b = ma.Tensor(np.ones(2), requires_grad=True)
    assert ma.gradcheck(lambda a, b: a * 2.0, [a, b])          # db = 0, numerically and analytically
    assert ma.gradcheck(lambda a: ma.Tensor(np.ones(2)) * 3.0, [a])   # nothing reaches the output
    empty = ma.Tensor(np.zeros((0, 4)), requires_grad=True)
    assert ma.gradcheck(lambda e, a: e.sum() + a.sum(), [empty, a])
    with pytest.raises(ma.GradcheckError, match="input 1 element"):  # an unused input still checked:
        ma.gradcheck(lambda a, b: a * 2.0 + (b * 0.0).sum() * 0.0 + _wrong_square(b).sum(), [a, b])


def _wrong_square(x):
    class WrongSquare(ma.function.Function):
        reference = (lambda x: (x * x, x), lambda dy, x: (dy * x,))   # d(x^2)/dx is 2x, not x
    return WrongSquare.apply(x)


def test_gradcheck_tour_reports_a_failure(monkeypatch, capsys):
    """The tour prints FAIL for an op whose gradient is wrong (it used to raise instead) and exits 1."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "examples" / "gradcheck_tour.py"
    spec = importlib.util.spec_from_file_location("gradcheck_tour", path)
    tour = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tour)
    assert tour.main() == 0 and "FAIL" not in capsys.readouterr().out
    monkeypatch.setattr(tour.F, "relu", _wrong_square)
    assert tour.main() == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("relu")]
    assert len(lines) == 1 and "FAIL" in lines[0]


# ----- Tensor.to -----

@pytest.mark.parametrize("route", [("cpu", "cuda-emu"), ("cuda-emu", "cpu")])
def test_to_another_device_copies(route):
    a = ma.Tensor(np.zeros(3, np.float32), device=route[0])
    b = a.to(route[1])
    b.data[0] = 5.0
    assert a.data[0] == 0.0 and b.device == route[1]
    assert a.to(route[0]) is a                               # already there: itself, as in PyTorch


# ----- the emulator refuses what a GPU refuses -----

MATH_KERNEL = r'''
extern "C" __global__ void mine_math(float* __restrict__ out, const float* __restrict__ a,
                                     const float* __restrict__ b, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = a[i], y = b[i];
    float* o = out + 11 * i;
    o[0] = min(x, y);  o[1] = max(x, y);  o[2] = fminf(x, y);  o[3] = fmaxf(x, y);
    o[4] = expf(x);    o[5] = logf(fabsf(y));  o[6] = sqrtf(fabsf(x));  o[7] = rsqrtf(fabsf(y));
    o[8] = powf(fabsf(x), y);  o[9] = __expf(y);  o[10] = (float)min(7, (int)i);
}

extern "C" __global__ void mine_big_shared(float* __restrict__ out, int n)
{
    __shared__ float big[12289];              /* 49156 bytes: 4 more than a GPU allows */
    big[threadIdx.x] = 1.0f;
    __syncthreads();
    out[threadIdx.x] = big[threadIdx.x];
}
'''


def test_a_user_kernel_gets_cudas_float_min_max_and_math(tmp_path):
    path = tmp_path / "mine.cu"
    path.write_text(MATH_KERNEL)
    r = np.random.default_rng(30)
    a, b = (r.uniform(-2, 2, 37).astype(np.float32) for _ in range(2))
    out = np.zeros((37, 11), np.float32)
    cuda.launch(str(path), "mine_math", (1,), (64,), out, a, b, np.int32(37))
    x, y = a.astype(np.float64), b.astype(np.float64)
    expected = np.stack([np.minimum(x, y), np.maximum(x, y), np.minimum(x, y), np.maximum(x, y), np.exp(x),
                         np.log(np.abs(y)), np.sqrt(np.abs(x)), 1 / np.sqrt(np.abs(y)), np.abs(x) ** y, np.exp(y),
                         np.minimum(7, np.arange(37))], axis=1)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert (out[:, 0] != np.trunc(out[:, 0])).any()           # min(float, float) does not truncate to int


def test_the_emulator_refuses_launches_a_gpu_refuses(tmp_path):
    path = tmp_path / "mine.cu"
    path.write_text(MATH_KERNEL)
    out, a = np.zeros((4096, 11), np.float32), np.ones(4096, np.float32)
    args = (out, a, a, np.int32(1))
    for grid, block, what in [((1,), (2048,), "block x expected 1 .. 1024"), ((1,), (32, 64), "at most 1024 threads"),
                              ((1, 65536), (32,), "grid y expected 1 .. 65535"), ((0,), (32,), "grid x expected 1"),
                              ((1, 1, 65536), (1,), "grid z expected 1 .. 65535"), ((1,), (1, 1, 65), "block z")]:
        with pytest.raises(cuda.LaunchError, match=what):
            cuda.launch(str(path), "mine_math", grid, block, *args)
    with pytest.raises(cuda.LaunchError, match=r"too much shared data \(49156 bytes, 49152 max\)"):
        cuda.launch(str(path), "mine_big_shared", (1,), (32,), out.ravel(), np.int32(32))


def test_tiled_gemm_checks_its_int32_sizes_and_strides_over_row_tiles(monkeypatch):
    previous = cuda.get_gemm()
    cuda.set_gemm("tiled")
    try:
        a = np.zeros(4, np.float32)
        with pytest.raises(ValueError, match=r"gemm: m expected 0 .. 2\^31 - 1"):
            cuda.gemm(a, a, a, 2**31, 1, 1, (1, 1), (1, 1))
        with pytest.raises(ValueError, match=r"gemm: a_batch expected 0 .. 2\^31 - 1"):
            cuda.gemm(a, a, a, 1, 1, 1, (1, 1), (1, 1), batch=2, a_batch=2**32)
        monkeypatch.setattr(cuda, "MAX_GRID", (2**31 - 1, 2, 65535))  # 7 row tiles on a grid 2 blocks high
        r = np.random.default_rng(31)
        m, k, n = 100, 19, 21
        x, y = r.standard_normal((m, k)).astype(np.float32), r.standard_normal((k, n)).astype(np.float32)
        c = np.full((m, n), np.nan, np.float32)
        cuda.gemm(c, x, y, m, n, k, (k, 1), (n, 1))
        np.testing.assert_allclose(c, x.astype(np.float64) @ y, rtol=1e-4, atol=1e-5)
    finally:
        cuda.set_gemm(previous)


def test_dropout_refuses_a_p_that_would_drop_everything():
    x = ma.Tensor(np.ones((64, 64), np.float32))
    with pytest.raises(ValueError, match=r"dropout: p expected a probability below 1 - 2\^-25"):
        F.dropout(x, 1 - 2**-26)
    y = F.dropout(x, 1 - 2**-20, seed=1).numpy()               # still keeps a few, scaled up
    assert (y == 0).mean() > 0.99


@pytest.mark.parametrize("device", ["cpu", "cuda-emu"])
def test_a_model_runs_on_an_empty_batch(device):
    """No rows in, (0, classes) out, through every layer (flatten included: (0, C*H*W), not (0, -1))."""
    model = ma.models.AlexNet.mini(10).to(device)
    x = ma.Tensor(np.zeros((0, 3, 64, 64), np.float32), device=device)
    assert model(x).shape == (0, 10)
    assert ma.functional.flatten(ma.Tensor(np.zeros((0, 4, 3, 3)))).shape == (0, 36)
