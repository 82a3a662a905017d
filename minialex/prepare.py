"""minialex-prepare: decode a data set once into the decoded store, ahead of training.

    minialex-prepare DATA                   # DATA/train and DATA/val, for alexnet-mini (64x64 crops)
    minialex-prepare DATA --arch alexnet    # ... for AlexNet's 227x227 crops (shorter side 256)

minialex-train does the same during its first epoch when no store exists; preparing ahead lets
that epoch run at the speed of later ones, and tells the disk use first. The store lives in the
cache folder ($MINIALEX_STORES, else <cache root>/stores, see minialex/data/store.py) and is found
again as long as no file of the data set changes.
"""
import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .data import DataLoader, ImageFolder, Transform
from .data import store as store_module
from .data.transforms import resize_for

SIZES = {"alexnet": 227, "alexnet-mini": 64}
NEUTRAL = {"mean": np.zeros(3, np.float32), "std": np.ones(3, np.float32),
           "eigvals": np.zeros(3, np.float32), "eigvecs": np.eye(3, dtype=np.float32)}


def prepare(folder, size, workers):
    """Build (or find) the store of one split; returns (Store or None, seconds, built?)."""
    resize = resize_for(size)
    found = store_module.Store.find(folder, resize)
    if found is not None:
        return found, 0.0, False
    t0 = time.perf_counter()
    loader = DataLoader(folder, Transform(size, NEUTRAL, "val"), batch_size=256, workers=workers)
    from tqdm import tqdm
    with tqdm(total=len(folder), desc=f"decoding {folder.root}", unit="img", disable=not sys.stderr.isatty(),
              mininterval=0.5) as bar:
        for _, y in loader:                            # the first pass fills the store
            bar.update(len(y))
    return loader.store, time.perf_counter() - t0, True


def main(argv=None):
    p = argparse.ArgumentParser(prog="minialex-prepare", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("data", help="a folder with train/ and val/ class folders")
    p.add_argument("--arch", choices=sorted(SIZES), default="alexnet-mini")
    p.add_argument("--workers", type=int, default=2, help="threads (up to 4) or processes decoding images (2)")
    args = p.parse_args(argv)
    if args.workers < 0:
        p.error(f"--workers expected an integer >= 0, got {args.workers}")
    root = Path(args.data)
    if not (root / "train").is_dir():
        p.error(f"expected {root / 'train'}/<class>/<images> (ImageNet layout)")
    size = SIZES[args.arch]
    train = ImageFolder(root / "train")
    splits = [("train", train)] + ([("val", ImageFolder(root / "val", classes=train.classes))]
                                   if (root / "val").is_dir() else [])
    estimate = sum(store_module.estimated_bytes(len(f), resize_for(size)) for _, f in splits)
    try:
        store_module.store_root().mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(store_module.store_root()).free
        tempfile.TemporaryFile(dir=store_module.store_root()).close()     # writable?
    except OSError as e:
        p.error(f"cannot keep decoded images in {store_module.store_root()} ({e.strerror or e}); set "
                f"MINIALEX_STORES to a writable folder")
    print(f"{args.arch}: images resized to shorter side {resize_for(size)}; about {estimate / 2**30:.1f} GiB "
          f"for {sum(len(f) for _, f in splits)} images in {store_module.store_root()} ({free / 2**30:.1f} GiB free)")
    for name, folder in splits:
        store, seconds, built = prepare(folder, size, args.workers)
        if store is None:
            print(f"{name}: not stored (see the message above)")
            return 1
        what = f"built in {seconds:.0f} s ({len(folder) / max(seconds, 1e-9):.0f} images/s)" if built else "already there"
        print(f"{name}: {len(folder)} images, {store.meta['bytes'] / 2**30:.2f} GiB, {what}: {store.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
