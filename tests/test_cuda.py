"""The CUDA path: every kernel on the CPU emulator ("cuda-emu") against the NumPy reference, the
emulator's own behaviour, and (marker `gpu`) the same parity on a real GPU."""
import numpy as np
import pytest

import minialex as ma
from minialex import cuda
from minialex import functional as F


def _gpu_available():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


DEVICES = ["cuda-emu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not _gpu_available(), reason="no CUDA GPU")])]


def assert_close(got, want, rtol=1e-5, what=""):
    """Relative to the largest magnitude of the reference: float32 kernels vs float32 NumPy."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    scale = max(np.abs(want).max(), 1e-30)
    err = np.abs(got - want).max() / scale
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol}"


def run_both(device, fn, arrays, seed=0):
    """fn(*tensors) on "cpu" (the NumPy reference) and on `device` from the same float32 arrays and
    the same random dy: returns ((y_cpu, grads_cpu), (y_dev, grads_dev))."""
    results, dy = [], None
    for dev in ("cpu", device):
        with ma.cpu_path("reference"):
            ts = [ma.Tensor(a.astype(np.float32), requires_grad=True, device=dev) for a in arrays]
            y = fn(*ts)
            if dy is None:
                dy = np.random.default_rng(seed).standard_normal(y.shape).astype(np.float32)
            y.backward(ma.Tensor(dy, device=dev))
            results.append((y.numpy(), [t.numpy() if t.grad is None else ma.Tensor(t.grad, device=dev).numpy()
                                        for t in ts]))
    return results


def check_parity(device, fn, arrays, what):
    (y0, g0), (y1, g1) = run_both(device, fn, arrays)
    assert_close(y1, y0, what=f"{what} forward")
    for i, (a, b) in enumerate(zip(g1, g0)):
        assert_close(a, b, what=f"{what} d(input {i})")


CONV_CASES = [  # N, C, H, W, O, K, stride, padding, groups: odd sizes, not multiples of 256 or 16
    (2, 3, 13, 11, 5, 3, 1, 1, 1),
    (3, 4, 17, 17, 6, 5, 2, 2, 2),
    (1, 3, 31, 29, 7, 11, 4, 0, 1),
    (2, 6, 9, 9, 4, 3, 1, 1, 2),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_parity(device, case):
    n, c, h, w, o, k, s, p, g = case
    r = np.random.default_rng(1)
    arrays = [r.standard_normal((n, c, h, w)), r.standard_normal((o, c // g, k, k)), r.standard_normal(o)]
    check_parity(device, lambda x, wt, b: F.conv2d(x, wt, b, s, p, g), arrays, f"conv2d {case}")


@pytest.mark.parametrize("device", DEVICES)
def test_relu_lrn_pool_linear_parity(device):
    r = np.random.default_rng(2)
    x = r.standard_normal((3, 7, 9, 11))
    x[np.abs(x) < 0.05] = 0.5
    check_parity(device, F.relu, [x], "relu")
    check_parity(device, lambda x: F.local_response_norm(x, 5, 0.5, 0.75, 2.0), [x], "lrn size 5")
    check_parity(device, lambda x: F.local_response_norm(x, 4, 0.3, 0.6, 1.0), [r.standard_normal((2, 3, 5, 5))],
                 "lrn size 4, C < size")
    distinct = r.permutation(3 * 7 * 13 * 11).reshape(3, 7, 13, 11) / 100.0  # no ties
    check_parity(device, lambda x: F.max_pool2d(x, 3, 2), [distinct], "pool 3/2 overlapping")
    check_parity(device, lambda x: F.max_pool2d(x, 3, 2, 1), [distinct], "pool 3/2 padded")
    check_parity(device, lambda x: F.max_pool2d(x, 2, 3), [distinct], "pool 2/3 gaps")
    check_parity(device, F.linear, [r.standard_normal((37, 29)), r.standard_normal((19, 29)), r.standard_normal(19)],
                 "linear")


@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_parity(device):
    r = np.random.default_rng(3)
    z = r.standard_normal((300, 1000)) * 4  # 1000 classes: several elements per thread
    t = r.integers(0, 1000, 300)
    check_parity(device, lambda z: F.cross_entropy(z, t), [z], "cross_entropy")


@pytest.mark.parametrize("device", DEVICES)
def test_dropout_mask_identical_to_cpu(device):
    x = np.random.default_rng(4).standard_normal((5, 3001)).astype(np.float32) + 3.0  # no zeros
    for seed in (0, 12345, 2**31 - 2):
        y_cpu = F.dropout(ma.Tensor(x), 0.5, seed=seed).numpy()
        y_dev = F.dropout(ma.Tensor(x, device=device), 0.5, seed=seed).numpy()
        np.testing.assert_array_equal(y_dev == 0, y_cpu == 0)
        assert_close(y_dev, y_cpu, what="dropout values")
    check_parity(device, lambda x: F.dropout(x, 0.3, seed=9), [x], "dropout")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(37, 53, 29), (1, 17, 1), (64, 16, 48), (5, 300, 3)])
def test_tiled_gemm_against_numpy(device, shape):
    m, k, n = shape
    r = np.random.default_rng(5)
    xp = np if device == "cuda-emu" else __import__("cupy")
    a, b = r.standard_normal((m, k)).astype(np.float32), r.standard_normal((k, n)).astype(np.float32)
    previous = cuda.get_gemm()
    cuda.set_gemm("tiled")
    try:
        c = xp.zeros((m, n), np.float32)
        cuda.gemm(c, xp.asarray(a), xp.asarray(b), m, n, k, (k, 1), (n, 1))
        assert_close(ma.Tensor(c).numpy(), a.astype(np.float64) @ b, what="A @ B")
        ct = xp.zeros((n, m), np.float32)  # (A @ B)^T = B^T A^T, read through swapped strides
        cuda.gemm(ct, xp.asarray(b), xp.asarray(a), n, m, k, (1, n), (1, k))
        assert_close(ma.Tensor(ct).numpy(), (a.astype(np.float64) @ b).T, what="B^T @ A^T")
        batch_a = r.standard_normal((3, m, k)).astype(np.float32)  # three products, B shared
        cb = xp.zeros((3, m, n), np.float32)
        cuda.gemm(cb, xp.asarray(batch_a), xp.asarray(b), m, n, k, (k, 1), (n, 1), batch=3,
                  a_batch=m * k, c_batch=m * n)
        assert_close(ma.Tensor(cb).numpy(), batch_a.astype(np.float64) @ b, what="batched")
    finally:
        cuda.set_gemm(previous)


@pytest.mark.parametrize("device", DEVICES)
def test_conv_and_linear_through_the_tiled_gemm(device):
    r = np.random.default_rng(6)
    previous = cuda.get_gemm()
    cuda.set_gemm("tiled")
    try:
        check_parity(device, lambda x, w, b: F.conv2d(x, w, b, 2, 1, 2),
                     [r.standard_normal((2, 4, 9, 7)), r.standard_normal((6, 2, 3, 3)), r.standard_normal(6)],
                     "conv2d, tiled gemm")
        check_parity(device, F.linear, [r.standard_normal((9, 21)), r.standard_normal((5, 21)), r.standard_normal(5)],
                     "linear, tiled gemm")
    finally:
        cuda.set_gemm(previous)


@pytest.mark.parametrize("device", DEVICES)
def test_alexnet_train_step_equals_cpu(device):
    ma.manual_seed(0)
    cpu_model = ma.models.AlexNet.mini(num_classes=10)
    dev_model = ma.models.AlexNet.mini(num_classes=10)
    dev_model.load_state_dict(cpu_model.state_dict())
    dev_model.to(device)
    r = np.random.default_rng(7)
    x = r.standard_normal((3, 3, 64, 64)).astype(np.float32)
    y = r.integers(0, 10, 3)
    losses = []
    for model, dev in ((cpu_model, "cpu"), (dev_model, device)):
        opt = ma.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        for step in range(2):
            ma.manual_seed(100 + step)  # the same dropout seeds on both devices
            with ma.cpu_path("reference"):
                loss = F.cross_entropy(model(ma.Tensor(x, device=dev)), y)
                model.zero_grad()
                loss.backward()
                opt.step()
        losses.append(loss.item())
    assert abs(losses[0] - losses[1]) <= 1e-5 * abs(losses[0])
    for (name, a), (_, b) in zip(cpu_model.named_parameters(), dev_model.named_parameters()):
        assert_close(b.numpy(), a.numpy(), rtol=2e-5, what=name)


# ----- the emulator itself -----

def test_emulator_shared_memory_reduction_with_barriers():
    r = np.random.default_rng(8)
    dy = r.standard_normal((7, 5, 123)).astype(np.float32)  # 7*123 = 861 elements per channel
    db = np.zeros(5, np.float32)
    cuda.launch("bias", "bias_backward", (5,), (256,), db, dy, np.int32(7), np.int32(5), np.int32(123))
    np.testing.assert_allclose(db, dy.astype(np.float64).sum(axis=(0, 2)), rtol=1e-5)


@pytest.mark.parametrize("grid_y", [1, 2, None])  # None: cuda.planes' own grid
def test_row_striding_kernels_cover_every_row_whatever_the_grid(grid_y):
    """im2col (over channels), col2im and the axis swap (over planes) loop in steps of gridDim.y (a GPU
    caps it at 65535): with 1 or 2 rows of blocks they must still fill everything, and match NumPy."""
    from minialex.ops.conv import col2im, im2col
    from minialex.ops.windows import window_geometry
    r = np.random.default_rng(9)
    x = r.standard_normal((2, 3, 9, 8)).astype(np.float32)
    geometry = window_geometry(x.shape, (3, 2), (2, 1), (1, 1))
    oh, ow = int(geometry[-2]), int(geometry[-1])
    rows, columns = 3 * 3 * 2, 2 * oh * ow

    def grid(inner, count):
        g, b = cuda.planes(inner, count)
        return ((g[0], grid_y or g[1]), b)

    cols = np.full((rows, columns), np.nan, np.float32)
    cuda.launch("conv", "conv_im2col", *grid(columns, 3), cols, x, *geometry)
    np.testing.assert_array_equal(cols, im2col(x, 3, 2, (2, 1), (1, 1)))
    dcols = r.standard_normal((rows, columns)).astype(np.float32)
    dx = np.full(x.shape, np.nan, np.float32)
    cuda.launch("conv", "conv_col2im", *grid(9 * 8, 2 * 3), dx, dcols, *geometry)
    assert_close(dx, col2im(dcols, x.shape, 3, 2, (2, 1), (1, 1)), what="col2im")
    swapped = np.full((3, 2, 72), np.nan, np.float32)
    cuda.launch("conv", "conv_swap_axes", *grid(72, 6), swapped, x.reshape(2, 3, 72), np.int32(2), np.int32(3),
                np.int32(72))
    np.testing.assert_array_equal(swapped, x.reshape(2, 3, 72).transpose(1, 0, 2))


@pytest.mark.parametrize("hw", [1, 123, 300])  # rows of one element (linear), shorter and longer than a block
def test_bias_backward_sums_each_channel(hw):
    r = np.random.default_rng(10)
    dy = r.standard_normal((7, 5, hw)).astype(np.float32)
    db = np.full(5, np.nan, np.float32)
    cuda.launch("bias", "bias_backward", (5,), (256,), db, dy, np.int32(7), np.int32(5), np.int32(hw))
    np.testing.assert_allclose(db, dy.astype(np.float64).sum(axis=(0, 2)), rtol=1e-5)


def test_grid_helpers_refuse_sizes_past_int32():
    with pytest.raises(ValueError, match=r"cuda: an array expected at most 2\^31 - 1 elements"):
        cuda.blocks(2**31)
    with pytest.raises(ValueError, match=r"cuda: a row expected at most 2\^31 - 1 elements"):
        cuda.planes(2**31, 1)
    assert cuda.planes(169, 100000) == ((1, 65535), (192,))  # short row: 192 threads, y capped


def test_emulator_rejects_wrong_arguments():
    x = np.zeros(10, np.float32)
    y = np.zeros(10, np.float32)
    with pytest.raises(TypeError, match=r"relu_forward: parameter n \(int\) expected np.int32, got int"):
        cuda.launch("relu", "relu_forward", (1,), (32,), y, x, 10)
    with pytest.raises(TypeError, match=r"relu_forward: parameter n \(int\) expected np.int32, got numpy.int64"):
        cuda.launch("relu", "relu_forward", (1,), (32,), y, x, np.int64(10))
    with pytest.raises(TypeError, match=r"relu_forward: parameter x \(float\*\) expected a C-contiguous array"):
        cuda.launch("relu", "relu_forward", (1,), (32,), y[:5], np.zeros(20, np.float32)[::2], np.int32(5))
    with pytest.raises(TypeError, match=r"relu_forward: parameter x \(float\*\) expected a float32 array, got float64"):
        cuda.launch("relu", "relu_forward", (1,), (32,), y, np.zeros(10), np.int32(10))
    with pytest.raises(TypeError, match=r"relu_forward: expected 3 arguments \(y, x, n\), got 2"):
        cuda.launch("relu", "relu_forward", (1,), (32,), y, x)


def test_emulator_runs_your_own_kernel_and_catches_a_divergent_barrier(tmp_path):
    kernel = tmp_path / "mine.cu"
    kernel.write_text('''
extern "C" __global__ void mine_reverse(float* __restrict__ y, const float* __restrict__ x, int n)
{
    __shared__ float tile[64];
    int t = threadIdx.x;
    tile[t] = x[blockIdx.x * 64 + t];
    __syncthreads();                      /* without it, tile[63 - t] may not be written yet */
    y[blockIdx.x * 64 + t] = tile[63 - t];
}

extern "C" __global__ void mine_divergent(float* __restrict__ y, int n)
{
    if (threadIdx.x < 16) return;
    __syncthreads();
    y[threadIdx.x] = 1.0f;
}
''')
    x = np.arange(128, dtype=np.float32)
    y = np.zeros_like(x)
    cuda.launch(str(kernel), "mine_reverse", (2,), (64,), y, x, np.int32(128))
    np.testing.assert_array_equal(y, np.concatenate([x[:64][::-1], x[64:][::-1]]))
    with pytest.raises(RuntimeError, match="__syncthreads"):
        cuda.launch(str(kernel), "mine_divergent", (1,), (32,), y, np.int32(32))


def test_float64_on_the_kernel_path_is_refused():
    x = ma.Tensor(np.zeros((1, 1, 3, 3)), device="cuda-emu")
    with pytest.raises(TypeError, match="ReLU: the CUDA kernels expected float32"):
        F.relu(x)


def test_cuda_device_without_gpu_says_what_to_do():
    if _gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="cuda-emu"):
        ma.Tensor([1.0], device="cuda")


def test_emulator_without_a_compiler_says_what_to_install(monkeypatch):
    from minialex import emulator
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(emulator.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"found none .*(install g\+\+|xcode-select --install)"):   # Linux, macOS
        emulator.compiler()


# ----- debugging kernels on the emulator -----

DEBUG_KERNELS = r'''
extern "C" __global__ void mine_off_by_one(float* __restrict__ y, const float* __restrict__ x, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i > n) return;                       /* should be i >= n */
    y[i] = 2.0f * x[i];
}

extern "C" __global__ void mine_local_pointer(float* __restrict__ y, int n)
{
    float* row = y + threadIdx.x * 4;        /* a local pointer derived from a parameter */
    row[4] = 1.0f;                           /* the last thread writes one row past the end */
}

extern "C" __global__ void mine_warp_sum(float* __restrict__ out, const float* __restrict__ x, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? x[i] : 0.0f;
    for (int offset = 16; offset > 0; offset /= 2)      /* a warp-shuffle tree: lane 0 gets the sum */
        v += __shfl_down_sync(0xffffffffu, v, offset);
    unsigned positive = __ballot_sync(0xffffffffu, i < n && x[i] > 0.0f);
    float w = __shfl_xor_sync(0xffffffffu, (float)(threadIdx.x % 32), 1);   /* the neighbour's lane */
    if (threadIdx.x % 32 == 0) {
        out[3 * (i / 32)] = v;
        out[3 * (i / 32) + 1] = (float)count_bits(positive);
    }
    if (threadIdx.x % 32 == 5) out[3 * (i / 32) + 2] = w;
}

extern "C" __global__ void mine_last_warp_only(float* __restrict__ out, const float* __restrict__ x, int n)
{
    __shared__ float partial[64];
    int t = threadIdx.x;
    partial[t] = x[t];
    __syncthreads();
    if (t < 32) {                             /* only warp 0 shuffles: the others are done */
        float v = partial[t] + partial[t + 32];
        for (int offset = 16; offset > 0; offset /= 2)
            v += __shfl_down_sync(0xffffffffu, v, offset);
        if (t == 0) out[0] = v;
    }
}
'''


_POPC = "__device__ int count_bits(unsigned v) { return __popc(v); }   /* a helper, as kernels have */\n"


def _debug_kernels(tmp_path):
    path = tmp_path / "mine.cu"
    path.write_text(_POPC + DEBUG_KERNELS)
    return str(path)


def test_the_debug_build_reports_an_out_of_bounds_access(tmp_path):
    path = _debug_kernels(tmp_path)
    x, y = np.arange(64, dtype=np.float32), np.zeros(64, np.float32)
    cuda.launch(path, "mine_off_by_one", (1,), (65,), y, x, np.int32(64), debug=False)   # unchecked: no error
    # y[i] = 2 * x[i]: g++ reads x[i] first, clang (macOS) may index y first
    with pytest.raises(cuda.OutOfBoundsError, match=r"mine_off_by_one: [xy]\[64\] accessed, outside its 64 elements, "
                                                    r"by block \(0, 0, 0\) thread \(64, 0, 0\)"):
        cuda.launch(path, "mine_off_by_one", (1,), (65,), y, x, np.int32(64), debug=True)
    with pytest.raises(cuda.OutOfBoundsError, match=r"y\[32\] accessed, outside its 32 elements, by block "
                                                    r"\(0, 0, 0\) thread \(7, 0, 0\)"):
        cuda.launch(path, "mine_local_pointer", (1,), (8,), np.zeros(32, np.float32), np.int32(32), debug=True)
    np.testing.assert_array_equal(y, 2 * x)


def test_warp_primitives_are_emulated_per_warp(tmp_path):
    path = _debug_kernels(tmp_path)
    r = np.random.default_rng(12)
    x = r.standard_normal(96).astype(np.float32)
    for debug in (False, True):
        out = np.zeros(9, np.float32)
        cuda.launch(path, "mine_warp_sum", (1,), (96,), out, x, np.int32(96), debug=debug)
        np.testing.assert_allclose(out[0::3], x.reshape(3, 32).sum(axis=1), rtol=1e-5)
        np.testing.assert_array_equal(out[1::3], (x.reshape(3, 32) > 0).sum(axis=1))
        np.testing.assert_array_equal(out[2::3], [4.0, 4.0, 4.0])                 # lane 5 ^ 1 = lane 4
    out = np.zeros(1, np.float32)
    x = r.standard_normal(64).astype(np.float32)
    cuda.launch(path, "mine_last_warp_only", (1,), (64,), out, x, np.int32(64))
    np.testing.assert_allclose(out[0], x.sum(), rtol=1e-5)


def test_one_block_or_one_thread_can_run_alone(tmp_path):
    path = _debug_kernels(tmp_path)
    x = np.arange(64, dtype=np.float32)
    y = np.full(64, -1.0, np.float32)
    cuda.launch(path, "mine_off_by_one", (4,), (16,), y, x, np.int32(63), only_block=(2,))
    np.testing.assert_array_equal(y[32:48], 2 * x[32:48])
    assert (y[:32] == -1).all() and (y[48:] == -1).all()
    y[:] = -1
    cuda.launch(path, "mine_off_by_one", (4,), (16,), y, x, np.int32(63), only_thread=(3,))
    np.testing.assert_array_equal(np.flatnonzero(y != -1), [3, 19, 35, 51])
    with pytest.raises(ValueError, match="only_thread runs one thread, but the kernel waits"):
        cuda.launch(path, "mine_warp_sum", (1,), (32,), np.zeros(3, np.float32), x, np.int32(32), only_thread=(0,))


def test_the_library_kernels_pass_the_bounds_checked_build(monkeypatch):
    """Every kernel of a train step, with each array access checked."""
    monkeypatch.setenv("MINIALEX_EMU_DEBUG", "1")
    test_alexnet_train_step_equals_cpu("cuda-emu")
    test_cross_entropy_parity("cuda-emu")


def test_check_parity_compares_a_kernel_with_its_reference():
    errors = ma.check_parity(lambda x, w: F.conv2d(x, w, padding=1, stride=2), [(2, 3, 9, 9), (4, 3, 3, 3)])
    assert set(errors) == {"y", "d input 0", "d input 1"} and max(errors.values()) < 1e-4
    with ma.cpu_path("reference"):
        from minialex import bugs
        with bugs.inject("relu-mask-from-output"):                 # the reference is now wrong
            with pytest.raises(AssertionError, match=r"check_parity on cuda-emu: relative errors above .*d input 0"):
                ma.check_parity(F.relu, [(4, 5)])
    assert not hasattr(cuda, "check_parity")                       # its one home: minialex/gradcheck.py
