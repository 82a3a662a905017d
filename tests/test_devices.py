"""Devices: every op, launch and allocation of a tensor on "cuda:N" runs on GPU N.

CuPy works on its *current* device, whatever device the arrays live on, so the library enters
backend.device_scope(tensor's device) in Function.apply (forward), in the engine (each backward
step) and in SGD.step; minialex.cuda launches each kernel on its arrays' GPU, from a module
loaded there. Without a GPU this is checked three ways:
  * device_scope itself against a fake CuPy whose cuda.Device(n) records what it enters;
  * launch and the Winograd matrices against the same fake, with fake GPU arrays;
  * a recorder put in place of device_scope, which the forward, the backward, the SGD update and
    the kernel launches ask which scope they run in (removing one of the calls fails a test here).
The tests marked `gpu` run a small net and the device batches on a second GPU and check where
their arrays live.
"""
import contextlib
import sys
import types

import numpy as np
import pytest

import minialex as ma
from minialex import backend, cuda, optim
from minialex import functional as F
from minialex.function import Function


# ----- a fake CuPy: just cuda.Device(n) as a context manager and the device count -----

class FakeCuPy(types.ModuleType):
    """Records ("enter", n) and ("exit", n); `current` is the current device, as in CuPy."""

    def __init__(self, count):
        super().__init__("cupy")
        self.current, self.log, stack = 0, [], []
        fake = self

        class Device:
            def __init__(self, index=None):
                self.id = fake.current if index is None else index

            def __enter__(self):
                stack.append(fake.current)
                fake.current = self.id
                fake.log.append(("enter", self.id))
                return self

            def __exit__(self, *exc):
                fake.current = stack.pop()
                fake.log.append(("exit", self.id))
                return False

        runtime = types.SimpleNamespace(getDeviceCount=lambda: count)
        self.cuda = types.SimpleNamespace(Device=Device, runtime=runtime)


@pytest.fixture
def fake_cupy(monkeypatch):
    """backend imports this fake (4 GPUs) the next time it needs CuPy; restored afterwards."""
    fake = FakeCuPy(count=4)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_gpu_count", None)
    return fake


@pytest.fixture
def no_cupy(monkeypatch):
    """Any use of CuPy fails the test."""
    def refuse():
        raise AssertionError("CuPy was asked for")
    monkeypatch.setattr(backend, "cupy", refuse)
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError


# ----- device_scope -----

@pytest.mark.parametrize("device, index", [("cuda:3", 3), ("cuda:0", 0), ("cuda", 0), ("cuda:1", 1)])
def test_device_scope_enters_the_named_gpu_and_restores_the_previous(fake_cupy, device, index):
    fake_cupy.current = 2
    with backend.device_scope(device):
        assert fake_cupy.current == index
    assert fake_cupy.current == 2
    assert fake_cupy.log == [("enter", index), ("exit", index)]


def test_device_scope_nests_and_restores_after_an_error(fake_cupy):
    with backend.device_scope("cuda:1"):
        with pytest.raises(KeyError):
            with backend.device_scope("cuda:3"):
                assert fake_cupy.current == 3
                raise KeyError("inside")
        assert fake_cupy.current == 1
    assert fake_cupy.current == 0
    assert fake_cupy.log == [("enter", 1), ("enter", 3), ("exit", 3), ("exit", 1)]


def test_to_device_allocates_inside_the_target_scope(fake_cupy):
    seen = []
    fake_cupy.asarray = lambda a, dtype=None, order=None: seen.append(fake_cupy.current) or "array"
    assert backend.to_device(np.zeros(2), "cuda:3") == "array"
    assert seen == [3] and fake_cupy.current == 0


@pytest.mark.parametrize("device", ["cpu", "cuda-emu"])
def test_device_scope_on_cpu_and_emulator_never_touches_cupy(no_cupy, device):
    with backend.device_scope(device):
        pass


def test_emulator_graph_and_step_never_touch_cupy(no_cupy):
    x = ma.Tensor(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3), device="cuda-emu")
    layer = ma.nn.Linear(3, 2).to("cuda-emu")
    F.relu(layer(x)).sum().backward()
    optim.SGD(layer.parameters(), lr=0.1, momentum=0.9).step()
    assert layer.weight.grad is not None


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA", "cuda:1 ", "cpu:0"])
def test_bad_device_string_is_the_usual_value_error(no_cupy, bad):
    with pytest.raises(ValueError, match=r"device: expected 'cpu', 'cuda', 'cuda:N' or 'cuda-emu', got"):
        backend.device_scope(bad)


def test_device_not_a_string_is_a_type_error(no_cupy):
    with pytest.raises(TypeError, match="device: expected a string"):
        backend.device_scope(1)


def test_gpu_index_beyond_the_gpus_cupy_sees(fake_cupy):
    with pytest.raises(ValueError, match=r"'cuda:4': expected a GPU index below 4 \(CuPy sees 4 GPU"):
        backend.device_scope("cuda:4")
    assert fake_cupy.log == []


def test_gpu_device_without_cupy_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(backend, "_cupy", None)
    with pytest.raises(RuntimeError, match="needs CuPy.*cuda-emu"):
        backend.device_scope("cuda:1")


class FakeGpuArray:
    """Enough of a cupy.ndarray for minialex.cuda.launch's checks: a float32 vector on GPU `gpu`."""

    def __init__(self, gpu, n=4):
        self.device, self.dtype = types.SimpleNamespace(id=gpu), np.dtype(np.float32)
        self.flags, self.shape, self.size = types.SimpleNamespace(c_contiguous=True), (n,), n


FakeGpuArray.__module__ = "cupy._core.core"  # how backend.is_cupy_array knows a CuPy array


@pytest.fixture
def fake_kernels(fake_cupy, monkeypatch):
    """fake_cupy.RawModule: records the device each module is loaded on and each launch."""
    fake_cupy.modules, fake_cupy.launches = [], []

    class RawModule:
        def __init__(self, code, options):
            self.device = fake_cupy.current
            fake_cupy.modules.append(self)

        def get_function(self, name):
            def run(grid, block, args):
                fake_cupy.launches.append((name, self.device, fake_cupy.current))
            return run
    fake_cupy.RawModule = RawModule
    monkeypatch.setattr(cuda, "_gpu_modules", {})
    return fake_cupy


def test_a_launch_runs_on_its_arrays_gpu_with_a_module_loaded_there(fake_kernels):
    """Current device 0, arrays on GPU 2 then 1: each launch (and its module) on the arrays' GPU."""
    n = np.int32(4)
    for gpu in (2, 2, 1):
        cuda.launch("relu", "relu_forward", (1,), (32,), FakeGpuArray(gpu), FakeGpuArray(gpu), n)
    assert fake_kernels.launches == [("relu_forward", 2, 2), ("relu_forward", 2, 2), ("relu_forward", 1, 1)]
    assert [m.device for m in fake_kernels.modules] == [2, 1]      # one module per GPU, loaded there
    assert fake_kernels.current == 0
    with pytest.raises(TypeError, match="relu_forward: expected all arrays on one GPU, got arrays on cuda:1, cuda:2"):
        cuda.launch("relu", "relu_forward", (1,), (32,), FakeGpuArray(2), FakeGpuArray(1), n)


def test_winograd_matrices_are_made_once_per_gpu_on_that_gpu(fake_cupy, monkeypatch):
    from minialex.cuda_ops import winograd
    monkeypatch.setattr(winograd, "_device_matrices", {})
    fake_cupy.asarray = lambda a: ("made on", fake_cupy.current, a.shape)
    with backend.device_scope("cuda:1"):
        on_1 = winograd._matrices(fake_cupy, 2, 3)
        assert winograd._matrices(fake_cupy, 2, 3) is on_1
    with backend.device_scope("cuda:3"):
        on_3 = winograd._matrices(fake_cupy, 2, 3)
    assert {m[1] for m in on_1} == {1} and {m[1] for m in on_3} == {3}


# ----- who calls device_scope, with which device -----

class ScopeRecorder:
    """Stands in for backend.device_scope: `active` is the stack of devices entered right now."""

    def __init__(self):
        self.active = []

    @contextlib.contextmanager
    def __call__(self, device):
        self.active.append(backend.check_device(device))
        try:
            yield
        finally:
            self.active.pop()


@pytest.fixture
def recorder(monkeypatch):
    rec = ScopeRecorder()
    monkeypatch.setattr(backend, "device_scope", rec)
    return rec


def _probe(rec, seen):
    """A Function whose forward and backward write down the scope they run in."""
    def forward(x):
        seen.append(("forward", tuple(rec.active)))
        return x * 2, None

    def backward(dy, cache):
        seen.append(("backward", tuple(rec.active)))
        return (dy * 2,)

    class Probe(Function):
        reference = (forward, backward)

    return Probe


@pytest.mark.parametrize("device", ["cpu", "cuda-emu"])
def test_forward_and_backward_run_inside_the_tensors_device_scope(recorder, device):
    seen = []
    probe = _probe(recorder, seen)
    x = ma.Tensor(np.arange(3, dtype=np.float32), requires_grad=True, device=device)
    y = probe.apply(probe.apply(x))
    y.backward(ma.Tensor(np.ones(3, np.float32), device=device))
    assert seen == [("forward", (device,))] * 2 + [("backward", (device,))] * 2
    np.testing.assert_array_equal(x.grad, np.full(3, 4.0, np.float32))
    assert recorder.active == []


def test_default_gradient_of_a_scalar_is_made_inside_the_scope(recorder, monkeypatch):
    made_in = []
    real_ones_like = np.ones_like
    monkeypatch.setattr(np, "ones_like", lambda a: made_in.append(tuple(recorder.active)) or real_ones_like(a))
    x = ma.Tensor(np.ones(2, np.float32), requires_grad=True, device="cuda-emu")
    (x * 3.0).sum().backward()
    assert made_in == [("cuda-emu",)]


@pytest.mark.parametrize("device", ["cpu", "cuda-emu"])
def test_sgd_updates_each_parameter_inside_its_device_scope(recorder, monkeypatch, device):
    updates = []
    real_update = optim.sgd_update

    def update(w, v, g, lr, momentum, weight_decay, dev):
        updates.append((dev, tuple(recorder.active)))
        real_update(w, v, g, lr, momentum, weight_decay, dev)
    monkeypatch.setattr(optim, "sgd_update", update)
    w = ma.nn.Parameter(np.ones(3, np.float32), device=device)
    w.grad = np.full(3, 2.0, np.float32)
    optim.SGD([w], lr=0.5).step()
    assert updates == [(device, (device,))]
    np.testing.assert_array_equal(w.numpy(), np.zeros(3, np.float32))   # 1 - 0.5 * 2


def test_every_kernel_launch_of_a_graph_and_its_step_runs_inside_the_scope(recorder, monkeypatch):
    """Conv, ReLU, pool, linear, cross-entropy on the emulator, forward, backward and SGD: each
    launch (and each gemm) happens while device_scope("cuda-emu") is active."""
    launches = []
    real_launch, real_gemm = cuda.launch, cuda.gemm

    def launch(family, name, *args, **kwargs):
        launches.append((name, tuple(recorder.active)))
        return real_launch(family, name, *args, **kwargs)

    def gemm(*args, **kwargs):
        launches.append(("gemm", tuple(recorder.active)))
        return real_gemm(*args, **kwargs)
    monkeypatch.setattr(cuda, "launch", launch)
    monkeypatch.setattr(cuda, "gemm", gemm)

    rng = np.random.default_rng(0)
    model = ma.nn.Sequential(ma.nn.Conv2d(2, 3, 3, padding=1, algorithm="im2col"), ma.nn.ReLU(),
                             ma.nn.MaxPool2d(2, 2), ma.nn.Flatten(), ma.nn.Linear(12, 4)).to("cuda-emu")
    x = ma.Tensor(rng.standard_normal((2, 2, 4, 4)).astype(np.float32), requires_grad=True, device="cuda-emu")
    loss = F.cross_entropy(model(x), np.array([1, 3]))
    forward = {name for name, _ in launches}
    loss.backward()
    backward = {name for name, _ in launches} - forward
    optim.SGD(model.parameters(), lr=0.1, momentum=0.9).step()
    assert {"conv_im2col", "relu_forward", "pool_forward", "cross_entropy_forward", "gemm"} <= forward
    assert {"conv_col2im", "relu_backward", "pool_backward", "cross_entropy_backward"} <= backward
    assert sum(name == "sgd_update" for name, _ in launches) == 4        # 2 weights, 2 biases
    outside = [(name, scope) for name, scope in launches if scope != ("cuda-emu",)]
    assert outside == []


# ----- on GPUs (marker gpu) -----

def _gpu_count():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:
        return 0


def needs_gpus(n):
    """Marker gpu, and skipped with fewer than n GPUs."""
    def mark(test):
        return pytest.mark.gpu(pytest.mark.skipif(_gpu_count() < n, reason=f"needs {n} CUDA GPU(s)")(test))
    return mark


@needs_gpus(1)
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_real_device_scope_restores_the_current_device(device):
    import cupy
    before = cupy.cuda.runtime.getDevice()
    with backend.device_scope(device):
        assert cupy.cuda.runtime.getDevice() == 0
    assert cupy.cuda.runtime.getDevice() == before
    with pytest.raises(ValueError, match="expected a GPU index below"):
        backend.device_scope(f"cuda:{_gpu_count()}")


def _small_net_step(device, algorithm, seed=0):
    """One step of a small net on `device`; returns (model, loss, x)."""
    ma.manual_seed(seed)
    model = ma.nn.Sequential(ma.nn.Conv2d(3, 4, 3, padding=1, algorithm=algorithm), ma.nn.ReLU(),
                             ma.nn.LocalResponseNorm(3, alpha=1.0), ma.nn.MaxPool2d(2, 2), ma.nn.Flatten(),
                             ma.nn.Linear(4 * 4 * 4, 5)).to(device)
    rng = np.random.default_rng(seed)
    x = ma.Tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32), requires_grad=True, device=device)
    loss = F.cross_entropy(model(x), np.array([0, 4]))
    loss.backward()
    optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4).step()
    return model, loss, x


@pytest.mark.parametrize("algorithm", ["im2col", "winograd"])
@pytest.mark.parametrize("gemm", ["blas", "tiled"])
@needs_gpus(2)
def test_a_step_on_the_second_gpu_computes_there(algorithm, gemm):
    import cupy
    previous = cuda.get_gemm()
    cuda.set_gemm(gemm)
    try:
        with cupy.cuda.Device(0):  # the current device stays GPU 0: the library must not rely on it
            model, loss, x = _small_net_step("cuda:1", algorithm)
            assert cupy.cuda.runtime.getDevice() == 0
        ref_model, ref_loss, ref_x = _small_net_step("cpu", algorithm)
    finally:
        cuda.set_gemm(previous)
    arrays = [loss.data, x.grad] + [p.data for p in model.parameters()] + [p.grad for p in model.parameters()]
    assert {a.device.id for a in arrays} == {1}
    assert getattr(model, "0")(x).data.device.id == 1                    # a conv's output on GPU 1
    np.testing.assert_allclose(loss.item(), ref_loss.item(), rtol=1e-4)
    np.testing.assert_allclose(x.grad.get(), ref_x.grad, rtol=1e-3, atol=1e-5)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-3, atol=1e-5)


@needs_gpus(2)
def test_moving_between_gpus_copies_to_the_target():
    a = ma.Tensor(np.arange(6, dtype=np.float32), device="cuda:0")
    b = a.to("cuda:1")
    assert a.data.device.id == 0 and b.data.device.id == 1
    model = ma.nn.Linear(3, 2).to("cuda:0").to("cuda:1")
    assert {p.data.device.id for p in model.parameters()} == {1}
    model.load_state_dict({k: np.ones_like(v) for k, v in model.state_dict().items()})
    np.testing.assert_array_equal(model.weight.numpy(), np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="expected all arrays on one GPU"):
        cuda.launch("relu", "relu_forward", *cuda.blocks(6), b.data, a.data, np.int32(6))


@needs_gpus(2)
def test_device_batches_on_the_second_gpu(tmp_path, monkeypatch):
    """The augment kernel, its copies and its stream on GPU 1; between batches the caller's current
    device (0) is left alone. Equal to the emulator's batches bit for bit."""
    import cupy
    from minialex.data import DataLoader, ImageFolder, Transform, make_synthetic
    monkeypatch.setenv("MINIALEX_STORES", str(tmp_path / "stores"))
    folder = ImageFolder(make_synthetic(tmp_path / "tiny", train_per_class=2, val_per_class=1, size=24,
                                        quiet=True) / "train")
    stats = {"mean": np.array([0.4, 0.5, 0.6], np.float32), "std": np.array([0.2, 0.25, 0.3], np.float32),
             "eigvals": np.array([0.01, 0.05, 0.2], np.float32), "eigvecs": np.eye(3, dtype=np.float32)}
    kw = dict(batch_size=4, shuffle=True, drop_last=True, seed=5, workers=0)
    want = list(DataLoader(folder, Transform(16, stats, "train"), device="cuda-emu", **kw))
    got = []
    with cupy.cuda.Device(0):
        for x, y in DataLoader(folder, Transform(16, stats, "train"), device="cuda:1", **kw):
            assert cupy.cuda.runtime.getDevice() == 0
            assert x.device == "cuda:1" and x.data.device.id == 1
            got.append((x.numpy(), y))
    assert len(got) == len(want) > 0
    for (xg, yg), (xw, yw) in zip(got, want):
        np.testing.assert_array_equal(xg, xw.numpy())
        np.testing.assert_array_equal(yg, yw)
