"""save / load: {name: array} as .npz, written atomically, read without pickle.

The archive is a zip of .npy files, one per name, which np.load reads too. A name is a plain key:
slash-separated segments of letters, digits and _ . # - (no segment "." or ".."), such as
"model/conv1.weight", "meta/config" or "optim/velocity.0", so that no member of the zip can point
outside a folder it is unpacked into ("../../x").

Reading never runs code and never allocates more than the file can justify, checked before a
byte of an array is read:
- object arrays (which would need pickle) are refused;
- an array's header must agree with its member's size (a damaged or hostile header declaring a
  huge shape is refused before NumPy allocates for it);
- a compressed member may inflate to at most `max_inflation` times its stored size, counted over
  the members read (ma.save never compresses; a zip bomb of zeros inflates about 1000 times);
- `limits` caps the bytes of chosen entries, a settings text at kilobytes (what a kind of entry
  can need: checkpoint.read uses it for its meta/ entries);
- `keys` reads only the arrays asked for, so a large unknown entry is never read.
Each array is then read in chunks into the array of the size just checked, so the stream cannot
give more than was allowed.
"""
import os
import re
import secrets
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np

from . import backend
from .tensor import Tensor

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first local header, or an empty zip
MAX_INFLATION = 32          # compressed members: at most this many bytes of array per byte of file ...
INFLATION_ALLOWANCE = 1 << 20   # ... beyond the first MiB (small compressed entries inflate more)
MAX_HEADER = 10_000         # bytes of a .npy header (NumPy's own default limit)
_CHUNK = 1 << 22            # bytes read from a member at a time
_SEGMENT = r"[A-Za-z0-9_.#-]+"
_NAME = re.compile(rf"{_SEGMENT}(/{_SEGMENT})*")
MAX_NAME = 1000             # characters in a name
NAMES = ("names expected plain keys: slash-separated segments of letters, digits and _ . # - "
         "(not '.' or '..'), at most 1000 characters, such as 'model/conv1.weight'")


def check_name(name):
    """`name` if it is a plain key (see the module docstring), else TypeError or ValueError."""
    if not isinstance(name, str):
        raise TypeError(f"save: names expected strings, got {name!r}")
    if len(name) > MAX_NAME or not _NAME.fullmatch(name) or any(part in (".", "..") for part in name.split("/")):
        raise ValueError(f"save: {NAMES}, got {name[:80]!r}" + ("..." if len(name) > 80 else ""))
    return name


def save(state_dict, path):
    """Write {name: array} to `path` (.npz). The file is written beside the target and renamed
    over it, so a crash mid-write leaves the previous file intact."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"save: state_dict expected a mapping {{name: array}}, got {type(state_dict).__name__}")
    arrays = {}
    for name, value in state_dict.items():
        check_name(name)
        a = np.asarray(backend.to_numpy(value.data if isinstance(value, Tensor) else value))
        if a.dtype == object:
            raise TypeError(f"save: {name} expected a numeric or string array, got dtype object "
                            "(object arrays would need pickle)")
        arrays[name] = a
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    # A fresh name beside the target (same file system, so the rename is atomic); opened with "x"
    # so it is never someone else's file, and with the usual permissions (umask), unlike mkstemp's 0600.
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for key, a in arrays.items():
                    with archive.open(key + ".npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, a, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def is_temporary(filename):
    """Whether a file name is one of save()'s temporaries (left behind only by a killed process)."""
    parts = filename.split(".")
    return (filename.startswith(".") and filename.endswith(".tmp") and len(parts) >= 5
            and parts[-3].isdigit() and len(parts[-2]) == 8)


def _check_archive(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: {path}: no such file")
    if os.path.isdir(path):
        raise IsADirectoryError(f"load: {path} is a folder, not a .npz file")
    if not os.path.isfile(path):  # a FIFO or a device would block or never end
        raise ValueError(f"load: {path} is not a regular file")
    with open(path, "rb") as f:
        head = f.read(4)
    if head not in _ZIP_MAGIC:
        what = "an empty file" if not head else ("a .npy array" if head == b"\x93NUM" else "a file that is not a zip archive")
        raise ValueError(f"load: {path} expected a .npz archive (a zip of .npy arrays), got {what}")
    return path


def _members(archive):
    """{name: zip member} (a name is its member's without ".npy", as np.load names them)."""
    return {m[:-4] if m.endswith(".npy") else m: m for m in archive.namelist()}


def _limit_of(name, limits):
    """The byte limit for `name` in `limits`: its own entry, else the longest "prefix/" it starts with."""
    if not limits:
        return None
    if name in limits:
        return limits[name]
    prefixes = [k for k in limits if k.endswith("/") and name.startswith(k)]
    return limits[max(prefixes, key=len)] if prefixes else None


def _check_sizes(infos, path, max_inflation):
    """ValueError when the members to be read claim more memory than the file can justify, decided
    from the zip's directory alone: a member larger than the file, a stored (uncompressed) member
    whose two sizes differ, or compressed members that would inflate beyond max_inflation times
    their stored bytes (plus INFLATION_ALLOWANCE)."""
    file_bytes = os.path.getsize(path)
    for i in infos:
        stored = i.compress_type == zipfile.ZIP_STORED
        if i.header_offset + i.compress_size > file_bytes or (stored and i.file_size != i.compress_size):
            raise ValueError(f"load: {path}: {i.filename}'s sizes in the zip directory ({i.compress_size} bytes "
                             f"stored, {i.file_size} inflated) do not fit the file: it is damaged")
    packed = [i for i in infos if i.compress_type != zipfile.ZIP_STORED]
    if max_inflation is None or not packed:
        return
    inflated, stored = sum(i.file_size for i in packed), sum(i.compress_size for i in packed)
    if inflated > max_inflation * stored + INFLATION_ALLOWANCE:
        worst = max(packed, key=lambda i: i.file_size / max(i.compress_size, 1))
        name = worst.filename[:-4] if worst.filename.endswith(".npy") else worst.filename
        raise ValueError(f"load: {path}: {name} is compressed {worst.file_size / max(worst.compress_size, 1):.0f} to 1 "
                         f"({worst.compress_size} bytes of file for {worst.file_size} bytes of array); the "
                         f"compressed entries read would take {inflated} bytes of memory from {stored} bytes of "
                         f"file, more than max_inflation={max_inflation} times (ma.save never compresses)")


def _read_header(f, name, path):
    """(shape, fortran_order, dtype) of the .npy stream f, or ValueError naming the entry."""
    try:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        return read_header(f, max_header_size=MAX_HEADER)
    except (ValueError, SyntaxError, EOFError, TypeError) as e:
        raise ValueError(f"load: {path}: {name} has a damaged array header ({e})") from None


def _read(archive, name, member, path, limit):
    """The array of one member, read through a bounded stream: its size is checked against the
    member's (and against `limit`) before it is allocated, then it is filled chunk by chunk."""
    info = archive.getinfo(member)
    with archive.open(info) as f:
        shape, fortran, dtype = _read_header(f, name, path)   # inflates a few KiB at most
        if dtype.hasobject:
            raise ValueError(f"load: {path}: {name} holds Python objects, which would need pickle to read "
                             f"(refused: allow_pickle=False)")
        count = 1
        for n in shape:
            count *= int(n)
        nbytes = count * dtype.itemsize
        if nbytes != info.file_size - f.tell() or (dtype.itemsize == 0 and count):
            raise ValueError(f"load: {path}: {name} declares {dtype} shape {shape} ({nbytes} bytes) "
                             f"but holds {info.file_size - f.tell()} bytes: the file is damaged")
        if limit is not None and nbytes > limit:
            raise ValueError(f"load: {path}: {name} holds {nbytes} bytes, more than the {limit} bytes "
                             f"this entry may have")
        a = np.empty(count, dtype)
        raw = a.view(np.uint8) if nbytes else None
        done = 0
        while done < nbytes:
            chunk = f.read(min(_CHUNK, nbytes - done))
            if not chunk:
                raise ValueError(f"load: {path}: {name} ends after {done} of its {nbytes} bytes: the file is damaged")
            raw[done:done + len(chunk)] = np.frombuffer(chunk, np.uint8)
            done += len(chunk)
        f.read()  # the end of the member: zipfile checks its CRC here
    return a.reshape(shape[::-1]).transpose() if fortran else a.reshape(shape)


_DAMAGED = (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError)  # RuntimeError: encrypted


def _check_load_arguments(keys, limits, max_inflation):
    if keys is not None and (isinstance(keys, (str, bytes)) or not hasattr(keys, "__iter__")):
        raise TypeError(f"load: keys expected an iterable of names (['meta/epoch'] for one), got {keys!r}")
    if limits is not None and (not isinstance(limits, Mapping) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in limits.values())):
        raise TypeError(f"load: limits expected a mapping {{name or 'prefix/': bytes >= 0}}, got {limits!r}")
    if max_inflation is not None and (isinstance(max_inflation, bool) or not isinstance(max_inflation, (int, float))
                                      or not max_inflation >= 1):
        raise ValueError(f"load: max_inflation expected a number >= 1 or None, got {max_inflation!r}")


def load(path, keys=None, limits=None, max_inflation=MAX_INFLATION):
    """{name: NumPy array} from a file written by save (no pickle: no code can run).

    keys: an iterable of names; only those present are read (default: every entry).
    limits: {name or "prefix/": bytes}: an entry's array may hold at most that many bytes (its
        own name first, else the longest prefix it starts with; none: no limit), refused before it
        is read. E.g. {"meta/": 65536, "meta/history": 16 << 20}.
    max_inflation: compressed entries may inflate to at most this many times their stored bytes
        (over all the entries read, beyond INFLATION_ALLOWANCE); None allows any (a file you trust).
    A file that breaks a rule is a ValueError naming the entry, raised before that entry is read."""
    _check_load_arguments(keys, limits, max_inflation)
    path = _check_archive(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = _members(archive)
            names = list(members) if keys is None else [k for k in keys if k in members]
            _check_sizes([archive.getinfo(members[n]) for n in names], path, max_inflation)
            return {name: _read(archive, name, members[name], path, _limit_of(name, limits)) for name in names}
    except _DAMAGED as e:
        raise ValueError(f"load: {path} is damaged or truncated ({e})") from None


def names(path):
    """The array names in a file written by save, without reading any array."""
    path = _check_archive(path)
    try:
        with zipfile.ZipFile(path) as archive:
            return list(_members(archive))
    except _DAMAGED as e:
        raise ValueError(f"load: {path} is damaged or truncated ({e})") from None
