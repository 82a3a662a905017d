"""Big temporary arrays reused from one training step to the next, by explicit ownership.

A train step makes the same big temporaries every time (conv's column matrices and their
gradients). glibc serves each array over 32 MiB with a fresh mmap and unmaps it on free, so every
step would page-fault all of that memory in again. The workspace keeps such buffers instead:

    a = workspace.take(shape, dtype)     a free buffer of that shape and dtype, else a new one
    workspace.give(a)                    back to the free list: the caller keeps no reference or view
    held = workspace.hold(shape, dtype)  a buffer owned by `held` (held.array), for one that must
                                         outlive the call (conv's columns, read again by the
                                         backward): it goes back when `held` is destroyed

A buffer is either free or owned by exactly one holder, so nothing has to guess whether an array
is still in use. Arrays under MIN_BYTES are plain np.empty (malloc reuses small blocks itself), and
`give` ignores them. Only the fast CPU path uses the workspace; arrays it returns to the engine
(outputs, gradients) are never workspace buffers.
"""
import threading

import numpy as np

MIN_BYTES = 8 * 2**20


class Workspace:
    def __init__(self):
        self._free = {}  # (shape, dtype) -> [arrays]
        self._lock = threading.RLock()  # RLock: a Held may be destroyed while the lock is taken

    def take(self, shape, dtype):
        shape, dtype = tuple(int(d) for d in shape), np.dtype(dtype)
        if int(np.prod(shape)) * dtype.itemsize < MIN_BYTES:
            return np.empty(shape, dtype)
        with self._lock:
            free = self._free.get((shape, dtype.str))
            if free:
                return free.pop()
        return np.empty(shape, dtype)

    def give(self, array):
        if array.nbytes < MIN_BYTES:
            return
        if array.base is not None or not array.flags.c_contiguous:
            raise ValueError("Workspace.give: expected an array taken from the workspace, got a view")
        with self._lock:
            self._free.setdefault((array.shape, array.dtype.str), []).append(array)

    def hold(self, shape, dtype):
        return Held(self, self.take(shape, dtype))

    def free_bytes(self):
        with self._lock:
            return sum(a.nbytes for arrays in self._free.values() for a in arrays)

    def release(self):
        """Drop every free buffer (their memory goes back to the system)."""
        with self._lock:
            self._free.clear()


class Held:
    """Owns one workspace buffer and gives it back when it is destroyed (when the graph that keeps
    it for the backward is freed). Read it through .array; never keep that array beyond the owner."""
    __slots__ = ("array", "_workspace")

    def __init__(self, workspace, array):
        self.array, self._workspace = array, workspace

    def __del__(self):
        array, self.array = self.array, None
        if array is not None:
            self._workspace.give(array)


workspace = Workspace()
