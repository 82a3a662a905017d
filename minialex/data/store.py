"""The decoded store: every image of a folder decoded once, resized, and kept as uint8 pixels in a
memory-mapped file, so that later epochs read crops instead of decoding JPEGs.

    store = Store.find(folder, resize)            # a complete store for this folder, or None
    builder = Store.builder(folder, resize)       # filled image by image during a first pass
    a = store.image(i)                            # (H, W, 3) uint8 view of image i, or None
    store.hold()                                  # in use (a DataLoader reads it): never removed

Each image is what the transforms would make of it before cropping: decoded (ImageFolder's
rules: bounded size, EXIF orientation, 4:1 aspect crop, 8-bit RGB) and its shorter side resized
to `resize` (256 for 227-pixel crops) with Pillow, so crops from the store equal crops from the
files. Layout, in <cache root>/stores/<key>/ ($MINIALEX_STORES/<key>/ when set): pixels.<k>.u8
(the images' bytes one after another; one file per worker process that decoded them), index.npy
(file, offset, height, width per image; all 0 for an image that cannot be read), hashes.npy (the
CRC-32 of each image's pixels, for `minialex-prepare --verify`) and meta.json (the files and their
sizes, the count, the resize).

The key hashes the folder's fingerprint (ImageFolder.fingerprint: each image's resolved path,
label, size and modification time) and the resize: any edit to the data set that changes a size
or a time makes a new store, however the data path is spelled. A file rewritten in place with
the same size and time is not seen (`minialex-prepare --verify` decodes every image again and
compares). A store is built in <key>.partial-<pid> and renamed into place only when every image
is in it (a rename is atomic), so an interrupted build leaves nothing that is later trusted. A
write that fails during the build (a full disk: the free-space check is an estimate; a file-size
limit) gives the store up at once, with one warning; the pass under way keeps all its batches.

Opening a store checks all of it before anything is read: meta.json's fields and types, the
files it names (plain files inside the store, of the sizes recorded), every row of the index
against them. A store that fails is set aside (<key>.damaged-<pid>) with one warning and built
again; one that cannot be read (no permission) is left as it is and the run decodes every epoch.
A store on a read-only file system is read. A pixel file cut short under a running job would end
it with SIGBUS: a handler says which store before the process ends. The stores folder is kept
under MINIALEX_STORES_MAX (minialex/data/store_folder.py) before each build.
"""
import collections
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import time
import warnings
import weakref
import zlib
from pathlib import Path

import numpy as np

from ..system import ForkSafeLock
from .folder import MAX_ASPECT, load_image
from .store_folder import hold, make_room, remove, store_root

VERSION = 4  # 4: resolved paths in the key, EXIF orientation, a hash per image, each file's size
BYTES_PER_PIXEL_ESTIMATE = 3 * 1.4     # RGB, and a mean aspect ratio of about 1.4 : 1
PIXELS_NAME = re.compile(r"pixels\.\d+\.u8")
META_TYPES = {"version": int, "resize": int, "count": int, "bytes": int, "files": list, "sizes": list,
              "built": str, "root": str}


class StoreDamaged(Exception):
    """A store whose files do not fit together; the message says what is wrong."""


def key(folder, resize):
    """The store's folder name: the folder's fingerprint (its files, sizes and times), the resize
    and the store's VERSION."""
    text = f"minialex-store-v{VERSION}|{resize}|{folder.fingerprint()}"
    return hashlib.sha1(text.encode()).hexdigest()[:24]


def decoded(path, resize):
    """(uint8 (H, W, 3) array, None) of one image as the store keeps it, or (None, why not)."""
    img, reason = load_image(path, resize, resize=resize)
    if img is None:
        return None, reason
    return np.asarray(img, dtype=np.uint8), None


def digest(array):
    """The CRC-32 of an image's pixels, as hashes.npy keeps it: the checksum zip and PNG use, which
    catches changed bytes (not an attacker) at a small part of the cost of a cryptographic hash
    (0.06 ms for a 256x341 image, against 3 ms to decode it; SHA-1 took 0.15-0.3 ms)."""
    return zlib.crc32(np.ascontiguousarray(array, np.uint8))


_append_lock = ForkSafeLock()


def append_pixels(folder, array):
    """Append an image's bytes to this process's pixels file in a store being built; returns
    (file name, offset). Each worker process writes its own file; threads of one process take
    turns (a lock), so no two writers share a file position. A write that fails (a full disk, a
    file-size limit) raises OSError; the caller gives up the store."""
    name = f"pixels.{os.getpid()}.u8"
    with _append_lock, open(Path(folder) / name, "ab") as f:
        offset = f.tell()
        f.write(memoryview(np.ascontiguousarray(array, np.uint8)).cast("B"))
    return name, offset


def estimated_bytes(count, resize):
    return int(count * resize * resize * BYTES_PER_PIXEL_ESTIMATE)


_said = set()


def say_once(message):
    """Each warning once in this process, however often the store comes up (every validation)."""
    if message not in _said:
        _said.add(message)
        warnings.warn(message, stacklevel=3)


class Store:
    def __init__(self, path, count=None, resize=None):
        """Open the store at `path`, checked whole (see the module docstring): StoreDamaged when
        its files do not fit together, OSError when they cannot be read."""
        self.path = Path(path)
        self.meta = _read_meta(self.path, count, resize)
        count, resize = self.meta["count"], self.meta["resize"]
        self.index = _read_array(self.path, "index.npy", (count, 4), np.int64)
        self.hashes = _read_array(self.path, "hashes.npy", (count,), np.uint32)
        for name, size in zip(self.meta["files"], self.meta["sizes"]):
            if _plain_file(self.path, name) != size:
                raise StoreDamaged(f"{name} holds {_plain_file(self.path, name)} bytes, {size} when built")
        _check_index(self.index, self.meta["sizes"], resize)
        self.files = [np.memmap(self.path / name, dtype=np.uint8, mode="r", shape=(size,)) if size
                      else np.zeros(0, np.uint8) for name, size in zip(self.meta["files"], self.meta["sizes"])]
        self._held = None
        try:
            os.utime(self.path / "meta.json")        # last used: the size budget removes the oldest first
        except OSError:                              # a read-only store is read all the same
            pass
        _name_on_bus_error(self)

    def hold(self):
        """Mark the store in use for as long as this Store lives (a DataLoader reading it holds
        it): the size budget never removes it. A shared lock on its meta.json, which the end of
        the process releases however it ends. Returns the store."""
        if self._held is None:
            self._held = hold(self.path / "meta.json")
            if self._held is not None:
                weakref.finalize(self, os.close, self._held)
        return self

    @classmethod
    def find(cls, folder, resize, name=None):
        """The complete store of this folder and resize (its key `name` when known), or None: none
        built yet, or one that is damaged (set aside, one warning) or cannot be read (left as it
        is, one warning)."""
        path = store_root() / (name or key(folder, resize))
        if not os.path.lexists(path):
            return None
        try:
            return cls(path, len(folder), resize)
        except StoreDamaged as e:
            set_aside(path, str(e))
        except OSError as e:
            say_once(f"cannot read the decoded store {path} ({e.strerror or e}); it is left as it is "
                     f"and images are decoded every epoch")
        return None

    @classmethod
    def builder(cls, folder, resize, name=None):
        """A StoreBuilder, or None (with the reason printed) when the disk has too little room, the
        stores folder cannot be written, or an unusable store of this key is in the way."""
        root, name = store_root(), name or key(folder, resize)
        if os.path.lexists(root / name):               # Store.find said why it could not be used
            return None
        need = estimated_bytes(len(folder), resize)
        try:
            root.mkdir(parents=True, exist_ok=True)
            if not os.access(root, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "no permission to write there")
            make_room(root, keep=name, need=need)
            free = shutil.disk_usage(root).free
            if free < need * 1.2:
                print(f"minialex: not storing decoded images: about {need / 2**30:.1f} GiB needed in {root}, "
                      f"{free / 2**30:.1f} GiB free; decoding every epoch instead", flush=True)
                return None
            return StoreBuilder(root, name, len(folder), resize, str(Path(getattr(folder, "root", "")).resolve()))
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

    def verify(self, folder, workers=2):
        """(images whose stored pixels lost the hash they were built with, images whose file now
        decodes to other pixels than the store holds): every image hashed, every file decoded
        again, in `workers` threads. Slow (a whole decoding pass): for `minialex-prepare --verify`."""
        from concurrent.futures import ThreadPoolExecutor

        def check(i):
            stored = self.image(i)
            corrupt = stored is not None and digest(stored) != self.hashes[i]
            now, _ = decoded(folder.samples[i][0], self.meta["resize"])
            changed = (now is None) != (stored is None) or (now is not None and (
                now.shape != stored.shape or digest(now) != self.hashes[i]))
            return corrupt, changed
        with ThreadPoolExecutor(max(workers, 1)) as pool:
            found = list(pool.map(check, range(len(self.index))))
        return [i for i, (c, _) in enumerate(found) if c], [i for i, (_, d) in enumerate(found) if d]


# ----- the checks made when a store is opened -----

def _plain_file(folder, name):
    """The size of `name`, a plain file inside the store `folder` (a link leading out, a folder,
    a device or a pipe is damage: nothing outside the store is ever opened)."""
    path = folder / name
    try:
        st = os.stat(path)
        inside = path.resolve().parent == folder.resolve()
    except (FileNotFoundError, NotADirectoryError):     # gone, or the store itself is no folder
        raise StoreDamaged(f"{name} is missing") from None
    if not stat.S_ISREG(st.st_mode) or not inside:
        raise StoreDamaged(f"{name} is not a plain file inside the store")
    return st.st_size


def _read_meta(folder, count, resize):
    """meta.json, its fields of the right types and values, the files it names inside the store."""
    if _plain_file(folder, "meta.json") > 2**20:
        raise StoreDamaged("meta.json is over 1 MiB")
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except ValueError as e:
        raise StoreDamaged(f"meta.json is not JSON ({e})") from None
    if not isinstance(meta, dict):
        raise StoreDamaged("meta.json does not hold an object")
    for field, kind in META_TYPES.items():
        if not isinstance(meta.get(field), kind) or isinstance(meta.get(field), bool):
            raise StoreDamaged(f"meta.json's {field!r} is {meta.get(field)!r}, not {kind.__name__}")
    files, sizes = meta["files"], meta["sizes"]
    if not all(isinstance(f, str) and PIXELS_NAME.fullmatch(f) for f in files) or len(set(files)) != len(files):
        raise StoreDamaged(f"meta.json names files other than pixels.<k>.u8 in the store: {files[:5]}")
    if len(sizes) != len(files) or not all(type(s) is int and s >= 0 for s in sizes) or sum(sizes) != meta["bytes"]:
        raise StoreDamaged("meta.json's sizes do not fit its files and bytes")
    wanted = {"version": VERSION, "count": count, "resize": resize}
    for field, value in wanted.items():
        if value is not None and meta[field] != value:
            raise StoreDamaged(f"meta.json's {field} is {meta[field]}, expected {value}")
    if meta["count"] < 0 or meta["resize"] < 1:
        raise StoreDamaged("meta.json's count or resize is out of range")
    return meta


def _read_array(folder, name, shape, dtype):
    """A .npy file of the store, checked for its shape, type and length before it is read."""
    size = _plain_file(folder, name)
    try:
        mapped = np.load(folder / name, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as e:
        raise StoreDamaged(f"{name} is not a NumPy array file ({e})") from None
    if not isinstance(mapped, np.memmap) or mapped.shape != shape or mapped.dtype != dtype \
            or size != mapped.offset + mapped.nbytes:
        raise StoreDamaged(f"{name} holds {getattr(mapped, 'dtype', '?')} {getattr(mapped, 'shape', '?')}, "
                           f"expected {np.dtype(dtype)} {shape}")
    return np.array(mapped)              # in memory: a change to the file later cannot reach it


def _check_index(index, sizes, resize):
    """Every row: an unreadable image all zeros; a readable one in a pixel file that exists, with
    the resized shape (shorter side `resize`, at most MAX_ASPECT : 1), inside the file's bytes
    and overlapping no other image."""
    readable = index[:, 2] != 0
    if (index[~readable] != 0).any():
        raise StoreDamaged("index.npy has rows of unreadable images that are not all zero")
    f, offset, h, w = index[readable].T
    if not len(f):
        return
    if f.min() < 0 or f.max() >= len(sizes):
        raise StoreDamaged(f"index.npy names pixel files outside 0..{len(sizes) - 1}")
    if (np.minimum(h, w) != resize).any() or np.maximum(h, w).max() > MAX_ASPECT * resize + 2:
        raise StoreDamaged(f"index.npy has image sizes that shorter side {resize} cannot make")
    nbytes = h * w * 3                                   # bounded by the shape check: no overflow
    if offset.min() < 0 or (offset > np.asarray(sizes, np.int64)[f] - nbytes).any():
        raise StoreDamaged("index.npy has images beyond the end of their pixel file")
    end = offset + nbytes
    order = np.lexsort((offset, f))
    same_file = f[order][1:] == f[order][:-1]
    if (offset[order][1:] < end[order][:-1])[same_file].any():
        raise StoreDamaged("index.npy has images that overlap")


def set_aside(path, why):
    """Rename a damaged store out of the way (<key>.damaged-<pid>), with one warning; where it
    cannot be renamed (a read-only file system) it stays and the run decodes every epoch."""
    aside = path.with_name(f"{path.name}.damaged-{os.getpid()}")
    try:
        remove(aside)
        os.rename(path, aside)
    except OSError as e:
        say_once(f"the decoded store {path} is damaged ({why}) and cannot be set aside ({e.strerror or e}); "
                 f"images are decoded every epoch")
        return False
    say_once(f"the decoded store {path} is damaged ({why}); set aside as {aside.name} (removed at the "
             f"next build) and built again")
    return True


# ----- the build -----

class StoreBuilder:
    """Collects the images of one pass (any order, from any process) and makes them a Store. A
    write that fails (the disk full, a file-size limit) ends the build at once: its files are
    removed, one warning says so, and the pass goes on without a store."""

    def __init__(self, root, name, count, resize, data_root=""):
        self.final = root / name
        self.tmp = root / f"{name}.partial-{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.files, self.index = [], np.zeros((count, 4), np.int64)
        self.hashes = np.zeros(count, np.uint32)
        self.done = np.zeros(count, bool)
        self.count, self.resize, self.data_root = count, resize, data_root
        self.failed = None       # why the build was given up

    def record(self, i, file_name, offset, h, w, hashed=None):
        """Image i is at `offset` of `file_name` (h = 0: it cannot be read), its pixels' digest."""
        if file_name is not None and file_name not in self.files:
            self.files.append(file_name)
        self.index[i] = (self.files.index(file_name) if file_name else 0, offset, h, w)
        if hashed is not None:
            self.hashes[i] = hashed
        self.done[i] = True

    def add(self, i, array):
        """Image i's decoded pixels (or None when it cannot be read), written by this process."""
        if array is None:
            self.record(i, None, 0, 0, 0)
            return
        try:
            self.record(i, *append_pixels(self.tmp, array), *array.shape[:2], digest(array))
        except OSError as e:
            self.fail(e)

    def fail(self, error):
        """Give the build up after a write error (said once; its files are removed at once)."""
        if self.failed is None:
            self.failed = str(error)
            warnings.warn(f"writing the decoded store in {self.tmp} failed ({error}: the disk is full "
                          f"or a file-size limit was reached; the free-space check is only an estimate); this "
                          f"epoch goes on, later epochs decode every image", stacklevel=2)
            shutil.rmtree(self.tmp, ignore_errors=True)

    def finish(self):
        """Rename into place once every image is in; returns the Store, or None when the build
        failed (said once)."""
        if self.failed is not None:
            return None
        if not self.done.all():
            raise RuntimeError(f"decoded store: {int((~self.done).sum())} images missing")
        try:
            sizes = []
            for name in self.files:
                with open(self.tmp / name, "rb+") as f:
                    os.fsync(f.fileno())
                    sizes.append(os.fstat(f.fileno()).st_size)
            np.save(self.tmp / "index.npy", self.index, allow_pickle=False)
            np.save(self.tmp / "hashes.npy", self.hashes, allow_pickle=False)
            (self.tmp / "meta.json").write_text(json.dumps({
                "version": VERSION, "resize": self.resize, "count": self.count, "bytes": sum(sizes),
                "files": self.files, "sizes": sizes, "built": time.strftime("%Y-%m-%d %H:%M:%S"),
                "root": self.data_root}))
        except OSError as e:
            self.fail(e)
            return None
        return self._place()

    def _place(self):
        """Rename the finished store into place. A store another process finished first is used
        instead; a damaged folder in the way is set aside first; where the rename cannot be made
        the store is read where it is, for this run."""
        where = self.tmp
        for _ in range(2):
            try:
                os.rename(self.tmp, self.final)
                where = self.final
                break
            except OSError:
                if not os.path.lexists(self.final):      # nothing in the way: the folder cannot be renamed
                    break
            try:
                other = Store(self.final, self.count, self.resize)    # another process finished it first
                self.abandon()
                return other
            except StoreDamaged as e:
                if not set_aside(self.final, str(e)):
                    break
            except OSError:
                break
        if where == self.tmp:
            say_once(f"the decoded store could not be moved to {self.final}; this run reads it "
                     f"from {self.tmp}, the next one builds it again")
        try:
            return Store(where, self.count, self.resize)
        except (StoreDamaged, OSError) as e:
            self.fail(e)
            return None

    def abandon(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


# ----- a pixel file cut short under a running job -----

_mapped = collections.Counter()   # the stores this process has open, named if a bus error comes
_bus = {"message": b""}           # the installed handler, the handler before it, the message


def _forget(path):
    _mapped[path] -= 1
    _bus_message()


def _bus_message():
    open_now = [p for p, n in _mapped.items() if n > 0]
    _bus["message"] = (
        f"\nminialex: bus error (SIGBUS) reading a decoded store's memory-mapped pixels: a pixel file of "
        f"{' or '.join(open_now) or 'a store'} was cut short after this process opened it (removed, truncated "
        f"or rebuilt by another program while this one ran). Remove the store (minialex-prepare --clean) or "
        f"let the next run set it aside and build it again.\n").encode(errors="replace")


def _name_on_bus_error(store):
    """Reading a mapped page past the end of a file that was cut short after it was opened ends
    the process with SIGBUS, which Python cannot catch. A C-level handler (ctypes) writes which
    stores this process has open and why, then lets the signal end the process as before (or
    pass on to faulthandler's traceback where it is on)."""
    path = str(store.path)
    _mapped[path] += 1
    weakref.finalize(store, _forget, path)
    _bus_message()
    if "handler" in _bus or not hasattr(signal, "SIGBUS") or os.name != "posix":
        return
    import ctypes
    try:
        libc = ctypes.PyDLL(None)    # PyDLL: the call keeps the GIL, nothing else runs in between
        libc.signal.restype, libc.signal.argtypes = ctypes.c_void_p, [ctypes.c_int, ctypes.c_void_p]
    except (OSError, AttributeError):
        return

    @ctypes.CFUNCTYPE(None, ctypes.c_int)
    def on_bus_error(signum):
        os.write(2, _bus["message"])
        libc.signal(signum, _bus["previous"])    # the faulting read runs again and ends the process

    _bus["handler"] = on_bus_error
    _bus["previous"] = libc.signal(signal.SIGBUS, ctypes.cast(on_bus_error, ctypes.c_void_p).value)
