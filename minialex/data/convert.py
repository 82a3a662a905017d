"""The classic data sets' files made into the folder layout minialex trains on (OUT/<split>/<class>/*.png):

    idx_to_folder("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "mnist", split="train")
    cifar_to_folder("cifar-10-batches-bin", "cifar10", kind="cifar10")     # train/ and val/ (the test batch)

IDX (MNIST, Fashion-MNIST, EMNIST; gzipped or not): a header of two zero bytes, a type byte (0x08
unsigned bytes ... 0x0E doubles), the number of dimensions, then each dimension as a big-endian
32-bit count, then the values, row-major. The images file holds (N, H, W) (or (N, H, W, C)), the
labels file (N,). Class folders are named by the label's number.

CIFAR, the *binary* version only (cifar-10-binary.tar.gz, cifar-100-binary.tar.gz; the Python
version is pickled, and minialex never unpickles a file): CIFAR-10's data_batch_1..5.bin and
test_batch.bin hold records of 1 label byte and 3072 pixel bytes (the red, green and blue 32x32
planes); CIFAR-100's train.bin and test.bin records have a coarse and a fine label byte first (the
fine one is used). Class names come from batches.meta.txt / fine_label_names.txt.

Every header is checked against the file's real length before anything is written, and a split is
written into a hidden folder beside its place and renamed into it only when complete, so a
conversion that is killed leaves no half-written folder that looks done.
"""
import gzip
import os
import shutil
import struct
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
CIFAR = {"cifar10": dict(train=[f"data_batch_{k}.bin" for k in range(1, 6)], val=["test_batch.bin"], labels=1,
                         names="batches.meta.txt", classes=10),
         "cifar100": dict(train=["train.bin"], val=["test.bin"], labels=2, names="fine_label_names.txt", classes=100)}
PIXELS = 32 * 32 * 3
MAX_BYTES = 4 << 30     # no file of these data sets comes near (EMNIST's largest: 0.7 GB)


class ConvertError(ValueError):
    """A file that is not what it should be; the message names it and says what is wrong."""


# ----- reading -----

def _open(path):
    """The file as a stream of its bytes, un-gzipped when it is gzipped."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _read(stream, count, path):
    """At most `count` bytes (a gzip stream is inflated no further: no bomb can fill the memory)."""
    try:
        return stream.read(count)
    except (OSError, EOFError) as e:
        raise ConvertError(f"{path}: cannot be read ({e}): a truncated or damaged download?") from None


def read_idx(path):
    """The array an IDX file holds, its header checked against its length."""
    with _open(path) as f:
        head = _read(f, 4, path)
        if len(head) < 4 or head[0] != 0 or head[1] != 0:
            raise ConvertError(f"{path}: not an IDX file (its first bytes are {head.hex() or 'nothing'}, expected "
                               "00 00 <type> <dimensions>)")
        kind, ndim = head[2], head[3]
        if kind not in IDX_TYPES:
            raise ConvertError(f"{path}: IDX type byte 0x{kind:02x} is not one of "
                               + ", ".join(f"0x{k:02x}" for k in IDX_TYPES))
        sizes = _read(f, 4 * ndim, path)
        if not 1 <= ndim <= 4 or len(sizes) < 4 * ndim:
            raise ConvertError(f"{path}: an IDX header of {ndim} dimensions, cut short")
        shape = struct.unpack(f">{ndim}I", sizes)
        dtype = np.dtype(IDX_TYPES[kind])
        need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if need > MAX_BYTES:
            raise ConvertError(f"{path}: its header says {dtype} {shape}, {need} bytes: more than the "
                               f"{MAX_BYTES >> 30} GiB a data file of this kind can need")
        data = _read(f, need + 1, path)
    if len(data) != need:
        raise ConvertError(f"{path}: its header says {dtype} {shape} ({need} bytes) but it holds "
                           f"{'more' if len(data) > need else len(data)} bytes: a truncated download, or not this file?")
    return np.frombuffer(data, dtype).reshape(shape)


def read_cifar(path, labels):
    """(images (N, 32, 32, 3) uint8, labels (N,)) of a CIFAR binary batch; labels: 1 (CIFAR-10) or
    2 label bytes a record (CIFAR-100: coarse, fine; the fine one is returned)."""
    record = labels + PIXELS
    with _open(path) as f:
        data = _read(f, MAX_BYTES + 1, path)
    if not data or len(data) % record or len(data) > MAX_BYTES:
        raise ConvertError(f"{path}: {len(data)} bytes is not a whole number of {record}-byte records (the binary "
                           "CIFAR layout): a truncated download, or not a CIFAR binary batch?")
    rows = np.frombuffer(data, np.uint8).reshape(-1, record)
    return rows[:, labels:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), rows[:, labels - 1].astype(np.int64)


# ----- writing -----

def _staging(out, split):
    """(the split's final folder, a fresh hidden folder beside it to write into)."""
    out = Path(out)
    final = out / split
    if final.exists():
        raise ConvertError(f"{final} exists already: remove it, or write into another folder")
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".{split}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return final, staging


def write_split(images, labels, out, split, names=None, workers=4, progress=None):
    """Write images (N, H, W) or (N, H, W, C) uint8 with their labels as OUT/split/<class>/<i>.png;
    names: the class names by label (default: the label's number). Atomic: see the docstring."""
    if len(images) != len(labels):
        raise ConvertError(f"{len(images)} images but {len(labels)} labels: the two files do not belong together")
    if images.dtype != np.uint8:
        raise ConvertError(f"images expected unsigned bytes (IDX type 0x08), got {images.dtype}")
    if names is not None and labels.size and labels.max() >= len(names):
        raise ConvertError(f"a label {labels.max()} has no class name ({len(names)} names)")
    final, staging = _staging(out, split)
    try:
        folders = [str(names[k]) if names is not None else str(int(k)) for k in np.unique(labels)]
        for folder in folders:
            (staging / folder).mkdir()

        def save(i):
            name = str(names[labels[i]]) if names is not None else str(int(labels[i]))
            Image.fromarray(images[i]).save(staging / name / f"{i:06d}.png")
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for _ in pool.map(save, range(len(images))):
                if progress is not None:
                    progress.update(1)
        os.replace(staging, final)                       # only a complete split gets its name
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def _bar(total, desc):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="img", disable=not sys.stderr.isatty(), mininterval=0.5)


def idx_to_folder(images, labels, out, split="train", workers=4):
    """An IDX images file and its labels file as OUT/split/<label>/<i>.png; returns the folder."""
    x, y = read_idx(images), read_idx(labels)
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
        raise ConvertError(f"{images}: expected images (N, H, W) or (N, H, W, 1|3), got shape {x.shape}")
    if y.ndim != 1:
        raise ConvertError(f"{labels}: expected labels (N,), got shape {y.shape}")
    x = x[..., 0] if x.ndim == 4 and x.shape[-1] == 1 else x
    with _bar(len(x), f"{split}: {Path(images).name}") as bar:
        return write_split(x, y.astype(np.int64), out, split, workers=workers, progress=bar)


def cifar_to_folder(source, out, kind="cifar10", workers=4):
    """A CIFAR binary folder as OUT/train and OUT/val (the test batch); returns (train, val)."""
    spec, source = CIFAR[kind], Path(source)
    if not source.is_dir():
        raise ConvertError(f"{source}: expected the folder of the binary {kind} batches")
    if (source / "data_batch_1").exists() or (source / "train").is_file() and not (source / "train.bin").exists():
        raise ConvertError(f"{source} holds the Python (pickled) version of {kind}; minialex never unpickles a "
                           f"file: download the binary version ({kind.replace('cifar', 'cifar-')}-binary.tar.gz)")
    missing = [n for n in spec["train"] + spec["val"] if not (source / n).is_file()]
    if missing:
        raise ConvertError(f"{source}: missing {', '.join(missing)} (the binary {kind} batches)")
    names = _names(source / spec["names"], spec["classes"])
    data = {}
    for split in ("train", "val"):                   # every batch read and checked before anything is written
        parts = [read_cifar(source / n, spec["labels"]) for n in spec[split]]
        images, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        if labels.max() >= spec["classes"]:
            raise ConvertError(f"{source}: a label {labels.max()} in the {split} batches; {kind} has {spec['classes']} "
                               "classes")
        if (Path(out) / split).exists():
            raise ConvertError(f"{Path(out) / split} exists already: remove it, or write into another folder")
        data[split] = images, labels
    folders = []
    for split, (images, labels) in data.items():
        with _bar(len(images), f"{kind} {split}") as bar:
            folders.append(write_split(images, labels, out, split, names, workers, bar))
    return tuple(folders)


def _names(path, count):
    """The class names of a CIFAR names file (one a line), or their numbers without it."""
    if not path.is_file():
        return [f"{k:03d}" for k in range(count)]
    names = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if len(names) != count or len(set(names)) != count or any("/" in n or n in (".", "..") for n in names):
        raise ConvertError(f"{path}: expected {count} distinct class names, one a line, got {len(names)}")
    return names
