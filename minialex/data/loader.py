"""DataLoader: batches of (images, labels), prepared ahead of the model.

    loader = DataLoader(folder, Transform(227, stats, "train"), batch_size=128, shuffle=True,
                        workers=8, seed=0)
    loader.set_epoch(e)
    for x, y in loader: ...          # x float32 (N, 3, S, S) NumPy; y int64 (N,)

Decode once (cache=True, the default): the first pass decodes every image in `workers` processes
(Pillow in one process uses about one core) and keeps it, resized, in the decoded store
(minialex/data/store.py) while it makes that epoch's batches; later passes crop from the store's
memory-mapped pixels with no decoding, in threads. cache=False decodes every epoch (threads).
A store that cannot be used (damaged, unreadable, no room, a write that fails during the first
pass) means decoding every epoch, said once; the epoch under way keeps every batch.

Worker processes (workers > THREADS_UP_TO) end with the main process, however it ends (kill -9
too); one that dies on its own (the out-of-memory killer) costs only the images it held, which a
fresh pool decodes again, and the epoch goes on.

device="cuda" (or "cuda-emu"): batches come as float32 device arrays, made on the device from
uint8 crops by kernels/augment.cu (flip, PCA lighting, normalisation, NCHW): the host gathers and
copies one byte per channel instead of four, the next batch's gather and copy overlapping the
current step (see DeviceBatches).

Determinism: the order of epoch e is a permutation drawn from (seed, e), and the augmentation of
item i in epoch e from (seed, e, i), so a seed reproduces every batch exactly whatever the number
of workers, the cache, or the device. Call set_epoch(e) before iterating.

Data parallel (shard=(rank, size)): batch k of the epoch is the permutation's [k*size*B,
(k+1)*size*B) (B = batch_size, per process), and this process serves its rows [rank*B,
(rank+1)*B): the ranks see distinct images whose union is the epoch, and `size` processes see the
batches one process with batch size*B would. `batch_offset` is the global index of this rank's
first row (rank*B). A sharded loader reads the decoded store when it exists (minialex-train has
rank 0 build it first) and decodes otherwise. Where none of a rank's images of a batch can be
read it gets an empty batch (no rows) rather than none, so that every rank takes every step.
"""
import functools
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
import warnings
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from .. import errors
from ..cpu import augment as fast_augment
from .store import Store, append_pixels, decoded, digest, key
from .transforms import resize_shorter


class ArgumentError(TypeError, ValueError):
    """A DataLoader argument of the wrong type or value (a TypeError and a ValueError: either
    catches it); the message names the argument."""


def _integer(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_arguments(folder, transform, batch_size, shuffle, drop_last, workers, seed, prefetch, cache, device,
                     shard):
    """Each argument of DataLoader checked before any work: ArgumentError naming the first wrong one."""
    def fail(name, expected, got):
        errors.fail("DataLoader", name, expected, got, ArgumentError)
    if not (hasattr(folder, "samples") and callable(getattr(folder, "load", None)) and hasattr(folder, "__len__")):
        hint = f" ({folder!r}: ImageFolder({folder!r}) reads a folder)" if isinstance(folder, (str, os.PathLike)) else ""
        fail("folder", "an ImageFolder (or anything with samples and load)", type(folder).__name__ + hint)
    if not all(hasattr(transform, a) for a in ("size", "resize", "mode", "stats", "plan", "from_array")):
        fail("transform", "a Transform (or anything with size, resize, mode, stats, plan and from_array)",
             type(transform).__name__)
    for name, value, least in (("batch_size", batch_size, 1), ("workers", workers, 0), ("seed", seed, 0),
                               ("prefetch", prefetch, 0)):
        if not _integer(value) or value < least:
            fail(name, f"an integer >= {least}", repr(value))
    for name, value in (("shuffle", shuffle), ("drop_last", drop_last), ("cache", cache)):
        if not (isinstance(value, (bool, np.bool_)) or (_integer(value) and value in (0, 1))):
            fail(name, "True or False", repr(value))
    if device is not None and not isinstance(device, str):
        fail("device", 'None, "cuda", "cuda:N" or "cuda-emu"', repr(device))
    if not (isinstance(shard, (tuple, list)) and len(shard) == 2 and all(_integer(v) for v in shard)
            and 0 <= shard[0] < shard[1]):
        fail("shard", "(rank, size) with 0 <= rank < size", repr(shard))


class DataLoader:
    def __init__(self, folder, transform, batch_size=64, shuffle=False, drop_last=False, workers=2,
                 seed=0, prefetch=2, cache=True, device=None, shard=(0, 1)):
        _check_arguments(folder, transform, batch_size, shuffle, drop_last, workers, seed, prefetch, cache, device,
                         shard)
        self.shard = (int(shard[0]), int(shard[1]))
        self.folder, self.transform = folder, transform
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), bool(shuffle), bool(drop_last)
        self.workers, self.seed, self.prefetch = int(workers), int(seed), int(prefetch)
        self.cache, self.device = bool(cache), device
        self.store = None
        self.epoch = 0
        self.skipped = 0  # unreadable images skipped in the last pass

    def set_epoch(self, epoch):
        if not _integer(epoch) or epoch < 0:
            errors.fail("DataLoader.set_epoch", "epoch", "an integer >= 0", repr(epoch), ArgumentError)
        self.epoch = int(epoch)

    @property
    def batch_offset(self):
        """The global index of this process's first row in each batch (rank * batch_size)."""
        return self.shard[0] * self.batch_size

    def __len__(self):
        return len(self._batches()[1])

    def _order(self):
        n = len(self.folder)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n)

    def _rng(self, i):
        return np.random.default_rng([self.seed, self.epoch, int(i)])

    def _batches(self):
        """(the epoch's order, this process's batches): its rows of every global batch."""
        order = self._order()
        whole = self.batch_size * self.shard[1]
        starts = range(0, len(order) - (whole - 1 if self.drop_last else 0), whole)
        lo = self.shard[0] * self.batch_size
        batches = [order[s + lo:min(s + lo + self.batch_size, s + whole)] for s in starts]
        return order, [b for b in batches if len(b)]

    def __iter__(self):
        if self.device is not None:
            from .device import DeviceBatches
            yield from DeviceBatches(self)
            return
        for crops, flips, offsets, labels, full in self.host_batches():
            if full is not None:                     # ten_crop: whole samples, made per image
                yield full, labels
            else:
                yield augment_rows(crops, flips, offsets, self.transform), labels

    def host_batches(self):
        """The epoch's batches before the float work: (uint8 crops (N, S, S, 3), flips (N,), colour
        offsets (N, 3), labels (N,), None), or (None, None, None, labels, float samples) for ten_crop."""
        self.skipped = 0
        name = None
        if not callable(getattr(self.folder, "fingerprint", None)):   # no key without one: no store
            self.cache = False
        if self.cache and self.store is None:
            name = key(self.folder, self.transform.resize)       # the folder's fingerprint, taken once
            self.store = Store.find(self.folder, self.transform.resize, name)
            if self.store is not None:
                self.store.hold()                                 # in use: the size budget keeps it
        if self.store is not None:
            source = self._from_store
        elif self.cache and self.shard[1] == 1:  # a shard sees part of the data: it cannot build the store
            source = functools.partial(self._first_pass, name)
        else:
            source = self._decoding
        makers, cleanup = source()
        ahead = ThreadPoolExecutor(1)  # the next batches are prepared, in order, while the caller works
        pending, done = deque(), False
        try:
            for make in makers:
                pending.append(ahead.submit(make))
                if len(pending) > self.prefetch:
                    out = pending.popleft().result()
                    if out is not None:
                        yield out
            while pending:
                out = pending.popleft().result()
                if out is not None:
                    yield out
            done = True
        finally:
            for f in pending:
                f.cancel()
            ahead.shutdown(wait=True)
            cleanup(done)

    # ----- the three sources; each yields a function that makes one batch -----

    def _rows(self, items):
        """Assemble per-image rows [(crop, flip, offset, label) or (sample, label) or None]."""
        good = [it for it in items if it is not None]
        self.skipped += len(items) - len(good)
        if not good and self.shard[1] == 1:
            return None
        if not good:  # a shard serves every global batch, empty or not: every rank takes every step
            s, labels = self.transform.size, np.empty(0, np.int64)
            if self.transform.mode == "ten_crop":
                return None, None, None, labels, np.empty((0, 10, 3, s, s), np.float32)
            return np.empty((0, s, s, 3), np.uint8), np.empty(0, bool), np.empty((0, 3), np.float32), labels, None
        labels = np.array([it[-1] for it in good], dtype=np.int64)
        if self.transform.mode == "ten_crop":
            return None, None, None, labels, np.stack([it[0] for it in good])
        return (np.stack([it[0] for it in good]), np.array([it[1] for it in good], bool),
                np.stack([it[2] for it in good]), labels, None)

    def _from_store(self):
        store, transform = self.store, self.transform

        def row(i):
            a = store.image(i)
            if a is None:
                return None
            return _row_from_array(transform, a, self._rng(i), self.folder.samples[i][1], self.device is None)
        _, batches = self._batches()
        return [lambda b=b: self._rows([row(i) for i in b]) for b in batches], lambda done: None

    def _decoding(self):
        transform = self.transform

        def row(i):
            img, label = self.folder.load(i, transform.resize)
            if img is None:
                return None
            return _row_from_array(transform, np.asarray(resize_shorter(img, transform.resize), np.uint8),
                                   self._rng(i), label, self.device is None)
        _, batches = self._batches()
        pool = ThreadPoolExecutor(max(self.workers, 1))
        return [lambda b=b: self._rows(list(pool.map(row, b))) for b in batches], lambda done: pool.shutdown(wait=True)

    def _first_pass(self, name):
        """Decode every image once in worker processes, which also write it into the store being
        built and cut this epoch's crop from it; the store is finished when all are in. A write
        that fails (a full disk) gives the store up: the epoch goes on, later ones decode."""
        builder = Store.builder(self.folder, self.transform.resize, name)
        if builder is None:                                   # too little disk: decode every epoch
            self.cache = False
            return self._decoding()
        order, batches = self._batches()
        tail = [int(i) for i in order[sum(len(b) for b in batches):]]   # images no batch uses (drop_last)
        jobs = [int(i) for b in batches for i in b] + tail
        tasks = [(str(self.folder.samples[i][0]), i, self.folder.samples[i][1]) for i in jobs]
        decode = _Decoder(self.transform, builder.tmp, (self.seed, self.epoch), self.workers, self.device is None,
                          window=(self.prefetch + 2) * self.batch_size)
        results = decode.run(tasks)

        def take(count):  # the makers run one at a time, in order, as the results come
            rows = []
            for _ in range(count):
                i, stored, write_error, reason, row = next(results)
                if write_error is not None:
                    builder.fail(write_error)
                elif builder.failed is None:
                    builder.record(i, *stored)
                if row is None:
                    _skip(self.folder, i, reason)
                rows.append(row)
            return self._rows(rows)

        def finish():
            served = self.skipped
            take(len(tail))                                   # the tail: stored, not served (nor counted)
            self.skipped = served
            self.store = builder.finish()
            if self.store is not None:
                self.store.hold()
            self.cache = self.store is not None               # no store: later epochs decode
            return None

        def cleanup(done):
            decode.close()
            if self.store is None or not done:
                builder.abandon()
        return [lambda n=len(b): take(n) for b in batches] + [finish], cleanup


def _skip(folder, i, reason):
    """Say that image i cannot be read, once: through ImageFolder's record where there is one."""
    path = folder.samples[i][0]
    if hasattr(folder, "_skip"):
        folder._skip(path, reason)
    else:
        warnings.warn(f"skipping image {path}: {reason}", stacklevel=3)


def _row_from_array(transform, a, rng, label, flip_here):
    """(crop, flip, offset, label) of one resized image, or (sample, label) for ten_crop. With
    flip_here the crop is mirrored while it is copied out (flip then False): free on the host."""
    if transform.mode == "ten_crop":
        return transform.from_array(a, rng), label
    if transform.mode == "train":
        top, left, flip, offset = transform.plan(a.shape[0], a.shape[1], rng)
    else:
        top, left = (a.shape[0] - transform.size) // 2, (a.shape[1] - transform.size) // 2
        flip, offset = False, np.zeros(3, np.float32)
    crop = a[top:top + transform.size, left:left + transform.size]
    if flip and flip_here:
        crop, flip = crop[:, ::-1], False
    return np.ascontiguousarray(crop), flip, offset, label


def augment_rows(crops, flips, offsets, transform):
    """The batch's float work (minialex/data/augment.py), by the fast CPU version."""
    return fast_augment.augment_batch(crops, flips, offsets, transform.stats["mean"], transform.stats["std"])


def _decode_task(transform, store_dir, seed_epoch, flip_here, path, i, label):
    """In a worker: decode image i, cut its crop, append it to the store being built. Returns (i,
    (file, offset, h, w, digest), write error or None, why it cannot be read or None, row)."""
    array, reason = decoded(path, transform.resize)
    if array is None:
        return i, (None, 0, 0, 0, None), None, reason, None
    row = _row_from_array(transform, array, np.random.default_rng([*seed_epoch, i]), label, flip_here)
    try:
        name, offset = append_pixels(store_dir, array)
    except OSError as e:                     # a full disk, a file-size limit: the store is given up
        return i, None, str(e), None, row
    return i, (name, offset, *array.shape[:2], digest(array)), None, None, row


THREADS_UP_TO = 4  # decoding threads up to this many workers, processes beyond
MAX_RESTARTS = 3   # pools replaced after a worker's death in one pass; then threads of this process
PARENT_POLL = 0.5  # seconds between a worker's looks at its parent


def _die_with_parent(parent):
    """In a decode worker process (the pool's initializer): end when `parent`, the process that
    started it, ends however it ends (kill -9, the out-of-memory killer), instead of waiting
    forever for tasks that never come. A daemon thread watches: on POSIX the parent pid changes
    when the parent is gone (the orphan is adopted); on Windows the parent's process handle is
    signalled. (Linux's prctl(PR_SET_PDEATHSIG) would fire when the *thread* that forked the
    worker ends, which in a pool may be any thread: the watcher has no such trap.)"""
    if os.getppid() != parent and os.name != "nt":
        os._exit(1)                                   # gone already, before this line ran
    sentinel = getattr(multiprocessing.parent_process(), "sentinel", None) if os.name == "nt" else None

    def watch():
        while os.getppid() == parent:
            if sentinel is not None and multiprocessing.connection.wait([sentinel], timeout=PARENT_POLL):
                break
            if sentinel is None:
                time.sleep(PARENT_POLL)
        os._exit(1)
    threading.Thread(target=watch, name="minialex-parent-watch", daemon=True).start()


class _Decoder:
    """Runs _decode_task over the images, results in the order asked, with a bounded number in
    flight (a few batches' worth: memory stays bounded however large the data set, and the workers
    keep decoding while the batches ahead wait for their consumer).

    Up to THREADS_UP_TO workers are threads: Pillow lets go of the GIL while it decodes and resizes,
    and threads share the crops without copying them between processes (on the 2-core machine, 2
    threads made the first pass about 1.2x faster than 2 processes: benchmarks/RESULTS.md). More
    workers are processes, since the Python work around each image, small as it is, would make the
    GIL the limit at thousands of images per second. A process pool forks where it can (Linux: no
    re-import of the main script); the one lock a worker takes, folder._OPEN_LOCK, is made anew in
    a forked child. Each process appends to its own pixels file of the store. Worker processes
    end with this one (_die_with_parent); one that dies on its own (killed) breaks the pool, and
    the images the pool held are decoded again in a fresh one (threads after MAX_RESTARTS)."""

    def __init__(self, transform, store_dir, seed_epoch, workers, flip_here, window=64):
        self.args = (transform, str(store_dir), tuple(int(v) for v in seed_epoch), flip_here)
        self.workers, self.pool, self.restarts = workers, None, 0
        self.window = max(window, 4 * workers + 8)   # enough queued that the workers never wait for us

    def _new_pool(self):
        if self.workers <= THREADS_UP_TO or self.restarts > MAX_RESTARTS:
            return ThreadPoolExecutor(min(self.workers, THREADS_UP_TO))
        # fork where there is one (Linux): fast, and no re-import of the main script (a script
        # without an `if __name__ == "__main__"` guard, stdin, a notebook). spawn elsewhere.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context(method),
                                   initializer=_die_with_parent, initargs=(os.getpid(),))

    def run(self, tasks):
        if self.workers == 0:
            for path, i, label in tasks:
                yield _decode_task(*self.args, path, i, label)
            return
        self.pool = self._new_pool()
        window, it = deque(), iter(tasks)
        for task in it:
            window.append([task, self._submit(task)])
            if len(window) >= self.window:
                break
        for task in it:
            yield self._result(window)
            window.append([task, self._submit(task)])
        while window:
            yield self._result(window)

    def _submit(self, task):
        try:
            return self.pool.submit(_decode_task, *self.args, *task)
        except BrokenProcessPool:              # taken again by the next pool (_result)
            return None

    def _result(self, window):
        """The oldest task's result, through as many fresh pools as a worker's death takes."""
        entry = window.popleft()
        while True:
            try:
                if entry[1] is None:
                    raise BrokenProcessPool("the pool was broken when the task came")
                return entry[1].result()
            except BrokenProcessPool:
                self._replace_pool([entry, *window])

    def _replace_pool(self, entries):
        """A worker process died: the pool fails every task it held. A fresh pool takes them again."""
        wait([e[1] for e in entries if e[1] is not None])      # the broken pool fails the rest at once
        self.pool.shutdown(wait=True)
        self.restarts += 1
        then = "a fresh pool" if self.restarts <= MAX_RESTARTS else "threads of this process (it happened " \
            f"{self.restarts} times)"
        warnings.warn(f"a decode worker process ended unexpectedly (killed by a signal or the out-of-memory "
                      f"killer?); the images it held are decoded again in {then}", stacklevel=2)
        self.pool = self._new_pool()
        for e in entries:
            if e[1] is None or isinstance(e[1].exception(), BrokenProcessPool):
                e[1] = self._submit(e[0])

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
