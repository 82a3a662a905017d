"""minialex-train: train AlexNet, or your own network, on an ImageNet-style folder or the built-in data.

    minialex-train                                   # built-in data, CPU, alexnet-mini
    minialex-train --data ~/imagenette2 --arch alexnet --device cuda --epochs 30
    minialex-train --data DIR --model mynets:small_cnn   # your own: small_cnn(num_classes) -> nn.Module
    minialex-train --resume runs/x/last.npz          # continue the same run where it stopped
    minialex-train --resume runs/x/last.npz --epochs 20   # ... and train it for longer
    minialex-train --resume runs/x/best.npz --eval-only --ten-crop

--data DIR must hold DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg. The run writes to --out
(default: a new folder runs/<arch>-<date>-<time>): metrics.jsonl (one JSON object per epoch),
last.npz and best.npz (atomic checkpoints), confusion.csv, and the pictures filters.png (the first
convolution's filters), curves.png, layers.png, predictions.png and confusion.png. A checkpoint
records every setting of its run, its network (an --arch or the --model factory) and its data
folder: --resume CKPT alone continues it exactly; only --epochs, --max-steps, --workers, --device,
--out, --overwrite, --stall-steps, --dist-timeout, --scale, --data (when the folder moved),
--eval-only, --ten-crop, --no-cache and --export-onnx may change between invocations. Images are
decoded once, in the first epoch, into a decoded store in the cache folder (minialex/data/store.py;
minialex-prepare DATA builds it ahead); --no-cache decodes every epoch instead. Bad input ends with
one line "minialex-train: error: ..." and exit status 2, before any work.

Data parallel: `mpiexec -n N minialex-train ...` trains one model over N processes
(minialex/distributed.py): --batch-size is per process, each process trains on its slice of every
global batch and the gradients are summed over them (MPI on the CPU, NCCL on GPUs, one GPU per
process: cuda:<local rank>). Only rank 0 prints, writes metrics, pictures and checkpoints; a
checkpoint records N, and --resume needs the same N. An error on any rank ends the whole job.

This command is a thin layer over the library: flags -> a frozen RunConfig (minialex/runconfig.py)
-> the data, the model, the optimizer and the callbacks -> minialex.training.Trainer.fit.
"""
import dataclasses
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from . import backend, checkpoint, cpu, distributed, io, random, reporting, system
from . import functional as F
from .data import DataLoader, Transform, dataset_stats, make_synthetic
from .data.splits import DataError, open_splits
from .optim import SGD
from .paths import cache_root
from .runconfig import TrainError, build_model, check_custom, load_factory, parse_args, resolve, validate
from .runfolder import LOCK as LOCK_NAME, FolderError, RunFolder, unique  # noqa: F401  (LOCK_NAME: the lock's name)
from .training import (Checkpoint, Confusion, Constant, EpochLine, FirstLossCheck, Interrupted, LayerDiagnostics, Pictures,
                       Plateau, ProgressBar, SetupError, StallWarning, StepLog, StepLR, StopRequests, Stopped, Trainer)
from .training.progress import say
from .training.saving import folder_conflict
from .training.strategy import auto as auto_strategy

train_epoch = Trainer.train_epoch        # (the loop lives in minialex.training; the name is kept for old callers)


def read_checkpoint(path):
    try:
        return checkpoint.read(path)
    except checkpoint.CheckpointError as e:
        raise TrainError(f"--resume {path}: {e}") from None


# ----- data -----

def _stats_for(folder):
    """Mean, std and RGB PCA of a training folder, cached by its files (ImageFolder.fingerprint)."""
    cache = cache_root() / "stats" / f"{folder.fingerprint()[:20]}.npz"
    if cache.is_file():
        try:
            stats = io.load(cache)
            if set(stats) == set(checkpoint.STATS) and all(
                    stats[k].shape == v and stats[k].dtype.kind == "f" and np.isfinite(stats[k]).all()
                    for k, v in checkpoint.STATS.items()) and (stats["std"] > 0).all():
                return stats
            raise ValueError("its arrays are not the statistics")
        except (ValueError, OSError) as e:
            warnings.warn(f"the dataset-statistics cache {cache} is damaged ({e}); computing it again",
                          stacklevel=2)
    stats = dataset_stats(folder)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        io.save(stats, cache)
    except OSError as e:  # a cache that cannot be written costs time, not the run
        warnings.warn(f"cannot write the dataset-statistics cache {cache} ({e})", stacklevel=2)
    return stats


def open_data(data, need_train=True):
    """(train folder, val folder) for --data, or the built-in dataset, checked (minialex/data/splits.py)."""
    try:
        root = Path(data) if data else make_synthetic()
    except OSError as e:
        raise TrainError(f"the built-in dataset cannot be rendered: {e.strerror or e} (set MINIALEX_DATA to a "
                         "writable folder)") from None
    try:
        return open_splits(root, need_train=need_train)
    except DataError as e:
        raise TrainError(f"--data: {e}") from None


def _loader(cfg, folder, transform, train=False, batch_size=None):
    """The fastest loader for the device: images decoded once (the decoded store, unless
    --no-cache), batches made on a GPU from uint8 crops (kernels/augment.cu); under mpiexec this
    rank's shard of every global batch."""
    on_gpu = backend.is_gpu(cfg.device) and transform.mode != "ten_crop"   # (10 crops: host batches)
    world = distributed.world()
    return DataLoader(folder, transform, batch_size or cfg.batch_size, shuffle=train, drop_last=train, workers=cfg.workers,
                      seed=cfg.seed if train else 0, cache=not cfg.no_cache, device=cfg.device if on_gpu else None,
                      shard=(world.rank, world.size))


# ----- the run folder -----

def _out_folder(cfg, ckpt, data_root):
    """The run folder: made, checked for writing, locked, cleaned of killed saves' temporaries;
    a folder holding another run is refused unless --resume continues it or --overwrite (whose
    old files are removed only when training starts: folder.stale)."""
    resume_dir = Path(cfg.resume).resolve().parent if cfg.resume else None
    try:
        if cfg.out:
            path = Path(cfg.out)
        elif resume_dir is not None and RunFolder(resume_dir).holds_a_run():
            path = resume_dir                               # continue the run where it is
        else:
            label = cfg.arch if not cfg.custom else cfg.arch.rpartition(":")[2]
            path = unique("runs", f"{label}-{time.strftime('%Y%m%d-%H%M%S')}")
        data = data_root.resolve()
        if path.resolve() == data or data in path.resolve().parents:
            raise TrainError(f"--out {path} is inside the data folder {data_root}: the run's files would become "
                             "training images; choose a folder outside it")
        folder = RunFolder(path)
        folder.create()
        folder.probe()
        folder.lock()
    except FolderError as e:
        raise TrainError(str(e)) from None
    except OSError as e:
        raise TrainError(f"--out {cfg.out}: {e.strerror or e}") from None
    try:
        _check_folder(cfg, ckpt, folder, resume_dir)
    except FolderError as e:
        folder.unlock()
        raise TrainError(str(e)) from None
    except BaseException:
        folder.unlock()
        raise
    return folder


def _check_folder(cfg, ckpt, folder, resume_dir):
    problem = folder_conflict(folder, cfg.resume, ckpt.meta["epoch"] if ckpt else 0, cfg.overwrite)
    if problem and problem[0] == "held":
        held = problem[1]
        last = folder.path / ("last.npz" if "last.npz" in held else held[0] if held[0].endswith(".npz") else "last.npz")
        raise TrainError(f"--out {folder.path} already holds a run ({', '.join(held)}); resume it with "
                         f"--resume {last}, choose another --out, or add --overwrite")
    if problem:
        raise TrainError(f"--resume {cfg.resume} is epoch {ckpt.meta['epoch']}, but {folder.path / 'last.npz'} "
                         f"holds epoch {problem[1]}: continuing here would overwrite epochs after "
                         f"{ckpt.meta['epoch']}; give --out NEW_FOLDER to branch, or --overwrite")
    removed = folder.remove_temporaries()
    if removed:
        say(f"removed {len(removed)} temporary file(s) left by an interrupted save in {folder.path}")
    continuing = resume_dir is not None and resume_dir == folder.path.resolve()
    held = folder.holds_a_run()
    folder.stale = held if held and cfg.overwrite and not continuing else []


# ----- setup: every check that can fail, before the statistics pass -----

class Session:
    """What setup made: the config, the data, the statistics, the trainer and the run folder
    (None on the ranks other than 0 under mpiexec, which write nothing)."""

    def __init__(self, **parts):
        self.__dict__.update(parts)


def _settings(flags, strategy):
    """The checkpoint (or None) and the checked config; agreed over the ranks."""
    failure = ckpt = cfg = None
    try:
        ckpt = read_checkpoint(flags["resume"]) if flags.get("resume") else None
        cfg = validate(resolve(flags, ckpt))
        check_custom(cfg, flags)
        if cfg.custom:                                   # importable, before any work
            cfg = dataclasses.replace(cfg, arch=load_factory(cfg)[1])
        n, size = (ckpt.meta["processes"] if ckpt else 1), strategy.size
        if ckpt and n != size and not cfg.eval_only:
            raise TrainError(f"--resume {cfg.resume} was trained by {n} process{'es' if n > 1 else ''} (a global "
                             f"batch of {n} x {cfg.batch_size}), this run has {size}: resume it with "
                             + (f"mpiexec -n {n} minialex-train ..." if n > 1 else "one process (no mpiexec)")
                             + " so that every step sees the batches it would have")
    except TrainError as e:
        failure = e
    strategy.agree(failure)
    strategy.same_settings(cfg.shared())
    return ckpt, cfg


def _subset(cfg, train_set):
    """--train-subset N: N training images picked by the seed (the same on resume and every rank)."""
    if cfg.train_subset is None:
        return train_set
    if cfg.train_subset > len(train_set):
        raise TrainError(f"--train-subset {cfg.train_subset} is more than the {len(train_set)} training images")
    keep = np.sort(np.random.default_rng([cfg.seed, 0x5B5E7]).permutation(len(train_set))[:cfg.train_subset])
    return train_set.subset(keep)


def _check_data(cfg, ckpt, train_set, size):
    if ckpt and ckpt.meta["classes"] != train_set.classes:
        theirs, ours = ckpt.meta["classes"], train_set.classes
        raise TrainError(f"--resume {cfg.resume}: the checkpoint's {len(theirs)} classes are not the data's "
                         f"{len(ours)}: only in the checkpoint {sorted(set(theirs) - set(ours))[:5]}, only in the "
                         f"data {sorted(set(ours) - set(theirs))[:5]}"
                         + ("" if set(theirs) != set(ours) else " (another order)"))
    if not cfg.eval_only and len(train_set) < cfg.batch_size * size:
        raise TrainError(f"--batch-size {cfg.batch_size}" + (f" x {size} processes" if size > 1 else "")
                         + f" is larger than the {len(train_set)} training images")


def setup(flags):
    """Checkpoint, settings, data, run folder, statistics, model, optimizer and trainer, in that
    order, so that every check that can fail runs before the statistics pass; a Session, or None
    when a resumed run has nothing left to do. The run folder, when made, is locked. Under mpiexec
    the ranks agree on each part's errors (strategy.agree, strategy.root_first): one message, exit 2."""
    strategy = auto_strategy()
    ckpt, cfg = _settings(flags, strategy)
    distributed.world().timeout = cfg.dist_timeout
    if ckpt and not cfg.eval_only and (ckpt.meta["epoch"] >= cfg.epochs or (
            cfg.max_steps is not None and ckpt.meta["trainer"]["step"] >= cfg.max_steps)):
        if strategy.is_root:
            say(f"{cfg.resume} has finished epoch {ckpt.meta['epoch']} of the {cfg.epochs} asked for"
                + (f" (step {ckpt.meta['trainer']['step']} of --max-steps {cfg.max_steps})" if cfg.max_steps else "")
                + ": nothing to do (give a larger --epochs or --max-steps to train further)")
        return None
    train_set, val_set = strategy.root_first("opening the data",   # rank 0 renders the built-in data first
                                             lambda: open_data(cfg.data, need_train=not cfg.eval_only))
    strategy.same_data([train_set, val_set])                       # every rank the same classes and files
    failure = folder = None
    try:
        train_set = _subset(cfg, train_set)
        _check_data(cfg, ckpt, train_set, strategy.size)
        random.manual_seed(cfg.seed)                             # the initial weights, then dropout
        model, cfg = build_model(cfg, len(train_set.classes))
        if not cfg.eval_only and not ckpt and strategy.is_root:  # a fresh run: the folder before the statistics
            folder = _out_folder(cfg, ckpt, train_set.root.parent)
    except TrainError as e:
        failure = e
    try:
        strategy.agree(failure)
        stats = {k: ckpt.meta[k] for k in checkpoint.STATS} if ckpt else \
            strategy.root_first("the dataset statistics", lambda: _stats_for(train_set))   # rank 0 caches them
        trainer = _trainer(cfg, model, strategy, len(train_set.classes))
        failure = None
        try:
            if ckpt:
                trainer.restore(ckpt, same_processes=False)    # (the count was checked with its message)
                if not cfg.eval_only and strategy.is_root:   # a resumed run: the folder once the checkpoint fits
                    folder = _out_folder(cfg, ckpt, train_set.root.parent)
        except checkpoint.CheckpointError as e:
            failure = TrainError(f"--resume {cfg.resume}: {e}")
        except TrainError as e:
            failure = e
        strategy.agree(failure)
    except BaseException:
        if folder is not None:
            folder.unlock()
        raise
    return Session(cfg=cfg, strategy=strategy, trainer=trainer, train_set=train_set, val_set=val_set,
                   stats=stats, folder=folder, resumed=ckpt is not None)


def _trainer(cfg, model, strategy, classes):
    """The model, the paper's SGD and the schedule in a Trainer; the loaders and rank 0's
    writing callbacks (_callbacks) are added when training starts."""
    opt = SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    schedule = {"step": lambda: StepLR(cfg.lr_step), "plateau": lambda: Plateau(cfg.patience),
                "constant": Constant}[cfg.lr_schedule]()
    trainer = Trainer(model, opt, None, None, epochs=cfg.epochs, schedule=schedule, loss=F.cross_entropy,
                      max_steps=cfg.max_steps, device=cfg.device, strategy=strategy, precision=cfg.precision,
                      callbacks=[FirstLossCheck(), StallWarning(cfg.stall_steps), LayerDiagnostics(), StepLog(),
                                 ProgressBar()])
    trainer.num_classes = classes
    return trainer


def _callbacks(s):
    """What rank 0 writes: the checkpoints and metrics (with the run's settings, network, classes,
    data folder and statistics), the epoch line, the pictures."""
    cfg, out = s.cfg, s.folder.path
    extras = {"arch": cfg.arch, "classes": np.array(s.train_set.classes), "config": checkpoint.strict_json(
              cfg.run_settings()), "data": str(Path(cfg.data).resolve()) if cfg.data else "", **s.stats}
    classes = s.train_set.classes
    return [Checkpoint(s.folder, meta=extras), EpochLine(classes), Pictures(out, reporting.examples(s), factor=cfg.scale),
            Confusion(out, classes, factor=cfg.scale)]


# ----- the run -----

def run(flags):
    """Train (or evaluate) as the flags (a dict of those given) say; returns the history."""
    with StopRequests().installed():        # Ctrl-C / SIGTERM during setup end the run cleanly too
        s = setup(flags)
        if s is None:
            return []
        try:
            if s.cfg.eval_only:
                _evaluate_only(s)
                return s.trainer.history
            return _train(s)
        finally:
            if s.folder is not None:
                s.folder.unlock()


def _evaluate_only(s):
    loader = _loader(s.cfg, s.val_set, Transform(reporting.input_size(s), s.stats, "val"))
    m = s.trainer.evaluate(loader)
    if s.strategy.is_root:
        say(f"val (centre crop): loss {m['loss']:.4f}  top-1 {m['top1']:.2%}  top-5 {m['top5']:.2%}")
        reporting.per_class_report(s, m["confusion"])
    if s.cfg.ten_crop:
        _ten_crop_report(s)


def _train(s):
    cfg, t, size = s.cfg, s.trainer, reporting.input_size(s)
    world = distributed.world()
    if world.size > 1 and not cfg.no_cache:  # a shard cannot build the store: the first rank of
        if world.local_rank == 0:            # each machine builds it there, the others wait
            from .prepare import prepare
            with world.working("building the decoded store"):   # (its heartbeats keep their waits going)
                for folder in (s.train_set, s.val_set):
                    prepare(folder, size, cfg.workers)
        world.barrier("building the decoded store", world.wait_limit())
        reporting.say_missing_stores(s, size)
    t.train_loader = _loader(cfg, s.train_set, Transform(size, s.stats, "train", cfg.flip, cfg.lighting), train=True)
    t.val_loader = _loader(cfg, s.val_set, Transform(size, s.stats, "val"))
    if s.folder is not None:
        t.callbacks += _callbacks(s)
        for name in s.folder.stale:  # --overwrite: the old run's files go now that every check has passed
            (s.folder.path / name).unlink(missing_ok=True)
    if s.strategy.is_root:
        reporting.preamble(s)
    t.fit()
    if t.interrupted is not None:
        raise t.interrupted
    if cfg.ten_crop:
        _ten_crop_report(s)
    if cfg.export_onnx and s.strategy.is_root:
        _export_onnx(s, size)
    if s.strategy.is_root:
        best = next(c for c in t.callbacks if isinstance(c, Checkpoint)).best
        say(f"done: best val top-1 {best['value'] or 0:.2%} (epoch {best['epoch']}); {s.folder.path}/best.npz, "
            f"metrics.jsonl, filters.png, curves.png, layers.png, predictions.png")
    return t.history


def _export_onnx(s, size):
    """best.onnx beside best.npz: the best epoch's network (minialex/onnx)."""
    from . import onnx
    best, path = s.folder.path / "best.npz", s.folder.path / "best.onnx"
    model = s.trainer.model
    kept = {k: v.copy() for k, v in model.state_dict().items()}
    model.load_state_dict(checkpoint.read_network(best)[0])
    try:
        onnx.export(model, path, (3, size, size))
    finally:
        model.load_state_dict(kept)
    say(f"exported {path} (ONNX opset {onnx.OPSET}, from {best})")


def _ten_crop_report(s):
    loader = _loader(s.cfg, s.val_set, Transform(reporting.input_size(s), s.stats, "ten_crop"),   # (each rank its shard)
                     batch_size=max(1, s.cfg.batch_size // 10))
    m = s.trainer.evaluate(loader)
    if s.strategy.is_root:
        say(f"val (10 crops): loss {m['loss']:.4f}  top-1 {m['top1']:.2%}  top-5 {m['top5']:.2%}")


# ----- the command: exit statuses -----

def main(argv=None):
    flags = parse_args(argv, __doc__)
    environment = system.check_environment()     # MINIALEX_CPU_PATH, MINIALEX_THREADS, ...: before any work
    if environment:
        for line in environment:
            print(f"minialex-train: error: {line}", file=sys.stderr)
        return 2
    cpu.tune()  # process-wide malloc and OpenBLAS settings that speed up CPU training
    try:
        world = distributed.init()
    except distributed.DistributedError as e:
        print(f"minialex-train: error: {e}", file=sys.stderr)
        return 2
    if world.size == 1:
        return _main(flags)[0]
    if not world.is_root:
        warnings.simplefilter("ignore")      # rank 0 reports; the ranks run the same code
    try:
        distributed.share_cores(world)       # the processes on one machine split its cores
    except ValueError as e:                  # MINIALEX_THREADS
        world.abort(f"minialex-train: error: {e}", 2)
    try:
        code, together = _main(flags, prefix="" if world.is_root else f"rank {world.rank}: ", world=world)
    except BaseException:                    # a bug or a library error on this rank: end every rank
        world.abort("failed:\n" + traceback.format_exc())
    if code != 0 and not together:           # this rank alone: the others would wait for it
        world.abort(None, code)
    return code


def _main(flags, prefix="", world=None):
    """(exit status, whether every rank ended at the same point): 0 done, 2 bad input, 1 stopped
    (a non-finite loss or weight, a failed write), 128 + the signal for Ctrl-C or SIGTERM."""
    quiet = world is not None and not world.is_root    # a stop made together is said by rank 0 only
    try:
        run(flags)
    except (SetupError, FolderError) as e:
        together = getattr(e, "together", False)
        if together and getattr(e, "rank", None):
            prefix = f"rank {e.rank}: "
        if not (together and quiet):
            print(f"minialex-train: {prefix}error: {e}", file=sys.stderr)
        return 2, together
    except Stopped as e:
        if not (e.together and quiet):
            print(f"minialex-train: {prefix}{e}", file=sys.stderr)
        return 1, e.together
    except (Interrupted, KeyboardInterrupt) as e:
        stop = e if isinstance(e, Interrupted) else Interrupted(2)
        return 128 + stop.signum, stop.together
    return 0, False


if __name__ == "__main__":
    sys.exit(main())
