"""The autograd engine: graph recording, accumulation, no_grad, deep graphs, broadcasting."""
import zlib

import numpy as np
import pytest

import minialex as ma
from minialex.function import Function


def T(a, grad=True):
    return ma.Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def test_shared_subexpression_accumulates():
    x = T([1.5, -2.0])
    y = x * x + x * 3.0          # x feeds three ops: dy/dx = 2x + 3
    z = y * y                    # y feeds twice:     dz/dx = 2y (2x + 3)
    z.sum().backward()
    xv = np.array([1.5, -2.0])
    np.testing.assert_allclose(x.grad, 2 * (xv * xv + 3 * xv) * (2 * xv + 3))


def test_repeated_backward_accumulates_and_zero_grad_resets():
    x = T([2.0, 3.0])
    y = (x ** 3).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * 3 * np.array([4.0, 9.0]))
    x.zero_grad()
    (x * 2.0).sum().backward()
    np.testing.assert_allclose(x.grad, [2.0, 2.0])


def test_no_grad_records_nothing():
    x = T([1.0])
    with ma.no_grad():
        y = x * 2.0
        assert not ma.is_grad_enabled()
    assert ma.is_grad_enabled()
    assert not y.requires_grad and y._ctx is None
    with pytest.raises(RuntimeError, match="does not require a gradient"):
        y.backward()
    c = T([1.0], grad=False) * 2.0  # no input wants a gradient: no graph either
    assert c._ctx is None


def test_ten_thousand_deep_chain():
    x = T([1.0])
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward(np.ones(1))
    np.testing.assert_allclose(x.grad, [1.0001 ** 10_000], rtol=1e-9)


def test_broadcasting_gradients_sum_over_broadcast_axes():
    a, b = T(np.arange(3.0).reshape(3, 1)), T(np.arange(4.0) + 1)
    ((a * b) + a - b / 2.0).sum().backward()
    np.testing.assert_allclose(a.grad, np.full((3, 1), (np.arange(4.0) + 1).sum() + 4))
    np.testing.assert_allclose(b.grad, np.full(4, np.arange(3.0).sum() - 1.5))


CASES = {  # one line per basic op, each gradient-checked in float64 (tinygrad's style)
    "add": (lambda a, b: a + b, [(3, 4), (4,)]),
    "sub": (lambda a, b: a - b, [(3, 1), (3, 4)]),
    "mul": (lambda a, b: a * b, [(2, 3), (2, 3)]),
    "div": (lambda a, b: a / b, [(2, 3), (3,)]),
    "neg": (lambda a: -a, [(5,)]),
    "rsub_scalar": (lambda a: 2.0 - a * 3.0, [(4,)]),
    "rdiv_scalar": (lambda a: 1.0 / a, [(4,)]),
    "pow": (lambda a: a ** 3, [(2, 3)]),
    "exp_log": (lambda a: (a * a + 1.0).log() + a.exp(), [(2, 3)]),
    "sum_axis": (lambda a: a.sum(axis=1), [(3, 4, 2)]),
    "sum_keepdims": (lambda a: a.sum(axis=(0, 2), keepdims=True), [(3, 4, 2)]),
    "mean": (lambda a: a.mean(axis=0) * a.mean(), [(3, 4)]),
    "reshape": (lambda a: a.reshape(4, 6) * 2.0, [(2, 3, 4)]),
    "transpose": (lambda a: a.transpose(2, 0, 1) * 2.0, [(2, 3, 4)]),
    "matmul": (lambda a, b: a @ b, [(3, 4), (4, 2)]),
    "matmul_batched": (lambda a, b: a @ b, [(2, 3, 4), (4, 5)]),
    "getitem_slice": (lambda a: a[1:, ::2] * 2.0, [(3, 5)]),
    "getitem_fancy": (lambda a: a[np.array([0, 2, 0])], [(3, 4)]),  # row 0 picked twice
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_basic_op_gradcheck(name):
    fn, shapes = CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # the same seed in every process (hash() is not)
    inputs = [T(rng.uniform(0.5, 2.0, s) * rng.choice([-1, 1], s)) for s in shapes]
    assert ma.gradcheck(fn, inputs)


def test_basic_op_values():
    a = T([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal((a @ a).data, [[7.0, 10.0], [15.0, 22.0]])
    np.testing.assert_array_equal(a.mean(axis=1).data, [1.5, 3.5])
    np.testing.assert_array_equal((2.0 / a).data, 2.0 / a.data)
    np.testing.assert_array_equal(a.T.data, [[1.0, 3.0], [2.0, 4.0]])


def test_engine_names_an_op_whose_gradient_has_the_wrong_shape():
    class Broken(Function):
        numpy = (lambda x: (x * 2, None), lambda dy, cache: (dy[:1],))
    x = T(np.ones(3))
    with pytest.raises(ValueError, match=r"Broken backward: gradient of input 0 has shape \(1,\)"):
        Broken.apply(x).sum().backward()


def test_gradcheck_catches_a_wrong_backward():
    class WrongSquare(Function):  # d(x^2)/dx is 2x, not x
        numpy = (lambda x: (x * x, x), lambda dy, x: (dy * x,))
    with pytest.raises(ma.GradcheckError, match="input 0 element"):
        ma.gradcheck(WrongSquare.apply, [T([1.0, 2.0])])


def test_tensor_basics():
    x = ma.Tensor([[1, 2], [3, 4]])
    assert x.dtype == np.float32 and x.shape == (2, 2) and x.device == "cpu"
    assert ma.Tensor(np.zeros(2)).dtype == np.float64
    assert ma.Tensor(np.array([1, 2])).dtype.kind == "i"
    assert (x * 2).dtype == np.float32  # a Python scalar does not upcast
    assert ma.Tensor([3.5]).item() == 3.5
    with pytest.raises(ValueError, match="device"):
        ma.Tensor([1.0], device="gpu")
    with pytest.raises(TypeError, match="requires_grad expected a floating dtype"):
        ma.Tensor(np.array([1, 2]), requires_grad=True)
    y = x.to("cuda-emu")
    assert y.device == "cuda-emu" and y is not x and np.array_equal(y.numpy(), x.numpy())


def _op(forward, backward):
    class Custom(Function):
        reference = (forward, backward)
    return Custom.apply


def test_the_engine_checks_the_custom_op_contract():
    x = T(np.ones((2, 3)))
    bare = _op(lambda x: x * 2, lambda dy, cache: (dy,))                         # forward without a cache
    with pytest.raises(TypeError, match=r"Custom forward \(reference\): expected to return a pair \(y, cache\), "
                                        r"got an array of shape \(2, 3\)"):
        bare(x)
    with pytest.raises(TypeError, match=r"expected y to be an array, got a list of 1"):
        _op(lambda x: ([1.0], None), lambda dy, c: (dy,))(x)
    for backward, words in [(lambda dy, c: dy * 2, r"expected a tuple of 1 gradient\(s\).*got an array .*\(dx,\)"),
                            (lambda dy, c: (), r"expected a tuple of 1 gradient\(s\).*got a tuple of 0"),
                            (lambda dy, c: ([1.0],), r"gradient of input 0 expected an array \(or None\), got a list of 1"),
                            (lambda dy, c: (dy.astype(np.float32),), r"gradient of input 0 has shape \(2, 3\) and "
                                                                     r"dtype float32, expected .* dtype float64")]:
        y = _op(lambda x: (x * 2, None), backward)(x)
        with pytest.raises((TypeError, ValueError), match=words):
            y.sum().backward()
    two = _op(lambda a, b: (a * b, (a, b)), lambda dy, c: (dy * c[1],))            # one gradient for two inputs
    with pytest.raises(TypeError, match=r"expected a tuple of 2 gradient\(s\)"):
        two(x, T(np.ones((2, 3)))).sum().backward()


def test_leaky_relu_as_a_custom_op_passes_gradcheck():
    """The README's custom op: forward and backward of leaky ReLU, checked numerically."""
    def forward(x, slope):
        return np.where(x > 0, x, slope * x), x

    def backward(dy, x):
        return (np.where(x > 0, dy, 0.01 * dy),)

    class LeakyReLU(Function):
        reference = (lambda x, slope=0.01: forward(x, slope), backward)
    x = T(np.random.default_rng(5).uniform(0.1, 1, (4, 5)) * np.random.default_rng(6).choice([-1, 1], (4, 5)))
    assert ma.gradcheck(LeakyReLU.apply, [x])


def test_retain_grad_and_hooks():
    x = T([1.0, -2.0, 3.0])
    h = x * 2.0
    h.retain_grad()
    seen = []
    handle = h.register_hook(lambda g: seen.append(g.numpy().copy()))
    doubled = x.register_hook(lambda g: g * 2.0)                                 # replaces the leaf's gradient
    (h * h).sum().backward(retain_graph=True)                                     # h's op is used again below
    np.testing.assert_allclose(h.grad, 2 * h.data)                                # d(h^2)/dh
    np.testing.assert_allclose(seen[0], 2 * h.data)
    np.testing.assert_allclose(x.grad, 2 * (2 * h.data * 2))                      # doubled by the hook
    handle.remove()
    doubled.remove()
    x.grad, h.grad = None, None
    (h * h).sum().backward()
    assert len(seen) == 1 and h.grad is not None
    np.testing.assert_allclose(x.grad, 2 * h.data * 2)


def test_gradcheck_report_instead_of_raising():
    class WrongSquare(Function):  # d(x^2)/dx is 2x, not x
        reference = (lambda x: (x * x, x), lambda dy, x: (dy * x,))
    x, y = T([1.0, 2.0, 3.0]), T([0.5, -1.0])
    report = ma.gradcheck(lambda x, y: WrongSquare.apply(x).sum() + (y * y).sum(), [x, y], raise_exception=False)
    assert not report.ok and [r["ok"] for r in report.rows] == [False, True]
    assert report.rows[0]["worst"] == (2,) and report.rows[0]["elements"] == 3
    assert "WrongSquare" in report.ops and "FAIL" in str(report) and "pass" in str(report)
    with pytest.raises(ma.GradcheckError, match=r"gradcheck of .*WrongSquare.*: input 0 element \(2,\)"):
        ma.gradcheck(lambda x: WrongSquare.apply(x), [x])
    assert ma.gradcheck(lambda y: y * y, [y], raise_exception=False).ok


def test_an_op_names_its_pairs_and_the_engine_imports_them_once():
    """ops/relu.py names its fast and CUDA pairs (it imports neither); implementation() resolves
    the names on first use and keeps the functions. A pair of functions is taken as it is."""
    from minialex.cpu import relu as fast_relu, sgd as fast_sgd
    from minialex.cuda_ops import relu as cuda_relu
    from minialex.function import implementation, resolve
    from minialex.ops.relu import ReLU
    assert ReLU.fast == ("minialex.cpu.relu", "relu_forward", "relu_backward")
    with ma.cpu_path("fast"):
        pair, kind = implementation(ReLU, "cpu")
    assert kind == "fast" and pair == (fast_relu.relu_forward, fast_relu.relu_backward)
    assert resolve(ReLU.fast) is pair                                  # kept, not imported again
    assert implementation(ReLU, "cuda-emu") == ((cuda_relu.relu_forward, cuda_relu.relu_backward), "cuda")
    with ma.cpu_path("reference"):
        assert implementation(ReLU, "cpu")[1] == "reference"
    assert resolve(("minialex.cpu.sgd", "sgd_update")) is fast_sgd.sgd_update   # one name: the function
    mine = (np.negative, np.positive)
    assert resolve(mine) is mine and resolve(None) is None


def test_gradcheck_fails_a_nan_gradient_in_any_input():
    """A NaN gradient compares false with everything: it must still fail (here in input 1, after an
    input 0 that passes)."""
    class NanGrad(Function):
        reference = (lambda x: (x * 3, None), lambda dy, cache: (dy * np.nan,))
    x, y = T([1.0, 2.0]), T([0.5, -1.0, 2.0])
    fn = lambda x, y: (x * x).sum() + NanGrad.apply(y).sum()  # noqa: E731
    report = ma.gradcheck(fn, [x, y], raise_exception=False)
    assert [r["ok"] for r in report.rows] == [True, False] and report.rows[1]["worst"] == (0,)
    with pytest.raises(ma.GradcheckError, match=r"input 1 element \(0,\): analytic nan"):
        ma.gradcheck(fn, [x, y])


def test_the_readme_custom_op_runs_as_written(capsys):
    from pathlib import Path
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("class LeakyReLU(Function):")[0].rsplit("```python", 1)[1] + "class LeakyReLU(Function):" + \
        readme.split("class LeakyReLU(Function):")[1].split("```")[0]
    exec(compile(block, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "True"


def test_a_function_without_a_reference_pair_says_so():
    from minialex.function import Function

    class Half(Function):
        pass
    with pytest.raises(TypeError, match=r"Half: no reference pair.*reference = \(forward, backward\)"):
        Half.apply(ma.Tensor(np.ones(3)))
