"""The output folder of a minialex-train run: made unique, checked for writing, locked, cleaned.

- A default folder is runs/<arch>-<date>-<time>, with -2, -3, ... added until the name is free
  (made with mkdir, which fails if another run took the name first).
- `probe()` creates and removes a file, so an unwritable --out is found before any work.
- `lock()` creates .minialex-train.lock (pid and host) with O_EXCL: a second run into the folder
  is refused while the first lives; a lock left by a dead process on this host is taken over.
- `remove_temporaries()` deletes what a killed checkpoint save left (minialex.io's .tmp files);
  it runs only under the lock, so no live save is touched.
"""
import errno
import json
import os
import socket
import stat
import time
from pathlib import Path

from . import io
from .system import process_alive

LOCK = ".minialex-train.lock"
RUN_FILES = ("last.npz", "best.npz", "metrics.jsonl", "interrupted.npz")


class FolderError(Exception):
    """A folder that cannot take this run; the message says why and what to do."""


def unique(base, name):
    """A new folder base/name[-k], created now."""
    base = Path(base)
    try:
        base.mkdir(parents=True, exist_ok=True)
        for k in range(1, 10_000):
            path = base / (name if k == 1 else f"{name}-{k}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as e:
        raise FolderError(f"cannot make a run folder under {base} ({e.strerror}); give --out") from None
    raise FolderError(f"no free folder name {base / name}-<k>")


MAX_LOCK_BYTES = 4096  # what lock() writes is about 80 bytes


def _kind(mode):
    """What a file that is not a regular one is, in words."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"


def _read_lock(lock):
    """{"pid", "host", "started"} of a lock file, or None when it is not one of ours. FolderError
    when it is not a regular file: reading a FIFO would wait for a writer forever (it is opened
    without blocking and without following a link, then checked)."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        if e.errno == errno.ELOOP:      # O_NOFOLLOW met a symbolic link
            raise FolderError(f"{lock} is a symbolic link, not a lock file: remove it (minialex-train makes "
                              f"its own)") from None
        return None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FolderError(f"{lock} is {_kind(mode)}, not a regular file, so not a lock file: remove it "
                              f"(minialex-train makes its own), or choose another --out")
        owner = json.loads(os.read(fd, MAX_LOCK_BYTES).decode())
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(owner, dict) or not isinstance(owner.get("host"), str):
        return None
    pid = owner.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < 2**31:
        return None
    return owner


class RunFolder:
    def __init__(self, path):
        self.path = Path(path)
        self._locked = False

    def create(self):
        try:
            if self.path.exists() and not self.path.is_dir():
                raise FolderError(f"--out {self.path} is a file, not a folder")
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
        """The run files present; FolderError when one of those names is not a regular file."""
        held = []
        for name in RUN_FILES:
            path = self.path / name
            if path.exists() or path.is_symlink():
                if not path.is_file():
                    raise FolderError(f"{path} is not a regular file: remove it, or choose another --out")
                held.append(name)
        return held

    def lock(self):
        lock = self.path / LOCK
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        staged = self.path / f".minialex-lock.{os.getpid()}"
        try:
            staged.unlink(missing_ok=True)    # a leftover of a process with this pid: never write into it
            staged.write_text(json.dumps(me))
            for _ in range(2):
                try:
                    os.link(staged, lock)  # atomic, and the lock never exists without its content
                    self._locked = True
                    return
                except FileExistsError:
                    owner = _read_lock(lock)
                    if owner and owner["host"] == me["host"] and not process_alive(owner["pid"]):
                        lock.unlink(missing_ok=True)  # stale: its process is gone
                        continue
                    who = f"pid {owner['pid']} on {owner['host']}, started {owner.get('started')}" if owner else \
                        "its lock file cannot be read"
                    raise FolderError(f"{self.path} is in use by another minialex-train ({who}); wait for it, "
                                      f"choose another --out, or delete {lock} if that run is dead") from None
        except OSError as e:
            raise FolderError(f"--out {self.path}: cannot create its lock file ({e.strerror})") from None
        finally:
            staged.unlink(missing_ok=True)
        raise FolderError(f"{self.path}: could not take the lock {lock}")

    @property
    def locked(self):
        """Whether this object holds the folder's lock."""
        return self._locked

    def unlock(self):
        if self._locked:
            (self.path / LOCK).unlink(missing_ok=True)
            self._locked = False

    def remove_temporaries(self):
        """Delete the temporary files of saves that were killed; returns their names."""
        removed = []
        for entry in os.scandir(self.path):
            staged_lock = entry.name.startswith(".minialex-lock.") and entry.name[15:].isdigit() and \
                not process_alive(int(entry.name[15:]))
            if entry.is_file() and (io.is_temporary(entry.name) or staged_lock):
                os.unlink(entry.path)
                removed.append(entry.name)
        return removed
