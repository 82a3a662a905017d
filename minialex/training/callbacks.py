"""Callbacks: what a training run does besides training, each its own small class.

The Trainer calls, in the order the callbacks were given (every method is optional):

    on_fit_start(trainer)                  before the first epoch (after a resume is loaded)
    on_epoch_start(trainer, epoch)
    on_step_start(trainer, step)           before the forward pass; step: a Step (below)
    on_before_update(trainer, step)        after the backward and the gradient all-reduce,
                                           before the optimizer step; step.loss is known
    on_step_end(trainer, step)             after the optimizer step
    on_validation_end(trainer, record)     the epoch's metrics are complete but not yet kept:
                                           a callback may add to the record, or raise to refuse it
    on_epoch_end(trainer, record)          the epoch is kept (trainer.epoch, trainer.history):
                                           checkpoints, logs and pictures happen here
    on_exception(trainer, error)           fit is ending with an exception (an Interrupted too)
    on_fit_end(trainer)                    fit returns (also after a stop request)

A callback with state to keep across a resume returns it from `state_dict()` (plain JSON values)
and takes it back in `load_state_dict(state)`; a Checkpoint stores it under the callback's `key`
(its class name unless set). Checkpoints (`runs_last = True`) run after the other callbacks, as
Lightning orders its ModelCheckpoint, so the state they save has every callback's update of the epoch. Under data parallel (trainer.strategy.size > 1) every rank runs
every callback; only the root rank (trainer.strategy.is_root) should print or write.

The callbacks here are what minialex-train uses: NonFiniteGuard (in every Trainer),
FirstLossCheck, StallWarning, LayerDiagnostics, StepLog, ProgressBar, EpochLine, MetricsLog,
Pictures, Confusion; Checkpoint is in saving.py.
"""
import csv
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import backend, checkpoint, diagnostics, pictures
from ..function import no_grad
from ..tensor import Tensor
from .progress import progress_bar, say


@dataclass
class Step:
    """One training step as the callbacks see it. loss, hits and count are the global batch's
    (summed over the ranks under data parallel): its mean loss, correct top-1 predictions and
    images; rows is this process's share of the images."""
    epoch: int
    index: int            # in the epoch, from 0
    rows: int
    loss: float = math.nan
    hits: int = 0
    count: int = 0
    skipped: bool = False   # float16: a gradient overflowed, the optimizer step was skipped


class Stopped(Exception):
    """Training had to stop (the loss or weights became non-finite, a write failed); the message
    says why and what to do. together: every rank of a data-parallel run raised it at the same
    point (the values it looked at were summed over the ranks)."""

    def __init__(self, message, together=False):
        super().__init__(message)
        self.together = together

    def explain(self, sentence):
        """Add a sentence to the message (a Checkpoint adds where the last good weights are)."""
        self.args = (f"{self.args[0]} {sentence}",)


class Callback:
    key = None     # where a Checkpoint keeps this callback's state (default: the class name)

    def on_fit_start(self, trainer): pass
    def on_epoch_start(self, trainer, epoch): pass
    def on_step_start(self, trainer, step): pass
    def on_before_update(self, trainer, step): pass
    def on_step_end(self, trainer, step): pass
    def on_validation_end(self, trainer, record): pass
    def on_epoch_end(self, trainer, record): pass
    def on_exception(self, trainer, error): pass
    def on_fit_end(self, trainer): pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


# ----- guard rails -----

class NonFiniteGuard(Callback):
    """Stops the run (Stopped) when the training loss, the validation loss or a weight is not
    finite, before the optimizer step or before the epoch is kept: a checkpoint never holds them."""

    def on_before_update(self, trainer, step):
        if not math.isfinite(step.loss):
            lr = trainer.optimizer.lr
            raise Stopped(f"the training loss became {step.loss} at epoch {step.epoch}, step {trainer.step + 1}: "
                          f"stopping. The learning rate is probably too high (it is {lr:g}; try {lr / 10:g}).",
                          together=True)

    def on_validation_end(self, trainer, record):
        loss = record.get("val_loss", 0.0)
        if not math.isfinite(loss):
            unread = math.isnan(record.get("val_top1", 0.0))
            raise Stopped(f"the validation loss is {loss} after epoch {record['epoch']}"
                          + (" (no validation image could be read)." if unread else
                             f": the weights diverged; the learning rate is probably too high (it is "
                             f"{trainer.optimizer.lr:g})."), together=True)
        bad = [name for name, p in trainer.model.named_parameters()
               if not np.isfinite(backend.to_numpy(p.data)).all()]
        if bad:                                            # the ranks' weights are the same
            raise Stopped(f"the weights became non-finite during epoch {record['epoch']} ({', '.join(bad[:4])}): "
                          f"the learning rate is probably too high (it is {trainer.optimizer.lr:g}).", together=True)


class FirstLossCheck(Callback):
    """Says the loss of a new run's first step beside ln(classes), a uniform prediction's loss."""

    def on_before_update(self, trainer, step):
        if trainer.step == 0 and trainer.epoch == 0 and trainer.strategy.is_root:
            classes = trainer.num_classes
            if classes:
                say(diagnostics.first_loss_note(step.loss, classes))


class StallWarning(Callback):
    """Warns once when the mean loss of the last 50 steps is still about ln(classes) after
    `steps` steps: the network predicts chance."""

    def __init__(self, steps=300):
        self.steps, self.recent, self.warned = steps, [], False

    def on_step_end(self, trainer, step):
        self.recent = (self.recent + [step.loss])[-50:]
        classes = trainer.num_classes
        if self.warned or not classes or trainer.step < self.steps:
            return
        ln, mean = math.log(classes), float(np.mean(self.recent))
        if mean > 1.5 * ln:
            self.warned = True
            warnings.warn(f"after {trainer.step} steps the loss is {mean:.3f}, above ln({classes}) = {ln:.3f}: the "
                          f"network does worse than chance. The learning rate is probably too high (it is "
                          f"{trainer.optimizer.lr:g}), or the loss does not fit the labels", stacklevel=2)
        elif mean > 0.98 * ln:
            self.warned = True
            warnings.warn(f"after {trainer.step} steps the loss is still {mean:.3f}, about "
                          f"ln({classes}) = {ln:.3f}: the network predicts chance. Likely causes: the learning "
                          f"rate is too low or so high that ReLUs died (it is {trainer.optimizer.lr:g}), labels "
                          f"that do not match the images, or images that all look alike", stacklevel=2)

    def state_dict(self):
        return {"recent": self.recent, "warned": self.warned}

    def load_state_dict(self, state):
        self.recent, self.warned = [float(v) for v in state.get("recent", [])], bool(state.get("warned", False))


def _batches(loader, default=100):
    return len(loader) if hasattr(loader, "__len__") else default


class LayerDiagnostics(Callback):
    """Per-layer statistics of sampled steps (minialex/diagnostics.py): the middle step of each
    epoch goes into the epoch's record ("layers"), and every `every` steps (default: about 5 an
    epoch) a sample goes into `samples` ({"step", "epoch", "layers"}), so that a run of a few
    hundred steps draws layers.png over its steps. A warning per layer and kind for dead layers
    and update ratios far from ~1e-3 (ratios after WARMUP_STEPS steps or in epoch 2 on: at first
    they mostly reflect the initialisation)."""
    WARMUP_STEPS = 50

    def __init__(self, every=None):
        self.every, self.samples, self.warned = every, [], set()
        self.diag, self.middle, self.before, self.layers, self._every = None, None, None, None, None

    def on_epoch_start(self, trainer, epoch):
        self.diag = self.diag or diagnostics.Diagnostics(trainer.model)
        batches = _batches(trainer.train_loader)
        self.middle, self.layers = batches // 2, None
        self._every = self.every or max(1, batches // 5)

    def on_step_start(self, trainer, step):
        sampled = step.index == self.middle or (trainer.step + 1) % self._every == 0
        if sampled and step.rows > 0:                      # (a rank's slice may be empty)
            self.diag.start()

    def on_before_update(self, trainer, step):
        if self.diag.recording_now:
            self.diag.stop()
            self.diag.gradients()
            self.before = self.diag.weights()

    def on_step_end(self, trainer, step):
        if self.before is None:
            return
        layers, self.before = self.diag.updates(self.before), None
        if step.index == self.middle:
            self.layers = layers
        if trainer.step % self._every == 0:
            self.samples.append({"step": trainer.step, "epoch": step.epoch, "layers": layers})
            self._warn(layers, ratios=trainer.step >= self.WARMUP_STEPS or step.epoch > 1)

    def on_validation_end(self, trainer, record):
        record["layers"] = self.layers or {}
        self._warn(record["layers"], ratios=record["epoch"] > 1 or trainer.step >= self.WARMUP_STEPS)

    def _warn(self, layers, ratios):
        for said in diagnostics.warnings_for(layers, ratios=ratios):
            key = said.split(":")[0] + said.split(",")[0][-20:]
            if key not in self.warned:
                self.warned.add(key)
                warnings.warn(said, stacklevel=3)

    def on_exception(self, trainer, error):
        self.before = None
        if self.diag is not None and self.diag.recording_now:
            self.diag.stop()

    def state_dict(self):
        return {"warned": sorted(self.warned), "samples": self.samples}

    def load_state_dict(self, state):
        self.warned, self.samples = set(state.get("warned", [])), list(state.get("samples", []))


class StepLog(Callback):
    """The training loss and top-1 every `every` steps (their means over those steps; default:
    about 20 points an epoch), with the learning rate, and the step at which each epoch ended:
    what curves.png draws over the steps, so that a run of a few hundred steps draws real curves."""

    def __init__(self, every=None):
        self.every, self.records, self.epoch_ends = every, [], {}
        self._sums, self._every = [0.0, 0, 0], None          # loss x images, hits, images since the last point

    def on_epoch_start(self, trainer, epoch):
        self._every = self.every or max(1, _batches(trainer.train_loader) // 20)

    def on_step_end(self, trainer, step):
        sums = self._sums
        sums[0], sums[1], sums[2] = sums[0] + step.loss * step.count, sums[1] + step.hits, sums[2] + step.count
        if trainer.step % self._every == 0:
            self._point(trainer, step.epoch)

    def _point(self, trainer, epoch):
        loss_sum, hits, count = self._sums
        if count:
            self.records.append({"step": trainer.step, "epoch": epoch, "loss": loss_sum / count,
                                 "top1": hits / count, "lr": trainer.optimizer.lr})
        self._sums = [0.0, 0, 0]

    def on_validation_end(self, trainer, record):
        self._point(trainer, record["epoch"])              # the epoch's last steps
        self.epoch_ends[str(record["epoch"])] = trainer.step

    def state_dict(self):
        return {"records": self.records, "epoch_ends": self.epoch_ends}

    def load_state_dict(self, state):
        self.records, self.epoch_ends = list(state.get("records", [])), dict(state.get("epoch_ends", {}))


# ----- reporting -----

class ProgressBar(Callback):
    """A bar per epoch: tqdm on a terminal, tqdm.auto's widget in a notebook, a few plain lines
    in a log file (no carriage returns)."""

    def __init__(self):
        self.bar, self.seen, self.start = None, 0, None

    def on_epoch_start(self, trainer, epoch):
        if trainer.strategy.is_root:
            total = len(trainer.train_loader) if hasattr(trainer.train_loader, "__len__") else None
            self.bar = progress_bar(total, f"epoch {epoch}/{trainer.epochs}")
            self.seen, self.start = 0, time.perf_counter()

    def on_step_end(self, trainer, step):
        if self.bar is not None:
            self.seen += step.count
            self.bar.set_postfix(loss=f"{step.loss:.3f}", img_s=f"{self.seen / max(time.perf_counter() - self.start, 1e-9):.0f}")
            self.bar.update(1)

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_validation_end(self, trainer, record):
        self._close()

    def on_exception(self, trainer, error):
        self._close()


class EpochLine(Callback):
    """One line per epoch: the training and validation metrics, the rate, the speed, and with
    the class names the validation's most confused pairs (true -> predicted, images)."""

    def __init__(self, classes=None):
        self.classes = classes

    def on_epoch_end(self, trainer, r):
        if not trainer.strategy.is_root:
            return
        val = (f"  |  val loss {r['val_loss']:.4f} top-1 {r['val_top1']:6.2%} top-5 {r['val_top5']:6.2%}"
               if "val_loss" in r else "")
        pairs = most_confused(trainer.confusion, self.classes) if self.classes and trainer.confusion is not None else []
        say(f"epoch {r['epoch']:3d}/{trainer.epochs}  train loss {r['train_loss']:.4f} top-1 {r['train_top1']:6.2%}"
            f"{val}  |  lr {r['lr']:.2g}  {r['images_per_s']:.0f} img/s  {r['seconds']:.1f}s"
            + (f"  ({trainer.skipped} unreadable images skipped)" if trainer.skipped else "")
            + ("  |  most confused: " + ", ".join(f"{a} -> {b} {n}" for a, b, n in pairs) if pairs else ""))


def most_confused(counts, classes, n=3):
    """The n largest counts off the diagonal of a confusion matrix: [(true, predicted, images)]."""
    off = np.array(counts, np.int64)
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:n]
    return [(classes[i], classes[j], int(off[i, j])) for i, j in zip(*np.unravel_index(order, off.shape))
            if off[i, j] > 0]


def class_accuracy(counts):
    """Each class's accuracy from a confusion matrix: its diagonal over its row (NaN: no image)."""
    counts = np.asarray(counts, np.float64)
    totals = counts.sum(axis=1)
    return np.divide(np.diag(counts), totals, out=np.full(len(totals), np.nan), where=totals > 0)


def write_confusion(counts, classes, out, factor=1.0):
    """confusion.csv (rows: true class, columns: predicted, then each class's accuracy) and
    confusion.png in the folder `out`."""
    counts, out = np.asarray(counts), Path(out)
    with open(out / "confusion.csv", "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["true \\ predicted", *classes, "accuracy"])
        for name, row, accuracy in zip(classes, counts, class_accuracy(counts)):
            rows.writerow([name, *map(int, row), "" if np.isnan(accuracy) else f"{accuracy:.4f}"])
    pictures.confusion_matrix(counts, classes, out / "confusion.png", factor=factor)


class Confusion(Callback):
    """After each epoch, the validation's confusion matrix into `out`: confusion.csv and
    confusion.png (write_confusion)."""

    def __init__(self, out, classes, factor=1.0):
        self.out, self.classes, self.factor = out, list(classes), factor

    def on_epoch_end(self, trainer, record):
        if trainer.strategy.is_root and trainer.confusion is not None and trainer.confusion.size:
            try:
                write_confusion(trainer.confusion, self.classes, self.out, self.factor)
            except OSError as e:
                warnings.warn(f"could not write the confusion matrix into {self.out} ({e})", stacklevel=2)


class MetricsLog(Callback):
    """metrics.jsonl: one strict-JSON line per epoch (a non-finite number becomes null). At the
    start the file is made to say what the run's history says: a resumed run continues the file it
    belongs to (lines of epochs after the checkpoint's are dropped), a new run starts it empty."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def on_fit_start(self, trainer):
        if trainer.strategy.is_root and (trainer.history or os.path.exists(self.path)):
            tmp = f"{self.path}.{os.getpid()}.tmp"
            try:
                with open(tmp, "w") as f:
                    f.write("".join(checkpoint.strict_json(r) + "\n" for r in trainer.history))
                os.replace(tmp, self.path)
            except OSError:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise

    def on_epoch_end(self, trainer, record):
        if trainer.strategy.is_root:
            with open(self.path, "a") as f:
                f.write(checkpoint.strict_json(record) + "\n")


class Pictures(Callback):
    """After each epoch, PNGs in `out` (minialex/pictures.py): filters.png (the first convolution
    on 3 channels), curves.png, layers.png, and predictions.png when `examples` is given as
    (uint8 images (B, H, W, 3), the model's inputs for them (B, 3, H, W), true labels, class names).
    The curves and layers run over the steps when the trainer has a StepLog and a LayerDiagnostics;
    factor scales every picture (2: twice as large)."""

    def __init__(self, out, examples=None, factor=1.0):
        self.out, self.examples, self.factor = out, examples, factor

    def on_epoch_end(self, trainer, record):
        if not trainer.strategy.is_root:
            return
        out = Path(self.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            first = next((m.weight for _, m in trainer.model.named_modules()
                          if getattr(m, "weight", None) is not None and m.weight.ndim == 4 and m.weight.shape[1] == 3),
                         None)
            steps = next((c.state_dict() for c in trainer.callbacks if isinstance(c, StepLog)), None)
            samples = next((c.samples for c in trainer.callbacks if isinstance(c, LayerDiagnostics)), None)
            if first is not None:
                pictures.filter_grid(first.numpy(), out / "filters.png", factor=self.factor)
            pictures.training_curves(trainer.history, out / "curves.png", steps=steps, factor=self.factor)
            pictures.layer_diagnostics(trainer.history, out / "layers.png", samples=samples, factor=self.factor)
            if self.examples is not None:
                images, x, truth, classes = self.examples
                trainer.model.eval()
                with no_grad():
                    pred = trainer.model(Tensor(x, device=trainer.device)).numpy().argmax(1)
                trainer.model.train()
                pictures.prediction_grid(images, pred, truth, classes, out / "predictions.png", factor=self.factor)
        except OSError as e:
            warnings.warn(f"could not draw the pictures into {out} ({e})", stacklevel=2)
