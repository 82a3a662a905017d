"""float16 on the CUDA path: the emulator's cuda_fp16.h (tests/half_kernels.cu) against an exact
reference and NumPy, its <mma.h> (tests/wmma_kernels.cu), and cuda.gemm on float16 operands in
every mode ("blas", "tiled", "wmma") against a float64 product of the same halves."""
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from minialex import cuda

HALF_KERNELS = Path(__file__).with_name("half_kernels.cu")
WMMA_KERNELS = Path(__file__).with_name("wmma_kernels.cu")
POSITIVE = np.arange(0x7c00, dtype=np.uint16).view(np.float16).astype(np.float64)  # POSITIVE[bits]: every finite half >= 0
EVERY_HALF = np.arange(65536, dtype=np.uint16).view(np.float16)


def nearest_half(values):
    """The bits of the half nearest to each float64, ties to the even bit pattern, 65520 and above to
    infinity, NaN to 0x7fff: exact, since every half and every midpoint of two neighbours is a float64."""
    with np.errstate(invalid="ignore"):                  # a signalling NaN among the float32 samples
        v = np.asarray(values, np.float64)
    mag = np.abs(v)
    grid = np.append(POSITIVE, 65536.0)                  # 65536 stands for infinity (0x7c00), the even neighbour of 65504
    hi = np.minimum(np.searchsorted(grid, mag), len(grid) - 1)     # grid[hi - 1] < mag <= grid[hi]
    lo = np.maximum(hi - 1, 0)
    mid = (grid[lo] + grid[hi]) / 2
    bits = np.where(mag < mid, lo, np.where(mag > mid, hi, np.where(hi % 2 == 0, hi, lo)))
    bits = np.where(mag == grid[hi], hi, bits)
    bits = np.where(mag >= 65520, 0x7c00, bits) | (np.signbit(v).astype(np.int64) << 15)
    return np.where(np.isnan(v), 0x7fff, bits).astype(np.uint16)


def nearest_half_exact(x):
    """nearest_half of an exact rational: float(x) first, then the nearest of its neighbours by exact distance."""
    guess = int(nearest_half(float(x))) & 0x7fff
    value = lambda b: Fraction(65536) if b == 0x7c00 else Fraction(float(POSITIVE[b]))    # noqa: E731
    best = min((b for b in (guess - 1, guess, guess + 1) if 0 <= b <= 0x7c00),
               key=lambda b: (abs(value(b) - abs(x)), b % 2))
    return best | (0x8000 if x < 0 else 0)


def run(kernel, name, n, *args, **options):
    cuda.launch(kernel, name, ((n + 255) // 256,), (256,), *args, np.int32(n), **options)


def bits(h):
    return np.asarray(h, np.float16).view(np.uint16)


def random_halves(rng, n, finite=True):
    top = 0x7c00 if finite else 0x8000
    return ((rng.integers(0, top, n) | (rng.integers(0, 2, n) << 15)).astype(np.uint16)).view(np.float16)


def assert_same_halves(got, want_bits, what):
    """Bit for bit, except that any NaN equals any NaN; a zero's sign is not compared where want is zero."""
    got_bits, want_bits = bits(got), np.asarray(want_bits, np.uint16)
    nan = np.isnan(want_bits.view(np.float16))
    same = (got_bits == want_bits) | (nan & np.isnan(got_bits.view(np.float16)))
    same |= ((want_bits & 0x7fff) == 0) & ((got_bits & 0x7fff) == 0)
    bad = np.flatnonzero(~same)
    assert bad.size == 0, f"{what}: {bad.size} wrong, first at {bad[0]}: got {got_bits[bad[0]]:#06x}, want " \
                          f"{want_bits[bad[0]]:#06x}"


# ----- conversions -----

def test_every_half_goes_to_float_and_back_unchanged():
    y, f = np.zeros(65536, np.float16), np.zeros(65536, np.float32)
    run(HALF_KERNELS, "half_roundtrip", 65536, y, f, EVERY_HALF)
    nan = np.isnan(EVERY_HALF)
    assert nan.sum() == 2046
    np.testing.assert_array_equal(f[~nan].view(np.uint32), EVERY_HALF[~nan].astype(np.float32).view(np.uint32))
    assert np.isnan(f[nan]).all()
    np.testing.assert_array_equal(bits(y)[~nan], bits(EVERY_HALF)[~nan])
    assert (bits(y)[nan] == 0x7fff).all()                      # the GPU's canonical NaN


def float_samples(rng):
    """Random float32 bit patterns, every midpoint of two neighbouring halves (ties) and the floats
    just beside them, and the edges: the overflow threshold 65520, 2^-25 (half the smallest
    subnormal), zeros, infinities, NaN."""
    random = rng.integers(0, 2**32, 200000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    small = rng.uniform(-1e-4, 1e-4, 20000).astype(np.float32)          # the subnormal range
    mids = ((POSITIVE[:-1] + POSITIVE[1:]) / 2).astype(np.float32)
    mids = np.concatenate([mids, -mids, [65520.0]]).astype(np.float32)
    beside = np.concatenate([np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf))])
    edges = np.array([65504, 65519.996, 65520, 70000, 2.0**-25, 2.0**-24, 3 * 2.0**-26, 0.0, -0.0, np.inf, -np.inf,
                      np.nan, 1e-45, -1e-45], np.float32)
    edges = np.concatenate([edges, [np.nextafter(np.float32(2.0**-25), np.float32(1))]])
    return np.concatenate([random, small, mids, beside, edges]).astype(np.float32)


def test_float_to_half_rounds_to_nearest_even_like_numpy():
    x = float_samples(np.random.default_rng(0))
    want = nearest_half(x)
    with np.errstate(over="ignore", invalid="ignore"):
        assert_same_halves(x.astype(np.float16), want, "NumPy's float32 -> float16")   # NumPy rounds correctly
    y = np.zeros(3 * x.size, np.float16)
    run(HALF_KERNELS, "half_from_float", x.size, y, x, debug=False)
    for k, what in enumerate(("__float2half_rn", "__float2half", "__half(float)")):
        assert_same_halves(y[k * x.size:(k + 1) * x.size], want, what)
    ties = x[np.isin(x, ((POSITIVE[:-1] + POSITIVE[1:]) / 2).astype(np.float32))]
    half_up = nearest_half(np.nextafter(ties.astype(np.float64), np.inf))      # what rounding ties up would give
    assert (half_up != nearest_half(ties)).sum() > 10000                       # so the ties tell the rules apart
    by_value = dict(zip(x.tolist()[-15:], bits(y[-15:]).tolist()))
    assert by_value[65520.0] == 0x7c00 and by_value[65519.99609375] == 0x7bff and by_value[2.0**-25] == 0
    assert by_value[float(np.nextafter(np.float32(2.0**-25), np.float32(1)))] == 1


# ----- arithmetic -----

def binary_samples(rng):
    """Random finite pairs, random pairs of any bits (NaN, infinity), and ties: a + 1 for a in
    [2048, 4096) where halves are 2 apart, 0.5 * an odd subnormal, the overflow edge 65504 + 16."""
    a, b = random_halves(rng, 30000), random_halves(rng, 30000)
    any_a, any_b = random_halves(rng, 5000, False), random_halves(rng, 5000, False)
    tie_a = rng.choice(POSITIVE[(POSITIVE >= 2048) & (POSITIVE < 4096)], 2000)
    odd_subnormal = POSITIVE[1:1024:2]
    a = np.concatenate([a, any_a, tie_a, np.full(odd_subnormal.size, 0.5), [65504, 65504, -65504, 0, 0]])
    b = np.concatenate([b, any_b, np.ones(2000), odd_subnormal, [16, 8, -16, 0, -0.0]])
    return a.astype(np.float16), b.astype(np.float16)


def test_half_arithmetic_rounds_once_like_numpy():
    a, b = binary_samples(np.random.default_rng(1))
    n = a.size
    out = np.zeros(14 * n, np.float16)
    run(HALF_KERNELS, "half_binary", n, out, a, b, debug=False)
    out = out.reshape(14, n)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(all="ignore"):
        for k, op in enumerate((np.add, np.subtract, np.multiply)):   # exact in float64: one rounding is the answer
            want = nearest_half(op(a64, b64))
            assert_same_halves(op(a, b), want, f"NumPy's float16 {op.__name__}")
            assert_same_halves(out[k], want, f"__h{op.__name__[:3]}")
            assert_same_halves(out[4 + k], want, f"operator for {op.__name__}")
        assert_same_halves(out[3], bits(np.divide(a, b)), "__hdiv against NumPy")
        assert_same_halves(out[7], bits(np.divide(a, b)), "operator/ against NumPy")
        assert_same_halves(out[13], nearest_half(a64 + b64), "+=")
        sums, products = (a64 + b64)[35000:37000], (a64 * b64)[37000:37512]   # the ties
    assert (nearest_half(np.nextafter(sums, np.inf)) != nearest_half(sums)).sum() > 500       # half up differs
    assert (nearest_half(np.nextafter(products, np.inf)) != nearest_half(products)).sum() > 100
    exact = [nearest_half_exact(Fraction(float(x)) / Fraction(float(y))) for x, y in zip(a64[:3000], b64[:3000]) if y]
    assert_same_halves(out[3][:3000][b64[:3000] != 0], exact, "__hdiv against exact division")
    np.testing.assert_array_equal(bits(out[10]), bits(a) ^ 0x8000)
    np.testing.assert_array_equal(bits(out[11]), bits(a) & 0x7fff)
    np.testing.assert_array_equal(bits(out[12]), bits(a) ^ 0x8000)


def test_hfma_rounds_the_exact_a_times_b_plus_c_once():
    rng = np.random.default_rng(2)
    n = 4000
    a, b, c = random_halves(rng, n), random_halves(rng, n), random_halves(rng, n)
    with np.errstate(over="ignore"):                                # cancellation: the low bits matter
        c[:1000] = (-(a[:1000].astype(np.float64) * b[:1000])).astype(np.float16)
    out = np.zeros(2 * n, np.float16)
    run(HALF_KERNELS, "half_fma", n, out, a, b, c, debug=False)
    with np.errstate(all="ignore"):
        exact = [nearest_half_exact(Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z)))
                 if np.isfinite(float(x) * float(y) + float(z)) else int(nearest_half(float(x) * float(y) + float(z)))
                 for x, y, z in zip(a, b, c)]
        twice = nearest_half(nearest_half(a.astype(np.float64) * b).view(np.float16).astype(np.float64) + c)
    assert_same_halves(out[:n], exact, "__hfma")
    assert_same_halves(out[n:], exact, "__hfma2")
    assert (twice != np.array(exact, np.uint16)).sum() > 100       # rounding a * b first would fail


def test_half_comparisons_max_min_and_classification():
    rng = np.random.default_rng(3)
    a, b = random_halves(rng, 20000, False), random_halves(rng, 20000, False)
    a[:3], b[:3] = [0.0, -0.0, np.nan], [-0.0, 0.0, np.nan]
    a[3:6], b[3:6] = [np.inf, -np.inf, 1.0], [1.0, -np.inf, 1.0]
    n = a.size
    got = np.zeros(n, np.int32)
    run(HALF_KERNELS, "half_compare", n, got, a, b, debug=False)
    nan = np.isnan(a) | np.isnan(b)
    ordered = [a == b, (a != b) & ~nan, a < b, a <= b, a > b, a >= b]
    operators = [a == b, a != b, a < b, a <= b, a > b, a >= b]
    unordered = [a != b, (a == b) | nan, (a < b) | nan, (a > b) | nan]
    for k, want in enumerate(ordered + operators + unordered + [np.isnan(a)]):
        np.testing.assert_array_equal((got >> k) & 1, want.astype(np.int32), err_msg=f"comparison bit {k}")
    np.testing.assert_array_equal((got >> 17) & 3, np.where(np.isinf(a), np.where(a > 0, 2, 0), 1))
    out = np.zeros(14 * n, np.float16)
    run(HALF_KERNELS, "half_binary", n, out, a, b, debug=False)
    hmax, hmin = out[8 * n:9 * n], out[9 * n:10 * n]
    both_nan = np.isnan(a) & np.isnan(b)
    assert_same_halves(hmax[~both_nan], bits(np.fmax(a, b))[~both_nan], "__hmax")   # a NaN loses to a number
    assert_same_halves(hmin[~both_nan], bits(np.fmin(a, b))[~both_nan], "__hmin")
    assert (bits(hmax[both_nan]) == 0x7fff).all() and (bits(hmin[both_nan]) == 0x7fff).all()
    assert bits(hmax[:2]).tolist() == [0x0000, 0x0000] and bits(hmin[:2]).tolist() == [0x8000, 0x8000]   # +0 > -0


def test_half2_operations_are_the_half_ones_on_each_half():
    rng = np.random.default_rng(4)
    a, b = random_halves(rng, 5000), random_halves(rng, 5000)
    n = a.size
    pairs, singles = np.zeros(14 * n, np.float16), np.zeros(14 * n, np.float16)
    run(HALF_KERNELS, "half2_ops", n, pairs, a, b, debug=False)
    run(HALF_KERNELS, "half_binary", n, singles, a, b, debug=False)
    pairs, singles = pairs.reshape(14, n), singles.reshape(14, n)
    swapped = np.zeros(14 * n, np.float16)
    run(HALF_KERNELS, "half_binary", n, swapped, b, a, debug=False)
    swapped = swapped.reshape(14, n)
    for op, row in enumerate((0, 1, 2, 3, 8, 2)):                 # add sub mul div max, and operator*
        assert_same_halves(pairs[2 * op], bits(singles[row]), f"__half2 op {op}, low half")
        assert_same_halves(pairs[2 * op + 1], bits(swapped[row]), f"__half2 op {op}, high half")
    np.testing.assert_array_equal(bits(pairs[12]), bits(a))       # __half22float2 and back
    np.testing.assert_array_equal(pairs[13], np.ones(n, np.float16))


def test_half_scalar_and_array_arguments_are_checked():
    x = np.array([1, 2, 3, -4.5], np.float16)
    y = np.zeros(4, np.float16)
    run(HALF_KERNELS, "half_scale", 4, y, x, np.float16(1.5))
    np.testing.assert_array_equal(y, x * np.float16(1.5))
    assert cuda.signatures(HALF_KERNELS)["half_scale"][2] == ("s", "__half", False)
    with pytest.raises(TypeError, match=r"half_scale: parameter s \(__half\) expected np.float16, got numpy.float32"):
        run(HALF_KERNELS, "half_scale", 4, y, x, np.float32(1.5))
    with pytest.raises(TypeError, match=r"half_scale: parameter x \(__half\*\) expected a float16 array, got float32"):
        run(HALF_KERNELS, "half_scale", 4, y, x.astype(np.float32), np.float16(1.5))


# What compiles with cuda_fp16.h compiles on the emulator, and what is ambiguous there (a __half
# converts to float and a float to __half: h * 2.0f is __half * __half or float * float) is
# ambiguous here: checked by overload resolution itself (SFINAE), here and with NVRTC (test_nvrtc).
API_PROBE = r'''
#include <cuda_fp16.h>
#define EXPRESSION_COMPILES(name, expression) \
    template <class H, class = void> struct name { enum { value = 0 }; }; \
    template <class H> struct name<H, decltype((void)(expression))> { enum { value = 1 }; };
EXPRESSION_COMPILES(half_times_float, *(H*)0 * 2.0f)
EXPRESSION_COMPILES(half_plus_int, *(H*)0 + 1)
EXPRESSION_COMPILES(half_minus_float, *(H*)0 - 1.0f)
EXPRESSION_COMPILES(half_above_int, *(H*)0 > 0)
EXPRESSION_COMPILES(half_above_float, *(H*)0 > 0.0f)
EXPRESSION_COMPILES(half_times_half, *(H*)0 * *(H*)0)
EXPRESSION_COMPILES(half_above_half, *(H*)0 > *(H*)0)
static_assert(!half_times_float<__half>::value && !half_plus_int<__half>::value && !half_minus_float<__half>::value,
              "cuda_fp16.h leaves __half (op) float and __half (op) int ambiguous");
static_assert(!half_above_int<__half>::value && !half_above_float<__half>::value, "and the comparisons too");
static_assert(half_times_half<__half>::value && half_above_half<__half>::value, "__half (op) __half is fine");

extern "C" __global__ void api_probe(float* __restrict__ y, const __half* __restrict__ x, int n)
{
    __half h = x[0];
    float f = h;
    int i = h;
    unsigned u = h;
    double d = h;
    bool b = h;
    h = 1.5f;
    h += 1.0f;
    h++;
    __half r = -h, z = 0, q = 0.5, p = __float2half(2.0f) * h, s = h * (__half)2.0f, t = h / __half(3);
    __half arr[4] = {};
    half2 v = make_half2(h, h);
    __half2 w = __half2(h, r);
    float2 f2 = __half22float2(__halves2half2(h, h));
    if (h) f += 1.0f;
    y[0] = f + i + u + (float)d + b + (float)(r + z + q + p + s + t + arr[0] + __habs(h) + __hfma(h, h, h)) +
           __low2float(v) + __high2float(w) + f2.x + (float)h * 2.0f + __half2float(__hmax(h, r));
}
'''


def test_the_emulators_cuda_fp16_accepts_and_refuses_what_cuda_does(tmp_path):
    path = tmp_path / "probe.cu"
    path.write_text(API_PROBE)                                       # the static_asserts run as it compiles
    y = np.zeros(1, np.float32)
    cuda.launch(path, "api_probe", (1,), (1,), y, np.array([0.25], np.float16), np.int32(1))
    # h = 3.5 after its updates; the half sum -3.5 + 0 + 0.5 + 7 + 7 + 1.1669921875 + 0 + 3.5 + 15.75 rounds
    # at every step: 12.1669921875 to 12.1640625, and 31.4140625 (a tie) to 31.40625
    assert y[0] == pytest.approx(1.25 + 0.25 + 1 + 31.40625 + 3.5 - 3.5 + 3.5 + 7 + 3.5, abs=1e-5)


# ----- <mma.h>: the warp matrix functions -----

def test_wmma_fragments_multiply_exactly_and_accumulate_in_float():
    rng = np.random.default_rng(5)
    warps = 6                                                          # 2 blocks of 3 warps
    a, b = random_halves(rng, warps * 256).reshape(warps, 16, 16), random_halves(rng, warps * 256).reshape(warps, 16, 16)
    a, b = (np.clip(x.astype(np.float32), -8, 8).astype(np.float16) for x in (a, b))
    c = rng.standard_normal((warps, 16, 16)).astype(np.float32)
    d, num = np.zeros((warps, 16, 16), np.float32), np.zeros(3, np.int32)
    cuda.launch(WMMA_KERNELS, "wmma_16x16x16", (2,), (96,), d, a, b.transpose(0, 2, 1).copy(), c, num)   # B column-major
    want = 2 * (a.astype(np.float64) @ b.astype(np.float64) + c)
    float_sum_bound = 2 * 17 * 2.0**-24 * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)) + np.abs(c))
    assert (np.abs(d.transpose(0, 2, 1) - want) <= float_sum_bound).all()   # D stored column-major; half sums fail
    assert num.tolist() == [8, 8, 8]                                   # 256 elements over 32 threads
    a = rng.standard_normal((2, 32, 16)).astype(np.float16)
    b = rng.standard_normal((2, 16, 8)).astype(np.float16)
    d = np.zeros((2, 32, 8), np.float16)
    cuda.launch(WMMA_KERNELS, "wmma_32x8x16", (1,), (64,), d, a.transpose(0, 2, 1).copy(), b)  # A column-major
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert np.abs(d - exact).max() <= 0.5 * np.spacing(np.abs(exact).astype(np.float16)).max()  # rounded once
    a, b = rng.standard_normal((1, 8, 16)).astype(np.float16), rng.standard_normal((1, 16, 32)).astype(np.float16)
    d = np.zeros((1, 8, 32), np.float32)
    cuda.launch(WMMA_KERNELS, "wmma_8x32x16", (1,), (32,), d, a, b)
    np.testing.assert_allclose(d, a.astype(np.float64) @ b.astype(np.float64) + 1, rtol=1e-6, atol=1e-6)


def test_wmma_loads_from_any_array_offset_a_gpu_would_align(tmp_path):
    """A NumPy array is only 16-byte aligned; a GPU's (cudaMalloc, CuPy) 256: alignment is counted from
    the array's start, so a kernel that loads straight from global memory runs as on a GPU."""
    buffer = np.zeros(256 + 16, np.float16)
    start = (16 - buffer.ctypes.data % 32) % 32 // 2                  # an address 16 bytes past a 32-byte boundary
    a = buffer[start:start + 256]
    assert a.ctypes.data % 32 == 16
    a[:] = 1.0
    b = np.ones(256, np.float16)
    d, num = np.zeros(256, np.float32), np.zeros(3, np.int32)
    cuda.launch(WMMA_KERNELS, "wmma_16x16x16", (1,), (32,), d, a, b, np.zeros(256, np.float32), num, isolate=False)
    np.testing.assert_array_equal(d, np.full(256, 32.0, np.float32))


@pytest.mark.parametrize("how, block, message", [
    (1, 32, r"wmma::load_matrix_sync: the pointer must be 256-bit \(32-byte\) aligned"),
    (2, 32, r"wmma::load_matrix_sync: ldm must be a multiple of 16 bytes \(8 elements of 2 bytes\), got 12"),
    (3, 32, r"wmma::load_matrix_sync: the threads of a warp passed different arguments \(lane 0: \w+, lane 5: "),
    (4, 32, r"wmma::load_matrix_sync: thread 7 of the block \(lane 7 of its warp\) did not call it"),
    (5, 32, r"wmma::store_matrix_sync: the pointer must be 256-bit"),
    (0, 48, r"wmma::load_matrix_sync: threads 32 to 47 of the block make a warp of 16; it needs all 32"),
])
def test_wmma_misuse_is_an_error_naming_the_call(how, block, message):
    d = np.zeros(272, np.float32)
    with pytest.raises(RuntimeError, match=message):
        cuda.launch(WMMA_KERNELS, "wmma_misuse", (1,), (block,), d, np.int32(how))
    cuda.launch(WMMA_KERNELS, "wmma_misuse", (1,), (64,), d, np.int32(0))
    np.testing.assert_array_equal(d[:256], np.full(256, 16.0, np.float32))   # ones times ones, 16 deep


# ----- cuda.gemm on float16 operands -----

GEMM_MODES = ["blas", "tiled", "wmma"]


@pytest.fixture
def gemm_mode(request):
    previous = cuda.get_gemm()
    cuda.set_gemm(request.param)
    yield request.param
    cuda.set_gemm(previous)


def half_accumulated(a, b):
    """A @ B summed in float16, k after k: what a GEMM that accumulates in half gives."""
    c = np.zeros((a.shape[0], b.shape[1]), np.float16)
    for k in range(a.shape[1]):
        c = (c + a[:, k:k + 1].astype(np.float16) * b[k:k + 1, :]).astype(np.float16)
    return c


def assert_gemm_close(c, a64, b64, what):
    """float32 C within float32 summation error of the float64 product of the halves (normwise);
    float16 C within half a float16 unit of it, plus that (rounded once at the end)."""
    want = a64 @ b64
    scale = np.abs(want).max()
    err = np.abs(c.astype(np.float64) - want)
    if c.dtype == np.float32:
        assert err.max() <= 2e-5 * scale, f"{what}: error {err.max() / scale:.3g} of the largest"
    else:
        ulp = np.spacing(np.abs(want).astype(np.float16)).astype(np.float64)
        assert (err <= 0.5 * ulp + 2e-5 * scale).all(), f"{what}: {(err > 0.5 * ulp + 2e-5 * scale).sum()} wrong"


@pytest.mark.parametrize("gemm_mode", GEMM_MODES, indirect=True)
@pytest.mark.parametrize("c_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", [(37, 53, 29), (1, 17, 1), (16, 16, 16), (33, 1500, 35)])
def test_float16_gemm_accumulates_in_float32(gemm_mode, c_dtype, shape):
    m, k, n = shape
    r = np.random.default_rng(6)
    a, b = r.standard_normal((m, k)).astype(np.float16), r.standard_normal((k, n)).astype(np.float16)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    c = np.full((m, n), np.nan, c_dtype)
    cuda.gemm(c, a, b, m, n, k, (k, 1), (n, 1))
    assert_gemm_close(c, a64, b64, f"{gemm_mode} A @ B")
    ct = np.full((n, m), np.nan, c_dtype)                     # (A @ B)^T = B^T A^T through swapped strides
    cuda.gemm(ct, b, a, n, m, k, (1, n), (1, k))
    assert_gemm_close(ct, b64.T, a64.T, f"{gemm_mode} B^T @ A^T")
    batch_a = r.standard_normal((3, m, k)).astype(np.float16)  # three products, B shared
    cb = np.full((3, m, n), np.nan, c_dtype)
    cuda.gemm(cb, batch_a, b, m, n, k, (k, 1), (n, 1), batch=3, a_batch=m * k, c_batch=m * n)
    for z in range(3):
        assert_gemm_close(cb[z], batch_a[z].astype(np.float64), b64, f"{gemm_mode} batch {z}")
    if k >= 1000:                                             # and a half sum would not pass
        with pytest.raises(AssertionError):
            assert_gemm_close(half_accumulated(a, b).astype(c_dtype), a64, b64, "half sums")


def test_wmma_mode_takes_float32_operands_to_blas():
    r = np.random.default_rng(7)
    a, b = r.standard_normal((19, 23)).astype(np.float32), r.standard_normal((23, 11)).astype(np.float32)
    results = []
    previous = cuda.get_gemm()
    try:
        for mode in ("blas", "wmma"):
            cuda.set_gemm(mode)
            c = np.zeros((19, 11), np.float32)
            cuda.gemm(c, a, b, 19, 11, 23, (23, 1), (11, 1))
            results.append(c)
    finally:
        cuda.set_gemm(previous)
    np.testing.assert_array_equal(results[0], results[1])


def test_float16_gemm_refuses_other_dtypes():
    a = np.zeros(4, np.float16)
    with pytest.raises(TypeError, match="gemm: float16 operands expected b float16 and c float16 or float32, got "
                                        "a float16, b float32, c float32"):
        cuda.gemm(np.zeros(4, np.float32), a, np.zeros(4, np.float32), 2, 2, 2, (2, 1), (2, 1))
    with pytest.raises(TypeError, match="c float64"):
        cuda.gemm(np.zeros(4), a, a, 2, 2, 2, (2, 1), (2, 1))
    with pytest.raises(ValueError, match="set_gemm: mode expected 'blas', 'tiled' or 'wmma', got 'tensor'"):
        cuda.set_gemm("tensor")


def cublas_model(op_x, op_y, rows, cols, depth, x, ld_x, y, ld_y):
    """What cublasGemmEx computes, column-major: op(X) (rows x depth) times op(Y) (depth x cols),
    X stored column-major with leading dimension ld_x, as is (op "N") or transposed (op "T")."""
    def operand(flat, op, r, c, ld):
        shape = (r, c) if op == "N" else (c, r)
        stored = np.lib.stride_tricks.as_strided(flat, shape, (flat.itemsize, ld * flat.itemsize))
        return stored if op == "N" else stored.T
    return operand(x, op_x, rows, depth, ld_x) @ operand(y, op_y, depth, cols, ld_y)


@pytest.mark.parametrize("m, n, k", [(5, 7, 3), (1, 7, 3), (5, 1, 3), (5, 7, 1), (1, 1, 1)])
@pytest.mark.parametrize("a_transposed", [False, True])
@pytest.mark.parametrize("b_transposed", [False, True])
def test_the_cublas_operands_say_what_gemm_means(m, n, k, a_transposed, b_transposed):
    """The GPU's float16 'blas' path hands cuBLAS (column-major) B first and A second (C^T = B^T A^T):
    checked here against a NumPy model of cuBLAS, for every layout the layers use and dimensions of 1."""
    r = np.random.default_rng(8)
    a, b = r.standard_normal((m, k)), r.standard_normal((k, n))
    a_flat, a_mk = (a.T.ravel(), (1, m)) if a_transposed else (a.ravel(), (k, 1))
    b_flat, b_kn = (b.T.ravel(), (1, k)) if b_transposed else (b.ravel(), (n, 1))
    (op_b, ld_b), (op_a, ld_a) = cuda._cublas_operand(k, n, b_kn), cuda._cublas_operand(m, k, a_mk)
    assert ld_b >= max(1, n if op_b == "N" else k) and ld_a >= max(1, k if op_a == "N" else m)   # cuBLAS's rule
    c_transposed = cublas_model(op_b, op_a, n, m, k, b_flat, ld_b, a_flat, ld_a)     # column-major (n, m), ld n
    np.testing.assert_allclose(c_transposed.T, a @ b, rtol=1e-12)
    assert cuda._cublas_operand(4, 5, (10, 2)) is None                             # neither layout: copied
    copy, strides, batch_stride = cuda._contiguous(np, np.arange(40.0), (4, 5), (10, 2), 1, 0)
    np.testing.assert_array_equal(copy.reshape(4, 5), np.arange(40.0)[::2].reshape(4, 5))
    assert strides == (5, 1) and batch_stride == 0


@pytest.mark.parametrize("gemm_mode", ["tiled", "wmma"], indirect=True)
def test_the_float16_kernels_stay_inside_their_arrays_and_stride_over_row_tiles(gemm_mode, monkeypatch):
    """The bounds-checked build (every access checked against its array) on edge tiles, with the
    grid 2 blocks high so the kernels loop over the row tiles past it."""
    monkeypatch.setenv("MINIALEX_EMU_DEBUG", "1")
    monkeypatch.setattr(cuda, "MAX_GRID", (2**31 - 1, 2, 65535))
    r = np.random.default_rng(9)
    m, k, n = 100, 19, 21
    a, b = r.standard_normal((m, k)).astype(np.float16), r.standard_normal((k, n)).astype(np.float16)
    for c_dtype in (np.float32, np.float16):
        c = np.full((m, n), np.nan, c_dtype)
        cuda.gemm(c, a, b, m, n, k, (k, 1), (n, 1))
        assert_gemm_close(c, a.astype(np.float64), b.astype(np.float64), f"{gemm_mode} {np.dtype(c_dtype).name}")
