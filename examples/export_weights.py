"""Strip a minialex-train checkpoint to what using the model needs: its weights, class names,
input normalisation, settings and metrics (no optimizer state: about half the size).

    python examples/export_weights.py runs/alexnet-mini-.../best.npz                  # the shipped file
    python examples/export_weights.py runs/x/best.npz weights.npz

With one argument it writes minialex/weights/alexnet-mini-synthetic.npz, the weights that
ma.models.pretrained_mini() loads: made from `minialex-train` with its defaults (alexnet-mini, the
built-in data, 10 epochs, seed 0).
"""
import sys

import minialex as ma
from minialex.models import PRETRAINED

KEEP = ("meta/arch", "meta/classes", "meta/mean", "meta/std", "meta/eigvals", "meta/eigvecs", "meta/config",
        "meta/history", "meta/epoch", "meta/format")


def main(argv):
    if len(argv) not in (1, 2):
        print(__doc__)
        return 2
    state = ma.load(argv[0])
    out = argv[1] if len(argv) == 2 else PRETRAINED
    kept = {k: v for k, v in state.items() if k.startswith("model/") or k in KEEP}
    ma.save(kept, out)
    weights = sum(v.size for k, v in kept.items() if k.startswith("model/"))
    print(f"{out}: {weights:,} weights of {state['meta/arch']} (epoch {int(state['meta/epoch'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
