"""DataLoader: batches of (images, labels), prepared ahead of the model.

    loader = DataLoader(folder, Transform(227, stats, "train"), batch_size=128, shuffle=True,
                        workers=8, seed=0)
    loader.set_epoch(e)
    for x, y in loader: ...          # x float32 (N, 3, S, S) NumPy; y int64 (N,)

Decode once (cache=True, the default): the first pass decodes every image in `workers` processes
(Pillow in one process uses about one core) and keeps it, resized, in the decoded store
(minialex/data/store.py) while it makes that epoch's batches; later passes crop from the store's
memory-mapped pixels with no decoding, in threads. cache=False decodes every epoch (threads).

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
import multiprocessing
import threading
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np

from ..cpu import augment as fast_augment
from .store import Store, append_pixels, decoded
from .transforms import resize_shorter


class DataLoader:
    def __init__(self, folder, transform, batch_size=64, shuffle=False, drop_last=False, workers=2,
                 seed=0, prefetch=2, cache=True, device=None, shard=(0, 1)):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size expected an integer >= 1, got {batch_size!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"DataLoader: workers expected an integer >= 0, got {workers!r}")
        rank, size = shard
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or \
                isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < size:
            raise ValueError(f"DataLoader: shard expected (rank, size) with 0 <= rank < size, got {shard!r}")
        self.shard = (rank, size)
        self.folder, self.transform = folder, transform
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.workers, self.seed, self.prefetch = workers, seed, prefetch
        self.cache, self.device = cache, device
        self.store = None
        self.epoch = 0
        self.skipped = 0  # unreadable images skipped in the last pass

    def set_epoch(self, epoch):
        self.epoch = epoch

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
        if self.cache and self.store is None:
            self.store = Store.find(self.folder, self.transform.resize)
        if self.store is not None:
            source = self._from_store
        elif self.cache and self.shard[1] == 1:  # a shard sees part of the data: it cannot build the store
            source = self._first_pass
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

    def _first_pass(self):
        """Decode every image once in worker processes, which also write it into the store being
        built and cut this epoch's crop from it; the store is finished when all are in."""
        builder = Store.builder(self.folder, self.transform.resize)
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
                i, stored, reason, row = next(results)
                builder.record(i, *stored)
                if row is None:
                    self.folder._skip(self.folder.samples[i][0], reason)
                rows.append(row)
            return self._rows(rows)

        def finish():
            served = self.skipped
            take(len(tail))                                   # the tail: stored, not served (nor counted)
            self.skipped = served
            self.store = builder.finish()
            return None

        def cleanup(done):
            decode.close()
            if self.store is None or not done:
                builder.abandon()
        return [lambda n=len(b): take(n) for b in batches] + [finish], cleanup


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
    """In a worker process: decode image i, append it to the store being built, cut its crop.
    Returns (i, (file, offset, h, w), reason, row)."""
    array, reason = decoded(path, transform.resize)
    if array is None:
        return i, (None, 0, 0, 0), reason, None
    name, offset = append_pixels(store_dir, array)
    row = _row_from_array(transform, array, np.random.default_rng([*seed_epoch, i]), label, flip_here)
    return i, (name, offset, *array.shape[:2]), None, row


THREADS_UP_TO = 4  # decoding threads up to this many workers, processes beyond


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
    a forked child. Each process appends to its own pixels file of the store."""

    def __init__(self, transform, store_dir, seed_epoch, workers, flip_here, window=64):
        self.transform, self.store_dir, self.seed_epoch = transform, str(store_dir), tuple(int(v) for v in seed_epoch)
        self.workers, self.flip_here, self.pool = workers, flip_here, None
        self.window = max(window, 4 * workers + 8)   # enough queued that the workers never wait for us

    def run(self, tasks):
        args = (self.transform, self.store_dir, self.seed_epoch, self.flip_here)
        if self.workers == 0:
            for path, i, label in tasks:
                yield _decode_task(*args, path, i, label)
            return
        # fork where there is one (Linux): fast, and no re-import of the main script (a script
        # without an `if __name__ == "__main__"` guard, stdin, a notebook); the only lock a worker
        # takes, folder._OPEN_LOCK, is made anew in a forked child. spawn elsewhere.
        if self.workers <= THREADS_UP_TO:
            self.pool = ThreadPoolExecutor(self.workers)
        else:
            methods = multiprocessing.get_all_start_methods()
            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context(
                "fork" if "fork" in methods else "spawn"))
        window, it = deque(), iter(tasks)
        for task in it:
            window.append(self.pool.submit(_decode_task, *args, *task))
            if len(window) >= self.window:
                break
        for task in it:
            yield window.popleft().result()
            window.append(self.pool.submit(_decode_task, *args, *task))
        while window:
            yield window.popleft().result()

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
