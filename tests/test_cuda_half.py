"""float16 on the CUDA path (mixed precision): each op's _half kernels on "cuda-emu" (and, marker
`gpu`, on a GPU) against the CPU float16 reference, the spec (minialex/ops/precision.py), forward
and every gradient; and alexnet-mini trained in fp16 on the emulator against the same run in fp32
and in fp16 on the CPU reference.

Bit for bit on the emulator where it does the reference's roundings: ReLU, dropout, max-pool
(selects, one half product, half sums in the reference's order), and conv2d / linear with the
default gemm ("blas": the emulator's products are NumPy's float32 products of the same values, the
bias added in float and the result rounded once). Within one unit in the last place (ulp) where
the float32 intermediates are computed another way: LRN (NumPy's float32 power is its own SIMD
code, the kernel's powf the C library's: they differ in the last float bit, which moves a half
rounding only where the float lies that close to a rounding boundary), the tiled and wmma gemms
(their float32 sums run in another order), the bias gradient (a product with ones against NumPy's
sum) and Winograd (its float32 error, up to a few millionths of the largest output, can move
outputs near zero by more than one ulp: allowed as `slack`). On a GPU everything is held to the
second kind of check (FMA contraction, CUDA's powf, cuBLAS's order)."""
import time

import numpy as np
import pytest

import minialex as ma
from minialex import cuda
from minialex import functional as F
from minialex.cuda_ops import relu as relu_pair
from minialex.data import DataLoader, ImageFolder, Transform, make_synthetic
from minialex.ops import pool as pool_spec
from minialex.ops.dropout import dropout_keep_mask
from minialex.training import LossScaler, Trainer

from .test_cuda import CONV_CASES, DEVICES

HALF = np.float16
GEMMS = ["blas", "tiled", "wmma"]


def halves(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(HALF)


def with_specials(x, rng):
    """x (float16) with NaN, +-inf, +-0, the largest half and the smallest subnormal at random places."""
    x = x.copy()
    flat = x.reshape(-1)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 65504, -65504, 6e-8, -6e-8], HALF)
    flat[rng.choice(flat.size, min(flat.size, 3 * specials.size), replace=False)] = np.resize(specials, min(
        flat.size, 3 * specials.size))
    return x


def run_both(device, fn, arrays, seed=0):
    """fn(*tensors) on the CPU reference and on `device`, float16 inputs, the same float16 dy:
    ((y, grads) on the CPU, (y, grads) on device) as NumPy arrays."""
    results, dy = [], None
    for dev in ("cpu", device):   # (non-finite inputs are on purpose: NumPy's warnings about them are not)
        with ma.cpu_path("reference"), np.errstate(over="ignore", invalid="ignore"):
            ts = [ma.Tensor(a, requires_grad=True, device=dev) for a in arrays]
            y = fn(*ts)
            if dy is None:
                dy = halves(np.random.default_rng(seed), *y.shape)
            y.backward(ma.Tensor(dy, device=dev))
            results.append((y.numpy(), [ma.Tensor(t.grad, device=dev).numpy() for t in ts]))
    return results


def ulps(got, want):
    """|got - want| in units of the half spacing at want; 0 where both are the same inf or both NaN."""
    g, w = got.astype(np.float64), want.astype(np.float64)
    same = (g == w) | (np.isnan(g) & np.isnan(w))
    with np.errstate(invalid="ignore"):
        return np.where(same, 0.0, np.abs(g - w) / np.spacing(np.abs(want.astype(HALF))).astype(np.float64))


def same(got, want, what):
    """Bit for bit (up to the sign of a zero): equal values, NaN exactly where the reference has it."""
    assert got.dtype == want.dtype == HALF, f"{what}: dtypes {got.dtype}, {want.dtype}"
    ok = (got == want) | (np.isnan(got) & np.isnan(want))
    assert ok.all(), f"{what}: {(~ok).sum()} of {ok.size} differ, e.g. {got[~ok][:4]} for {want[~ok][:4]}"


def near(got, want, what, ulp=1.0, slack=0.0, exact_share=0.98):
    """Within `ulp` ulps plus `slack` * max|want| (float32 computed another way), and at least
    `exact_share` of the elements bit for bit: a float16 sum, or a second rounding, misses both."""
    assert got.dtype == want.dtype == HALF, f"{what}: dtypes {got.dtype}, {want.dtype}"
    finite, inf = np.isfinite(want), np.isinf(want)
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: NaN elsewhere"
    assert np.array_equal(got[inf], want[inf]), f"{what}: inf elsewhere"
    err = ulps(got, want)
    top = float(np.abs(want[finite].astype(np.float64)).max()) if finite.any() else 0.0
    with np.errstate(invalid="ignore"):
        allowed = ulp + slack * top / np.spacing(np.abs(want.astype(HALF))).astype(np.float64)
    bad = (err > 0) & ~(err <= allowed)
    assert not bad.any(), f"{what}: {err[bad][:4]} ulps, allowed {allowed[bad][:4]}"
    share = float((err == 0).mean()) if err.size else 1.0
    assert share >= exact_share, f"{what}: only {share:.3f} of the elements bit for bit"


def compare(device, results, what, exact=True, **near_options):
    """All outputs of run_both: `same` on the emulator where `exact`, else `near`."""
    (y0, g0), (y1, g1) = results
    for name, got, want in [("y", y1, y0), *((f"d(input {i})", a, b) for i, (a, b) in enumerate(zip(g1, g0)))]:
        if exact and device == "cuda-emu":
            same(got, want, f"{what} {name}")
        else:
            near(got, want, f"{what} {name}", **near_options)


# ----- element-wise and pooling: selects and single roundings, bit for bit -----

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1,), (3,), (513,), (3, 5, 7), (2, 4, 8, 8)])
def test_relu_half(device, shape):
    rng = np.random.default_rng(1)
    x = with_specials(halves(rng, *shape), rng)
    results = run_both(device, F.relu, [x])
    compare(device, results, f"relu {shape}")
    (y, (dx,)), dy = results[1], halves(np.random.default_rng(0), *shape)
    assert y.dtype == HALF and np.isnan(y[np.isnan(x)]).all() and (y[x == -np.inf] == 0).all()
    np.testing.assert_array_equal(dx[np.isnan(x)], dy[np.isnan(x)])             # NaN passes its gradient


@pytest.mark.parametrize("n", [1, 2, 7, 256, 513])
def test_relu_half_pairs_stop_at_the_last_element(n):
    """Each thread takes two halves as one __half2, the last odd one alone: nothing past n is written."""
    rng = np.random.default_rng(n)
    x, dy = halves(rng, n), halves(rng, n)
    for name, args, want in (("relu_forward_half", (x,), np.where(x <= 0, HALF(0), x)),
                             ("relu_backward_half", (dy, x), np.where(x <= 0, HALF(0), dy))):
        out = np.full(n + 1, 7.0, HALF)
        cuda.launch("relu", name, *cuda.blocks((n + 1) // 2), out[:n], *args, np.int32(n))
        np.testing.assert_array_equal(out[:n], want)
        assert out[n] == 7.0, f"{name} wrote past element {n - 1}"


def test_relu_half_copies_a_view_that_starts_between_pairs():
    """A GPU loads a __half2 only from a 4-byte aligned address: x[1:] is copied first."""
    base = halves(np.random.default_rng(3), 1001)
    view = base[1:]
    assert relu_pair.paired(base) is base and relu_pair.paired(view) is not view
    y, _ = relu_pair.relu_forward(view)
    np.testing.assert_array_equal(y, np.maximum(view, HALF(0)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", [0.5, 0.3, 0.1])
def test_dropout_half(device, p):
    """x * float16(1 / (1 - p)), one rounding, as the reference; dropped units exactly 0, even inf."""
    rng = np.random.default_rng(4)
    x = with_specials(halves(rng, 3, 7, 31), rng)
    results = run_both(device, lambda t: F.dropout(t, p, seed=11), [x])
    compare(device, results, f"dropout p={p}")
    y = results[1][0]
    kept = dropout_keep_mask(11, x.shape, p)
    assert (y[~kept] == 0).all() and not np.isnan(y[~kept]).any()
    if p == 0.3:  # 1/0.7 is not a half: scaling in float and rounding once gives other halves
        with np.errstate(over="ignore"):
            in_float = (x.astype(np.float32) * np.float32(1 / (1 - p))).astype(HALF)
        assert not np.array_equal(np.where(kept, in_float, 0)[np.isfinite(x)], results[0][0][np.isfinite(x)])


POOLS = [(3, 2, 0), (3, 2, 1), (2, 2, 0), (3, 1, 1)]   # kernel, stride, padding


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel, stride, padding", POOLS)
def test_max_pool_half(device, kernel, stride, padding):
    """Ties (small integers), NaN and -inf windows; overlapping windows add their gradients in half,
    in the reference's order."""
    rng = np.random.default_rng(5)
    x = rng.integers(-3, 4, (2, 3, 11, 13)).astype(HALF)
    x[0, 0, 2, 3], x[1, 2, 5, 5] = np.nan, np.nan
    x[0, 1, :3, :3] = -np.inf                                                  # padding never wins over -inf
    results = run_both(device, lambda t: F.max_pool2d(t, kernel, stride, padding), [x])
    compare(device, results, f"max_pool {kernel}/{stride} pad {padding}")
    assert (results[1][0][0, 1, 0, 0] == -np.inf) and np.isnan(results[1][0]).any()
    if stride == 1:  # a pixel wins up to 9 windows: summing in float and rounding once would differ
        y, cache = pool_spec.max_pool2d_forward(x, (kernel,) * 2, (stride,) * 2, (padding,) * 2)
        dy = halves(np.random.default_rng(0), *y.shape)
        in_float = pool_spec.max_pool2d_backward(dy.astype(np.float32), cache)[0].astype(HALF)
        assert not np.array_equal(in_float, results[0][1][0])


# ----- LRN: float inside, rounded once -----

LRNS = [((2, 7, 5, 6), 5, 0.5, 0.75, 2.0, 1.0),        # shape, size, alpha, beta, k, scale of x
        ((2, 7, 5, 6), 5, 1e-4, 0.75, 2.0, 700.0),     # x^2 far above float16's 65504
        ((2, 3, 4, 5), 4, 0.3, 0.6, 1.0, 3.0)]         # C < size


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", LRNS)
def test_lrn_half(device, case):
    shape, size, alpha, beta, k, scale = case
    x = halves(np.random.default_rng(6), *shape, scale=scale)
    results = run_both(device, lambda t: F.local_response_norm(t, size, alpha, beta, k), [x])
    compare(device, results, f"lrn {case}", exact=False, slack=1e-6)
    (y, (dx,)) = results[1]
    assert np.isfinite(y).all() and np.isfinite(dx).all()                    # no half square overflowed


# ----- conv2d and linear: float32 sums, one rounding -----

@pytest.fixture(params=GEMMS)
def gemm(request):
    previous = cuda.get_gemm()
    cuda.set_gemm(request.param)
    yield request.param
    cuda.set_gemm(previous)


def _gemm_options(gemm):
    """blas on the emulator: the reference's own float32 products, so bit for bit."""
    return dict(exact=gemm == "blas", slack=2e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n, k, m, bias", [(5, 37, 11, True), (5, 37, 11, False), (33, 600, 70, True)])
def test_linear_half(device, gemm, n, k, m, bias):
    rng = np.random.default_rng(7)
    arrays = [halves(rng, n, k), halves(rng, m, k, scale=0.3)] + ([halves(rng, m)] if bias else [])
    results = run_both(device, lambda *t: F.linear(*t), arrays)
    compare(device, results, f"linear {n}x{k}->{m}", **_gemm_options(gemm))
    if bias:  # rounding the product before adding b (twice) gives other halves: the test can tell
        x32, w32 = (a.astype(np.float32) for a in arrays[:2])
        twice = (x32 @ w32.T).astype(HALF) + arrays[2]
        assert not np.array_equal(twice, results[0][0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_half(device, gemm, case):
    n, c, h, w, o, k, s, p, g = case
    rng = np.random.default_rng(8)
    arrays = [halves(rng, n, c, h, w), halves(rng, o, c // g, k, k, scale=0.3), halves(rng, o)]
    results = run_both(device, lambda x, wt, b: F.conv2d(x, wt, b, s, p, g, algorithm="im2col"), arrays)
    compare(device, results, f"conv2d {case}", **_gemm_options(gemm))


@pytest.mark.parametrize("device", DEVICES)
def test_conv2d_half_without_bias_and_non_finite(device):
    """inf and NaN in x land where the reference puts them; a float32 sum past 65504 is inf."""
    rng = np.random.default_rng(9)
    x, wt = halves(rng, 2, 3, 9, 9), halves(rng, 4, 3, 3, 3)
    x[0, 0, 4, 4], x[1, 2, 0, 0], x[1, 1, 6, 6] = np.inf, np.nan, 60000.0
    results = run_both(device, lambda a, b: F.conv2d(a, b, padding=1, algorithm="im2col"), [x, wt])
    compare(device, results, "conv2d no bias, non-finite", slack=2e-6)
    y = results[1][0]
    assert np.isnan(y).any() and np.isinf(y).any() and np.isfinite(y).mean() > 0.5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tile", [(2, 2), (4, 4)])
def test_winograd_half(device, tile):
    """In float32 throughout, as the reference; its float32 error (a few millionths of the largest
    output) moves the halves of outputs near 0: slack. An inf takes im2col's values (the fix-ups)."""
    rng = np.random.default_rng(10)
    x, wt, b = halves(rng, 2, 8, 10, 9), halves(rng, 5, 8, 3, 3, scale=0.3), halves(rng, 5)
    fn = lambda a, w_, b_: F.conv2d(a, w_, b_, padding=1, algorithm="winograd", tile=tile)   # noqa: E731
    compare(device, run_both(device, fn, [x, wt, b]), f"winograd {tile}", exact=False, slack=1e-5, exact_share=0.9)
    x[1, 3, 4, 4] = np.inf
    results = run_both(device, fn, [x, wt, b])
    compare(device, results, f"winograd {tile}, an inf", exact=False, slack=1e-5, exact_share=0.9)
    assert np.isfinite(results[1][0][0]).all() and np.isfinite(results[1][0][1, :, :2]).all()  # the inf stays local


# ----- the end-to-end run -----

def _fine_tune_start(pretrained, device):
    """alexnet-mini with conv1 - conv5 from the shipped weights and fc6 - fc8 drawn fresh (seed 0)."""
    ma.manual_seed(0)
    model = ma.models.AlexNet.mini(num_classes=10)
    fresh = model.state_dict()
    model.load_state_dict({k: fresh[k] if k.startswith(("fc6", "fc7", "fc8")) else v
                           for k, v in pretrained.state_dict().items()})
    return model.to(device)


def test_alexnet_mini_trains_in_fp16_on_the_emulator_as_in_fp32_and_on_the_cpu(tmp_path):
    """Every kernel of a train step, in float16, for 15 steps of 32 rendered images: alexnet-mini
    from the shipped conv1 - conv5 with fresh fully connected layers (chance: 10%), every layer
    trained (from scratch it takes ~80 steps to pass 90% even on two classes: minutes on the
    emulator). fp16 on cuda-emu reaches fp32's validation accuracy within 0.5 points and tracks
    the fp16 run on the CPU reference (the same roundings but for LRN's power, the bias gradient's
    sum order, and the float32 cross-entropy and SGD kernels)."""
    root = make_synthetic(tmp_path / "data", train_per_class=48, val_per_class=20, quiet=True)
    pretrained, info = ma.models.pretrained_mini()
    stats = {"mean": info["mean"], "std": info["std"], "eigvals": np.zeros(3, np.float32),
             "eigvecs": np.eye(3, dtype=np.float32)}
    train, val = ImageFolder(root / "train"), ImageFolder(root / "val")
    runs = {}
    for name, precision, device, path in (("fp32", "fp32", "cpu", "fast"),
                                          ("fp16 cuda-emu", "fp16", "cuda-emu", "reference"),
                                          ("fp16 cpu", "fp16", "cpu", "reference")):
        model = _fine_tune_start(pretrained, device)
        opt = ma.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        loaders = (DataLoader(train, Transform(64, stats, "train"), 32, shuffle=True, drop_last=True, workers=0),
                   DataLoader(val, Transform(64, stats, "val"), 100, workers=0))
        start = time.perf_counter()
        with ma.cpu_path(path):   # a scale that never overflows here: no step skipped, the same run
            history = Trainer(model, opt, *loaders, epochs=1, precision=precision,
                              scaler=LossScaler(2.0 ** 10) if precision == "fp16" else None).fit()
        runs[name] = dict(history[-1], seconds=round(time.perf_counter() - start, 1))
        assert model.fc8.weight.dtype == np.float32                            # float32 master weights
    print({name: {k: r[k] for k in ("train_loss", "val_loss", "val_top1", "seconds")} for name, r in runs.items()})
    fp32, emu, cpu = runs["fp32"], runs["fp16 cuda-emu"], runs["fp16 cpu"]
    assert emu["val_top1"] > 0.6 and fp32["val_top1"] > 0.6                   # far from chance (0.1)
    assert abs(emu["val_top1"] - fp32["val_top1"]) <= 0.005
    assert emu["skipped_steps"] == cpu["skipped_steps"] == 0
    for key in ("train_loss", "val_loss"):
        assert abs(emu[key] - cpu[key]) <= 2e-3 * cpu[key], key              # the same fp16 run, closely
        assert abs(emu[key] - fp32[key]) <= 2e-2 * fp32[key], key



def _alexnet_fp16_gradients(device):
    """alexnet-mini's loss under autocast and its float32 master gradients (scaled, then unscaled)."""
    ma.manual_seed(0)
    model = ma.models.AlexNet.mini(num_classes=10).to(device)
    r = np.random.default_rng(7)
    x, y = r.standard_normal((3, 3, 64, 64)).astype(np.float32), r.integers(0, 10, 3)
    ma.manual_seed(100)                              # the same dropout seeds on both devices
    scaler = LossScaler(2.0 ** 10)
    with ma.cpu_path("reference"):
        with ma.autocast():
            logits = model(ma.Tensor(x, device=device))
        loss = F.cross_entropy(logits, y)
        (loss * scaler.scale).backward()
    assert logits.dtype == HALF and scaler.unscale(model.parameters())
    return loss.item(), {name: ma.Tensor(p.grad, device=device).numpy() for name, p in model.named_parameters()}


@pytest.mark.parametrize("device", DEVICES)
def test_alexnet_mini_fp16_gradients_equal_the_cpu_reference(device, monkeypatch):
    """Every half kernel of a train step, with each array access checked (the bounds-checked build),
    against the CPU reference. Not bit for bit: one LRN output a ulp off (NumPy's float32 power)
    moves the layers after it by an ulp here and there, so the gradients agree to float16's
    precision (a few ulps, relative to each parameter's largest gradient)."""
    monkeypatch.setenv("MINIALEX_EMU_DEBUG", "1")
    (want, cpu), (got, dev) = _alexnet_fp16_gradients("cpu"), _alexnet_fp16_gradients(device)
    assert abs(got - want) <= 1e-5 * want
    for name, a in cpu.items():
        assert dev[name].dtype == np.float32, name                            # the master gradients
        np.testing.assert_allclose(dev[name], a, rtol=0, atol=2e-3 * np.abs(a).max(), err_msg=name)
