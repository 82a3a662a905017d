"""Draw conv1's filters of a checkpoint as a grid, as in the paper's Figure 3.

    python examples/show_filters.py runs/alexnet-mini-.../best.npz filters.png

A trained network's first layer shows oriented edges and colour blobs; a fresh one shows noise.
"""
import sys

import minialex as ma
from minialex.pictures import filter_grid


def main(argv):
    if len(argv) != 2:
        print(__doc__)
        return 2
    checkpoint, out = argv
    state = ma.load(checkpoint)
    key = "model/conv1.weight" if "model/conv1.weight" in state else "conv1.weight"
    if key not in state:
        print(f"{checkpoint}: no conv1.weight in it (keys: {sorted(state)[:5]} ...)")
        return 1
    w = state[key]
    filter_grid(w, out)
    print(f"{out}: {w.shape[0]} filters of {w.shape[2]}x{w.shape[3]}x{w.shape[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
