"""examples/winograd.py: the walkthrough runs, prints the hand-checkable results, and stops with an
AssertionError when a Winograd matrix is wrong (its checks are asserts, not only prints)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "examples/winograd.py"

# Runs the script with winograd_matrices patched: BT's last row (the point at infinity) negated,
# so m4 changes sign and F(2, 3) gives y1 = 15 - 2 + (-6) = 7 instead of 19.
WRONG_MATRIX = """
import runpy, sys
import minialex.ops.winograd as winograd
right = winograd.winograd_matrices
def wrong(m, r):
    at, g, bt = right(m, r)
    bt = bt.copy()
    bt[-1] = -bt[-1]
    return at, g, bt
winograd.winograd_matrices = wrong
sys.argv = [sys.argv[1]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_walkthrough_prints_its_checks():
    r = run(SCRIPT)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    # 1-D, d = [1, 2, 3, 4], g = [2, 1, 3]: y0 = 1*2 + 2*1 + 3*3 = 13, y1 = 2*2 + 3*1 + 4*3 = 19
    assert "y0 = d0 g0 + d1 g1 + d2 g2 = 1*2 + 2*1 + 3*3 = 13" in out
    assert "1-D check: Winograd y = [13, 19] equals direct y = [13, 19]" in out
    assert "m2 = (1/2 g0 + 1/2 g1 + 1/2 g2) * (d1 + d2)" in out       # G's halves, printed as fractions
    assert "y1 = m2 - m3 + m4 = 15 - 2 + 6 = 19" in out
    # multiplication counts: 1-D a against m*r, 2-D a^2 against m^2 r^2
    table = {line.split(")")[0].strip() + ")": line.split()[2:] for line in out.splitlines()
             if line.startswith("  F(") and line.rstrip().endswith("x")}
    assert table == {"F(2, 3)": ["6", "4", "1.50x", "36", "16", "2.25x"],
                     "F(4, 3)": ["12", "6", "2.00x", "144", "36", "4.00x"],
                     "F(2, 5)": ["10", "6", "1.67x", "100", "36", "2.78x"],
                     "F(4, 5)": ["20", "8", "2.50x", "400", "64", "6.25x"]}
    assert "7 x 7 = 49 tiles x 16 = 784 multiplications: 1.94x fewer" in out
    assert "4 x 4 = 16 tiles x 36 = 576 multiplications: 2.64x fewer" in out
    # 2-D: the direct 2x2 output of the printed tile and filter, and Winograd's
    assert "2-D check: Winograd Y = [9, 9, 10, 3] equals direct y = [9, 9, 10, 3]" in out
    # the whole layer: float64 equal up to rounding, float32 within the documented bounds
    rows = {line[:24].strip(): [float(v) for v in line[24:44].split()] for line in out.splitlines()
            if line.startswith(("  im2col ", "  winograd F("))}
    assert set(rows) == {"im2col", "winograd F(2x2, 3x3)", "winograd F(4x4, 3x3)"}
    assert all(err64 < 1e-13 and 0 < err32 < 1e-4 for err64, err32 in rows.values())
    assert "Layer check: Winograd equals im2col in float64" in out


def test_the_seed_picks_another_layer():
    r = run(SCRIPT, "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert "seed 3;" in r.stdout and "Layer check" in r.stdout


def test_a_wrong_matrix_stops_the_script():
    r = run("-c", WRONG_MATRIX, SCRIPT)
    assert r.returncode != 0
    assert "AssertionError" in r.stderr
    assert "y1 = m2 - m3 + m4 = 15 - 2 + (-6) = 7" in r.stdout        # it printed the wrong sum, then stopped
    assert "1-D check" not in r.stdout
