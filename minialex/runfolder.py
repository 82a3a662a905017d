"""The output folder of a minialex-train run: made unique, checked for writing, locked, cleaned.

- A default folder is runs/<arch>-<date>-<time>, with -2, -3, ... added until the name is free
  (made with mkdir, which fails if another run took the name first).
- `probe()` creates and removes a file, so an unwritable --out is found before any work.
- `lock()` creates .minialex-train.lock (pid and host) with O_EXCL: a second run into the folder
  is refused while the first lives; a lock left by a dead process on this host is taken over.
- `remove_temporaries()` deletes what a killed checkpoint save left (minialex.io's .tmp files);
  it runs only under the lock, so no live save is touched.
"""
import json
import os
import socket
import time
from pathlib import Path

from . import io

LOCK = ".minialex-train.lock"
RUN_FILES = ("last.npz", "best.npz", "metrics.jsonl", "interrupted.npz")


class FolderError(Exception):
    """A folder that cannot take this run; the message says why and what to do."""


def unique(base, name):
    """A new folder base/name[-k], created now."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    for k in range(1, 10_000):
        path = base / (name if k == 1 else f"{name}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FolderError(f"no free folder name {base / name}-<k>")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunFolder:
    def __init__(self, path):
        self.path = Path(path)
        self._locked = False

    def create(self):
        if self.path.exists() and not self.path.is_dir():
            raise FolderError(f"--out {self.path} is a file, not a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FolderError(f"--out {self.path} cannot be created ({e.strerror})") from None

    def probe(self):
        probe = self.path / f".minialex-write-probe-{os.getpid()}"
        try:
            with open(probe, "wb") as f:
                f.write(b"minialex")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise FolderError(f"--out {self.path} is not writable ({e.strerror})") from None
        finally:
            try:
                probe.unlink()
            except OSError:
                pass

    def holds_a_run(self):
        return [name for name in RUN_FILES if (self.path / name).exists()]

    def lock(self):
        lock = self.path / LOCK
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    owner = json.loads(lock.read_text())
                except (OSError, ValueError):
                    owner = {}
                pid, host = owner.get("pid"), owner.get("host")
                if host == me["host"] and isinstance(pid, int) and not _alive(pid):
                    lock.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise FolderError(f"{self.path} is in use by another minialex-train (pid {pid} on {host}, "
                                  f"started {owner.get('started')}); wait for it, choose another --out, or "
                                  f"delete {lock} if that run is dead") from None
            except OSError as e:
                raise FolderError(f"--out {self.path}: cannot create its lock file ({e.strerror})") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._locked = True
            return
        raise FolderError(f"{self.path}: could not take the lock {lock}")

    def unlock(self):
        if self._locked:
            (self.path / LOCK).unlink(missing_ok=True)
            self._locked = False

    def remove_temporaries(self):
        """Delete the temporary files of saves that were killed; returns their names."""
        removed = []
        for entry in os.scandir(self.path):
            if entry.is_file() and io.is_temporary(entry.name):
                os.unlink(entry.path)
                removed.append(entry.name)
        return removed
