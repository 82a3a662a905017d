"""Dropout's counter offset: element i of the local tensor is hashed as counter offset + i, so the
masks of a data-parallel slice of a batch are the whole batch's masks for those rows (see the
docstrings of minialex/ops/dropout.py and minialex/random.py)."""
import numpy as np
import pytest

import minialex as ma
from minialex import functional as F
from minialex import random
from minialex.ops import loops
from minialex.ops.dropout import dropout_keep_mask


def _gpu_available():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


# (device, cpu path): the NumPy reference, the fast CPU pair, the kernels on the emulator (and a GPU)
PATHS = [pytest.param(("cpu", "reference"), id="reference"), pytest.param(("cpu", "fast"), id="fast"),
         pytest.param(("cuda-emu", "reference"), id="cuda-emu"),
         pytest.param(("cuda", "reference"), id="cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
             not _gpu_available(), reason="no CUDA GPU")])]
P, SEED = 0.4, 2024


@pytest.fixture(autouse=True)
def _sample_offset_back_to_zero():
    yield
    random.set_sample_offset(0)


def _no_zeros(shape, seed):
    """float32 inputs away from 0, so y == 0 exactly where an element was dropped."""
    r = np.random.default_rng(seed)
    return ((np.abs(r.standard_normal(shape)) + 0.5) * r.choice([-1, 1], shape)).astype(np.float32)


def _run(path, x, dy, **kw):
    """(y, dx) of F.dropout(x, P, seed=SEED, **kw) on one path, for the output gradient dy."""
    device, cpu_path = path
    with ma.cpu_path(cpu_path):
        t = ma.Tensor(x, requires_grad=True, device=device)
        y = F.dropout(t, P, seed=SEED, **kw)
        y.backward(ma.Tensor(dy, device=device))
        return y.numpy(), ma.Tensor(t.grad, device=device).numpy()


def _fmix32(h):
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def _documented_keep(seed, n, p, offset=0):
    """The docstring's formula, one Python int at a time: keep element i when
    (fmix32((offset + i) * 0x9E3779B9 + fmix32(seed)) >> 8) >= round(p * 2^24), all mod 2^32."""
    keep = [(_fmix32(((offset + i) * 0x9E3779B9 + _fmix32(seed)) & 0xFFFFFFFF) >> 8) >= round(p * 2**24)
            for i in range(n)]
    return np.array(keep)


# ----- (a) a (2B, F) batch is its two (B, F) halves with offsets 0 and B*F

@pytest.mark.parametrize("path", PATHS)
def test_two_halves_with_offsets_are_the_whole_batch(path):
    b, f = 5, 131                                          # 655 elements a half: several 256-thread blocks
    x, dy = _no_zeros((2 * b, f), 1), _no_zeros((2 * b, f), 2)
    y, dx = _run(path, x, dy, offset=0)
    y0, dx0 = _run(path, x[:b], dy[:b], offset=0)
    y1, dx1 = _run(path, x[b:], dy[b:], offset=b * f)
    assert 0.3 < (y == 0).mean() < 0.5                     # p = 0.4 of the elements dropped
    np.testing.assert_array_equal(np.concatenate([y0, y1]), y)
    np.testing.assert_array_equal(np.concatenate([dx0, dx1]), dx)
    np.testing.assert_array_equal(dx == 0, y == 0)         # the backward recomputes the forward's mask
    for wrong in (0, b * f - 1, b * f + 1, b):             # no offset, off by one, rows instead of elements
        y_wrong, dx_wrong = _run(path, x[b:], dy[b:], offset=wrong)
        assert ((y_wrong == 0) != (y[b:] == 0)).any(), f"offset {wrong} gave the second half's mask"
        assert ((dx_wrong == 0) != (dx[b:] == 0)).any(), f"offset {wrong} gave the second half's backward mask"


@pytest.mark.parametrize("path", PATHS)
def test_sample_offset_gives_a_process_its_rows_of_the_whole_batch(path):
    """(b) Rank r of a data-parallel run: sample_offset_scope(k) makes a (B, ...) slice drop what the
    whole (K, ...) batch drops in rows [k, k+B); per sample, 2*3*5 elements."""
    big, k, b = 9, 4, 3
    x, dy = _no_zeros((big, 2, 3, 5), 3), _no_zeros((big, 2, 3, 5), 4)
    y, dx = _run(path, x, dy)
    with random.sample_offset_scope(k):
        y_slice, dx_slice = _run(path, x[k:k + b], dy[k:k + b])
    np.testing.assert_array_equal(y_slice, y[k:k + b])
    np.testing.assert_array_equal(dx_slice, dx[k:k + b])
    assert ((y_slice == 0) != (y[:b] == 0)).any()         # and not the first rows' mask
    assert random.sample_offset() == 0                     # the scope put the old offset back


def test_each_process_with_the_same_generator_state_reproduces_one_process():
    """Two 'ranks' with the same manual_seed draw the same dropout seed; with their sample offsets
    their outputs stack into the single-process output, layer after layer."""
    x = _no_zeros((6, 40), 5)
    model = ma.nn.Sequential(ma.nn.Dropout(0.5), ma.nn.Dropout(0.3))
    ma.manual_seed(8)
    whole = model(ma.Tensor(x)).numpy()
    parts = []
    for rank in range(2):
        ma.manual_seed(8)
        with random.sample_offset_scope(3 * rank):
            parts.append(model(ma.Tensor(x[3 * rank:3 * rank + 3])).numpy())
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_the_scope_restores_the_previous_offset_even_after_an_error():
    random.set_sample_offset(5)
    with random.sample_offset_scope(2):
        assert random.sample_offset() == 2
        with random.sample_offset_scope(0):
            assert random.sample_offset() == 0
        assert random.sample_offset() == 2
    assert random.sample_offset() == 5
    with pytest.raises(RuntimeError), random.sample_offset_scope(7):
        raise RuntimeError("inside")
    assert random.sample_offset() == 5


# ----- (c) offset 0 is today's mask; the counter is offset + i, mod 2^32

@pytest.mark.parametrize("path", PATHS)
def test_default_offset_is_the_mask_of_before(path):
    x = _no_zeros((4, 75), 6)
    want = _documented_keep(SEED, x.size, P).reshape(x.shape)
    for kw in ({}, {"offset": 0}, {"offset": None}):
        y, dx = _run(path, x, x, **kw)
        np.testing.assert_array_equal(y != 0, want)
        np.testing.assert_array_equal(dx != 0, want)
        np.testing.assert_allclose(y[want], x[want] / np.float32(1 - P), rtol=1e-6)


def test_the_counter_is_offset_plus_index_mod_2_to_the_32():
    for offset in (1, 300, 2**31 + 7, 2**32 - 3):          # the last one wraps past 2^32 inside the tensor
        want = _documented_keep(99, 35, 0.5, offset).reshape(5, 7)
        np.testing.assert_array_equal(dropout_keep_mask(99, (5, 7), 0.5, offset), want)
        assert (loops.dropout_forward(np.ones((5, 7)), 0.5, 99, offset)[0] != 0).tolist() == want.tolist()
    np.testing.assert_array_equal(dropout_keep_mask(99, (5, 7), 0.5, 2**32 + 11),
                                  dropout_keep_mask(99, (5, 7), 0.5, 11))
    x = _no_zeros((5, 7), 7)
    for path in (("cpu", "reference"), ("cpu", "fast"), ("cuda-emu", "reference")):
        y, _ = _run(path, x, x, offset=2**32 - 3)
        np.testing.assert_array_equal(y != 0, _documented_keep(SEED, 35, P, 2**32 - 3).reshape(5, 7))
        y_big, _ = _run(path, x, x, offset=2**32 + 11)      # an explicit offset is taken mod 2^32
        y_small, _ = _run(path, x, x, offset=11)
        np.testing.assert_array_equal(y_big, y_small)


def test_the_reference_equals_the_loops_with_an_offset():
    x, dy = np.random.default_rng(9).standard_normal((3, 11)), np.random.default_rng(10).standard_normal((3, 11))
    t = ma.Tensor(x, requires_grad=True)
    with ma.cpu_path("reference"):
        y = F.dropout(t, 0.3, seed=5, offset=1000)
    y.backward(dy)
    y_loops, cache = loops.dropout_forward(x, 0.3, 5, 1000)
    np.testing.assert_allclose(y.data, y_loops, rtol=1e-15)
    np.testing.assert_allclose(t.grad, loops.dropout_backward(dy, cache)[0], rtol=1e-15)


# ----- (d) argument errors

@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", None, np.float64(2.0)])
def test_set_sample_offset_refuses_anything_but_an_int_at_least_0(bad):
    random.set_sample_offset(4)
    with pytest.raises(ValueError, match=r"^set_sample_offset: k expected an integer >= 0, got "):
        random.set_sample_offset(bad)
    with pytest.raises(ValueError, match=r"^set_sample_offset: k expected"):
        with random.sample_offset_scope(bad):
            pass
    assert random.sample_offset() == 4                     # unchanged by the refusals
    random.set_sample_offset(np.int64(6))
    assert random.sample_offset() == 6 and type(random.sample_offset()) is int


@pytest.mark.parametrize("bad", [-1, 2.0, True, "0", np.float32(1)])
def test_dropout_refuses_an_offset_that_is_not_an_int_at_least_0(bad):
    x = ma.Tensor(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"^dropout: offset expected an integer >= 0"):
        F.dropout(x, 0.5, seed=1, offset=bad)
    with pytest.raises(ValueError, match=r"^dropout: offset expected"):
        F.dropout(x, 0.5, training=False, offset=bad)     # checked in eval too, like p
