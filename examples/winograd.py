"""Winograd's minimal filtering, worked through with numbers you can check by hand.

    python examples/winograd.py
    python examples/winograd.py --seed 3      # another random layer in part 4

Four parts, printed as they go:
1. One dimension, F(2, 3): two outputs of a 3-tap correlation with 4 multiplications instead of 6,
   written out product by product with the matrices of winograd_matrices(2, 3).
2. How many multiplications F(2, 3), F(4, 3), F(2, 5) and F(4, 5) save in 1-D and 2-D, and what
   is left of the saving on AlexNet's 13x13 maps, where the last tiles overhang the edge.
3. Two dimensions, F(2x2, 3x3): a 4x4 input tile and a 3x3 filter, every matrix printed.
4. A whole layer through F.conv2d: Winograd equals im2col in float64 up to rounding, and its
   float32 error grows with the tile.

Where the matrices come from (Toom-Cook interpolation) is derived in the docstring of
minialex/ops/winograd.py; this script only uses them. Every result is checked against the direct
computation with an assert, so a wrong matrix stops the script with an AssertionError.
"""
import argparse
from fractions import Fraction

import numpy as np

import minialex as ma
from minialex import functional as F
from minialex.ops.winograd import POINTS, tiles, winograd_matrices


# ----- printing numbers as a student would write them -----

def frac(v):
    """A float that is a small fraction (the matrices' 1/2, U's 1/4) as text: 3, -1/2, 1/4."""
    return str(Fraction(float(v)).limit_denominator(1000))


def show(name, a):
    """Print a matrix (or vector) with its entries as fractions, columns aligned."""
    rows = np.atleast_2d(a)
    cells = [[frac(v) for v in row] for row in rows]
    width = max(len(c) for row in cells for c in row)
    print(f"  {name} =")
    for row in cells:
        print("      [" + "  ".join(c.rjust(width) for c in row) + "]")


def combination(row, names, times=" "):
    """A row of a matrix as a linear combination: [-1, 0, 1, 0] with d0..d3 -> '-d0 + d2'
    (with the numbers instead of the names, times="*": [1/2, 1/2] with 2, 1 -> '1/2*2 + 1/2*1')."""
    terms = []
    for c, name in zip(row, names):
        if c == 0:
            continue
        coefficient = {1: "", -1: "-"}.get(c, frac(c) + times)
        terms.append(f"{coefficient}{name}")
    return " + ".join(terms).replace("+ -", "- ") if terms else "0"


def numbers(v):
    """Values to put in a formula: negative ones in parentheses, so that '-(-2)' reads right."""
    return [f"({frac(x)})" if x < 0 else frac(x) for x in v]


def vector(v):
    return "[" + ", ".join(frac(x) for x in np.ravel(v)) + "]"


def point_name(p):
    return "infinity" if p is None else str(p)


# ----- 1. one dimension -----

def one_dimension():
    print("=== 1. One dimension: F(2, 3), two outputs of a 3-tap filter ===")
    d = np.array([1.0, 2.0, 3.0, 4.0])             # a = m + r - 1 = 4 inputs
    g = np.array([2.0, 1.0, 3.0])                   # r = 3 taps
    dn, gn = [f"d{i}" for i in range(4)], [f"g{k}" for k in range(3)]
    print(f"  d = {vector(d)},  g = {vector(g)}")
    print("  Correlation (as conv2d computes it): y[i] = d[i] g0 + d[i+1] g1 + d[i+2] g2")

    print("\n  Direct: 3 multiplications per output, 6 in all")
    y_direct = np.array([d[i:i + 3] @ g for i in range(2)])
    for i in range(2):
        formula = " + ".join(f"d{i + k} g{k}" for k in range(3))
        values = " + ".join(f"{frac(d[i + k])}*{frac(g[k])}" for k in range(3))
        print(f"    y{i} = {formula} = {values} = {frac(y_direct[i])}")

    at, gm, bt = winograd_matrices(2, 3)            # AT (2, 4), G (4, 3), BT (4, 4)
    points = list(POINTS[:3]) + [None]              # 0, 1, -1 and the point at infinity
    print("\n  Where the matrices come from (Toom-Cook): read g and a 2-long h as polynomials g(x), h(x).")
    print("  Their product s(x) = g(x) h(x), 4 coefficients, is fixed by its values at the points")
    print(f"  {', '.join(point_name(p) for p in points)} (at infinity: the leading coefficient), and each value is ONE")
    print("  multiplication, s(p) = g(p) h(p); interpolation gives the coefficients back. G evaluates g at")
    print("  the points (scaled for the interpolation); correlation is that polynomial product transposed,")
    print("  so AT evaluates at the points and BT interpolates. The derivation is the docstring of")
    print("  minialex/ops/winograd.py; winograd_matrices(2, 3) gives:")
    show("AT", at)
    show("G", gm)
    show("BT", bt)

    u = gm @ g                                      # (4,) the filter at the points: once per filter
    v = bt @ d                                      # (4,) the data, transformed: once per tile
    mprod = u * v                                   # (4,) the only 4 multiplications of d by g
    y_winograd = at @ mprod                         # (2,)
    show("G g", u)
    show("BT d", v)

    print("\n  Winograd: 4 multiplications, one per point (G g and BT d need only additions and halving)")
    for j in range(4):
        print(f"    m{j + 1} = ({combination(gm[j], gn)}) * ({combination(bt[j], dn)})"
              f"        the point {point_name(points[j])}")
        print(f"       = ({combination(gm[j], numbers(g), '*')}) * ({combination(bt[j], numbers(d), '*')})"
              f" = {frac(u[j])} * {frac(v[j])} = {frac(mprod[j])}")
    show("m = (G g) * (BT d)", mprod)
    print("  y = AT m:")
    names_m = [f"m{j + 1}" for j in range(4)]
    for i in range(2):
        print(f"    y{i} = {combination(at[i], names_m)} = {combination(at[i], numbers(mprod), '*')}"
              f" = {frac(y_winograd[i])}")

    assert np.array_equal(y_winograd, y_direct), (y_winograd, y_direct)
    print(f"\n  1-D check: Winograd y = {vector(y_winograd)} equals direct y = {vector(y_direct)} "
          f"(4 multiplications instead of 6)\n")


# ----- 2. counting multiplications -----

def counts():
    print("=== 2. Multiplications per output tile (per input channel and filter) ===")
    print("  F(m, r): m outputs of an r-tap filter from a = m + r - 1 inputs. 1-D: a instead of m*r;")
    print("  2-D F(m x m, r x r): a^2 instead of m^2 r^2. The transforms add and scale by constants")
    print("  (G g once per filter, BT d once per tile for all filters, AT once per tile after the sum")
    print("  over channels), so with many channels the a^2 products are what counts.")
    print(f"  {'':10}{'1-D direct':>12}{'Winograd':>10}{'fewer':>8}    {'2-D direct':>12}{'Winograd':>10}{'fewer':>8}")
    for m, r in [(2, 3), (4, 3), (2, 5), (4, 5)]:
        a = m + r - 1
        assert winograd_matrices(m, r)[2].shape == (a, a)    # a products: one per row of BT
        print(f"  F({m}, {r}){m * r:>14}{a:>10}{m * r / a:>7.2f}x    "
              f"{m * m * r * r:>12}{a * a:>10}{m * m * r * r / (a * a):>7.2f}x")

    print("\n  On a 13x13 map with 3x3 filters, padding 1 (AlexNet's conv3 - conv5), 13 is no multiple of")
    print("  the tile: the last tiles overhang the edge, and their outputs past it are computed for nothing.")
    direct = 13 * 13 * 9
    print(f"    direct        169 outputs x 9 = {direct} multiplications")
    for m in (2, 4):
        a = m + 3 - 1
        oh, ow, th, tw = tiles((1, 1, 13, 13), (1, 1, 3, 3), (1, 1), (m, m))   # as conv2d cuts the map
        assert (oh, ow, th, tw) == (13, 13, -(-13 // m), -(-13 // m))
        winograd = th * tw * a * a
        print(f"    F({m}x{m}, 3x3)  {th} x {tw} = {th * tw} tiles x {a * a} = {winograd} multiplications: "
              f"{direct / winograd:.2f}x fewer")
        print(f"                 (not {m * m * 9 / (a * a):.2f}x: {th * m} x {tw * m} = {th * m * tw * m} "
              f"outputs computed for 169 wanted)")
    print()


# ----- 3. two dimensions -----

def two_dimensions():
    print("=== 3. Two dimensions: F(2x2, 3x3), a 4x4 input tile and a 3x3 filter ===")
    print("  The 1-D algorithm along the rows and along the columns:  Y = AT [(G g G^T) * (BT d B)] A")
    d = np.array([[1.0, 2.0, 0.0, 1.0],
                  [3.0, 1.0, 2.0, 0.0],
                  [0.0, 1.0, 1.0, 2.0],
                  [2.0, 0.0, 3.0, 1.0]])           # (4, 4) input tile
    g = np.array([[1.0, 0.0, -1.0],
                  [2.0, 1.0, 0.0],
                  [1.0, -1.0, 2.0]])               # (3, 3) filter
    show("d", d)
    show("g", g)

    y_direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(2)] for i in range(2)])   # (2, 2)
    print("  Direct: y[i, j] = sum over k, l of d[i + k, j + l] g[k, l], 9 multiplications per output,"
          " 36 in all")
    show("y direct", y_direct)

    at, gm, bt = winograd_matrices(2, 3)
    u = gm @ g @ gm.T                               # (4, 4) the filter transformed: once per filter
    v = bt @ d @ bt.T                               # (4, 4) the tile transformed: BT d B
    mprod = u * v                                   # (4, 4) the only 16 multiplications of d by g
    y_winograd = at @ mprod @ at.T                  # (2, 2)
    show("U = G g G^T", u)
    show("V = BT d B", v)
    show("M = U * V  (16 multiplications)", mprod)
    show("Y = AT M A", y_winograd)

    assert np.array_equal(y_winograd, y_direct), (y_winograd, y_direct)
    print(f"  2-D check: Winograd Y = {vector(y_winograd)} equals direct y = {vector(y_direct)} "
          f"(16 multiplications instead of 36)\n")


# ----- 4. a whole layer -----

def whole_layer(seed):
    print("=== 4. A whole layer: F.conv2d, im2col against Winograd ===")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 8, 13, 13))         # (N, C, H, W) float64
    w = rng.standard_normal((16, 8, 3, 3))          # (O, C, KH, KW)
    print(f"  x {x.shape}, w {w.shape}, padding 1, seed {seed}; the error is max |y - y_exact| / max |y|,")
    print("  y_exact the float64 im2col result")

    def conv(dtype, algorithm, tile=None):
        y = F.conv2d(ma.Tensor(x.astype(dtype)), ma.Tensor(w.astype(dtype)), padding=1,
                     algorithm=algorithm, tile=tile)
        return y.numpy().astype(np.float64)         # (2, 16, 13, 13)

    exact = conv(np.float64, "im2col")
    scale = np.abs(exact).max()
    print(f"  {'algorithm':22}{'float64':>10}{'float32':>10}    largest |entry| of AT, G, BT")
    for name, algorithm, tile in [("im2col", "im2col", None), ("winograd F(2x2, 3x3)", "winograd", 2),
                                  ("winograd F(4x4, 3x3)", "winograd", 4)]:
        err64 = np.abs(conv(np.float64, algorithm, tile) - exact).max() / scale
        err32 = np.abs(conv(np.float32, algorithm, tile) - exact).max() / scale
        assert err64 < 1e-13, (name, err64)         # exact math: only float64 rounding is left
        assert err32 < 1e-4, (name, err32)          # float32: ~1e-7 to ~1e-5 depending on the tile
        entries = "" if tile is None else ", ".join(frac(np.abs(a).max()) for a in winograd_matrices(tile, 3))
        print(f"  {name:22}{err64:>10.1e}{err32:>10.1e}    {entries}".rstrip())
    print("  float64: the same numbers up to rounding, as the transforms are exact algebra. float32: the")
    print(f"  error grows with the tile. F(4, 3) needs the points {', '.join(str(p) for p in POINTS[:5])}: "
          "AT holds their powers")
    print("  up to (-2)^3 = -8 and G divides by f_j up to 15, which amplifies the rounding of the")
    print("  transformed values, and terms of opposite signs cancel in AT's sums (\"Why error grows with")
    print("  the tile\" in minialex/ops/winograd.py). That is why algorithm=\"auto\" takes only F(2x2, 3x3).")
    print("  Layer check: Winograd equals im2col in float64 (tiles 2 and 4)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="random layer of part 4 (default 0)")
    args = parser.parse_args()
    one_dimension()
    counts()
    two_dimensions()
    whole_layer(args.seed)


if __name__ == "__main__":
    main()
