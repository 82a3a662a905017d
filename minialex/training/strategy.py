"""Where the ranks of a data-parallel run meet: everything the training loop, evaluation and the
command's setup need from the other processes, in one object, so that none of them branches on
the rank (the shape of ChainerMN's multi-node optimizer and evaluator, and of Lightning's Strategy).

    Local()            one process: every method is the identity
    DataParallel(w)    the ranks of minialex.distributed's world w (mpiexec -n N): the gradient
                       all-reduce, sums of metrics, stop votes, and agreement on setup errors
    auto()             DataParallel under mpiexec, Local otherwise

The loop calls, every step: batch_offset(rows) (this rank's first row in the global batch, for
the dropout keys, and the global count), then reduce_step(...) after the backward (the global
batch's mean gradient, loss, hits and count, and the stop votes); evaluation calls sum(...).
"""
import hashlib
import json
import os

import numpy as np

from .. import distributed


class SetupError(Exception):
    """Bad input found before training (a setting, a file, a folder). together: every rank of a
    data-parallel run raised it at the same point (no abort needed); rank: the rank whose input
    it was (rank 0 says it)."""

    def __init__(self, message, together=False, rank=None):
        super().__init__(message)
        self.together, self.rank = together, rank


class Local:
    """One process."""
    size, rank, is_root = 1, 0, True

    def setup(self, trainer):
        pass

    def batch_offset(self, rows):
        return 0, rows

    def reduce_step(self, params, rows, loss, hits, stops):
        """(mean loss, hits, count) of the global batch, from this rank's mean loss over its
        `rows` images and its correct predictions; the gradients become the global batch's."""
        return loss, hits, rows

    def sum(self, values, what, stops):
        return np.asarray(values, np.float64)

    def check_votes(self, stops):
        pass

    def agree(self, failure):
        if failure is not None:
            raise failure

    def root_first(self, what, fn):
        return fn()

    def same_settings(self, settings):
        pass

    def same_data(self, folders):
        pass


def listing(folders):
    """What every rank's copy of the data must hold alike: each folder's class names, and each
    sample's path (relative to its folder) and size in bytes."""
    lines = []
    for folder in folders:
        split = os.path.basename(os.fspath(folder.root))
        lines += [f"{split}: class {c!r}" for c in folder.classes]
        for path, _ in folder.samples:
            try:
                size = f"{os.stat(path).st_size} bytes"
            except OSError:
                size = "unreadable"
            lines.append(f"{split}: {os.path.relpath(path, folder.root)} ({size})")
    return lines


class DataParallel(Local):
    """The ranks of `world` (minialex.distributed.World) train one model: each its slice of the
    global batch, the gradients summed every step (minialex/distributed.py says how)."""

    def __init__(self, world=None):
        self.world = world or distributed.world()
        self.size, self.rank, self.is_root = self.world.size, self.world.rank, self.world.is_root
        self.checked = set()                 # the folders same_data has compared (once each)

    def setup(self, trainer):
        """One model on every rank (rank 0's), and loaders that serve this rank's slice: a
        minialex DataLoader not sharded yet is given shard (rank, size)."""
        self.world.sync_parameters(trainer.model.parameters())
        folders = [loader.folder for loader in (trainer.train_loader, trainer.val_loader)
                   if hasattr(getattr(loader, "folder", None), "samples")]
        self.same_data(folders)
        for loader in (trainer.train_loader, trainer.val_loader):
            if getattr(loader, "shard", None) == (0, 1):
                loader.shard = (self.rank, self.size)

    def batch_offset(self, rows):
        counts = self.world.gather_counts(rows)        # every rank's rows of this global batch
        return int(counts[:self.rank].sum()), int(counts.sum())

    def reduce_step(self, params, rows, loss, hits, stops):
        step_sum, hits, ctrl_c, term, count = self.world.allreduce_gradients(
            params, rows, (loss * rows if rows else 0.0, hits, *stops.votes()))
        stops.raise_if_voted(ctrl_c, term)
        count = int(round(count))
        return step_sum / count, int(round(hits)), count

    def sum(self, values, what, stops):
        """The element-wise sums of `values` over the ranks; a stop request of any rank rides
        along and stops every rank here, as one process would stop."""
        values = np.asarray(values, np.float64)
        sums = self.world.allreduce_sum(np.concatenate([values, stops.votes()]), what)
        stops.raise_if_voted(*sums[-2:])
        return sums[:-2]

    def check_votes(self, stops):
        """A request that came during the last epoch's save or pictures: every rank stops."""
        self.sum([], "the last stop request", stops)

    # ----- setup: the ranks agree on every error, said once by rank 0 -----

    def agree(self, failure):
        """Every rank calls this at the same point of setup with the SetupError it met there (or
        None): if any rank met one, every rank raises the first such rank's (together, exit 2 on
        all, no abort)."""
        said = self.world.allgather_text("" if failure is None else str(failure), "checking the settings")
        bad = [r for r, text in enumerate(said) if text]
        if bad:
            raise SetupError(said[bad[0]], together=True, rank=bad[0])

    def root_first(self, what, fn):
        """fn() on rank 0 first (it may write caches the others then read), then on the others.
        A SetupError on any rank is raised on every rank and said once."""
        failure = result = None
        try:
            with self.world.root_first(what):
                try:
                    result = fn()
                except SetupError as e:
                    if self.is_root:
                        raise
                    failure = e                    # this rank's own (its copy of the data): agreed below
        except SetupError as e:                    # rank 0's: the others got it as RootFailed
            e.together = True
            raise
        except distributed.RootFailed as e:
            raise SetupError(str(e), together=True, rank=0) from None
        self.agree(failure)
        return result

    def same_settings(self, settings):
        """Every rank must run with rank 0's settings (a dict; mpiexec's MPMD form can start ranks
        with other ones, and a rank with fewer epochs would leave the rest waiting)."""
        plain = json.dumps(settings, sort_keys=True, default=lambda v: sorted(map(str, v))
                           if isinstance(v, (set, frozenset)) else str(v))
        texts = self.world.allgather_text(plain, "comparing the ranks' settings")
        differ = [r for r, text in enumerate(texts) if text != texts[0]]
        if differ:
            root, theirs = json.loads(texts[0]), json.loads(texts[differ[0]])
            keys = [k for k in sorted(set(root) | set(theirs)) if root.get(k) != theirs.get(k)]
            said = ", ".join(f"--{k.replace('_', '-')} {theirs.get(k)} (rank 0: {root.get(k)})" for k in keys[:4])
            raise SetupError(f"rank {differ[0]} was started with other settings than rank 0: {said}; every "
                             f"process must be given the same command line", together=True)

    def same_data(self, folders):
        """Every rank must see the same classes and files (names and sizes): ranks whose copies of
        the data differ would train on different lists. One digest each; where one differs, rank
        0's listing goes to the ranks, and the first such rank's first difference is the error."""
        folders = [f for f in folders if id(f) not in self.checked]
        if not folders:
            return
        self.checked.update(id(f) for f in folders)
        mine = listing(folders)
        digest = hashlib.sha1("\n".join(mine).encode()).hexdigest()
        digests = self.world.allgather_text(digest, "comparing the ranks' data")
        if len(set(digests)) == 1:
            return
        root = self.world.broadcast_text("\n".join(mine), "rank 0's list of the data").split("\n")
        said = self.world.allgather_text("" if digest == digests[0] else _first_difference(mine, root),
                                         "comparing the ranks' data")
        rank = next(r for r, text in enumerate(said) if text)
        raise SetupError(f"rank {rank}'s copy of the data differs from rank 0's: {said[rank]} (every process "
                         "must see the same class folders and files)", together=True, rank=rank)


def _first_difference(mine, root):
    """The first entry where a rank's listing differs from rank 0's, said plainly."""
    for a, b in zip(root, mine):
        if a != b:
            return f"rank 0 has {a}, it has {b}"
    longer, who = (root, "rank 0") if len(root) > len(mine) else (mine, "it")
    return f"only {who} has {longer[min(len(root), len(mine))]}"


def auto():
    """DataParallel when this process was started by mpiexec as one of several, else Local."""
    world = distributed.world()
    return DataParallel(world) if world.size > 1 else Local()
