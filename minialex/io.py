"""save / load: {name: array} as .npz, written atomically, read without pickle."""
import os
import secrets

import numpy as np

from . import backend


def save(state_dict, path):
    """Write {name: array} to `path` (.npz). The file is written beside the target and renamed
    over it, so a crash mid-write leaves the previous file intact."""
    arrays = {}
    for name, value in state_dict.items():
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
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path):
    """{name: NumPy array} from a file written by save (allow_pickle=False: no code can run)."""
    with np.load(os.fspath(path), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}
