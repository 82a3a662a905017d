"""Draw conv1's filters of a checkpoint as a grid, as in the paper's Figure 3.

    python examples/show_filters.py                                   # the shipped trained alexnet-mini
    python examples/show_filters.py runs/alexnet-mini-.../best.npz filters.png
    python examples/show_filters.py --scale 2 filters.png             # twice as large, for a slide

A trained network's first layer shows oriented edges and colour blobs; a fresh one shows noise.
With no checkpoint, the weights of ma.models.pretrained_mini() (alexnet-mini trained on the
built-in data) are drawn, so there is something learned to look at before training anything.
"""
import argparse
import sys

import minialex as ma
from minialex.models import PRETRAINED
from minialex.pictures import filter_grid


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", help="[CHECKPOINT] OUT.png (default: the shipped weights, filters.png)")
    p.add_argument("--scale", type=float, default=1.0, help="the picture's size (2: twice as large)")
    args = p.parse_args(argv)
    paths = args.paths
    if len(paths) > 2:
        p.error("expected at most a checkpoint and an output file")
    if len(paths) == 2:
        checkpoint, out = paths
    elif len(paths) == 1 and paths[0].endswith(".png"):
        checkpoint, out = PRETRAINED, paths[0]
    else:
        checkpoint, out = (paths[0] if paths else PRETRAINED), "filters.png"
    state = ma.load(checkpoint)
    key = "model/conv1.weight" if "model/conv1.weight" in state else "conv1.weight"
    if key not in state:
        print(f"{checkpoint}: no conv1.weight in it (keys: {sorted(state)[:5]} ...)")
        return 1
    w = state[key]
    filter_grid(w, out, factor=args.scale)
    print(f"{out}: {w.shape[0]} filters of {w.shape[2]}x{w.shape[3]}x{w.shape[1]} from {checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
