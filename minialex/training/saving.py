"""Checkpoint: a run's files in one folder, written so that nothing is lost or mixed.

    Checkpoint("runs/x")                  # last.npz, best.npz, metrics.jsonl, interrupted.npz
    Checkpoint("runs/x", monitor="val_loss")                  # best.npz: the lowest validation loss
    Checkpoint("runs/x", meta={"classes": np.array(names)})   # extra meta/ entries in every file

- After each epoch: best.npz when the epoch's `monitor` value is the best so far (val_top1, or
  train_top1 without a validation loader, by default; higher is better unless the name holds
  "loss", or mode= says), then last.npz, then a line in metrics.jsonl; best.npz first, so that a
  kill between the two leaves best.npz ahead of last.npz, never behind it. Each file is written
  beside its target and renamed over it (minialex.io.save), and the three are written in a block
  that Ctrl-C waits for: they always agree with each other.
- On Ctrl-C or SIGTERM: interrupted.npz, the weights as they were with the state of the last kept
  epoch (resuming from it repeats the interrupted epoch); said on stderr with what last.npz holds.
- A file holds the trainer's whole state (Trainer.state_meta: model, optimizer, schedule, random
  generator, epoch, history, every callback's state), so `Trainer.fit(resume=path)` continues the
  run exactly. The format is minialex/checkpoint.py's: .npz, never pickle.
- The folder: made if needed, checked for writing and locked while the run trains (a second run
  into it is refused while the first lives). A folder that holds another run is refused unless
  this run resumes from a checkpoint in it, or overwrite=True; resuming from an older checkpoint
  of a folder whose last.npz is later is refused too (it would overwrite those epochs). The
  temporary files of a killed save are removed. Under data parallel only the root rank writes.
"""
import os
import sys
from pathlib import Path

from .. import checkpoint, io
from ..runfolder import FolderError, RunFolder
from .callbacks import Callback, MetricsLog, Stopped
from .stops import Interrupted


def _saved_epoch(path):
    """The epoch a checkpoint file says it holds, or None where it cannot be read."""
    try:
        return int(io.load(path, keys=["meta/epoch"], limits=checkpoint.LIMITS)["meta/epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def folder_conflict(folder, resumed_from=None, resumed_epoch=0, overwrite=False):
    """Why a run may not write into `folder` (a RunFolder), or None: ("held", [its run's files])
    when it holds a run that this one does not continue, ("later", epoch) when this run continues
    from a checkpoint of the folder older than its last.npz (it would overwrite those epochs)."""
    held = folder.holds_a_run()
    continuing = resumed_from is not None and Path(resumed_from).resolve().parent == folder.path.resolve()
    if overwrite:
        return None
    if held and not continuing:
        return "held", held
    if continuing and "last.npz" in held and Path(resumed_from).resolve() != (folder.path / "last.npz").resolve():
        later = _saved_epoch(folder.path / "last.npz")
        if later is not None and later > resumed_epoch:
            return "later", later
    return None


class Checkpoint(Callback):
    runs_last = True      # after the other callbacks: what it saves includes their updates of the epoch

    def __init__(self, out, meta=None, monitor=None, mode=None, overwrite=False):
        if not isinstance(out, RunFolder) and (not isinstance(out, (str, os.PathLike)) or os.fspath(out) == ""):
            raise TypeError(f"Checkpoint: out expected a folder path, got {out!r}")
        if mode not in (None, "max", "min"):
            raise ValueError(f"Checkpoint: mode expected 'max', 'min' or None (from the monitor's name), got {mode!r}")
        self.folder = out if isinstance(out, RunFolder) else RunFolder(out)
        self.meta, self.monitor, self.mode, self.overwrite = dict(meta or {}), monitor, mode, overwrite
        self.best = {"epoch": None, "value": None}
        self.log = MetricsLog(self.folder.path / "metrics.jsonl")
        self._locked_here = False

    @property
    def path(self):
        return self.folder.path

    # ----- the folder -----

    def on_fit_start(self, trainer):
        if self.monitor is not None and self.monitor.startswith("val_") and trainer.val_loader is None:
            raise ValueError(f"Checkpoint: monitor {self.monitor!r} needs a validation loader (the trainer has none)")
        if not trainer.strategy.is_root:
            return
        if not self.folder.locked:                      # (minialex-train hands over a folder it locked)
            self.folder.create()
            self.folder.probe()
            self.folder.lock()
            self._locked_here = True
            try:
                self._may_write(trainer)
                self.folder.remove_temporaries()
            except BaseException:
                self._release()
                raise
        try:
            self.log.on_fit_start(trainer)
        except OSError as e:
            self._release()
            raise FolderError(f"{self.path}: cannot write {self.log.path} ({e.strerror or e})") from None

    def _may_write(self, trainer):
        problem = folder_conflict(self.folder, trainer.restored_from, trainer.epoch, self.overwrite)
        if problem and problem[0] == "held":
            raise FolderError(f"{self.path} already holds a run ({', '.join(problem[1])}): continue it with "
                              f"fit(resume=<one of its checkpoints>), choose another folder, or pass overwrite=True")
        if problem:
            raise FolderError(f"{trainer.restored_from} is epoch {trainer.epoch}, but {self.path / 'last.npz'} holds "
                              f"epoch {problem[1]}: continuing here would overwrite the epochs after "
                              f"{trainer.epoch}; give another folder to branch, or pass overwrite=True")

    def _release(self):
        if self._locked_here:
            self.folder.unlock()
            self._locked_here = False

    def on_fit_end(self, trainer):
        self._release()

    # ----- saving -----

    def _improved(self, record):
        key = self.monitor or ("val_top1" if "val_top1" in record else "train_top1")
        if key not in record:
            raise ValueError(f"Checkpoint: monitor expected one of the record's keys {sorted(record)}, got {key!r}")
        value, best = record[key], self.best["value"]
        higher = (self.mode or ("min" if "loss" in key else "max")) == "max"
        if value is None or value != value:             # (NaN: never the best)
            return False
        if best is None or (value > best if higher else value < best):
            self.best = {"epoch": record["epoch"], "value": value, "key": key,
                         "val_loss": record.get("val_loss"), "val_top1": record.get("val_top1")}
            return True
        return False

    def on_epoch_end(self, trainer, record):
        if not trainer.strategy.is_root:
            return
        improved = self._improved(record)
        meta = trainer.state_meta(**self.meta)
        try:
            if improved:
                checkpoint.save(self.path / "best.npz", trainer.model, trainer.optimizer, meta)
            checkpoint.save(self.path / "last.npz", trainer.model, trainer.optimizer, meta)
            self.log.on_epoch_end(trainer, record)
        except OSError as e:
            raise Stopped(f"writing into {self.path} failed after epoch {record['epoch']} ({e});") from None

    def on_exception(self, trainer, error):
        try:
            if isinstance(error, Interrupted) and trainer.strategy.is_root:
                self._save_interrupted(trainer, error)
            elif isinstance(error, Stopped):
                error.explain(self.last_good() if trainer.strategy.is_root else "Rank 0's run folder holds the checkpoints.")
        finally:
            self._release()

    def _save_interrupted(self, trainer, stop):
        epoch = trainer.epoch + 1                       # the epoch under way
        path, last = self.path / "interrupted.npz", self.path / "last.npz"
        after = (f"{last} holds the end of epoch {trainer.epoch}" if trainer.epoch and last.exists() else
                 "no epoch had finished, so there is no last.npz")
        saved = False
        try:
            with trainer.stops.deferred():            # a second signal waits for the save, then is dropped:
                checkpoint.save(path, trainer.model, trainer.optimizer,   # the run is stopping anyway
                                trainer.state_meta(kept=True, **self.meta, interrupted_in_epoch=epoch))
                saved = True
        except (OSError, Interrupted) as e:
            if not saved:
                why = e.strerror if isinstance(e, OSError) else "interrupted again"
                print(f"\n{stop.name} during epoch {epoch}: could not save {path} ({why}); {after}", file=sys.stderr)
                return
        print(f"\n{stop.name} during epoch {epoch}: saved {path} (the weights as they were, the state of epoch "
              f"{trainer.epoch}; resuming from it repeats epoch {epoch}); {after}", file=sys.stderr)

    def last_good(self):
        """What last.npz holds now (read from the file, not assumed)."""
        last = self.path / "last.npz"
        epoch = _saved_epoch(last)
        if epoch is None:
            return "There is no last.npz checkpoint yet."
        return f"The last good checkpoint is {last} (epoch {epoch})."

    def state_dict(self):
        return {"best": self.best}

    def load_state_dict(self, state):
        self.best = dict(state.get("best", self.best))
