"""conv2d by Winograd on the CUDA path (kernels/winograd.cu, minialex/cuda_ops/winograd.py), run on
the CPU emulator "cuda-emu": forward and every gradient against the float64 NumPy reference
(minialex/ops/winograd.py), the public API against the CPU, the non-finite fix-ups against im2col,
the chunked batch, the empty batch, and the bounds-checked build."""
import numpy as np
import pytest

import minialex as ma
from minialex import cuda
from minialex import functional as F
from minialex.cuda_ops import winograd as kernels
from minialex.ops import conv as direct
from minialex.ops import winograd as spec

from .test_cuda import DEVICES, assert_close, run_both
from .test_winograd import kept_arrays

# Largest |float32 kernels - float64 reference| / largest |reference| allowed, by the larger tile side
# a = m + r - 1. Measured on these inputs and on 6 seeds with 16 channels: at most 2.4e-7 (a = 4),
# 1.5e-6 (a = 6), 5.5e-6 (a = 8); the bounds leave about 4x.
BOUNDS = {4: 1e-6, 5: 5e-6, 6: 5e-6, 7: 2e-5, 8: 2e-5}

CASES = [  # N, C, H, W, O, (KH, KW), padding, groups, tile: odd sizes, the last tiles partial
    (2, 3, 9, 11, 4, (3, 3), (1, 1), 1, (2, 2)),      # a = 4
    (2, 4, 13, 13, 6, (3, 3), (1, 1), 2, (4, 4)),     # a = 6, groups
    (2, 3, 10, 12, 5, (5, 5), (2, 2), 1, (2, 2)),     # a = 6
    (2, 4, 11, 9, 4, (5, 5), (2, 2), 2, (4, 4)),      # a = 8
    (2, 3, 8, 13, 4, (3, 5), (1, 2), 1, (2, 4)),      # rectangular kernel and tile, a = (4, 8)
    (1, 4, 7, 9, 2, (3, 3), (0, 0), 2, (2, 4)),       # no padding
    (3, 2, 6, 7, 3, (3, 5), (0, 1), 1, (4, 4)),       # a = (6, 8), one tile row
]


def _case_id(case):
    n, c, h, w, o, (kh, kw), (ph, pw), g, (mh, mw) = case
    return f"{kh}x{kw}-tile{mh}x{mw}-pad{ph},{pw}-g{g}"


def _inputs(case, seed=0, bias=True):
    n, c, h, w, o, kernel, padding, groups, tile = case
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, c, h, w)).astype(np.float32)
    wt = r.standard_normal((o, c // groups) + kernel).astype(np.float32)
    b = r.standard_normal(o).astype(np.float32) if bias else None
    return x, wt, b


def _relative_error(got, want):
    return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


def _run(x, w, b, padding, groups, tile, dy_seed=1):
    """y, dx, dw, db of the kernels, and dy (random, drawn once y's shape is known)."""
    y, cache = kernels.winograd_forward(x, w, b, padding, groups, tile)
    dy = np.random.default_rng(dy_seed).standard_normal(y.shape).astype(np.float32)
    return (y, *kernels.winograd_backward(dy, cache, (True, True, b is not None))), dy


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_forward_and_gradients_match_the_float64_reference(case):
    *_, kernel, padding, groups, tile = case
    x, w, b = _inputs(case)
    got, dy = _run(x, w, b, padding, groups, tile)
    y64, cache64 = spec.winograd_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                                         padding, groups, tile)
    want = (y64, *spec.winograd_backward(dy.astype(np.float64), cache64, (True, True, True)))
    bound = BOUNDS[max(tile[0] + kernel[0], tile[1] + kernel[1]) - 1]
    for name, g, r in zip(("y", "dx", "dw", "db"), got, want):
        assert g.dtype == np.float32 and g.shape == r.shape, name
        err = _relative_error(g, r)
        assert err <= bound, f"{name}: relative error {err:.3g} > {bound:.0e}"


def test_without_bias_and_only_the_gradients_asked_for():
    case = CASES[3]
    *_, padding, groups, tile = case
    x, w, _ = _inputs(case, bias=False)
    y, cache = kernels.winograd_forward(x, w, None, padding, groups, tile)
    y64, cache64 = spec.winograd_forward(x.astype(np.float64), w.astype(np.float64), None, padding, groups, tile)
    assert _relative_error(y, y64) <= BOUNDS[8]
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    for i, needs in ((0, (True, False, False)), (1, (False, True, False))):
        got = kernels.winograd_backward(dy, cache, needs)
        assert [g is not None for g in got] == list(needs), needs
        want = spec.winograd_backward(dy.astype(np.float64), cache64, needs)[i]
        assert _relative_error(got[i], want) <= BOUNDS[8], needs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tile", [None, 2, (2, 4)])  # None: the tile conv2d chooses
def test_conv2d_winograd_on_the_kernels_equals_the_cpu(device, tile):
    r = np.random.default_rng(2)
    arrays = [r.standard_normal((2, 4, 13, 11)), r.standard_normal((6, 2, 3, 3)), r.standard_normal(6)]
    (y0, g0), (y1, g1) = run_both(device, lambda x, w, b: F.conv2d(x, w, b, padding=(1, 2), groups=2,
                                                                    algorithm="winograd", tile=tile), arrays)
    assert_close(y1, y0, rtol=5e-6, what="y")
    for name, a, b in zip(("dx", "dw", "db"), g1, g0):
        assert_close(a, b, rtol=5e-6, what=name)


# ----- non-finite numbers: im2col's result wherever Winograd's is not finite -----

NONFINITE_CASE = (2, 4, 11, 10, 6, (3, 3), (1, 1), 2, (4, 4))


def _nonfinite_mismatches(got, want, what):
    """What differs between got and im2col's want: the NaN, +inf and -inf elements, or the finite values."""
    problems = []
    for kind, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        if not np.array_equal(test(got), test(want)):
            problems.append(f"{what}: {kind} at {int((test(got) != test(want)).sum())} other elements")
    finite = np.isfinite(want) & np.isfinite(got)
    if finite.any() and _relative_error(got[finite], want[finite].astype(np.float64)) > 1e-5:
        problems.append(f"{what}: finite values differ")
    return problems


def _nonfinite_problems():
    """x with an inf and a NaN (they spoil y and dw), then dy with an inf on the border (dx and dw;
    dw there is inf * 0 = NaN, from the zero padding): the kernels against im2col on the CPU."""
    *_, padding, groups, tile = NONFINITE_CASE
    x, w, b = _inputs(NONFINITE_CASE, seed=5)
    x[0, 1, 4, 5] = np.inf
    x[1, 2, 7, 2] = np.nan
    with np.errstate(invalid="ignore"):  # NumPy's BLAS (the emulator's gemm, im2col) warns of inf - inf
        (y, dx, dw, _), dy = _run(x, w, b, padding, groups, tile)
        want_y, cols_cache = direct.conv2d_forward(x, w, b, (1, 1), padding, groups)
        want_dx, want_dw, _ = direct.conv2d_backward(dy, cols_cache, (True, True, False))
        results = [(y, want_y, "y"), (dx, want_dx, "dx"), (dw, want_dw, "dw")]
        x[...] = np.random.default_rng(6).standard_normal(x.shape)
        dy[1, 3, 0, 6] = np.inf
        _, cache = kernels.winograd_forward(x, w, b, padding, groups, tile)
        dx, dw, _ = kernels.winograd_backward(dy, cache, (True, True, False))
        cols_cache = direct.conv2d_forward(x, w, b, (1, 1), padding, groups)[1]
        want_dx, want_dw, _ = direct.conv2d_backward(dy, cols_cache, (True, True, False))
    results += [(dx, want_dx, "dx (inf in dy)"), (dw, want_dw, "dw (inf in dy)")]
    problems = []
    for got, want, what in results:
        if what != "dx":  # dx does not depend on x: finite there
            assert (~np.isfinite(want)).any() and np.isfinite(want).any(), f"{what}: the case tests nothing"
        problems += _nonfinite_mismatches(got, want, what)
    return problems


def test_non_finite_results_are_the_direct_convolutions():
    assert _nonfinite_problems() == []


def test_without_the_fix_ups_the_non_finite_test_fails(monkeypatch):
    """The case above spoils whole tiles: each fix-up kernel is needed to pass it."""
    launch = cuda.launch
    for fixup, broken in (("winograd_fixup_y", "y"), ("winograd_fixup_dx", "dx (inf in dy)"),
                          ("winograd_fixup_dw", "dw")):
        monkeypatch.setattr(cuda, "launch", lambda family, name, *a, **k: None if name == fixup
                            else launch(family, name, *a, **k))
        problems = _nonfinite_problems()
        assert any(p.startswith(broken + ":") for p in problems), (fixup, problems)


# ----- the batch in chunks, the empty batch -----

def test_the_batch_in_chunks_equals_the_batch_at_once(monkeypatch):
    case = (5, 3, 9, 10, 4, (3, 5), (1, 2), 1, (4, 2))
    *_, padding, groups, tile = case
    x, w, b = _inputs(case)
    whole, _ = _run(x, w, b, padding, groups, tile)
    names, launch = [], cuda.launch
    monkeypatch.setattr(cuda, "launch", lambda family, name, *a, **k:
                        names.append(name) or launch(family, name, *a, **k))
    per_image = 6 * 6 * 4 * 3 * 5 * 4                    # AA * max(O, C) * TH * TW * 4 bytes: 8640
    monkeypatch.setattr(kernels, "TRANSIENT_BYTES", 2 * per_image)
    chunked, _ = _run(x, w, b, padding, groups, tile)
    assert names.count("winograd_output") == 3 and names.count("winograd_output_adjoint") == 3  # 2 + 2 + 1 images
    # y, dx and db are the same tile arithmetic; dw adds the chunks' dU up in another order (the
    # whole batch's dw itself is about 8e-7 from float64 here)
    for name, a, c, rtol in zip(("y", "dx", "dw", "db"), chunked, whole, (1e-6, 1e-6, BOUNDS[6], 1e-6)):
        assert_close(a, c, rtol=rtol, what=name)


def test_an_empty_batch_launches_nothing():
    x, w, b = np.zeros((0, 4, 9, 9), np.float32), np.ones((6, 2, 3, 3), np.float32), np.ones(6, np.float32)
    (y, dx, dw, db), _ = _run(x, w, b, (1, 1), 2, (4, 4))
    assert y.shape == (0, 6, 9, 9) and dx.shape == x.shape
    assert dw.shape == w.shape and not dw.any() and db.shape == (6,) and not db.any()


def test_the_kernels_pass_the_bounds_checked_build(monkeypatch):
    """Every kernel of winograd.cu, fix-ups and chunks included, with each array access checked."""
    monkeypatch.setenv("MINIALEX_EMU_DEBUG", "1")
    for case in (CASES[3], CASES[4], CASES[6]):
        test_forward_and_gradients_match_the_float64_reference(case)
    test_non_finite_results_are_the_direct_convolutions()
    test_the_batch_in_chunks_equals_the_batch_at_once(monkeypatch)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("algorithm", ["im2col", "winograd"])
def test_a_convolution_on_the_kernels_keeps_no_column_matrix(device, algorithm):
    """What the backward keeps on the CUDA path: x and w, as on the CPU (the columns, KH*KW times
    the size of x, are built again in the backward); the gradients are still the reference's."""
    r = np.random.default_rng(7)
    arrays = [r.standard_normal((3, 8, 12, 12)), r.standard_normal((16, 8, 5, 5)), r.standard_normal(16)]
    x, w, b = (ma.Tensor(a.astype(np.float32), requires_grad=True, device=device) for a in arrays)
    y = F.conv2d(x, w, b, padding=2, algorithm=algorithm)
    kept = kept_arrays(y)
    assert sum(a.nbytes for a in kept) <= x.data.nbytes + w.data.nbytes + b.data.nbytes, \
        [a.shape for a in kept]
    assert any(a is x.data for a in kept)
    (y0, g0), (y1, g1) = run_both(device, lambda x, w, b: F.conv2d(x, w, b, padding=2, algorithm=algorithm), arrays)
    assert_close(y1, y0, rtol=2e-5, what="y")
    for name, got, want in zip(("dx", "dw", "db"), g1, g0):
        assert_close(got, want, rtol=2e-5, what=name)
