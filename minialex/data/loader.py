"""DataLoader: batches of (images, labels) decoded and augmented ahead of the model by threads.

Determinism: the order of epoch e is a permutation drawn from (seed, e), and the augmentation of
item i in epoch e from (seed, e, i), so a seed reproduces every batch exactly, whatever the number
of threads and however they are scheduled (Pillow releases the GIL while decoding, so threads do
run in parallel). Call set_epoch(e) before iterating.
"""
from concurrent.futures import ThreadPoolExecutor
from collections import deque

import numpy as np


class DataLoader:
    def __init__(self, folder, transform, batch_size=64, shuffle=False, drop_last=False, workers=2,
                 seed=0, prefetch=2):
        if batch_size < 1:
            raise ValueError(f"DataLoader: batch_size expected an integer >= 1, got {batch_size}")
        if workers < 0:
            raise ValueError(f"DataLoader: workers expected an integer >= 0, got {workers}")
        self.folder, self.transform = folder, transform
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.workers, self.seed, self.prefetch = workers, seed, prefetch
        self.epoch = 0
        self.skipped = 0  # unreadable images skipped in the last pass

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        n = len(self.folder)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self):
        n = len(self.folder)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n)

    def _item(self, i):
        img, label = self.folder.load(i, getattr(self.transform, "resize", None))
        if img is None:
            return None
        return self.transform(img, np.random.default_rng([self.seed, self.epoch, i])), label

    def _batch(self, indices, pool):
        items = list(pool.map(self._item, indices)) if pool else [self._item(i) for i in indices]
        good = [it for it in items if it is not None]
        self.skipped += len(items) - len(good)
        if not good:
            return None
        return np.stack([x for x, _ in good]), np.array([y for _, y in good], dtype=np.int64)

    def __iter__(self):
        order = self._order()
        starts = range(0, len(order) - (self.batch_size - 1 if self.drop_last else 0), self.batch_size)
        batches = [order[s:s + self.batch_size] for s in starts]
        self.skipped = 0
        if self.workers == 0:
            for b in batches:
                out = self._batch(b, None)
                if out is not None:
                    yield out
            return
        with ThreadPoolExecutor(self.workers) as pool, ThreadPoolExecutor(1) as ahead:
            pending = deque()  # batches being prepared, in order
            for b in batches:
                pending.append(ahead.submit(self._batch, b, pool))
                if len(pending) > self.prefetch:
                    out = pending.popleft().result()
                    if out is not None:
                        yield out
            while pending:
                out = pending.popleft().result()
                if out is not None:
                    yield out
