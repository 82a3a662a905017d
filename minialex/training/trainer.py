"""The Trainer: minialex's training loop for any model, with exact resume, callbacks and a strategy.

    trainer = Trainer(model, optimizer, train_loader, val_loader, epochs=10,
                      schedule=StepLR(8), callbacks=[Checkpoint("runs/x"), ProgressBar(), EpochLine()])
    history = trainer.fit()                            # [{"epoch", "train_loss", "val_top1", ...}, ...]
    history = trainer.fit(resume="runs/x/last.npz")    # continues exactly where that run stopped
    trainer.evaluate(loader)                           # {"loss", "top1", "top5", "confusion"}

model: any nn.Module mapping (N, C, H, W) floats to (N, classes) logits. The loaders: any
iterables of (x, y) batches (x an array or a Tensor, y integer labels); set_epoch(epoch) is
called before each epoch where the loader has it (minialex's DataLoader draws that epoch's order
and augmentation from it, which is what makes a resume exact). optimizer: ma.optim.SGD, or
anything with lr, step(), state_dict() and load_state_dict().

The loop is `train_step` below: forward, loss, backward, the strategy's all-reduce (nothing alone),
the optimizer step, with the callbacks' hooks between (minialex/training/callbacks.py). What a
run keeps, and a Checkpoint saves, is committed once per epoch, after validation, in one block
that a Ctrl-C or SIGTERM cannot split: the epoch, the history, the schedule's and the callbacks'
states, the random generator. A stop request (Ctrl-C, SIGTERM, a notebook's interrupt) ends fit
normally: the callbacks hear on_exception (a Checkpoint saves interrupted.npz), fit returns the
history so far, and trainer.interrupted tells which signal it was. Anything else that ends the
run (Stopped: a non-finite loss or weight, a failed write) is raised after on_exception.
"""
import json
import math
import numbers
import time
import warnings

import numpy as np

from .. import checkpoint, random
from .. import functional as F
from ..function import autocast, no_grad
from ..tensor import Tensor
from .callbacks import NonFiniteGuard, Step, Stopped
from .scaler import LossScaler
from .schedules import Constant
from .stops import StopRequests, as_interrupted
from .strategy import Local, auto


PRECISIONS = {"fp32": None, "fp16": "float16"}   # precision= -> the dtype autocast computes in


class Trainer:
    def __init__(self, model, optimizer, train_loader, val_loader=None, *, epochs, schedule=None,
                 loss=F.cross_entropy, callbacks=(), device=None, strategy=None, max_steps=None,
                 precision="fp32", scaler=None):
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
            raise ValueError(f"Trainer: epochs expected an integer >= 1, got {epochs!r}")
        if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral)
                                      or max_steps < 1):
            raise ValueError(f"Trainer: max_steps expected an integer >= 1 or None, got {max_steps!r}")
        self.max_steps = None if max_steps is None else int(max_steps)   # the run ends after that many steps
        if precision not in PRECISIONS:
            raise ValueError(f"Trainer: precision expected one of {tuple(PRECISIONS)}, got {precision!r}")
        self.precision = precision        # "fp16": float16 compute under autocast, float32 master weights
        self.scaler = scaler if scaler is not None else (LossScaler() if precision == "fp16" else None)
        if not callable(loss):
            raise TypeError(f"Trainer: loss expected a function (logits, labels) -> scalar Tensor, got {loss!r}")
        for name, loader in (("train_loader", train_loader), ("val_loader", val_loader)):
            _check_loader(name, loader)                  # (a loader may also be given later, before fit)
        if schedule is not None and not all(hasattr(schedule, m) for m in ("start", "lr", "step")):
            raise TypeError(f"Trainer: schedule expected a schedule (Constant(), StepLR(step), Plateau()), "
                            f"got {schedule!r}")
        self.model, self.optimizer, self.loss = model, optimizer, loss
        self.train_loader, self.val_loader, self.epochs = train_loader, val_loader, int(epochs)
        if device is not None:
            model.to(device)
        params = list(model.parameters())
        self.device = device if device is not None else (params[0].device if params else "cpu")
        self.schedule = schedule if schedule is not None else Constant()
        self.schedule.start(optimizer.lr)
        callbacks = _check_callbacks(callbacks)
        guard = [] if any(isinstance(c, NonFiniteGuard) for c in callbacks) else [NonFiniteGuard()]
        self.callbacks = guard + callbacks           # the guard runs first: nothing sees a non-finite step
        self.strategy = strategy if strategy is not None else auto()
        self.stops = StopRequests()
        self.epoch, self.step, self.history = 0, 0, []   # the last kept epoch, steps taken, its records
        self.num_classes = None                      # from the first logits
        self.skipped = 0                             # unreadable images in the last epoch's passes
        self.confusion = None                        # the last validation's (true, predicted) counts
        self.interrupted = None                      # the Interrupted that ended the last fit, if any
        self.kept = None                             # the state of the last kept epoch (keep())
        self.restored_from = None                    # the checkpoint path restore() read, if any
        self._pending = {}                           # saved callback states whose callback is not here yet

    # ----- the run -----

    def fit(self, resume=None):
        """Train from epoch trainer.epoch + 1 to `epochs`; returns the history (one record per
        epoch). resume: a checkpoint path (or a read checkpoint.Checkpoint) to continue first."""
        _check_loader("train_loader", self.train_loader, required=True)
        _check_loader("val_loader", self.val_loader)
        if resume is not None:
            self.restore(resume)
        self.interrupted = None
        if self.epoch >= self.epochs or self.done_steps:
            return self.history
        self.callbacks.sort(key=lambda c: bool(getattr(c, "runs_last", False)))   # checkpoints last (stable)
        self._load_callback_states()                  # (callbacks added after restore() get theirs now)
        self.keep()
        with self.stops.installed(vote=self.strategy.size > 1):
            try:
                self.strategy.setup(self)
                self._fit_start()
                for epoch in range(self.epoch + 1, self.epochs + 1):
                    if self.done_steps:
                        break
                    record = self.run_epoch(epoch)
                    self._call("on_validation_end", record)
                    with self.stops.deferred():       # the epoch is kept whole: state, checkpoints, logs
                        self.schedule.step(record)
                        self.epoch, self.history = epoch, self.history + [record]
                        self._call("on_epoch_end", record)
                        self.keep()
                self.strategy.check_votes(self.stops)
            except BaseException as error:
                self._back_to_kept()                  # an epoch that was not kept whole is not kept
                stop = as_interrupted(error)
                self._call_every("on_exception", stop or error)
                if stop is None:
                    raise
                self.interrupted = stop
        self._call_every("on_fit_end")
        return self.history

    def _fit_start(self):
        """on_fit_start; under data parallel a failure on one rank (a Checkpoint's folder, on rank
        0 only) is raised on every rank, so that none waits for the others in a collective."""
        failure = None
        try:
            self._call("on_fit_start")
        except Exception as e:
            failure = e
        if failure is not None or self.strategy.size > 1:
            self.strategy.agree(failure)

    def run_epoch(self, epoch):
        """Train one epoch and validate: the epoch's record (not yet kept)."""
        skipped_before = self.scaler.skipped if self.scaler is not None else 0
        trained = self.train_epoch(epoch)
        val = self.evaluate(self.val_loader) if self.val_loader is not None else None
        self.confusion = val.pop("confusion") if val is not None else None
        skipped = getattr(self.train_loader, "skipped", 0) + getattr(self.val_loader, "skipped", 0)
        self.skipped = int(self.strategy.sum([skipped], "unreadable image count", self.stops)[0])
        record = {"epoch": epoch, "train_loss": trained["loss"], "train_top1": trained["top1"]}
        if val is not None:
            record.update(val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"])
        record.update(lr=self.optimizer.lr, images_per_s=trained["images_per_s"], seconds=trained["seconds"])
        if self.scaler is not None:                      # float16: the loss scale, and the steps skipped
            record.update(loss_scale=self.scaler.scale, skipped_steps=self.scaler.skipped - skipped_before)
        return record

    def train_epoch(self, epoch):
        """One pass over the training loader: {"loss", "top1", "images_per_s", "seconds"}."""
        self.optimizer.lr = self.schedule.lr(epoch)
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(epoch)
        self._call("on_epoch_start", epoch)
        self.model.train()
        start, seen, loss_sum, correct, index = time.perf_counter(), 0, 0.0, 0, -1
        for index, (x, y) in enumerate(self.train_loader):
            if self.done_steps:                          # max_steps: the epoch ends here, validated and kept
                break
            step = self.train_step(epoch, index, x, y)
            if step is not None:
                seen, loss_sum, correct = seen + step.count, loss_sum + step.loss * step.count, correct + step.hits
        if index < 0:
            raise Stopped(f"the training loader gave no batch in epoch {epoch} (a batch size larger than the "
                          "training set, with drop_last, gives none).", together=True)
        if seen == 0:
            raise Stopped(f"no training image could be read in epoch {epoch}.", together=True)
        seconds = time.perf_counter() - start
        return {"loss": loss_sum / seen, "top1": correct / seen, "images_per_s": seen / seconds, "seconds": seconds}

    def train_step(self, epoch, index, x, y):
        """Forward, backward, update on one batch; the Step, or None when no image of the
        global batch could be read (no step is taken, as in one process)."""
        y = _labels(y)
        offset, total = self.strategy.batch_offset(len(y))   # this rank's first row in the global batch
        if total == 0:
            return None
        step = Step(epoch, index, rows=len(y))
        self._call("on_step_start", step)
        self.model.zero_grad()
        # A rank none of whose images could be read runs the forward on no rows: it draws the
        # dropout seeds the others draw (one generator, the same on every rank), then no backward.
        with random.sample_offset_scope(offset), autocast(PRECISIONS[self.precision]):   # dropout keyed by the
            logits = self.model(self._on_device(x))                                      # global sample
        self.num_classes = self.num_classes or logits.shape[1]
        loss = self.loss(logits, y) if len(y) else None
        if loss is not None:
            self._backward(loss)
        hits = int((logits.numpy().argmax(1) == y).sum())
        params = self._trained
        step.loss, step.hits, step.count = self.strategy.reduce_step(
            params, len(y), loss.item() if loss is not None else math.nan, hits, self.stops)
        step.skipped = self.scaler is not None and not self.scaler.unscale(params)   # an overflow: no step
        self._call("on_before_update", step)
        if not step.skipped:
            self.optimizer.step()
        self.step += 1
        self._call("on_step_end", step)
        return step

    def _backward(self, loss):
        """loss.backward(); in float16, of the loss scaled up (scaler.py): an overflow on the way is
        expected now and then, and handled by the scaler, not warned about."""
        if self.scaler is None:
            loss.backward()
            return
        with np.errstate(over="ignore", invalid="ignore"):
            (loss * self.scaler.scale).backward()

    @property
    def done_steps(self):
        """Whether max_steps steps have been taken."""
        return self.max_steps is not None and self.step >= self.max_steps

    @property
    def _trained(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def evaluate(self, loader):
        """{"loss", "top1", "top5", "confusion"} of the model on `loader` (NaN for the first three
        when no image could be read; confusion: the (K, K) counts of true class by top-1 prediction). A batch of 10 crops per image, x (B, 10, C, H, W), is scored by the softmax
        averaged over the crops (the paper's test). Under data parallel: over every rank's slice."""
        with autocast(PRECISIONS[self.precision]):        # (float16 runs validate in float16 too)
            return evaluate(self.model, loader, self.device, self.loss, self.strategy, self.stops, self.num_classes)

    def _on_device(self, x):
        return x if isinstance(x, Tensor) else Tensor(x, device=self.device)

    def _call(self, hook, *args):
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(self, *args)

    def _call_every(self, hook, *args):
        """The hook of every callback, even when one of them raises (each cleans up its own: a
        Checkpoint gives its folder's lock back); a failure is said as a warning, and after
        on_fit_end the first one is raised."""
        failed = None
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            try:
                if method is not None:
                    method(self, *args)
            except Exception as e:
                warnings.warn(f"{type(callback).__name__}.{hook} failed: {type(e).__name__}: {e}", stacklevel=2)
                failed = failed or e
        if failed is not None and hook == "on_fit_end":
            raise failed

    # ----- state: what a checkpoint holds -----

    def keyed_callbacks(self):
        """(key, callback) pairs: the callback's `key`, else its class name (#2, #3 for repeats)."""
        seen, pairs = {}, []
        for c in self.callbacks:
            key = getattr(c, "key", None) or type(c).__name__
            seen[key] = seen.get(key, 0) + 1
            pairs.append((key if seen[key] == 1 else f"{key}#{seen[key]}", c))
        return pairs

    def _state(self):
        """What the run keeps besides the weights, as plain JSON text."""
        callbacks = {}
        for key, c in self.keyed_callbacks():
            if hasattr(c, "state_dict"):
                try:
                    callbacks[key] = c.state_dict()
                    checkpoint.strict_json(callbacks[key])
                except (TypeError, ValueError) as e:
                    raise TypeError(f"{key}.state_dict(): expected plain values (numbers, text, lists and dicts "
                                    f"of them), {e}") from None
        return {"epoch": self.epoch, "rng_state": random.get_state(), "history": checkpoint.strict_json(self.history),
                "trainer": checkpoint.strict_json({"step": self.step, "schedule": self.schedule.state_dict(),
                                                   "callbacks": callbacks, "precision": self.precision,
                                                   "scaler": self.scaler.state_dict() if self.scaler else None})}

    def keep(self):
        """Note the state as it is now as the kept one: what interrupted.npz records, and what the
        trainer returns to when an epoch fails before it is kept whole."""
        self.kept = self._state()

    def state_meta(self, kept=False, **extra):
        """The meta/ entries of a checkpoint (minialex/checkpoint.py): the state as it is now, or
        with kept=True the last kept epoch's (the trainer's counters, schedule, callbacks, random
        generator and history at the end of that epoch)."""
        state = self.kept if kept and self.kept is not None else self._state()
        return {"format": checkpoint.FORMAT, **state, "processes": self.strategy.size, **extra}

    def _back_to_kept(self):
        """After a failed or interrupted epoch: the counters, schedule, callbacks and history as
        the last kept epoch left them (the weights stay as they are: interrupted.npz holds them)."""
        if self.kept is not None:
            self._load_state(self.kept["epoch"], json.loads(self.kept["history"]), json.loads(self.kept["trainer"]))
            self._load_callback_states()

    def _load_state(self, epoch, history, state):
        self.epoch, self.history, self.step = epoch, history, state["step"]
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self._pending = dict(state["callbacks"])      # each callback's, given now or when it is added
        self._load_callback_states()

    def _load_callback_states(self):
        """The saved states of the callbacks there are now (a state whose callback is added later,
        as minialex-train adds its writers, waits for it)."""
        for key, c in self.keyed_callbacks():
            if hasattr(c, "load_state_dict") and key in self._pending:
                c.load_state_dict(self._pending.pop(key))

    def restore(self, source, same_processes=True):
        """Continue from a checkpoint: the model's weights, the optimizer's state, the random
        generator, the epoch, the history, the schedule's and the callbacks' states. source: a
        path or a read checkpoint.Checkpoint. CheckpointError names what does not fit; a run of
        N data-parallel processes continues with N (same_processes=False: to evaluate it)."""
        where = "" if isinstance(source, checkpoint.Checkpoint) else f"{source}: "
        try:
            ckpt = source if isinstance(source, checkpoint.Checkpoint) else checkpoint.read(source)
            self._restore(ckpt, same_processes)
        except checkpoint.CheckpointError as e:
            raise checkpoint.CheckpointError(f"{where}{e}") from None
        self.restored_from = ckpt.path
        return ckpt

    def _restore(self, ckpt, same_processes):
        trained = ckpt.meta["trainer"].get("precision", "fp32")
        if trained != self.precision:
            raise checkpoint.CheckpointError(f"it was trained with precision={trained!r}, this trainer has "
                                             f"{self.precision!r}: give the trainer precision={trained!r}")
        if same_processes and ckpt.meta["processes"] != self.strategy.size:
            n = ckpt.meta["processes"]
            raise checkpoint.CheckpointError(
                f"it was trained by {n} process{'es' if n > 1 else ''}, this run has {self.strategy.size}: "
                "resume it with as many, so that every step sees the batches it would have")
        try:
            self.model.load_state_dict(ckpt.model)
            self.optimizer.load_state_dict(ckpt.optim)
        except (KeyError, ValueError, TypeError) as e:
            raise checkpoint.CheckpointError(f"it does not fit the model: {e.args[0] if e.args else e}") from None
        missing = [i for i, v in enumerate(getattr(self.optimizer, "velocity", ())) if v is None]
        if ckpt.meta["epoch"] > 0 and missing:
            raise checkpoint.CheckpointError(f"optim/velocity.{missing[0]} is missing (a trained run has "
                                             "momentum for every parameter): the file is damaged")
        random.set_state(ckpt.meta["rng_state"])
        self._load_state(ckpt.meta["epoch"], ckpt.meta["history"], ckpt.meta["trainer"])


def _check_loader(name, loader, required=False):
    if loader is None and not required:
        return
    if loader is None or not hasattr(loader, "__iter__"):
        raise TypeError(f"Trainer: {name} expected an iterable of (x, y) batches, got {type(loader).__name__}")
    if iter(loader) is loader:
        raise TypeError(f"Trainer: {name} expected a loader that can be iterated once per epoch (a DataLoader, a "
                        f"list), got {type(loader).__name__}, which is used up after one pass")


def _check_callbacks(callbacks):
    if callbacks is None:
        return []
    if not hasattr(callbacks, "__iter__"):
        raise TypeError(f"Trainer: callbacks expected a list of callbacks, got {type(callbacks).__name__}")
    callbacks = list(callbacks)
    for c in callbacks:
        if isinstance(c, type):
            raise TypeError(f"Trainer: callbacks expected callback objects, got the class {c.__name__} "
                            f"(write {c.__name__}())")
    return callbacks


def _labels(y):
    return np.asarray(y.numpy() if isinstance(y, Tensor) else y)


def evaluate(model, loader, device="cpu", loss=F.cross_entropy, strategy=None, stops=None, num_classes=None):
    """{"loss", "top1", "top5", "confusion"} of `model` on `loader` (see Trainer.evaluate); the
    confusion matrix counts images by true class (rows) and top-1 prediction (columns). strategy
    and stops are a data-parallel run's (the sums over the ranks, and the stop votes they carry)."""
    if loader is None or not hasattr(loader, "__iter__"):
        raise TypeError(f"evaluate: loader expected an iterable of (x, y) batches, got {type(loader).__name__}")
    strategy, stops = strategy or Local(), stops or StopRequests()
    was_training = getattr(model, "training", True)
    model.eval()
    sums, pairs = np.zeros(4), []                        # loss sum, top-1 hits, top-5 hits, images; (true, predicted)
    try:
        with no_grad():
            for x, y in loader:
                y = _labels(y)
                if len(y):                               # (a rank's slice of a batch may be empty)
                    scores, predicted, width = _scores(model, x, y, device, loss)
                    sums += scores
                    pairs.append(np.stack([y, predicted]))
                    num_classes = num_classes or width
    finally:
        model.train(was_training)                        # as it was
    loss_sum, top1, top5, total = (float(v) for v in strategy.sum(sums, "validation metrics", stops))
    confusion = _confusion(pairs, num_classes, strategy, stops)
    if total == 0:
        return {"loss": math.nan, "top1": math.nan, "top5": math.nan, "confusion": confusion}
    return {"loss": loss_sum / total, "top1": top1 / total, "top5": top5 / total, "confusion": confusion}


def _confusion(pairs, num_classes, strategy, stops):
    """The (K, K) counts of (true, predicted) over every rank (the ranks agree on K first when it
    came from the logits: a rank without images has none)."""
    if strategy.size > 1:
        seen, k = strategy.sum([1.0 if num_classes else 0.0, num_classes or 0], "the number of classes", stops)
        num_classes = int(round(k / seen)) if seen else 0
    counts = np.zeros((num_classes or 0, num_classes or 0), np.int64)
    for true, predicted in pairs:
        np.add.at(counts, (true, predicted), 1)
    if strategy.size > 1 and counts.size:
        counts = strategy.sum(counts.ravel(), "the confusion matrix", stops).round().astype(np.int64)
        counts = counts.reshape(num_classes, num_classes)
    return counts


def crop_probabilities(model, x, device):
    """(B, K) float64 class probabilities of a batch of images (B, C, H, W) or of crops
    (B, crops, C, H, W): the softmax of each crop's logits, averaged over an image's crops (the
    paper's ten-crop test, section 4.1). Call it under no_grad."""
    x = x.numpy() if isinstance(x, Tensor) else np.asarray(x)
    if x.ndim == 4:
        x = x[:, None]
    b, crops = x.shape[:2]
    logits = model(Tensor(x.reshape(b * crops, *x.shape[2:]), device=device)).numpy().astype(np.float64)
    logits = logits.reshape(b, crops, -1)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)).mean(1)


def _scores(model, x, y, device, loss):
    """([loss sum, top-1 hits, top-5 hits, count], top-1 predictions, classes) of one batch."""
    if len(x.shape) == 5:                                # (B, crops, C, H, W): average the softmax
        scores = crop_probabilities(model, x, device)
        loss_sum = float(-np.log(np.maximum(scores[np.arange(len(y)), y], 1e-12)).sum())
    else:
        out = model(x if isinstance(x, Tensor) else Tensor(x, device=device))
        loss_sum, scores = loss(out, y).item() * len(y), out.numpy()
    k = min(5, scores.shape[1])
    best = np.argsort(-scores, axis=1)[:, :k]
    counts = np.array([loss_sum, (best[:, 0] == y).sum(), (best == y[:, None]).any(axis=1).sum(), len(y)], np.float64)
    return counts, best[:, 0], scores.shape[1]
