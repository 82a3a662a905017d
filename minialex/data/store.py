"""The decoded store: every image of a folder decoded once, resized, and kept as uint8 pixels in a
memory-mapped file, so that later epochs read crops instead of decoding JPEGs.

    store = Store.find(folder, resize)            # a complete store for this folder, or None
    builder = Store.builder(folder, resize)       # filled image by image during a first pass
    a = store.image(i)                            # (H, W, 3) uint8 view of image i, or None

Each image is what the transforms would make of it before cropping: decoded (ImageFolder's
rules: bounded size, 4:1 aspect crop, 8-bit RGB) and its shorter side resized to `resize` (256 for
227-pixel crops) with Pillow, so crops from the store equal crops from the files. Layout, in
<cache root>/stores/<key>/ ($MINIALEX_STORES/<key>/ when set): pixels.<k>.u8 (the images' bytes
one after another; one file per worker process that decoded them), index.npy (file, offset,
height, width per image; height 0 for an image that cannot be read) and meta.json.

The key hashes the folder's fingerprint (ImageFolder.fingerprint: its file list, each file's
size and modification time) and the resize: any edit to the dataset makes a new store (the old one is simply not found again; `prune`
removes stores not used for a while). A store is built in <key>.partial-<pid> and renamed into
place only when every image is in it (a rename is atomic), so an interrupted build leaves nothing
that is later trusted; partial folders of dead processes are removed at the next build.
"""
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from ..system import ForkSafeLock, process_alive
from ..paths import cache_root

VERSION = 3  # 3: the key hashes ImageFolder.fingerprint()
BYTES_PER_PIXEL_ESTIMATE = 3 * 1.4     # RGB, and a mean aspect ratio of about 1.4 : 1


def store_root():
    """$MINIALEX_STORES, else <cache root>/stores."""
    return Path(os.environ["MINIALEX_STORES"]) if os.environ.get("MINIALEX_STORES") else cache_root() / "stores"


def key(folder, resize):
    """The store's folder name: the folder's fingerprint (its files, sizes and times), the resize
    and the store's VERSION."""
    text = f"minialex-store-v{VERSION}|{resize}|{folder.fingerprint()}"
    return hashlib.sha1(text.encode()).hexdigest()[:24]


def decoded(path, resize):
    """(uint8 (H, W, 3) array, None) of one image as the store keeps it, or (None, why not)."""
    from .folder import load_image
    img, reason = load_image(path, resize, resize=resize)
    if img is None:
        return None, reason
    return np.asarray(img, dtype=np.uint8), None


_append_lock = ForkSafeLock()


def append_pixels(folder, array):
    """Append an image's bytes to this process's pixels file in a store being built; returns
    (file name, offset). Each worker process writes its own file; threads of one process take
    turns (a lock), so no two writers share a file position."""
    name = f"pixels.{os.getpid()}.u8"
    with _append_lock, open(Path(folder) / name, "ab") as f:
        offset = f.tell()
        f.write(memoryview(np.ascontiguousarray(array, np.uint8)).cast("B"))
    return name, offset


def estimated_bytes(count, resize):
    return int(count * resize * resize * BYTES_PER_PIXEL_ESTIMATE)


class Store:
    def __init__(self, path):
        self.path = Path(path)
        self.meta = json.loads((self.path / "meta.json").read_text())
        self.index = np.load(self.path / "index.npy", allow_pickle=False)
        self.files = []
        for name in self.meta["files"]:
            size = (self.path / name).stat().st_size
            self.files.append(np.memmap(self.path / name, dtype=np.uint8, mode="r", shape=(size,)) if size
                              else np.zeros(0, np.uint8))
        os.utime(self.path / "meta.json")       # last used: prune() keeps recently used stores

    @classmethod
    def find(cls, folder, resize):
        """The complete store of this folder and resize, or None."""
        path = store_root() / key(folder, resize)
        if not (path / "meta.json").is_file():
            return None
        try:
            store = cls(path)
            if store.meta.get("count") != len(folder) or store.index.shape != (len(folder), 4):
                raise ValueError("it does not hold this folder's images")
        except (OSError, ValueError, KeyError) as e:
            import warnings
            warnings.warn(f"the decoded store {path} is damaged ({e}); it will be built again", stacklevel=2)
            shutil.rmtree(path, ignore_errors=True)
            return None
        return store

    @classmethod
    def builder(cls, folder, resize):
        """A StoreBuilder, or None (with the reason printed) when the disk has too little room."""
        root = store_root()
        try:
            root.mkdir(parents=True, exist_ok=True)
            need, free = estimated_bytes(len(folder), resize), shutil.disk_usage(root).free
            if free < need * 1.2:
                print(f"minialex: not storing decoded images: about {need / 2**30:.1f} GiB needed in {root}, "
                      f"{free / 2**30:.1f} GiB free; decoding every epoch instead", flush=True)
                return None
            return StoreBuilder(root, key(folder, resize), len(folder), resize)
        except OSError as e:   # a folder that cannot be made or written (read-only, no permission)
            print(f"minialex: not storing decoded images: cannot write in {root} ({e.strerror or e}; "
                  f"MINIALEX_STORES sets the folder); decoding every epoch instead", flush=True)
            return None

    def shape(self, i):
        """(height, width) of image i, (0, 0) when it cannot be read."""
        return int(self.index[i, 2]), int(self.index[i, 3])

    def image(self, i):
        f, offset, h, w = (int(v) for v in self.index[i])
        if h == 0:
            return None
        return self.files[f][offset:offset + h * w * 3].reshape(h, w, 3)


class StoreBuilder:
    """Collects the images of one pass (any order, from any process) and makes them a Store."""

    def __init__(self, root, name, count, resize):
        self.final = root / name
        for old in root.glob(f"{name}.partial-*"):          # a dead build's leftovers
            pid = old.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
        self.tmp = root / f"{name}.partial-{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.files, self.index = [], np.zeros((count, 4), np.int64)
        self.done = np.zeros(count, bool)
        self.count, self.resize = count, resize

    def record(self, i, file_name, offset, h, w):
        """Image i is at `offset` of `file_name` (h = 0: it cannot be read)."""
        if file_name is not None and file_name not in self.files:
            self.files.append(file_name)
        self.index[i] = (self.files.index(file_name) if file_name else 0, offset, h, w)
        self.done[i] = True

    def add(self, i, array):
        """Image i's decoded pixels (or None when it cannot be read), written by this process."""
        if array is None:
            self.record(i, None, 0, 0, 0)
        else:
            self.record(i, *append_pixels(self.tmp, array), *array.shape[:2])

    def finish(self):
        """Rename into place once every image is in; returns the Store."""
        if not self.done.all():
            raise RuntimeError(f"decoded store: {int((~self.done).sum())} images missing")
        for name in self.files:
            with open(self.tmp / name, "rb+") as f:
                os.fsync(f.fileno())
        np.save(self.tmp / "index.npy", self.index, allow_pickle=False)
        total = sum((self.tmp / name).stat().st_size for name in self.files)
        (self.tmp / "meta.json").write_text(json.dumps({"version": VERSION, "resize": self.resize,
                                                        "count": self.count, "bytes": total, "files": self.files,
                                                        "built": time.strftime("%Y-%m-%d %H:%M:%S")}))
        try:
            os.rename(self.tmp, self.final)
        except OSError:                                  # another process finished the same store first
            shutil.rmtree(self.tmp, ignore_errors=True)
        return Store(self.final)

    def abandon(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def prune(days=30):
    """Remove stores not used for `days` days; returns the bytes freed."""
    freed, cutoff = 0, time.time() - days * 86400
    for path in store_root().glob("*"):
        meta = path / "meta.json"
        if meta.is_file() and meta.stat().st_mtime < cutoff:
            freed += sum(f.stat().st_size for f in path.iterdir())
            shutil.rmtree(path, ignore_errors=True)
    return freed
