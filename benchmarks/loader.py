"""The input pipeline: images/s of minialex's DataLoader against a PyTorch DataLoader doing the same.

    python benchmarks/loader.py                    # 2000 generated 500x375 JPEGs, 2 workers, 3 rounds
    python benchmarks/loader.py --images 4000 --workers 4 --rounds 5

Generated photo-like JPEGs (smooth gradients, shapes, some texture; 500x375, quality 90, 10
classes) are read with the paper's training transform for 227x227 crops (shorter side to 256,
random crop, flip, PCA lighting, normalisation) into float32 NCHW batches. Each round, in one
process, alternating: minialex's first pass (decoding in worker threads while it builds the
decoded store; the store is deleted before each round), a PyTorch epoch, minialex's later epoch
(crops from the store), another PyTorch epoch. PyTorch's DataLoader runs the same ImageFolder and
Transform (Pillow decoding) in `--workers` worker processes. Printed: the median images/s of each
and the ratios. PyTorch is optional (minialex alone is timed without it).
"""
import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minialex.data import DataLoader, ImageFolder, Transform  # noqa: E402
from minialex.data import store as store_module  # noqa: E402


def generate(root, count, seed=0, start=0, split="train"):
    """`count` 500x375 photo-like JPEGs (numbered from `start`) in 10 class folders of root/split."""
    rng = np.random.default_rng([seed, start])
    yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
    for i in range(start, start + count):
        folder = root / split / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.stack([c0 + c1 * xx / 500 + c2 * yy / 375 for c0, c1, c2 in rng.uniform(-80, 200, (3, 3))], -1)
        base += rng.normal(0, 6, base.shape).astype(np.float32)                  # sensor noise, some texture
        img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x, y, r = rng.integers(0, 500), rng.integers(0, 375), rng.integers(10, 90)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        img.save(folder / f"{i:05d}.jpg", quality=90)
    return root / split


def generate_parallel(root, count, split="train", workers=None):
    """generate() split over processes, in chunks of 200 images."""
    from concurrent.futures import ProcessPoolExecutor
    chunks = [(root, min(200, count - s), 0, s, split) for s in range(0, count, 200)]
    with ProcessPoolExecutor(workers or os.cpu_count()) as pool:
        list(pool.map(generate, *zip(*chunks)))
    return root / split


STATS = {"mean": np.array([0.45, 0.45, 0.45], np.float32), "std": np.array([0.25, 0.25, 0.25], np.float32),
         "eigvals": np.array([0.002, 0.01, 0.2], np.float32),
         "eigvecs": np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))[0].astype(np.float32)}


def minialex_epoch(folder, args, epoch):
    loader = DataLoader(folder, Transform(227, STATS, "train"), batch_size=args.batch, shuffle=True,
                        drop_last=True, workers=args.workers, seed=0)
    loader.set_epoch(epoch)
    t0, seen = time.perf_counter(), 0
    for x, y in loader:
        seen += len(y)
    return seen / (time.perf_counter() - t0)


class TorchData:
    """The same folder and transform as a PyTorch map-style dataset (Pillow decoding per item)."""

    def __init__(self, folder, epoch):
        self.folder, self.transform, self.epoch = folder, Transform(227, STATS, "train"), epoch

    def __len__(self):
        return len(self.folder)

    def __getitem__(self, i):
        img, label = self.folder.load(i, self.transform.resize)
        return self.transform(img, np.random.default_rng([0, self.epoch, i])), label


def torch_epoch(torch, folder, args, epoch):
    loader = torch.utils.data.DataLoader(TorchData(folder, epoch), batch_size=args.batch, shuffle=True,
                                         drop_last=True, num_workers=args.workers)
    t0, seen = time.perf_counter(), 0
    for x, y in loader:
        seen += len(y)
    return seen / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        torch = None
        print("PyTorch is not installed: timing minialex alone")
    work = Path(tempfile.mkdtemp(prefix="minialex-loader-"))
    os.environ["MINIALEX_STORES"] = str(work / "stores")
    try:
        t0 = time.perf_counter()
        folder = ImageFolder(generate(work / "data", args.images))
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; "
              f"{args.images} JPEGs 500x375 generated in {time.perf_counter() - t0:.0f} s; batch {args.batch}, "
              f"{args.workers} workers, {args.rounds} rounds" + (f"; torch {torch.__version__}" if torch else ""))
        rates = {"minialex first pass": [], "minialex later epoch": [], "PyTorch": []}
        for r in range(args.rounds):
            shutil.rmtree(work / "stores", ignore_errors=True)
            rates["minialex first pass"].append(minialex_epoch(folder, args, 2 * r + 1))
            if torch:
                rates["PyTorch"].append(torch_epoch(torch, folder, args, 2 * r + 1))
            rates["minialex later epoch"].append(minialex_epoch(folder, args, 2 * r + 2))
            if torch:
                rates["PyTorch"].append(torch_epoch(torch, folder, args, 2 * r + 2))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items() if v) + " images/s", flush=True)
        store = store_module.Store.find(folder, 256)
        print("\n| loader | images/s (median) | rounds |\n|---|---|---|")
        for k, v in rates.items():
            if v:
                print(f"| {k} | {np.median(v):.0f} | {', '.join(f'{x:.0f}' for x in v)} |")
        if torch:
            t = np.median(rates["PyTorch"])
            print(f"\nfirst pass / PyTorch: {np.median(rates['minialex first pass']) / t:.2f}x; "
                  f"later epochs / PyTorch: {np.median(rates['minialex later epoch']) / t:.2f}x")
        if store is not None:
            print(f"decoded store: {store.meta['bytes'] / 2**20:.0f} MiB for {args.images} images "
                  f"({store.meta['bytes'] / args.images / 1024:.0f} KiB each)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
