"""save / load: {name: array} as .npz, written atomically, read without pickle.

The archive is a zip of .npy files, one per name, which np.load reads too. Any string is a valid
name (np.savez cannot take a name such as "file"). Reading never runs code: object arrays (which
would need pickle) are refused, and `load(path, keys=...)` reads only the arrays asked for, so a
large unknown entry is never read into memory.
"""
import os
import secrets
import zipfile

import numpy as np

from . import backend

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first local header, or an empty zip


def save(state_dict, path):
    """Write {name: array} to `path` (.npz). The file is written beside the target and renamed
    over it, so a crash mid-write leaves the previous file intact."""
    arrays = {}
    for name, value in state_dict.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"save: names expected non-empty strings, got {name!r}")
        a = np.asarray(backend.to_numpy(value))
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


def _check_member(archive, key, path):
    """ValueError unless the .npy member's header agrees with its size: a damaged or hostile header
    declaring a huge shape is refused before numpy allocates for it."""
    info = archive.zip.getinfo(key + ".npy") if key + ".npy" in archive.zip.namelist() else archive.zip.getinfo(key)
    with archive.zip.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f, max_header_size=10000)
        except (ValueError, SyntaxError, EOFError, TypeError) as e:
            raise ValueError(f"load: {path}: {key} has a damaged array header ({e})") from None
        header = f.tell()
    if dtype.hasobject:
        return  # refused when read (it would need pickle)
    count = 1
    for n in shape:
        count *= int(n)
    if count * dtype.itemsize != info.file_size - header:
        raise ValueError(f"load: {path}: {key} declares {dtype} shape {shape} ({count * dtype.itemsize} bytes) "
                         f"but holds {info.file_size - header} bytes: the file is damaged")


def _read(archive, key, path):
    _check_member(archive, key, path)
    try:
        a = archive[key]
    except ValueError as e:  # allow_pickle=False: the array holds Python objects
        raise ValueError(f"load: {path}: {key} holds Python objects, which would need pickle to read ({e})") from None
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise ValueError(f"load: {path}: {key} cannot be read, the file is damaged ({e})") from None
    return a


def load(path, keys=None):
    """{name: NumPy array} from a file written by save (allow_pickle=False: no code can run).
    With `keys` (an iterable of names), only those present are read."""
    _check_archive(path)
    try:
        with np.load(os.fspath(path), allow_pickle=False) as archive:
            names = archive.files if keys is None else [k for k in keys if k in archive.files]
            return {name: _read(archive, name, path) for name in names}
    except (zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"load: {path} is damaged or truncated ({e})") from None


def names(path):
    """The array names in a file written by save, without reading any array."""
    _check_archive(path)
    try:
        with np.load(os.fspath(path), allow_pickle=False) as archive:
            return list(archive.files)
    except (zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"load: {path} is damaged or truncated ({e})") from None
