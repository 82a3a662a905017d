"""save / load: {name: array} as .npz, written atomically, read without pickle."""
import os
import tempfile

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
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        os.unlink(tmp)
        raise


def load(path):
    """{name: NumPy array} from a file written by save (allow_pickle=False: no code can run)."""
    with np.load(os.fspath(path), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}
