"""The decoded store (minialex/data/store.py, store_folder.py) and the first pass that builds it:
the batches it gives, its key, damage found when a store is opened, stores that cannot be
written or read, a full disk, the size budget, minialex-prepare's --list, --clean and --verify,
decode workers that die, and images that change while a run goes."""
import errno
import gc
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minialex.data import DataLoader, ImageFolder, Transform
from minialex.data import store
from minialex.data import store_folder
from minialex.system import process_alive

REPO = Path(__file__).resolve().parent.parent
STATS = {"mean": np.array([0.4, 0.5, 0.6], np.float32), "std": np.array([0.2, 0.25, 0.3], np.float32),
         "eigvals": np.array([0.01, 0.05, 0.2], np.float32), "eigvecs": np.eye(3, dtype=np.float32)[::-1].copy()}


@pytest.fixture
def stores(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIALEX_STORES", str(tmp_path / "stores"))
    monkeypatch.delenv("MINIALEX_STORES_MAX", raising=False)
    return tmp_path / "stores"


def _photo_folder(tmp_path, n=10, size=(50, 37), name="data"):
    rng = np.random.default_rng(40)
    for i in range(n):
        cls = tmp_path / name / ("a" if i % 2 else "b")
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(cls / f"{i}.jpg", quality=90)
    return ImageFolder(tmp_path / name)


def _epochs(folder, epochs, size=16, **kw):
    out = []
    for e in epochs:
        loader = DataLoader(folder, Transform(size, STATS, "train"), batch_size=3, shuffle=True, drop_last=True,
                            seed=5, **kw)
        loader.set_epoch(e)
        out.append(list(loader))
    return out


def _same_batches(a, b):
    assert len(a) == len(b) and len(a) > 0
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def _build(folder, size=16):
    _epochs(folder, [1], size=size, cache=True, workers=2)
    built = store.Store.find(folder, Transform(size, STATS).resize)
    assert built is not None
    return built


# ----- the store gives the batches decoding gives -----

def test_the_store_gives_the_batches_decoding_gives(tmp_path, stores):
    folder = _photo_folder(tmp_path)
    plain = _epochs(folder, [1, 2], cache=False, workers=2)
    assert store.Store.find(folder, 18) is None
    first = _epochs(folder, [1], cache=True, workers=2)              # decodes in threads, builds the store
    for path in stores.iterdir():
        shutil.rmtree(path)
    again = _epochs(folder, [1], cache=True, workers=5)              # in worker processes
    _same_batches(first[0], again[0])
    built = store.Store.find(folder, 18)
    assert len(built.meta["files"]) >= 2                             # each process its own pixels file
    assert built.meta["count"] == 10 and built.meta["root"] == str((tmp_path / "data").resolve())
    later = _epochs(folder, [2], cache=True, workers=0)               # from the store, no decoding
    for a, b in zip(plain, first + later):
        _same_batches(a, b)
    a = built.image(0)
    assert a.dtype == np.uint8 and min(a.shape[:2]) == 18 and not a.flags.writeable
    for i in range(10):                                              # a hash per image, for --verify
        want, _ = store.decoded(folder.samples[i][0], 18)
        np.testing.assert_array_equal(built.image(i), want)
        assert built.hashes[i] == zlib.crc32(want.tobytes())


def test_an_interrupted_first_pass_leaves_no_store_and_an_edit_makes_a_new_one(tmp_path, stores):
    folder = _photo_folder(tmp_path)
    loader = DataLoader(folder, Transform(16, STATS, "train"), batch_size=3, shuffle=True, workers=2)
    for _ in loader:
        break                                                          # stop in the middle of the first pass
    assert store.Store.find(folder, 18) is None
    assert not list(stores.glob("*.partial-*"))
    list(loader)
    first_key = store.key(folder, 18)
    assert store.Store.find(folder, 18) is not None
    path = folder.samples[0][0]
    Image.new("RGB", (50, 37), (1, 2, 3)).save(path)                 # an edit: the old store is not used
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert store.key(folder, 18) != first_key and store.Store.find(folder, 18) is None


@pytest.mark.filterwarnings("ignore:skipping image")
def test_the_first_pass_stores_unreadable_images_as_missing_and_every_image_with_drop_last(tmp_path, stores):
    folder = _photo_folder(tmp_path, n=7)
    (folder.samples[2][0]).write_bytes(b"\xff\xd8 broken")
    loader = DataLoader(folder, Transform(16, STATS, "val"), batch_size=3, shuffle=True, drop_last=True, workers=2)
    with pytest.warns(UserWarning, match="skipping image"):
        batches = list(loader)
    built = store.Store.find(folder, 18)
    assert built is not None and built.image(2) is None and sum(built.image(i) is not None for i in range(7)) == 6
    assert built.index[2].tolist() == [0, 0, 0, 0]
    assert sum(len(y) for _, y in batches) + loader.skipped == 6


# ----- the key -----

def test_the_fingerprint_changes_with_every_fact_it_hashes_and_keys_the_store(tmp_path):
    """One hash of a folder (ImageFolder.fingerprint), used by the store's key: a file's time,
    size, name or label, and the root, each change it; scanning the same files again does not."""
    import hashlib
    folder = _photo_folder(tmp_path, n=4)
    first = folder.fingerprint()
    h = hashlib.sha1(os.fsencode((tmp_path / "data").resolve()))   # what it hashes, written out
    for path, label in folder.samples:
        st = path.stat()
        h.update(b"|" + os.fsencode(path.resolve()) + f"|{label}|{st.st_size}|{st.st_mtime_ns}".encode())
    assert first == h.hexdigest() and len(first) == 40
    assert ImageFolder(tmp_path / "data").fingerprint() == first
    assert store.key(folder, 18) == store.key(ImageFolder(tmp_path / "data"), 18) != store.key(folder, 20)
    assert store.key(folder, 18) == hashlib.sha1(
        f"minialex-store-v{store.VERSION}|18|{first}".encode()).hexdigest()[:24]
    path = folder.samples[0][0]
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))    # time: 1 ns later
    assert folder.fingerprint() != first
    seen = {first, folder.fingerprint()}
    with open(path, "ab") as f:                                                  # size: one byte more
        f.write(b"\0")
    seen.add(folder.fingerprint())
    path.rename(path.with_name("renamed.jpg"))                                   # name
    seen.add(ImageFolder(tmp_path / "data").fingerprint())
    seen.add(ImageFolder(tmp_path / "data", classes=["b", "a"]).fingerprint())  # labels: b is now 0
    (tmp_path / "data").rename(tmp_path / "moved")                               # root
    seen.add(ImageFolder(tmp_path / "moved").fingerprint())
    assert len(seen) == 6


def test_the_key_is_one_however_the_data_path_is_spelled(tmp_path, stores, monkeypatch):
    """`data`, `./data/`, the absolute path and a link to the folder are one data set: one store."""
    _photo_folder(tmp_path / "real", n=4)
    (tmp_path / "link").symlink_to(tmp_path / "real" / "data")
    monkeypatch.chdir(tmp_path / "real")
    spellings = ["data", "./data/", str(tmp_path / "real" / "data"), "../link", str(tmp_path / "link") + "/"]
    keys = {store.key(ImageFolder(s), 18) for s in spellings}
    assert len(keys) == 1
    _build(ImageFolder("data"))
    for s in spellings[1:]:
        assert store.Store.find(ImageFolder(s), 18) is not None
    assert len([p for p in stores.iterdir()]) == 1


# ----- images that change while a run goes -----

def test_an_image_deleted_while_a_run_goes_is_unreadable_and_the_next_key_sees_it(tmp_path, stores):
    folder = _photo_folder(tmp_path, n=8)
    before = store.key(folder, 18)
    gone = folder.samples[3][0]
    gone.unlink()                                   # deleted after the folder was read (a validation set)
    loader = DataLoader(folder, Transform(16, STATS, "val"), batch_size=3, workers=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        served = [list(loader) for _ in range(2)]   # the first pass builds the store, the second reads it
    assert [sum(len(y) for _, y in s) for s in served] == [7, 7] and loader.skipped == 1
    said = [str(w.message) for w in caught if str(gone) in str(w.message)]
    assert len(said) == 1 and "gone" in said[0]
    after = store.key(folder, 18)
    assert after != before and store.key(ImageFolder(tmp_path / "data"), 18) != after
    replaced = folder.samples[0][0]                 # replaced: a new time, a new key
    Image.new("RGB", (50, 37), (9, 9, 9)).save(replaced)
    assert store.key(folder, 18) != after
    Image.new("RGB", (50, 37)).save(tmp_path / "data" / "a" / "new.jpg")      # added: the next scan's key
    assert store.key(ImageFolder(tmp_path / "data"), 18) not in (before, after, store.key(folder, 18))


# ----- damage found when a store is opened -----

def _pixels(path, k=0):
    return path / json.loads((path / "meta.json").read_text())["files"][k]


def _edit_index(path, edit):
    index = np.load(path / "index.npy")
    edit(index)
    np.save(path / "index.npy", index)


def _edit_meta(path, edit):
    meta = json.loads((path / "meta.json").read_text())
    edit(meta)
    (path / "meta.json").write_text(json.dumps(meta))


def _first_readable(path):
    index = np.load(path / "index.npy")
    return int(np.flatnonzero(index[:, 2])[0])


def _outside_link(path):
    target = path.parent.parent / "outside.u8"
    shutil.copy(_pixels(path), target)
    _pixels(path).unlink()
    _pixels(path).symlink_to(target)


DAMAGE = {
    "a pixel file cut short": lambda p: os.truncate(_pixels(p), _pixels(p).stat().st_size - 1),
    "a pixel file emptied": lambda p: os.truncate(_pixels(p), 0),
    "a pixel file grown": lambda p: _pixels(p).write_bytes(_pixels(p).read_bytes() + b"\0" * 100),
    "a pixel file gone": lambda p: _pixels(p).unlink(),
    "a pixel file that is a folder": lambda p: (_pixels(p).unlink(), _pixels(p).mkdir()),
    "a pixel file linked from outside the store": _outside_link,
    "an offset past the end": lambda p: _edit_index(p, lambda ix: ix.__setitem__(
        (_first_readable(p), 1), _pixels(p).stat().st_size)),
    "a negative offset": lambda p: _edit_index(p, lambda ix: ix.__setitem__((_first_readable(p), 1), -6)),
    "a huge offset": lambda p: _edit_index(p, lambda ix: ix.__setitem__((_first_readable(p), 1), 2**63 - 8)),
    "images that overlap": lambda p: _edit_index(p, lambda ix: ix.__setitem__(
        (slice(None), 1), np.where(ix[:, 2] > 0, 0, ix[:, 1]))),
    "a file number out of range": lambda p: _edit_index(p, lambda ix: ix.__setitem__((_first_readable(p), 0), 7)),
    "a size the resize cannot make": lambda p: _edit_index(p, lambda ix: ix.__setitem__((_first_readable(p), 2), 5)),
    "an unreadable row that is not zero": lambda p: _edit_index(p, lambda ix: ix.__setitem__(
        _first_readable(p), (0, 5, 0, 24))),
    "an index of another length": lambda p: np.save(p / "index.npy", np.load(p / "index.npy")[:-1]),
    "an index of floats": lambda p: np.save(p / "index.npy", np.load(p / "index.npy").astype(np.float64)),
    "an index that is no array": lambda p: (p / "index.npy").write_bytes(b"garbage"),
    "an index cut short": lambda p: os.truncate(p / "index.npy", (p / "index.npy").stat().st_size - 8),
    "no hashes": lambda p: (p / "hashes.npy").unlink(),
    "no meta.json": lambda p: (p / "meta.json").unlink(),
    "half deleted": lambda p: [f.unlink() for f in p.iterdir() if f.name != "meta.json"],
    "a file where the store's folder was": lambda p: (shutil.rmtree(p), p.write_bytes(b"not a folder")),
    "meta.json not JSON": lambda p: (p / "meta.json").write_text("{not json"),
    "meta.json a list": lambda p: (p / "meta.json").write_text("[]"),
    "a count that is text": lambda p: _edit_meta(p, lambda m: m.__setitem__("count", str(m["count"]))),
    "files that are text": lambda p: _edit_meta(p, lambda m: m.__setitem__("files", m["files"][0])),
    "files that are numbers": lambda p: _edit_meta(p, lambda m: m.__setitem__("files", [1] * len(m["files"]))),
    "a file outside the store": lambda p: _edit_meta(p, lambda m: m["files"].__setitem__(0, "../../outside.u8")),
    "an absolute file": lambda p: _edit_meta(p, lambda m: m["files"].__setitem__(0, "/etc/hostname")),
    "sizes that are text": lambda p: _edit_meta(p, lambda m: m.__setitem__("sizes", [str(s) for s in m["sizes"]])),
    "a count that is true": lambda p: _edit_meta(p, lambda m: m.__setitem__("count", True)),
    "another resize": lambda p: _edit_meta(p, lambda m: m.__setitem__("resize", 20)),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_store_is_found_when_opened_set_aside_once_and_built_again(tmp_path, stores, damage):
    """Everything checked at open, before any batch: never a crash mid-epoch or at validation;
    one warning naming the store's folder; the next pass builds it again."""
    folder = _photo_folder(tmp_path)
    plain = _epochs(folder, [2], cache=False, workers=2)
    path = _build(folder).path
    DAMAGE[damage](path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.Store.find(folder, 18) is None                 # what validation's loader does first
        again = _epochs(folder, [2], cache=True, workers=2)
    _same_batches(plain[0], again[0])
    said = [str(w.message) for w in caught]
    assert len(said) == 1 and str(path) in said[0] and "damaged" in said[0], said
    rebuilt = store.Store.find(folder, 18)
    assert rebuilt is not None and rebuilt.path == path
    assert sorted(p.name for p in stores.iterdir()) == [path.name]  # the damaged one set aside, then removed


def test_opening_a_store_never_deletes_it_for_a_permission_problem(tmp_path, stores, monkeypatch):
    """A store that cannot be read (no permission, an I/O error) is left as it is: one warning,
    and the run decodes every epoch; nothing is built over it."""
    folder = _photo_folder(tmp_path)
    plain = _epochs(folder, [2, 3], cache=False, workers=2)
    path = _build(folder).path
    files = sorted(p.name for p in path.iterdir())
    real_open = open

    def no_permission(file, *args, **kw):
        if str(file).startswith(str(path)):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kw)
    with monkeypatch.context() as m, warnings.catch_warnings(record=True) as caught:
        m.setattr("builtins.open", no_permission)
        m.setattr(Path, "read_bytes", lambda self: no_permission(self).read())
        m.setattr(Path, "read_text", lambda self, *a, **k: no_permission(self).read())
        warnings.simplefilter("always")
        got = _epochs(folder, [2, 3], cache=True, workers=2)
    for a, b in zip(plain, got):
        _same_batches(a, b)
    said = [str(w.message) for w in caught]
    assert len(said) == 1 and str(path) in said[0] and "cannot read" in said[0], said
    assert sorted(p.name for p in path.iterdir()) == files and store.Store.find(folder, 18) is not None
    assert not list(stores.glob("*.partial-*")) and not list(stores.glob("*.damaged-*"))


def _read_only_file_system(patch, path):
    def refuse(*args, **kw):
        raise OSError(errno.EROFS, "Read-only file system", str(path))
    for name in ("utime", "rename", "mkdir", "unlink", "rmdir"):
        patch.setattr(os, name, refuse)


@pytest.mark.parametrize("how", ["chmod", "read-only file system"])
def test_a_read_only_store_is_read(tmp_path, stores, monkeypatch, how):
    """A store prepared on a shared mount (read-only) is used, not called damaged."""
    folder = _photo_folder(tmp_path)
    path = _build(folder).path
    built = json.loads((path / "meta.json").read_text())["built"]
    want = _epochs(folder, [2], cache=False, workers=2)
    if how == "chmod" and os.geteuid() == 0:
        pytest.skip("chmod does not stop root from writing (the other variant covers it)")
    try:
        with monkeypatch.context() as m, warnings.catch_warnings():
            if how == "chmod":
                for p in [*path.iterdir(), path, stores]:
                    p.chmod(0o555 if p.is_dir() else 0o444)
            else:
                _read_only_file_system(m, path)
            warnings.simplefilter("error")
            found = store.Store.find(folder, 18)
            got = _epochs(folder, [2], cache=True, workers=0)
    finally:
        for p in [path, stores]:
            p.chmod(0o755)
    assert found is not None and found.meta["built"] == built
    _same_batches(want[0], got[0])
    assert sorted(p.name for p in stores.iterdir()) == [path.name]


def test_a_stores_folder_that_cannot_be_written_means_decoding_every_epoch(tmp_path, stores, monkeypatch, capsys):
    """No store to read and none can be built (a read-only folder): decoding, said once per pass."""
    folder = _photo_folder(tmp_path)
    want = _epochs(folder, [1, 2], cache=False, workers=2)
    stores.mkdir()
    with monkeypatch.context() as m:
        m.setattr(os, "access", lambda path, mode, **kw: not (mode & os.W_OK and str(path).startswith(str(stores))))
        loader = DataLoader(folder, Transform(16, STATS, "train"), batch_size=3, shuffle=True, drop_last=True,
                            seed=5, workers=2)
        got = []
        for e in (1, 2):
            loader.set_epoch(e)
            got.append(list(loader))
    for a, b in zip(want, got):
        _same_batches(a, b)
    out = capsys.readouterr().out
    assert out.count("not storing decoded images: cannot write in") == 1 and str(stores) in out
    assert not list(stores.iterdir())


def test_a_store_in_the_way_of_the_rename_is_used_or_set_aside_never_a_crash(tmp_path, stores, monkeypatch):
    """Another process finished the same store first (used), or a damaged folder appeared at the
    key during the build (set aside, the new store renamed into place)."""
    folder = _photo_folder(tmp_path)
    want = _epochs(folder, [1], cache=False, workers=2)
    first = _build(folder)
    name = first.path.name
    real_builder = store.Store.builder

    def racing(folder, resize, key=None):            # the store appears while this pass builds its own
        b = real_builder(folder, resize, key)
        shutil.move(str(tmp_path / "kept"), str(first.path))
        return b
    monkeypatch.setattr(store.Store, "builder", racing)
    shutil.move(str(first.path), str(tmp_path / "kept"))
    got = _epochs(folder, [1], cache=True, workers=2)
    _same_batches(want[0], got[0])
    assert sorted(p.name for p in stores.iterdir()) == [name]
    shutil.move(str(first.path), str(tmp_path / "kept"))
    (tmp_path / "kept" / "meta.json").unlink()       # now the one in the way is damaged
    with pytest.warns(UserWarning, match=f"{first.path}.*damaged"):
        got = _epochs(folder, [1], cache=True, workers=2)
    _same_batches(want[0], got[0])
    assert store.Store.find(folder, 18) is not None
    assert sorted(p.name for p in stores.iterdir()) == [name, f"{name}.damaged-{os.getpid()}"]


# ----- a full disk -----

@pytest.mark.parametrize("workers", [2, 5])
def test_a_write_error_while_building_keeps_the_epoch_and_decodes_later_ones(tmp_path, stores, workers):
    """The free-space check is an estimate: a file-size limit (or the disk filling) during the
    build gives the store up with one warning; the epoch's batches all come, later epochs decode."""
    import resource
    folder = _photo_folder(tmp_path, n=12)
    want = _epochs(folder, [1, 2], cache=False, workers=2)
    loader = DataLoader(folder, Transform(16, STATS, "train"), batch_size=3, shuffle=True, drop_last=True,
                        seed=5, workers=workers)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader.set_epoch(1)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, limit[1]))   # one image per pixels file fits
        try:
            first = list(loader)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        loader.set_epoch(2)
        second = list(loader)
    _same_batches(want[0], first)
    _same_batches(want[1], second)
    said = [str(w.message) for w in caught]
    assert len(said) == 1 and "writing the decoded store" in said[0] and str(stores) in said[0], said
    assert "later epochs decode" in said[0] and not loader.cache and loader.store is None
    assert store.Store.find(folder, 18) is None and not list(stores.glob("*.partial-*"))


def test_a_full_disk_while_the_index_is_written_gives_the_store_up(tmp_path, stores, monkeypatch):
    folder = _photo_folder(tmp_path)
    want = _epochs(folder, [1], cache=False, workers=2)

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")
    with monkeypatch.context() as m, pytest.warns(UserWarning, match="No space left on device.*later epochs decode"):
        m.setattr(store.np, "save", full)
        got = _epochs(folder, [1], cache=True, workers=2)
    _same_batches(want[0], got[0])
    assert not list(stores.iterdir())


def test_too_little_disk_means_decoding_every_epoch(tmp_path, stores, monkeypatch, capsys):
    folder = _photo_folder(tmp_path)
    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
    loader = DataLoader(folder, Transform(16, STATS, "val"), batch_size=4)
    assert sum(len(y) for _, y in loader) == 10
    assert "not storing decoded images" in capsys.readouterr().out and store.Store.find(folder, 18) is None


# ----- the size budget, --list, --clean -----

def _aged(entry_path, seconds_ago):
    t = time.time() - seconds_ago
    os.utime(entry_path / "meta.json", (t, t))


def _leftovers(stores):
    """A killed build (a process that is gone), a store set aside, and a folder that is no store."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name in (f"{'a' * 24}.partial-{dead.pid}", f"{'b' * 24}.damaged-12"):
        (stores / name).mkdir(parents=True)
        (stores / name / "pixels.1.u8").write_bytes(b"\0" * 5000)
    (stores / "mine").mkdir()
    (stores / "mine" / "notes.txt").write_text("not a store")


def test_the_stores_folder_keeps_within_its_budget_least_recently_used_first(tmp_path, stores, monkeypatch, capsys):
    folder = _photo_folder(tmp_path)
    old, middle, recent = (_build(folder, size).path for size in (16, 20, 24))
    _aged(old, 3000)
    _aged(middle, 2000)
    _aged(recent, 1000)
    _leftovers(stores)
    sizes = {e.path.name: e.bytes for e in store_folder.entries(stores)}
    need = store.estimated_bytes(10, Transform(28, STATS).resize)
    monkeypatch.setenv("MINIALEX_STORES_MAX", str(sizes[middle.name] + sizes[recent.name] + need))
    capsys.readouterr()
    newest = _build(folder, 28).path                   # makes room first: the oldest store goes
    assert sorted(p.name for p in stores.iterdir()) == sorted(["mine", middle.name, recent.name, newest.name])
    out = capsys.readouterr().out
    assert "removed 3" in out and "MINIALEX_STORES_MAX" in out
    reader = DataLoader(folder, Transform(24, STATS, "val"), batch_size=4)
    assert len(list(reader)) == 3 and reader.store.path == recent   # a loader reads `recent`: in use
    _aged(recent, 5000)                                # the oldest now, but in use: kept
    found = store.Store.find(folder, 23)               # `middle`, opened, not held: not in use
    monkeypatch.setenv("MINIALEX_STORES_MAX", "0")     # nothing fits: every store not in use goes
    last = _build(folder, 32).path
    assert sorted(p.name for p in stores.iterdir()) == sorted(["mine", recent.name, last.name])
    assert found is not None and found.image(0).shape == (23, 31, 3)   # removed under it, still read
    del reader
    gc.collect()
    store_folder.make_room(stores)                     # no longer in use
    assert sorted(p.name for p in stores.iterdir()) == ["mine"]


def test_minialex_prepare_lists_and_cleans_the_stores_folder(tmp_path, stores, monkeypatch, capsys):
    from minialex import prepare
    folder = _photo_folder(tmp_path / "d", name="train")
    assert prepare.main([str(tmp_path / "d"), "--workers", "2"]) == 0
    _leftovers(stores)
    capsys.readouterr()
    assert prepare.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert str(stores) in out and str(folder.root.resolve()) in out and "10 images" in out
    assert "killed build" in out and "set aside" in out and "mine" not in out
    assert prepare.main(["--clean"]) == 0                               # within the default budget: leftovers
    out = capsys.readouterr().out
    assert "removed 2" in out and sorted(p.name for p in stores.iterdir()) == sorted(
        ["mine", store.key(folder, 72)])
    monkeypatch.setenv("MINIALEX_STORES_MAX", "0")
    assert prepare.main(["--clean"]) == 0
    assert sorted(p.name for p in stores.iterdir()) == ["mine"]
    assert prepare.main(["--clean"]) == 0 and "nothing to remove" in capsys.readouterr().out
    monkeypatch.setenv("MINIALEX_STORES_MAX", "lots")
    with pytest.warns(UserWarning, match="MINIALEX_STORES_MAX: expected a size such as 200G.*'lots'"):
        assert store_folder.stores_max() == 100 * 2**30


def test_minialex_prepare_builds_the_stores_that_training_then_finds(tmp_path, stores, capsys):
    from minialex import prepare
    from minialex.data import make_synthetic
    data = make_synthetic(tmp_path / "tiny", train_per_class=3, val_per_class=1, quiet=True)
    assert prepare.main([str(data), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "train: 30 images" in out and "val: 10 images" in out and "built in" in out
    train = ImageFolder(data / "train")
    found = store.Store.find(train, 72)
    assert found is not None and found.image(0).shape[:2] in ((72, 72),)
    assert prepare.main([str(data)]) == 0 and capsys.readouterr().out.count("already there") == 2
    (found.path / "meta.json").unlink()                              # half deleted: built again
    with pytest.warns(UserWarning, match="damaged"):
        assert prepare.main([str(data)]) == 0
    assert "train: 30 images" in capsys.readouterr().out and store.Store.find(train, 72) is not None


def test_minialex_prepare_verify_finds_changed_pixels_and_files_changed_in_place(tmp_path, stores, capsys):
    """The key sees sizes and times only: --verify hashes every stored image and decodes every file
    again, and builds a store that differs again."""
    from minialex import prepare
    rng = np.random.default_rng(3)
    for i in range(6):
        cls = tmp_path / "d" / "train" / "ab"[i // 3]
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (80, 90, 3), np.uint8)).save(cls / f"{i}.bmp")
    data = str(tmp_path / "d")
    assert prepare.main([data, "--workers", "2"]) == 0
    assert prepare.main([data, "--verify"]) == 0
    assert "the store matches its hashes and the files" in capsys.readouterr().out
    folder = ImageFolder(tmp_path / "d" / "train")
    built = store.Store.find(folder, 72)
    f, offset = (int(v) for v in built.index[4, :2])
    pixels = built.path / built.meta["files"][f]
    del built
    with open(pixels, "r+b") as fh:                                     # one stored byte changed on disk
        fh.seek(offset + 100)
        fh.write(bytes([(fh.read(1)[0] + 1) % 256]))
    path = folder.samples[1][0]                                         # a file rewritten in place:
    st = path.stat()                                                    # the same size and time
    Image.fromarray(rng.integers(0, 256, (80, 90, 3), np.uint8)).save(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and store.key(folder, 72) == store.key(ImageFolder(folder.root), 72)
    with pytest.warns(UserWarning, match="found by --verify"):
        assert prepare.main([data, "--verify"]) == 0
    out = capsys.readouterr().out
    assert "1 stored images no longer match" in out and "4.bmp" in out
    assert "1 images decode to other pixels" in out and "1.bmp" in out and "built in" in out
    rebuilt = store.Store.find(folder, 72)
    np.testing.assert_array_equal(rebuilt.image(1), store.decoded(path, 72)[0])
    assert prepare.main([data, "--verify"]) == 0 and "matches" in capsys.readouterr().out


# ----- a pixel file cut short under a running job -----

BUS_ERROR = """
import os, sys
import numpy as np
from minialex.data import ImageFolder
from minialex.data.store import Store
store = Store.find(ImageFolder(sys.argv[1]), 18)
assert store is not None
os.truncate(store.path / store.meta["files"][int(store.index[0, 0])], 0)   # cut short after it was opened
print(int(np.array(store.image(0)).sum()))
"""


@pytest.mark.skipif(not hasattr(signal, "SIGBUS"), reason="no SIGBUS here")
def test_a_pixel_file_cut_short_under_a_running_job_is_named_before_the_bus_error(tmp_path, stores):
    folder = _photo_folder(tmp_path)
    path = _build(folder).path
    env = dict(os.environ, PYTHONPATH=str(REPO), MINIALEX_STORES=str(stores))
    run = subprocess.run([sys.executable, "-c", BUS_ERROR, str(folder.root)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == -signal.SIGBUS, (run.returncode, run.stderr)
    assert "SIGBUS" in run.stderr and str(path) in run.stderr and "cut short" in run.stderr


# ----- decode worker processes -----

ORPHANS = """
import multiprocessing, sys, time
import numpy as np
from minialex.data import DataLoader, ImageFolder, Transform
stats = {"mean": np.zeros(3, np.float32), "std": np.ones(3, np.float32),
         "eigvals": np.zeros(3, np.float32), "eigvecs": np.eye(3, dtype=np.float32)}
loader = DataLoader(ImageFolder(sys.argv[1]), Transform(16, stats, "val"), batch_size=2, workers=5)
batches = iter(loader)
next(batches)                      # the first pass goes on in the workers
print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
time.sleep(600)
"""


def test_decode_workers_end_with_a_main_process_killed_by_sigkill(tmp_path, stores):
    """kill -9 (the out-of-memory killer, a scheduler) of the main process mid-pass: its worker
    processes (workers > THREADS_UP_TO) end too instead of living on."""
    folder = _photo_folder(tmp_path, n=40)
    env = dict(os.environ, PYTHONPATH=str(REPO), MINIALEX_STORES=str(stores))
    main = subprocess.Popen([sys.executable, "-c", ORPHANS, str(folder.root)], stdout=subprocess.PIPE, text=True,
                            env=env)
    workers = []
    try:
        workers = [int(p) for p in main.stdout.readline().split()]
        assert len(workers) == 5
        main.kill()
        main.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(process_alive(p) for p in workers):
            time.sleep(0.1)
        assert not [p for p in workers if process_alive(p)]
    finally:
        main.kill()
        main.wait()
        main.stdout.close()
        for p in workers:
            if process_alive(p):
                os.kill(p, signal.SIGKILL)


def test_a_decode_worker_killed_on_its_own_costs_only_its_images(tmp_path, stores):
    """One worker process killed mid-pass breaks the pool: its images are decoded again in a fresh
    pool, the epoch goes on with the same batches, and the store is complete."""
    folder = _photo_folder(tmp_path, n=120)          # (many images: tasks remain when the worker dies)
    want = _epochs(folder, [1], cache=False, workers=2)[0]
    loader = DataLoader(folder, Transform(16, STATS, "train"), batch_size=3, shuffle=True, drop_last=True,
                        seed=5, workers=5)
    loader.set_epoch(1)
    got, before = [], {p.pid for p in multiprocessing.active_children()}   # (another test's may linger)
    with pytest.warns(UserWarning, match="decode worker process ended unexpectedly"):
        for x, y in loader:
            if not got:
                children = [p for p in multiprocessing.active_children() if p.pid not in before]
                assert len(children) == 5
                os.kill(children[0].pid, signal.SIGKILL)
            got.append((x, y))
    _same_batches(want, got)
    built = store.Store.find(folder, 18)
    assert built is not None
    for i in range(len(folder)):
        np.testing.assert_array_equal(built.image(i), store.decoded(folder.samples[i][0], 18)[0])
