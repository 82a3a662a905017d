"""minialex-prepare: decode a data set once into the decoded store, ahead of training.

    minialex-prepare DATA                   # DATA/train and DATA/val, for alexnet-mini (64x64 crops)
    minialex-prepare DATA --arch alexnet    # ... for AlexNet's 227x227 crops (shorter side 256)
    minialex-prepare --from idx train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz mnist
    minialex-prepare --from idx t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz mnist --split val
    minialex-prepare --from cifar10 cifar-10-batches-bin cifar10      # train/ and val/ (the test batch)
    minialex-prepare DATA --verify          # ... each store checked first: every image's checksum, and
                                            #     every file decoded again; a store that differs is built again
    minialex-prepare --list                 # the stores folder: every store, its size, data and last use
    minialex-prepare --clean                # remove killed builds, damaged stores set aside, and the
                                            # least recently used stores beyond MINIALEX_STORES_MAX

minialex-train does the same during its first epoch when no store exists; preparing ahead lets
that epoch run at the speed of later ones, and tells the disk use first. The store lives in the
cache folder ($MINIALEX_STORES, else <cache root>/stores, see minialex/data/store.py) and is found
again as long as no image of the data set changes its size or modification time. An image
rewritten in place with both kept, or stored pixels changed on disk, are found by --verify.
The folder is kept within MINIALEX_STORES_MAX (default 100G; K, M, G, T suffixes) before each
build, least recently used stores first; a store a running process reads is never removed.
MINIALEX_STORES_MAX=0 minialex-prepare --clean removes every store not in use.
"""
import argparse
import errno
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from . import system
from .data import DataLoader, Transform, convert
from .data.splits import DataError, open_splits
from .data import store as store_module
from .data import store_folder
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


def verify(name, folder, size, workers):
    """Check a split's store against its hashes and its files decoded again; a store that differs
    is set aside (and then built again by prepare). Returns True when the store matched."""
    store = store_module.Store.find(folder, resize_for(size))
    if store is None:
        print(f"{name}: no store to verify")
        return True
    t0 = time.perf_counter()
    corrupt, changed = store.verify(folder, workers)
    if not corrupt and not changed:
        print(f"{name}: verified {len(folder)} images in {time.perf_counter() - t0:.0f} s: the store matches "
              f"its hashes and the files")
        return True

    def names(found):
        return ", ".join(str(folder.samples[i][0]) for i in found[:5]) + (" ..." if len(found) > 5 else "")
    if corrupt:
        print(f"{name}: {len(corrupt)} stored images no longer match the hash they were built with "
              f"(the store's files changed on disk): {names(corrupt)}")
    if changed:
        print(f"{name}: {len(changed)} images decode to other pixels than the store holds (rewritten in place "
              f"with the same size and time, or decoded differently by this Pillow): {names(changed)}")
    del store
    store_module.set_aside(store_module.store_root() / store_module.key(folder, resize_for(size)),
                           f"{len(corrupt) + len(changed)} images differ, found by --verify")
    return False


def list_stores():
    """Print the stores folder: each entry's size, kind, data and last use."""
    root, budget = store_folder.store_root(), store_folder.stores_max()
    found = store_folder.entries(root)
    total = sum(e.bytes for e in found)
    print(f"decoded stores in {root}: {total / 2**30:.2f} GiB in {len(found)} entries (MINIALEX_STORES_MAX "
          f"{budget / 2**30:.1f} GiB)")
    for e in sorted(found, key=lambda e: -e.used):
        about = ""
        if e.kind == "store":
            m = e.meta
            about = f"{m.get('count', '?')} images, shorter side {m.get('resize', '?')}, {m.get('root') or '?'}"
            about += " (in use)" if store_folder.in_use(e) else ""
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.used))
        print(f"  {e.bytes / 2**30:8.2f} GiB  {e.kind:12s}  last used {used}  {e.path.name}  {about}".rstrip())
    return 0


def clean_stores():
    """Remove killed builds, damaged stores set aside and the least recently used stores beyond
    MINIALEX_STORES_MAX (stores in use stay)."""
    if not store_folder.make_room():
        print(f"nothing to remove in {store_folder.store_root()} (MINIALEX_STORES_MAX "
              f"{store_folder.stores_max() / 2**30:.1f} GiB)")
    return 0


def _parser():
    p = argparse.ArgumentParser(prog="minialex-prepare", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("data", nargs="*", help="a folder with train/ and val/ class folders; with --from idx: "
                                           "IMAGES LABELS OUT; with --from cifar10|cifar100: DIR OUT")
    p.add_argument("--from", dest="source", choices=("idx", "cifar10", "cifar100"),
                   help="convert a classic data set's files into OUT/<split>/<class>/*.png first (see "
                        "minialex/data/convert.py): IDX files (MNIST, Fashion-MNIST, EMNIST; gzipped or not) or "
                        "the binary CIFAR batches (never the pickled Python version)")
    p.add_argument("--split", choices=("train", "val"), default="train",
                   help="with --from idx: which split the IMAGES/LABELS pair is (train)")
    p.add_argument("--arch", choices=sorted(SIZES), default="alexnet-mini")
    p.add_argument("--workers", type=int, default=2, help="threads (up to 4) or processes decoding images (2)")
    p.add_argument("--verify", action="store_true", help="check each store against its hashes and its files "
                                                         "decoded again; build again a store that differs")
    p.add_argument("--list", action="store_true", help="show the stores folder and exit")
    p.add_argument("--clean", action="store_true", help="remove killed builds, damaged stores and the least "
                                                        "recently used stores beyond MINIALEX_STORES_MAX")
    return p


def main(argv=None):
    p = _parser()
    args = p.parse_args(argv)
    environment = system.check_environment()
    if environment:
        p.error("; ".join(environment))
    if args.workers < 0:
        p.error(f"--workers expected an integer >= 0, got {args.workers}")
    if args.source:
        return _convert(p, args)
    if len(args.data) > 1:
        p.error(f"expected one DATA folder, got {len(args.data)} paths (--from converts data files)")
    args.data = args.data[0] if args.data else None
    if args.clean:
        clean_stores()
    if args.list:
        list_stores()
    if args.data is None:
        if args.list or args.clean:
            return 0
        p.error("expected DATA, a folder with train/ and val/ class folders (or --list, --clean)")
    size = SIZES[args.arch]
    try:                                                # the checks minialex-train makes (data/splits.py)
        train, val = open_splits(args.data, need_val=False)
    except DataError as e:
        p.error(str(e))
    splits = [("train", train)] + ([("val", val)] if val is not None else [])
    if args.verify:
        for name, folder in splits:
            verify(name, folder, size, args.workers)
    missing = [f for _, f in splits if store_module.Store.find(f, resize_for(size)) is None]
    if missing:
        _say_room(p, args.arch, size, missing)
    held = []
    for name, folder in splits:
        store, seconds, built = prepare(folder, size, args.workers)
        held.append(store and store.hold())            # train's store stays while val's is built
        if store is None:
            print(f"{name}: not stored (see the message above)")
            return 1
        what = f"built in {seconds:.0f} s ({len(folder) / max(seconds, 1e-9):.0f} images/s)" if built else "already there"
        print(f"{name}: {len(folder)} images, {store.meta['bytes'] / 2**30:.2f} GiB, {what}: {store.path}")
    return 0


def _convert(p, args):
    """--from: the data files as OUT/<split>/<class>/*.png (checked, written atomically)."""
    want = {"idx": ("IMAGES", "LABELS", "OUT")}.get(args.source, ("DIR", "OUT"))
    if len(args.data) != len(want):
        p.error(f"--from {args.source} expected {' '.join(want)}, got {len(args.data)} path(s)")
    try:
        if args.source == "idx":
            folder = convert.idx_to_folder(*args.data, split=args.split, workers=max(1, args.workers))
            print(f"{folder}: {sum(1 for _ in folder.rglob('*.png'))} images in "
                  f"{sum(1 for d in folder.iterdir() if d.is_dir())} classes")
        else:
            for folder in convert.cifar_to_folder(*args.data, kind=args.source, workers=max(1, args.workers)):
                print(f"{folder}: {sum(1 for _ in folder.rglob('*.png'))} images")
    except convert.ConvertError as e:
        p.error(str(e))
    except OSError as e:                                 # (a full disk, a folder that cannot be written)
        p.error(f"writing into {args.data[-1]} failed: {e.strerror or e}")
    return 0


def _say_room(p, arch, size, folders):
    """The disk the stores to build need, and the room there is; an error when the folder cannot be written."""
    root = store_module.store_root()
    estimate = sum(store_module.estimated_bytes(len(f), resize_for(size)) for f in folders)
    try:
        root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(root).free
        tempfile.TemporaryFile(dir=root).close()     # writable?
        if not os.access(root, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "no permission to write there")
    except OSError as e:
        p.error(f"cannot keep decoded images in {root} ({e.strerror or e}); set MINIALEX_STORES to a writable folder")
    print(f"{arch}: images resized to shorter side {resize_for(size)}; about {estimate / 2**30:.1f} GiB "
          f"for {sum(len(f) for f in folders)} images in {root} ({free / 2**30:.1f} GiB free)")


if __name__ == "__main__":
    sys.exit(main())
