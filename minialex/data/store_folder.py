"""The folder of decoded stores (minialex/data/store.py): where it is, what it holds, its size budget.

    store_root()                   $MINIALEX_STORES, else <cache root>/stores
    entries()                      what it holds: stores, builds (running or killed), stores set aside
    make_room(root, keep, need)    before a build: leftovers removed, then the least recently used
                                   stores until the folder fits MINIALEX_STORES_MAX
    hold(meta_json)                a shared lock that marks a store in use while a process reads it

MINIALEX_STORES_MAX is the size the folder may grow to, in bytes or with a K, M, G or T suffix
(powers of 1024): 100G unless set; 0 keeps no store but the one being built. Before each build,
killed builds (<key>.partial-<pid> of a process that is gone) and damaged stores set aside
(<key>.damaged-<pid>) are removed, then stores from the least recently used (a store is used when
a run opens it) until the stores and the new one's estimate fit. Never removed: the store being
built, a build still running, and a store a running process reads (a DataLoader holds a shared
lock on its meta.json, which the end of the process releases however it ends). A budget smaller than
one store still lets that store be built: only the others make room. Names that are not a
store's are never touched. `minialex-prepare --list` shows the folder; `--clean` applies the
budget now (MINIALEX_STORES_MAX=0 minialex-prepare --clean removes every store not in use).
A store removed under a process that reads it stays readable to that process (its pixels are
mapped; on Windows the removal fails and is skipped): only the next run builds it again.
"""
import json
import os
import re
import shutil
import time
import warnings
from collections import namedtuple
from pathlib import Path

from ..paths import cache_root
from ..system import process_alive

try:
    import fcntl
except ImportError:          # Windows: no locks; a store used in the last day counts as in use there
    fcntl = None

STORES_MAX_DEFAULT = "100G"
STORE_NAME = re.compile(r"[0-9a-f]{24}")
BUILD_NAME = re.compile(r"[0-9a-f]{24}\.partial-(\d+)")
ASIDE_NAME = re.compile(r"[0-9a-f]{24}\.damaged-\d+")

Entry = namedtuple("Entry", "path kind bytes used meta")   # kind: store, building, killed build, set aside


def store_root():
    """$MINIALEX_STORES, else <cache root>/stores."""
    return Path(os.environ["MINIALEX_STORES"]) if os.environ.get("MINIALEX_STORES") else cache_root() / "stores"


UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_bad_budget = set()


def parse_size(text):
    """Bytes of a size written 200G, 1.5T, 500M, 0 or 5e10 (K, M, G, T: powers of 1024), or None."""
    m = re.fullmatch(r"(\d+(?:\.\d*)?(?:e\d+)?)\s*([kmgt]?)(?:i?b)?", text.strip(), re.IGNORECASE)
    return int(float(m[1]) * UNITS[m[2].lower()]) if m else None


def stores_max():
    """MINIALEX_STORES_MAX in bytes; a value that is not a size is said once and the default used."""
    text = os.environ.get("MINIALEX_STORES_MAX", "").strip() or STORES_MAX_DEFAULT
    size = parse_size(text)
    if size is None:
        if text not in _bad_budget:
            _bad_budget.add(text)
            warnings.warn(f"MINIALEX_STORES_MAX: expected a size such as 200G, 500M or 0, got {text!r}; "
                          f"using {STORES_MAX_DEFAULT}", stacklevel=2)
        size = parse_size(STORES_MAX_DEFAULT)
    return size


def remove(path):
    """Remove a store's folder (or whatever took its name: a file, a link) as far as it can be."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


def _bytes(path):
    """The bytes of the files under `path` (links not followed)."""
    if not os.path.isdir(path) or os.path.islink(path):
        return os.lstat(path).st_size if os.path.lexists(path) else 0
    total = 0
    for top, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                pass
    return total


def _meta(path):
    """A store's meta.json as far as it can be read (for showing only), and its time."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        return (meta if isinstance(meta, dict) else {}), (path / "meta.json").stat().st_mtime
    except (OSError, ValueError):
        try:
            return {}, path.stat().st_mtime
        except OSError:
            return {}, 0.0


def entries(root=None):
    """The folder's stores, builds and set-aside stores, as Entry(path, kind, bytes, used, meta)
    (`used`: the time a run last opened it), in name order. Other names are left out."""
    root = Path(root) if root is not None else store_root()
    try:
        children = sorted(root.iterdir())
    except OSError:
        return []
    found = []
    for path in children:
        build = BUILD_NAME.fullmatch(path.name)
        if STORE_NAME.fullmatch(path.name):
            kind = "store"
        elif build:
            kind = "building" if process_alive(int(build[1])) else "killed build"
        elif ASIDE_NAME.fullmatch(path.name):
            kind = "set aside"
        else:
            continue
        meta, used = _meta(path)
        found.append(Entry(path, kind, _bytes(path), used, meta))
    return found


def hold(meta_json):
    """A file descriptor of a store's meta.json with a shared lock on it: the store is in use
    until it is closed (the Store closes it when it goes). None where there are no locks."""
    if fcntl is None:
        return None
    try:
        fd = os.open(meta_json, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        pass
    return fd


def in_use(entry):
    """Whether a running process reads the store (holds its shared lock on meta.json)."""
    if fcntl is None:
        return time.time() - entry.used < 86400
    try:
        fd = os.open(entry.path / "meta.json", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def make_room(root=None, keep=None, need=0, budget=None):
    """Remove killed builds and set-aside stores, then the least recently used stores not in use
    (never `keep`, the key being built) until the stores and `need` more bytes fit `budget`
    (MINIALEX_STORES_MAX). Says what it removed; returns the removed entries."""
    root = Path(root) if root is not None else store_root()
    budget = stores_max() if budget is None else budget
    found = entries(root)
    removed = [e for e in found if e.kind in ("killed build", "set aside")]
    kept = [e for e in found if e.kind in ("store", "building")]
    total = sum(e.bytes for e in kept)
    for e in sorted((e for e in kept if e.kind == "store" and e.path.name != keep), key=lambda e: e.used):
        if total + need <= budget:
            break
        if not in_use(e):
            removed.append(e)
            total -= e.bytes
    gone = []
    for e in removed:
        remove(e.path)
        if not os.path.lexists(e.path):
            gone.append(e)
    if gone:
        kinds = ", ".join(sorted({e.kind for e in gone}))
        print(f"minialex: removed {len(gone)} from the decoded stores in {root} ({kinds}; "
              f"{sum(e.bytes for e in gone) / 2**30:.2f} GiB) to keep them within MINIALEX_STORES_MAX="
              f"{budget / 2**30:.1f} GiB", flush=True)
    return gone
