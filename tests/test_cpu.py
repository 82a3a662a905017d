"""The fast CPU path (minialex/cpu/) against the reference (minialex/ops/): every op on the case
lists of tests/test_ops.py, in float32 and float64, and a whole AlexNet.mini train step; bit for
bit where both compute in the same order. Then the fast path's machinery: threads, tune(), and an
import that changes nothing outside minialex."""
import os
import subprocess
import sys

import numpy as np
import pytest

import minialex as ma
from minialex import functional as F
from minialex.cpu import conv as fast_conv
from minialex.cpu import threads
from minialex.function import implementation
from minialex.ops.conv import Conv2d

from .test_ops import CONV_CASES, LRN_CASES


def rng(seed):
    return np.random.default_rng(seed)


def on_both_paths(fn, arrays, dtype, seed=0):
    """{path: (y, [input gradients])} for fn run on the reference and on the fast path, from the
    same inputs and the same random output gradient."""
    results = {}
    for path in ("reference", "fast"):
        with ma.cpu_path(path):
            assert implementation(Conv2d, "cpu")[1] == path
            ts = [ma.Tensor(np.asarray(a, dtype), requires_grad=True) for a in arrays]
            y = fn(*ts)
            y.backward(rng(seed).standard_normal(y.shape).astype(dtype))
            results[path] = (y.numpy().copy(), [t.grad for t in ts])
    return results


def assert_equal_paths(results, rtol=None):
    """Bit for bit (rtol None), or per element |fast - ref| <= rtol * (|ref| + max|ref|)."""
    (y_ref, g_ref), (y_fast, g_fast) = results["reference"], results["fast"]
    for what, a, b in [("y", y_fast, y_ref)] + [(f"d(input {i})", a, b) for i, (a, b) in enumerate(zip(g_fast, g_ref))]:
        assert a.dtype == b.dtype and a.shape == b.shape, what
        if rtol is None:
            np.testing.assert_array_equal(a, b, err_msg=what)
        else:
            scale = np.abs(b).max() if b.size else 0.0
            np.testing.assert_array_less(np.abs(a - b), rtol * (np.abs(b) + scale) + 1e-300, err_msg=what)


TOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_fast_equals_reference(case, dtype):
    n, c, h, w, o, k, s, p, g = case
    r = rng(21)
    arrays = [r.standard_normal((n, c, h, w)), r.standard_normal((o, c // g, k, k)), r.standard_normal(o)]
    assert_equal_paths(on_both_paths(lambda x, wt, b: F.conv2d(x, wt, b, s, p, g), arrays, dtype), TOL[dtype])


def test_conv2d_case_list_covers_both_column_layouts():
    from minialex.ops.windows import conv_outsize
    layouts = {fast_conv.channels_last(c // g, conv_outsize(w, k, s, p)) for n, c, h, w, o, k, s, p, g in CONV_CASES}
    assert layouts == {False, True}


@pytest.mark.parametrize("last", [False, True])
def test_conv2d_each_column_layout_forced(monkeypatch, last):
    """Either layout forced on the same shapes (groups, stride 2, a 3x2 kernel): the reference's
    y and gradients, and float64 gradients that pass the numerical check."""
    monkeypatch.setattr(fast_conv, "channels_last", lambda cg, ow: last)
    r = rng(16)
    arrays = [r.standard_normal((2, 6, 7, 6)), r.standard_normal((4, 3, 3, 2)), r.standard_normal(4)]
    fn = lambda x, wt, b: F.conv2d(x, wt, b, stride=2, padding=1, groups=2)  # noqa: E731
    assert_equal_paths(on_both_paths(fn, arrays, np.float64), 1e-12)
    with ma.cpu_path("fast"):
        assert ma.gradcheck(fn, [ma.Tensor(a, requires_grad=True) for a in arrays])


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, True), (False, False, True)])
def test_conv2d_fast_computes_only_the_gradients_asked_for(needs):
    r = rng(22)
    arrays = [r.standard_normal((2, 4, 6, 6)), r.standard_normal((3, 4, 3, 3)), r.standard_normal(3)]
    for path in ("reference", "fast"):
        with ma.cpu_path(path):
            ts = [ma.Tensor(a, requires_grad=want) for a, want in zip(arrays, needs)]
            F.conv2d(*ts, padding=1).sum().backward()
            assert [t.grad is not None for t in ts] == list(needs), path


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", LRN_CASES + [(96, 5, 1e-4, 0.75, 2.0)])
def test_lrn_fast_equals_reference(case, dtype):
    c, size, alpha, beta, k = case
    x = rng(23).standard_normal((3, c, 5, 4)) * 5
    assert_equal_paths(on_both_paths(lambda x: F.local_response_norm(x, size, alpha, beta, k), [x], dtype),
                       TOL[dtype])


POOL_CASES = [((2, 3, 7, 7), 3, 2, 0), ((1, 2, 9, 8), 3, 2, 0), ((2, 1, 6, 5), 2, 2, 0), ((1, 2, 8, 8), 3, 1, 0),
              ((2, 3, 9, 7), 3, 2, 1), ((1, 2, 6, 6), 2, 3, 1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,k,s,p", POOL_CASES)
def test_max_pool_fast_equals_reference_bit_for_bit(shape, k, s, p, dtype):
    r = rng(24)
    x = np.round(r.standard_normal(shape), 1)          # rounded: many ties, which must go to the same pixel
    assert_equal_paths(on_both_paths(lambda x: F.max_pool2d(x, k, s, p), [x], dtype))
    x[0, 0, :3, :3] = np.nan                           # NaN windows, -inf windows, +inf
    x[-1, -1, -3:, -3:] = -np.inf
    x[0, -1, 1, 1] = np.inf
    assert_equal_paths(on_both_paths(lambda x: F.max_pool2d(x, k, s, p), [x], dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 4, 5), (7,), (), (2, 0, 3), (600, 700)])
def test_relu_fast_equals_reference_bit_for_bit(shape, dtype):
    x = rng(25).standard_normal(shape)
    if x.size > 4:
        x.ravel()[:4] = [np.nan, -np.inf, np.inf, 0.0]
    assert_equal_paths(on_both_paths(F.relu, [x], dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.5, 0.1, 0.93])
def test_dropout_fast_equals_reference_bit_for_bit(p, dtype):
    x = rng(30).standard_normal((7, 301))
    x[0, :6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30]
    assert_equal_paths(on_both_paths(lambda x: F.dropout(x, p, seed=11), [x], dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_fast_equals_reference_bit_for_bit(monkeypatch, dtype):
    from minialex.cpu import sgd as fast_sgd
    monkeypatch.setattr(fast_sgd, "CHUNK", 7)  # many chunks, split over threads
    monkeypatch.setattr(threads, "PARALLEL_MIN_ELEMENTS", 0)
    r = rng(26)
    w0, grads = r.standard_normal((13, 11)), [r.standard_normal((13, 11)) for _ in range(3)]
    finals = []
    for path in ("reference", "fast"):
        with ma.cpu_path(path):
            w = ma.nn.Parameter(w0.astype(dtype))
            opt = ma.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.01)
            for g in grads:
                w.grad = g.astype(dtype)
                opt.step()
            finals.append((w.data.copy(), opt.velocity[0].copy()))
    np.testing.assert_array_equal(finals[0][0], finals[1][0])
    np.testing.assert_array_equal(finals[0][1], finals[1][1])
    assert not np.array_equal(finals[0][0], w0.astype(dtype))


def _alexnet_mini_steps(path, steps=2):
    with ma.cpu_path(path):
        ma.manual_seed(0)
        model = ma.models.AlexNet.mini(num_classes=10)
        opt = ma.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        r = rng(27)
        x = ma.Tensor(r.standard_normal((4, 3, 64, 64)).astype(np.float32))
        y = r.integers(0, 10, 4)
        losses, grads = [], {}
        for step in range(steps):
            ma.manual_seed(100 + step)  # the same dropout masks on both paths
            loss = F.cross_entropy(model(x), y)
            model.zero_grad()
            loss.backward()
            grads = {n: p.grad.copy() for n, p in model.named_parameters()}
            opt.step()
            losses.append(loss.item())
        return losses, grads, model.state_dict()


def test_alexnet_mini_train_step_fast_equals_reference():
    """Two float32 steps (forward, loss, backward, SGD) on each path, from the same weights: the
    losses, the last step's gradients and the updated weights agree to float32 rounding (the
    convolutions sum in another order on the fast path)."""
    (l_ref, g_ref, w_ref), (l_fast, g_fast, w_fast) = _alexnet_mini_steps("reference"), _alexnet_mini_steps("fast")
    np.testing.assert_allclose(l_fast, l_ref, rtol=1e-5)
    for name in w_ref:
        for what, a, b in (("grad", g_fast[name], g_ref[name]), ("weight", w_fast[name], w_ref[name])):
            err = np.abs(a - b).max() / np.abs(b).max()
            assert err < 1e-4, f"{name} {what}: relative error {err:.2e}"
    assert not np.array_equal(w_ref["conv1.weight"], _alexnet_mini_steps("reference", 0)[2]["conv1.weight"])


# ----- threads -----

def _every_fast_op(seed):
    """Outputs and input gradients of conv (stride 1 and 2, both layouts), relu, LRN, max-pool, and SGD."""
    r = rng(seed)
    x = ma.Tensor(r.standard_normal((5, 4, 11, 10)).astype(np.float32), requires_grad=True)
    w1 = ma.Tensor(r.standard_normal((6, 4, 3, 3)).astype(np.float32), requires_grad=True)
    w2 = ma.Tensor(r.standard_normal((6, 2, 5, 5)).astype(np.float32), requires_grad=True)
    x2 = ma.Tensor(r.standard_normal((5, 24, 3, 3)).astype(np.float32), requires_grad=True)
    w3 = ma.Tensor(r.standard_normal((5, 24, 3, 3)).astype(np.float32), requires_grad=True)
    ys = [F.conv2d(x, w1, padding=1), F.conv2d(x, w2, stride=2, padding=2, groups=2), F.conv2d(x2, w3, padding=1),
          F.relu(x), F.local_response_norm(x), F.max_pool2d(x, 3, 2), F.max_pool2d(F.relu(x), 3, 1, 1)]
    for y in ys:
        (y * ma.Tensor(r.standard_normal(y.shape).astype(np.float32))).sum().backward()
    opt = ma.optim.SGD([w1, w2, w3], lr=0.1, momentum=0.9, weight_decay=0.01)
    opt.step()
    opt.step()
    return [y.data for y in ys] + [x.grad, x2.grad, w1.data, w2.data, w3.data]


def test_fast_ops_split_over_threads_give_the_serial_results(monkeypatch):
    """The fast path cuts big passes into one slice per core. With the size threshold at 0 and 3
    threads (uneven slices, 5 images), every result must equal the serial one bit for bit."""
    from minialex.cpu import sgd as fast_sgd
    monkeypatch.setattr(fast_sgd, "CHUNK", 7)
    with ma.cpu_path("fast"):
        monkeypatch.setenv("MINIALEX_THREADS", "1")
        serial = _every_fast_op(15)
        monkeypatch.setenv("MINIALEX_THREADS", "3")
        monkeypatch.setattr(threads, "PARALLEL_MIN_ELEMENTS", 0)
        split = _every_fast_op(15)
    for a, b in zip(serial, split):
        np.testing.assert_array_equal(a, b)


def test_parallel_covers_the_range_once_and_reraises(monkeypatch):
    monkeypatch.setenv("MINIALEX_THREADS", "4")
    seen = np.zeros(10, int)

    def mark(lo, hi):
        seen[lo:hi] += 1
    threads.parallel(mark, 10, threads.PARALLEL_MIN_ELEMENTS)
    np.testing.assert_array_equal(seen, 1)

    def fail_on_last(lo, hi):
        if hi == 10:
            raise KeyError("slice failed")
    with pytest.raises(KeyError, match="slice failed"):
        threads.parallel(fail_on_last, 10, threads.PARALLEL_MIN_ELEMENTS)
    monkeypatch.setenv("MINIALEX_THREADS", "zero")
    with pytest.raises(ValueError, match=r"MINIALEX_THREADS expected an integer from 1 to \d+, got 'zero'"):
        threads.parallel(mark, 10, threads.PARALLEL_MIN_ELEMENTS)


def _parallel_sum_in_child(queue):
    out = np.zeros(8)

    def fill(lo, hi):
        out[lo:hi] = 1
    threads.parallel(fill, 8, threads.PARALLEL_MIN_ELEMENTS)
    queue.put(out.sum())


def test_parallel_works_in_a_forked_child(monkeypatch):
    """A child forked after the threads started has none of them: it must start its own, not hang."""
    import multiprocessing
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    monkeypatch.setenv("MINIALEX_THREADS", "2")
    threads.parallel(lambda lo, hi: None, 8, threads.PARALLEL_MIN_ELEMENTS)  # the parent's threads exist
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_parallel_sum_in_child, args=(queue,))
    child.start()
    child.join(60)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0, "the forked child hung or failed"
    assert queue.get(timeout=5) == 8


# ----- process-wide settings -----

def _fresh_python(code, env_changes=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_THREAD_TIMEOUT", "MINIALEX_TUNE_BLAS", "MINIALEX_TUNE_MALLOC")}
    env.update(env_changes or {})
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip().splitlines()


PROBE = ("import os, threading, numpy; numpy.ones((64, 64)) @ numpy.ones((64, 64))\n"
         "from minialex.cpu import tuning\n"
         "lib = tuning.openblas(); timeout = lambda: lib.openblas_thread_timeout() if lib else None\n"
         "before = (timeout(), os.environ.get('OPENBLAS_THREAD_TIMEOUT'))\n")


def test_import_changes_nothing_outside_minialex():
    out = _fresh_python(PROBE + "threads = threading.active_count()\n"
                        "import minialex as ma\n"
                        "x = ma.Tensor(numpy.ones((2, 3, 8, 8), numpy.float32))\n"
                        "ma.functional.max_pool2d(ma.functional.relu(x), 3, 2)\n"
                        "print(before == (timeout(), os.environ.get('OPENBLAS_THREAD_TIMEOUT')))\n"
                        "print(threading.active_count() == threads)")
    assert out == ["True", "True"]


def test_tune_is_explicit_and_reports_what_it_did():
    code = PROBE + "import minialex as ma\nr = ma.cpu.tune()\nprint(sorted(r))\nprint(timeout())\nprint(r['openblas'])"
    keys, timeout, said = _fresh_python(code)
    assert keys == "['malloc', 'openblas']"
    if timeout == "None":
        assert "not OpenBLAS" in said
        pytest.skip("numpy's BLAS here is not OpenBLAS")
    assert timeout == "4" and "OPENBLAS_THREAD_TIMEOUT=4" in said
    assert _fresh_python(code, {"OPENBLAS_THREAD_TIMEOUT": "9"})[1:] == ["9", "skipped (OPENBLAS_THREAD_TIMEOUT=9 already set)"]
    assert _fresh_python(code, {"MINIALEX_TUNE_BLAS": "0"})[2] == "skipped (MINIALEX_TUNE_BLAS=0)"
