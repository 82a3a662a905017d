"""minialex-predict's speed against the loader's first epoch, on the same images, in one run.

    python benchmarks/predict.py                  # 1,000 generated 500x375 JPEGs, 2 workers, 3 rounds

Both decode every JPEG (Pillow), resize its shorter side and centre-crop it for alexnet-mini (64
pixels); predict also runs the network on each batch and sorts the softmax. The loader's pass is
DataLoader's first epoch over an ImageFolder with the validation transform: decoding every image
and building the decoded store, in a fresh stores folder each round. The target: predict within 1.5x the loader's time. Also printed: the process's
peak resident memory (predict holds one batch of images at a time).
"""
import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loader import generate  # noqa: E402

import minialex as ma  # noqa: E402
from minialex.data import DataLoader, ImageFolder, Transform  # noqa: E402
from minialex.models import PRETRAINED  # noqa: E402


def loader_pass(folder, workers):
    model, info = ma.prediction.load_network(PRETRAINED)
    stats = {"mean": info["mean"], "std": info["std"], "eigvals": info["mean"] * 0, "eigvecs": None}
    import numpy as np
    stats["eigvecs"] = np.eye(3, dtype=np.float32)
    start, count = time.perf_counter(), 0
    with tempfile.TemporaryDirectory() as stores:     # a first epoch: decoding, and building the store
        os.environ["MINIALEX_STORES"] = stores
        for x, y in DataLoader(ImageFolder(folder), Transform(info["input_size"], stats, "val"), 64,
                               workers=workers):
            count += len(y)
    return time.perf_counter() - start, count


def predict_pass(folder, workers):
    start = time.perf_counter()
    count = sum(1 for _ in ma.prediction.predictions(PRETRAINED, folder, top=5, workers=workers))
    return time.perf_counter() - start, count


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    ma.cpu.tune()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        generate(root, args.images)                   # root/train/<class>/*.jpg, 500x375
        folder = root / "train"
        times = {"loader": [], "predict": []}
        for _ in range(args.rounds):
            for name, run in (("loader", loader_pass), ("predict", predict_pass)):
                seconds, count = run(folder, args.workers)
                times[name].append(seconds)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"\n{platform.machine()}, {ma.cpu.cpu_threads()} threads; {count} images of 500x375, {args.workers} workers,"
          f" {args.rounds} alternating rounds (medians, min-max)")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:8s} {med:6.2f} s ({min(ts):.2f} - {max(ts):.2f})  {count / med:6.0f} images/s")
    ratio = statistics.median(times["predict"]) / statistics.median(times["loader"])
    print(f"  predict / loader time: {ratio:.2f} (target <= 1.5); peak RSS of the process {before / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
