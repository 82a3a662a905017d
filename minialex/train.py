"""minialex-train: train AlexNet on an ImageNet-style folder, or on the built-in dataset.

    minialex-train                                   # built-in data, CPU, alexnet-mini
    minialex-train --data ~/imagenette2 --arch alexnet --device cuda --epochs 30
    minialex-train --resume runs/x/last.npz          # continue the same run where it stopped
    minialex-train --resume runs/x/last.npz --epochs 20   # ... and train it for longer
    minialex-train --resume runs/x/best.npz --eval-only --ten-crop

--data DIR must hold DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg. The run writes to --out
(default: a new folder runs/<arch>-<date>-<time>): metrics.jsonl (one JSON object per epoch),
last.npz and best.npz (atomic checkpoints), and the pictures filters.png (conv1's filters),
curves.png and predictions.png. A checkpoint records every setting of its run: --resume CKPT alone
continues it exactly; only --epochs, --workers, --device, --out, --stall-steps, --data, --eval-only,
--ten-crop and --no-cache may change between invocations. Images are decoded once, in the first
epoch, into a decoded store in the cache folder (minialex/data/store.py; minialex-prepare DATA
builds it ahead); --no-cache decodes every epoch instead. Bad input ends with one line
"minialex-train: error: ..." and exit status 2, before any work.

Data parallel: `mpiexec -n N minialex-train ...` trains one model over N processes
(minialex/distributed.py): --batch-size is per process, each process trains on its slice of every
global batch and the gradients are summed over them (MPI on the CPU, NCCL on GPUs, one GPU per
process: cuda:<local rank>). Only rank 0 prints, writes metrics, pictures and checkpoints; a
checkpoint records N, and --resume needs the same N. An error on any rank ends the whole job.
"""
import argparse
import contextlib
import hashlib
import json
import math
import os
import secrets
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from . import backend, checkpoint, cpu, diagnostics, distributed, io, random
from . import functional as F
from .data import DataLoader, ImageFolder, Transform, dataset_stats, make_synthetic, resize_for
from .data.transforms import center_crop, resize_shorter, to_array, to_chw
from .function import no_grad
from .models import AlexNet
from .ops.dropout import MASK_BITS, keep_threshold
from .optim import SGD
from .paths import cache_root
from .pictures import filter_grid, layer_diagnostics, prediction_grid, training_curves
from .summary import summary as ma_summary
from .runfolder import LOCK as LOCK_NAME, FolderError, RunFolder, unique
from .tensor import Tensor

ARCHS = {"alexnet": AlexNet, "alexnet-mini": AlexNet.mini}
# Per-architecture defaults: the paper's for alexnet; tuned to the built-in data for alexnet-mini.
ARCH_DEFAULTS = {"alexnet": dict(epochs=90, batch_size=128, lr=0.01, lr_step=30, dropout=0.5),
                 "alexnet-mini": dict(epochs=10, batch_size=32, lr=0.01, lr_step=8, dropout=0.25)}
DEFAULTS = dict(momentum=0.9, weight_decay=5e-4, lr_schedule="step", patience=1, init="he", seed=0,
                flip=True, lighting=True, device="cpu", workers=2, stall_steps=300,
                dist_timeout=distributed.DEFAULT_TIMEOUT)
# The settings that define a run: recorded in each checkpoint (meta/config) and restored by
# --resume; a flag on --resume that contradicts one is an error. The others may change.
RUN_SETTINGS = ("arch", "batch_size", "lr", "lr_schedule", "lr_step", "patience", "momentum",
                "weight_decay", "dropout", "seed", "init", "flip", "lighting")
SEED_LIMIT = 2**32 - 1


class TrainError(Exception):
    """Bad input found before training (a flag, a file, a folder): one line, exit status 2.
    together: every rank of a data-parallel run raised it at the same point (no abort needed);
    rank: the rank whose input it was (said by rank 0)."""

    def __init__(self, message, together=False, rank=None):
        super().__init__(message)
        self.together, self.rank = together, rank


class Stopped(Exception):
    """Training had to stop (the loss or weights became non-finite, a write failed): exit status 1.
    together: as TrainError's (the values it looked at were summed over the ranks)."""

    def __init__(self, message, together=False):
        super().__init__(message)
        self.together = together


class Interrupted(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM (what schedulers send) arrived. together: every rank of a
    data-parallel run stops at the same step (the request rode in the step's all-reduce)."""

    def __init__(self, signum, together=False):
        super().__init__(signum)
        self.signum, self.together = signum, together


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clean line and exit status 2, as every other user error here
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser():
    S = argparse.SUPPRESS  # an absent flag stays absent: `given` tells what the user typed
    p = _Parser(prog="minialex-train", description=__doc__.split("\n\n")[0], argument_default=S,
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data", help="folder with train/ and val/ class folders (default: the built-in dataset)")
    p.add_argument("--arch", choices=sorted(ARCHS),
                   help="alexnet: the paper's table at 227x227; alexnet-mini: the same layers, narrower, 64x64 "
                        "(default: alexnet-mini)")
    p.add_argument("--epochs", type=int, help="total epochs (alexnet 90, alexnet-mini 10)")
    p.add_argument("--batch-size", type=int, help="alexnet 128 (the paper), alexnet-mini 32")
    p.add_argument("--lr", type=float, help="initial learning rate (0.01)")
    p.add_argument("--momentum", type=float, help="in [0, 1) (0.9)")
    p.add_argument("--weight-decay", type=float, help="(5e-4)")
    p.add_argument("--lr-schedule", choices=["step", "plateau", "constant"],
                   help="step (default): divide by 10 every --lr-step epochs; plateau: divide by 10 when "
                        "the validation loss stops improving (the paper's rule)")
    p.add_argument("--lr-step", type=int, help="epochs between divisions with --lr-schedule step (alexnet 30, "
                                                "alexnet-mini 8)")
    p.add_argument("--patience", type=int, help="epochs without improvement before a plateau division (1)")
    p.add_argument("--init", choices=["he", "paper", "xavier"], help="weight initialisation (he)")
    p.add_argument("--dropout", type=float, help="dropout rate in fc6 and fc7, in [0, 1) (alexnet 0.5 as in "
                                                  "the paper, alexnet-mini 0.25)")
    p.add_argument("--no-flip", dest="flip", action="store_false",
                   help="no horizontal flips (for digits, text, or images whose sides differ)")
    p.add_argument("--no-lighting", dest="lighting", action="store_false",
                   help="no PCA colour noise (for images that are not natural colour photos)")
    p.add_argument("--device", help="cpu (default), cuda, cuda:N or cuda-emu")
    p.add_argument("--workers", type=int, help="threads decoding and augmenting images (2)")
    p.add_argument("--seed", type=int, help=f"0 .. {SEED_LIMIT} (0)")
    p.add_argument("--out", help="output folder (default: a new runs/<arch>-<date>-<time>; on --resume, "
                                 "the checkpoint's folder)")
    p.add_argument("--resume", help="a checkpoint (.npz) of minialex-train to continue from")
    p.add_argument("--overwrite", action="store_true", help="allow an --out that already holds a run")
    p.add_argument("--eval-only", action="store_true", help="evaluate the --resume checkpoint and stop")
    p.add_argument("--ten-crop", action="store_true", help="also evaluate with the paper's 10 crops")
    p.add_argument("--no-cache", action="store_true",
                   help="decode every image every epoch instead of once into the decoded store")
    p.add_argument("--stall-steps", type=int,
                   help="warn when the loss is still at ln(classes) after this many steps (300)")
    p.add_argument("--dist-timeout", type=float,
                   help="under mpiexec: seconds a rank waits for the others in a step before the job "
                        f"is stopped ({distributed.DEFAULT_TIMEOUT:g})")
    return p


def parse_args(argv=None):
    """(settings namespace with every value filled in later by resolve(), the set of flags given)."""
    args = build_parser().parse_args(argv)
    return args, set(vars(args))


# ----- settings: from the flags, the checkpoint and the defaults; checked before any work -----

def resolve(args, given, ckpt):
    """Fill every setting: a run setting from the checkpoint when resuming (a contradicting flag is
    an error), else from the flag, else the default."""
    saved = ckpt.config if ckpt else {}
    args.from_checkpoint = set()     # the settings read from the checkpoint: its errors name it, not a flag
    if ckpt:
        if ckpt.meta["arch"] not in ARCHS:
            raise TrainError(f"--resume {args.resume}: meta/arch expected one of {tuple(ARCHS)}, got {ckpt.meta['arch']!r}")
        check_config(saved, ckpt.meta["format"], ckpt.meta["arch"], args.resume)
        if "arch" not in saved:
            saved = {"arch": ckpt.meta["arch"]}          # a format-1 checkpoint: only its arch is known
        for key in ("momentum", "weight_decay"):
            if key in saved and ckpt.optim[key] != saved[key]:
                raise TrainError(f"--resume {args.resume}: optim/{key} {ckpt.optim[key]} disagrees with "
                                 f"meta/config {key} {saved[key]}: the file is damaged")
    arch = saved.get("arch") or getattr(args, "arch", "alexnet-mini")
    defaults = {**DEFAULTS, **ARCH_DEFAULTS.get(arch, ARCH_DEFAULTS["alexnet-mini"]), "arch": arch}
    eval_only = getattr(args, "eval_only", False)
    for key in RUN_SETTINGS:
        if key in saved:
            if key in given and getattr(args, key) != saved[key] and not (eval_only and key == "batch_size"):
                flag = "--" + key.replace("_", "-")
                shown = {"flip": "--no-flip", "lighting": "--no-lighting"}.get(key, f"{flag} {getattr(args, key)}")
                raise TrainError(f"{shown} contradicts the checkpoint {args.resume}, whose run has {key} = "
                                 f"{saved[key]!r} (--resume continues that run; start a new run to change it)")
            if not (eval_only and key == "batch_size" and key in given):
                setattr(args, key, saved[key])
                args.from_checkpoint.add(key)
        elif key not in given:
            setattr(args, key, defaults[key])
    for key in ("epochs", "device", "workers", "stall_steps", "dist_timeout"):
        if key not in given:
            setattr(args, key, saved.get(key, defaults[key]) if key == "epochs" else defaults[key])
            if key == "epochs" and key in saved:
                args.from_checkpoint.add(key)
    for key in ("data", "out", "resume"):
        if key not in given:
            setattr(args, key, None)
    for key in ("overwrite", "eval_only", "ten_crop", "no_cache"):
        setattr(args, key, key in given)
    return args


CHOICES = {"arch": tuple(ARCHS), "lr_schedule": ("step", "plateau", "constant"), "init": ("he", "paper", "xavier")}
INTS = ("batch_size", "lr_step", "patience", "seed", "epochs")
FLOATS = ("lr", "momentum", "weight_decay", "dropout")


def check_config(config, fmt, meta_arch, path):
    """TrainError unless a checkpoint's meta/config holds every run setting with a valid type and
    value (a hostile or damaged file must not run as another run, or crash)."""
    def bad(key, expected):
        raise TrainError(f"--resume {path}: meta/config {key} expected {expected}, got {config.get(key)!r}")
    if fmt < 2:
        return
    for key in RUN_SETTINGS + ("epochs",):
        if key not in config:
            raise TrainError(f"--resume {path}: meta/config has no {key}: the run's settings are incomplete")
        value = config[key]
        if key in CHOICES and value not in CHOICES[key]:
            bad(key, f"one of {CHOICES[key]}")
        if key in INTS and (isinstance(value, bool) or not isinstance(value, int)):
            bad(key, "an integer")
        if key in FLOATS and (isinstance(value, bool) or not isinstance(value, (int, float))):
            bad(key, "a number")
        if key in ("flip", "lighting") and not isinstance(value, bool):
            bad(key, "true or false")
    if config["arch"] != meta_arch:
        bad("arch", f"meta/arch {meta_arch!r}")


def _name(args, key):
    """How an error names a setting: its flag, or the checkpoint entry it came from."""
    if key in getattr(args, "from_checkpoint", ()):
        return f"--resume {args.resume}: meta/config {key}"
    return "--" + key.replace("_", "-")


def _int_at_least(args, key, least):
    value = getattr(args, key)
    if value < least:
        raise TrainError(f"{_name(args, key)} expected an integer >= {least}, got {value}")


def validate(args):
    """TrainError naming the flag for any setting out of range (flags and checkpoint alike)."""
    for key in ("data", "out", "resume"):
        if getattr(args, key) == "":
            raise TrainError(f"--{key} expected a path, got an empty string")
    for key, least in (("epochs", 1), ("batch_size", 1), ("workers", 0), ("lr_step", 1), ("patience", 1),
                       ("stall_steps", 1)):
        _int_at_least(args, key, least)
    if not 0 <= args.seed <= SEED_LIMIT:
        raise TrainError(f"{_name(args, 'seed')} expected an integer in 0 .. {SEED_LIMIT}, got {args.seed}")
    for key, low, high in (("lr", 0.0, None), ("momentum", 0.0, 1.0), ("weight_decay", 0.0, None),
                           ("dropout", 0.0, 1.0)):
        value, flag = getattr(args, key), _name(args, key)
        if not math.isfinite(value) or value < low or (high is not None and value >= high):
            expected = f"a finite number >= {low:g}" + (f" and < {high:g}" if high is not None else "")
            raise TrainError(f"{flag} expected {expected}, got {value}")
    if not math.isfinite(args.dist_timeout) or args.dist_timeout <= 0:
        raise TrainError(f"--dist-timeout expected a number of seconds > 0, got {args.dist_timeout}")
    if keep_threshold(args.dropout) >= 1 << MASK_BITS:
        raise TrainError(f"{_name(args, 'dropout')} expected a rate below 1 - 2^-{MASK_BITS + 1} (it would drop every unit), "
                         f"got {args.dropout}")
    typed = args.device
    try:
        args.device = backend.check_device(distributed.device_for(args.device, distributed.world()))
        if backend.is_gpu(args.device):
            cp = backend.cupy()
            if int(args.device[5:]) >= cp.cuda.runtime.getDeviceCount():
                raise RuntimeError(f"there is no GPU {args.device[5:]} (this machine has "
                                   f"{cp.cuda.runtime.getDeviceCount()})")
            if distributed.world().size > 1 and not args.eval_only:
                distributed.check_nccl()
    except (ValueError, TypeError, RuntimeError) as e:
        raise TrainError(f"--device {typed}: {str(e).replace('device: ', '', 1)}") from None
    if args.eval_only and not args.resume:
        raise TrainError("--eval-only needs --resume CHECKPOINT")


def read_checkpoint(path):
    try:
        return checkpoint.read(path)
    except checkpoint.CheckpointError as e:
        raise TrainError(f"--resume {path}: {e}") from None


# ----- data -----

def _stats_for(folder):
    """Mean, std and RGB PCA of a training folder, cached by its file list, sizes and times."""
    h = hashlib.sha1(os.fsencode(folder.root.resolve()))
    for path, label in folder.samples:
        st = path.stat()
        h.update(b"|" + os.fsencode(path) + f"|{label}|{st.st_size}|{st.st_mtime_ns}".encode())
    cache = cache_root() / "stats" / f"{h.hexdigest()[:20]}.npz"
    if cache.is_file():
        try:
            stats = io.load(cache)
            shapes = {"mean": (3,), "std": (3,), "eigvals": (3,), "eigvecs": (3, 3)}
            if set(stats) == set(shapes) and all(stats[k].shape == v and stats[k].dtype.kind == "f" and
                                                  np.isfinite(stats[k]).all() for k, v in shapes.items()) \
                    and (stats["std"] > 0).all():
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


def _first_readable(folder, per_class=False):
    """Decode images until one works (one per class with per_class); TrainError when a split (or
    a class) has none that decodes. Checked before any work."""
    by_class = {}
    for i, (_, label) in enumerate(folder.samples):
        by_class.setdefault(label if per_class else 0, []).append(i)
    for label, indices in by_class.items():
        if not any(folder.load(i)[0] is not None for i in indices):
            where = f"class {folder.classes[label]!r} of {folder.root}" if per_class else str(folder.root)
            raise TrainError(f"--data: none of the {len(indices)} images under {where} can be decoded "
                             f"(e.g. {folder.samples[indices[0]][0]})")


def open_data(data, need_train=True):
    """(train folder, val folder) for --data, or the built-in dataset, checked."""
    root = Path(data) if data else make_synthetic()
    try:
        if not root.is_dir():
            raise TrainError(f"--data: expected a folder with train/ and val/ inside, got {root} (no such folder)")
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise TrainError(f"--data: expected {root / split}/<class>/<images> (ImageNet layout), "
                                 f"but {root / split} does not exist")
        train = ImageFolder(root / "train")
        val = ImageFolder(root / "val", classes=train.classes)
    except (OSError, ValueError) as e:
        raise TrainError(f"--data: {e}") from None
    if len(train.classes) < 2:
        raise TrainError(f"--data: expected at least 2 classes in {root / 'train'}, got {train.classes} "
                         "(a classifier of one class has nothing to learn)")
    if train.empty_classes:
        raise TrainError(f"--data: class folder(s) with no images in {root / 'train'}: {train.empty_classes[:10]} "
                         "(a class needs training images; remove the folder or add images)")
    if val.empty_classes:
        warnings.warn(f"--data: validation class folder(s) with no images: {val.empty_classes[:10]}", stacklevel=2)
    with warnings.catch_warnings():  # the files that fail are reported again, by name, when training reads them
        warnings.simplefilter("ignore")
        if need_train:
            _first_readable(train, per_class=True)
        _first_readable(val)
    return train, val


# ----- reporting -----

def summary(model, batch_size, device):
    """Per layer: output shape, parameters, forward FLOPs per image, activation memory of a batch."""
    return ma_summary(model, (3, model.input_size, model.input_size), batch_size, device)


def _json_record(record):
    """One metrics.jsonl line: strict JSON (a non-finite number becomes null)."""
    return checkpoint.strict_json(record)


def _loader(args, folder, transform, train=False):
    """The fastest loader for the device: images decoded once (the decoded store, unless
    --no-cache), batches made on a GPU from uint8 crops (kernels/augment.cu); under mpiexec this
    rank's shard of every global batch."""
    on_gpu = backend.is_gpu(args.device)
    world = distributed.world()
    return DataLoader(folder, transform, args.batch_size, shuffle=train, drop_last=train, workers=args.workers,
                      seed=args.seed if train else 0, cache=not args.no_cache, device=args.device if on_gpu else None,
                      shard=(world.rank, world.size))


def _store_line(args, r):
    """What the decoded store does this run."""
    from .data import store
    if args.no_cache:
        return "decoding every epoch (--no-cache)"
    resize = resize_for(r.size)
    if store.Store.find(r.train_set, resize) is not None:
        return "decoded images from the store"
    gib = store.estimated_bytes(len(r.train_set) + len(r.val_set), resize) / 2**30
    return f"decoding once into the store during epoch 1 (about {gib:.1f} GiB in {store.store_root()})"


def _on_device(x, device):
    return x if isinstance(x, Tensor) else Tensor(x, device=device)


def _say(text):
    """print to stdout (rank 0 only under mpiexec); a closed pipe (`minialex-train ... | head`)
    silences it instead of ending the run."""
    if not distributed.world().is_root:
        return
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


class _PlainProgress:
    """The progress bar for a log file: at most a few plain lines per epoch, no carriage returns."""

    def __init__(self, total, desc, lines=4):
        self.total, self.desc, self.n, self.postfix = total, desc, 0, {}
        self.marks = {max(1, total * k // lines) for k in range(1, lines)}

    def update(self, n=1):
        self.n += n
        if self.n in self.marks:
            extra = "  ".join(f"{k} {v}" for k, v in self.postfix.items())
            _say(f"{self.desc}: {self.n}/{self.total} batches  {extra}")

    def set_postfix(self, **kw):
        self.postfix = kw

    def close(self):
        pass


class _NoProgress:
    def update(self, n=1):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def _progress(total, desc):
    if not distributed.world().is_root:
        return _NoProgress()
    if not sys.stderr.isatty():
        return _PlainProgress(total, desc)
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, mininterval=0.5)


# ----- evaluation -----

def evaluate(model, loader, device, ten_crop=False):
    """(mean loss, top-1, top-5) on the loader; with ten_crop the softmax is averaged over 10 crops.
    NaN for all three when no image could be read."""
    model.eval()
    total, loss_sum, top1, top5 = 0, 0.0, 0, 0
    with no_grad():
        for x, y in loader:
            if not len(y):  # a rank's empty slice of a batch (none of its images could be read)
                continue
            if ten_crop:  # x: (B, 10, 3, S, S)
                b = x.shape[0]
                logits = model(Tensor(x.reshape(b * 10, *x.shape[2:]), device=device)).numpy().astype(np.float64)
                logits = logits.reshape(b, 10, -1)
                p = np.exp(logits - logits.max(-1, keepdims=True))
                probs = (p / p.sum(-1, keepdims=True)).mean(1)
                loss_sum += float(-np.log(np.maximum(probs[np.arange(b), y], 1e-12)).sum())
                scores = probs
            else:
                out = model(_on_device(x, device))
                loss_sum += F.cross_entropy(out, y).item() * len(y)
                scores = out.numpy()
            k = min(5, scores.shape[1])
            best = np.argsort(-scores, axis=1)[:, :k]
            top1 += int((best[:, 0] == y).sum())
            top5 += int((best == y[:, None]).any(axis=1).sum())
            total += len(y)
    model.train()
    if getattr(loader, "shard", (0, 1))[1] > 1:  # each rank saw its shard: the sums over all of them
        loss_sum, top1, top5, total, ctrl_c, term = distributed.world().allreduce_sum(
            np.array([loss_sum, top1, top5, total, *_stop_votes()], np.float64), "validation metrics")
        _stop_if_voted(ctrl_c, term)   # a request held during training: every rank stops here, as one process would
    if total == 0:
        return math.nan, math.nan, math.nan
    return loss_sum / total, top1 / total, top5 / total


def _pictures(out, model, history, val, stats, size, device):
    filter_grid(model.conv1.weight.numpy(), out / "filters.png")
    training_curves(history, out / "curves.png")
    layer_diagnostics(history, out / "layers.png")
    picks = np.linspace(0, len(val) - 1, num=min(18, len(val))).astype(int)
    shown, truth = [], []
    for i in picks:
        img, label = val.load(int(i))
        if img is not None:
            shown.append(center_crop(to_array(resize_shorter(img, resize_for(size))), size))
            truth.append(label)
    if not shown:
        return
    a = np.stack(shown)
    x = to_chw(a, stats["mean"], stats["std"])                   # the validation transform's last step
    model.eval()
    with no_grad():
        pred = model(Tensor(x, device=device)).numpy().argmax(1)
    model.train()
    prediction_grid((a * 255).clip(0, 255).astype(np.uint8), pred, truth, val.classes, out / "predictions.png")


# ----- the run, in named steps -----


# ----- signals: Ctrl-C and SIGTERM stop the run cleanly, never in the middle of a save -----

_deferred = {"pending": None, "held": False, "saving": False}   # held: _signals_held; saving: _not_interrupted


def _on_signal(signum, frame):
    if _deferred["saving"] or (_deferred["held"] and _deferred["pending"] is None):
        _deferred["pending"] = signum  # raised when the save in progress is done, or voted (_stop_votes)
    else:
        raise Interrupted(signum)      # (held: a second signal while a request waits stops this rank now)


def _stop_votes():
    """This rank's stop request as (Ctrl-C, SIGTERM) counts, to be summed over the ranks."""
    pending = _deferred["pending"] if _deferred["held"] else None
    return float(pending == signal.SIGINT), float(pending == signal.SIGTERM)


def _stop_if_voted(ctrl_c, term):
    """Every rank raises the same Interrupted when any rank asked to stop (Ctrl-C wins over SIGTERM)."""
    if ctrl_c or term:
        raise Interrupted(signal.SIGINT if ctrl_c else signal.SIGTERM, together=True)


@contextlib.contextmanager
def _signals_stop_the_run():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def _signals_held(world):
    """In a data-parallel run: Ctrl-C / SIGTERM only mark a stop request, which train_epoch puts in
    the next step's all-reduce, so that every rank stops after the same step (a rank that raised at
    once would leave the others waiting in a collective; mpiexec passes Ctrl-C to every rank, but
    each gets it at another point of its step)."""
    if world.size == 1:
        yield
        return
    _deferred.update(held=True, pending=None)
    try:
        yield
    finally:
        _deferred["held"] = False


@contextlib.contextmanager
def _not_interrupted():
    """Hold Ctrl-C / SIGTERM until the block (a save and the state it records) is complete. Inside
    _signals_held (a data-parallel run) the signal stays pending for the next step's all-reduce."""
    saving = _deferred["saving"]
    outer = saving or _deferred["held"]
    if not outer:
        _deferred["pending"] = None
    _deferred["saving"] = True
    try:
        yield
    finally:
        _deferred["saving"] = saving
        if not outer and _deferred["pending"] is not None:
            raise Interrupted(_deferred["pending"])


# ----- the run, in named steps -----

class Run:
    """Everything a training run carries from one epoch to the next. `epoch`, `history`, `best`
    and `plateau` always describe the last completed epoch, the one last.npz holds."""

    def __init__(self, args, train_set, val_set, stats, model, opt):
        self.args, self.train_set, self.val_set, self.stats = args, train_set, val_set, stats
        self.model, self.opt, self.size = model, opt, model.input_size
        self.epoch, self.history = 0, []
        self.best = {"val_loss": math.inf, "val_top1": -1.0}
        self.plateau = {"lr": args.lr, "best": math.inf, "bad": 0}
        self.folder = None
        self.step, self.recent, self.warned = 0, [], False   # for the stall warning
        self.diag, self.warned_layers = diagnostics.Diagnostics(model), set()

    @property
    def out(self):
        """The run folder (None on the ranks other than 0 under mpiexec: only rank 0 writes)."""
        return self.folder.path if self.folder is not None else None

    def config(self):
        return {**{k: getattr(self.args, k) for k in RUN_SETTINGS}, "epochs": self.args.epochs}

    def meta(self, epoch=None, history=None, best=None, plateau=None, **extra):
        """The meta/ entries of a checkpoint: the committed state unless told otherwise."""
        return {"format": checkpoint.FORMAT, "arch": self.args.arch, "epoch": self.epoch if epoch is None else epoch,
                "rng_state": random.get_state(), "classes": np.array(self.train_set.classes),
                "history": checkpoint.strict_json(self.history if history is None else history),
                "best": checkpoint.strict_json(self.best if best is None else best),
                "plateau": checkpoint.strict_json(self.plateau if plateau is None else plateau),
                "config": checkpoint.strict_json(self.config()), "processes": distributed.world().size,
                **self.stats, **extra}


def _lr_for(args, epoch, plateau):
    if args.lr_schedule == "step":
        return args.lr * 0.1 ** ((epoch - 1) // args.lr_step)
    if args.lr_schedule == "plateau":
        return plateau["lr"]
    return args.lr


def _out_folder(args, ckpt, data_root):
    """The run folder: made, checked for writing, locked, cleaned of killed saves' temporaries;
    a folder holding another run is refused unless --resume continues it or --overwrite (whose
    old files are removed only when training starts: Run.folder.stale)."""
    resume_dir = Path(args.resume).resolve().parent if args.resume else None
    try:
        if args.out:
            path = Path(args.out)
        elif resume_dir is not None and RunFolder(resume_dir).holds_a_run():
            path = resume_dir                               # continue the run where it is
        else:
            path = unique("runs", f"{args.arch}-{time.strftime('%Y%m%d-%H%M%S')}")
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
        raise TrainError(f"--out {args.out}: {e.strerror or e}") from None
    try:
        held = folder.holds_a_run()
        continuing = resume_dir is not None and resume_dir == folder.path.resolve()
        if held and not continuing and not args.overwrite:
            last = folder.path / ("last.npz" if "last.npz" in held else held[0] if held[0].endswith(".npz") else "last.npz")
            raise TrainError(f"--out {folder.path} already holds a run ({', '.join(held)}); resume it with "
                             f"--resume {last}, choose another --out, or add --overwrite")
        if continuing and "last.npz" in held and not args.overwrite and \
                Path(args.resume).resolve() != (folder.path / "last.npz").resolve():
            try:
                later = int(io.load(folder.path / "last.npz", keys=["meta/epoch"])["meta/epoch"])
            except (ValueError, KeyError, OSError, TypeError):
                later = None
            if later is not None and later > ckpt.meta["epoch"]:
                raise TrainError(f"--resume {args.resume} is epoch {ckpt.meta['epoch']}, but {folder.path / 'last.npz'} "
                                 f"holds epoch {later}: continuing here would overwrite epochs after "
                                 f"{ckpt.meta['epoch']}; give --out NEW_FOLDER to branch, or --overwrite")
        removed = folder.remove_temporaries()
        if removed:
            _say(f"removed {len(removed)} temporary file(s) left by an interrupted save in {folder.path}")
        folder.stale = held if held and args.overwrite and not continuing else []
    except FolderError as e:
        folder.unlock()
        raise TrainError(str(e)) from None
    except BaseException:
        folder.unlock()
        raise
    return folder


def _same_settings(args, world):
    """Every rank must run with rank 0's settings (mpiexec's MPMD form can start them with others,
    and a rank with fewer epochs would leave the rest waiting): a clear error on every rank."""
    mine = {k: v for k, v in vars(args).items() if k not in ("device", "workers")}   # these may differ
    plain = json.dumps(mine, sort_keys=True, default=lambda v: sorted(map(str, v)) if isinstance(v, (set, frozenset))
                       else str(v))
    texts = world.allgather_text(plain, "comparing the ranks' settings")
    differ = [r for r, text in enumerate(texts) if text != texts[0]]
    if differ:
        root, theirs = json.loads(texts[0]), json.loads(texts[differ[0]])
        keys = [k for k in sorted(set(root) | set(theirs)) if root.get(k) != theirs.get(k)]
        said = ", ".join(f"--{k.replace('_', '-')} {theirs.get(k)} (rank 0: {root.get(k)})" for k in keys[:4])
        raise TrainError(f"rank {differ[0]} was started with other settings than rank 0: {said}; every process "
                         f"must be given the same command line", together=True)


def _agree(world, failure):
    """Every rank calls this at the same point of setup with the TrainError it met there (or None):
    if any rank met one, every rank raises the first rank's, said once by rank 0 (exit 2 on all,
    no abort). Alone: raises `failure`."""
    if world.size == 1:
        if failure is not None:
            raise failure
        return
    said = world.allgather_text("" if failure is None else str(failure), "checking the settings")
    bad = [r for r, text in enumerate(said) if text]
    if bad:
        raise TrainError(said[bad[0]], together=True, rank=bad[0])


def _on_root_first(world, what, fn):
    """fn() on rank 0 first (it may write caches the others then read), then on the others
    (world.root_first). A TrainError on any rank is raised on every rank and said once."""
    failure = result = None
    try:
        with world.root_first(what):
            try:
                result = fn()
            except TrainError as e:
                if world.is_root:
                    raise
                failure = e                    # this rank's own (its copy of the data): agreed below
    except TrainError as e:                    # rank 0's: the others got it as RootFailed
        e.together = world.size > 1
        raise
    except distributed.RootFailed as e:
        raise TrainError(str(e), together=True, rank=0) from None
    _agree(world, failure)
    return result


def setup(args, given):
    """Checkpoint, settings, data, run folder, statistics, model and optimizer, in that order, so
    that every check that can fail runs before the statistics pass; returns a Run (or None when a
    resumed run has nothing left to do). The run folder, when made, is locked: Run.folder.unlock().
    Under mpiexec the ranks agree on each part's errors (_agree, _on_root_first): one message, exit 2."""
    world = distributed.world()
    failure = ckpt = None
    try:
        ckpt = read_checkpoint(args.resume) if getattr(args, "resume", None) else None
        args = resolve(args, given, ckpt)
        validate(args)
        if ckpt and ckpt.meta["processes"] != world.size and not args.eval_only:
            n = ckpt.meta["processes"]
            raise TrainError(f"--resume {args.resume} was trained by {n} process{'es' if n > 1 else ''} (a global "
                             f"batch of {n} x {args.batch_size}), this run has {world.size}: resume it with "
                             + (f"mpiexec -n {n} minialex-train ..." if n > 1 else "one process (no mpiexec)")
                             + " so that every step sees the batches it would have")
    except TrainError as e:
        failure = e
    _agree(world, failure)
    if world.size > 1:
        _same_settings(args, world)
    world.timeout = args.dist_timeout
    if ckpt and not args.eval_only and ckpt.meta["epoch"] >= args.epochs:
        _say(f"{args.resume} has finished epoch {ckpt.meta['epoch']} of the {args.epochs} asked for: nothing "
             f"to do (give a larger --epochs to train further)")
        return None
    train_set, val_set = _on_root_first(world, "opening the data",   # rank 0 renders the built-in data first
                                        lambda: open_data(args.data, need_train=not args.eval_only))
    failure = folder = None
    try:
        if ckpt and ckpt.meta["classes"] != train_set.classes:
            theirs, ours = ckpt.meta["classes"], train_set.classes
            raise TrainError(f"--resume {args.resume}: the checkpoint's {len(theirs)} classes are not the data's "
                             f"{len(ours)}: only in the checkpoint {sorted(set(theirs) - set(ours))[:5]}, only in the "
                             f"data {sorted(set(ours) - set(theirs))[:5]}"
                             + ("" if set(theirs) != set(ours) else " (another order)"))
        if not args.eval_only and len(train_set) < args.batch_size * world.size:
            raise TrainError(f"--batch-size {args.batch_size}" + (f" x {world.size} processes" if world.size > 1 else "")
                             + f" is larger than the {len(train_set)} training images")
        if not args.eval_only and not ckpt and world.is_root:  # a fresh run: the folder before the statistics pass
            folder = _out_folder(args, ckpt, train_set.root.parent)
    except TrainError as e:
        failure = e
    try:
        _agree(world, failure)
        if ckpt:
            stats = {k: ckpt.meta[k] for k in ("mean", "std", "eigvals", "eigvecs")}
        else:
            stats = _on_root_first(world, "the dataset statistics", lambda: _stats_for(train_set))  # rank 0 caches them
        random.manual_seed(args.seed)
        model = ARCHS[args.arch](num_classes=len(train_set.classes), init=args.init, dropout=args.dropout)
        opt = SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
        run = Run(args, train_set, val_set, stats, model, opt)
        failure = None
        try:
            if ckpt:
                _resume_into(run, ckpt)
                if not args.eval_only and world.is_root:  # a resumed run: the folder once the checkpoint fits
                    folder = _out_folder(args, ckpt, train_set.root.parent)
        except TrainError as e:
            failure = e
        _agree(world, failure)
        run.folder = folder
        model.to(args.device)
        world.sync_parameters(model.parameters())   # one model on every rank
    except BaseException:
        if folder is not None:
            folder.unlock()
        raise
    return run


def _resume_into(run, ckpt):
    """The checkpoint's weights, momentum, generator and history into the fresh run."""
    args, model, opt = run.args, run.model, run.opt
    try:
        model.load_state_dict(ckpt.model)
        opt.load_state_dict(ckpt.optim)
    except (KeyError, ValueError, TypeError) as e:
        raise TrainError(f"--resume {args.resume}: it does not fit {args.arch} with "
                         f"{len(run.train_set.classes)} classes: {e}") from None
    missing = [i for i, v in enumerate(opt.velocity) if v is None]
    if ckpt.meta["epoch"] > 0 and missing:
        raise TrainError(f"--resume {args.resume}: optim/velocity.{missing[0]} is missing (a trained run has "
                         "momentum for every parameter): the file is damaged")
    random.set_state(ckpt.meta["rng_state"])
    run.epoch, run.history = ckpt.meta["epoch"], ckpt.meta["history"]
    run.best, run.plateau = ckpt.meta["best"], ckpt.meta["plateau"]


def train_epoch(run, epoch, loader):
    """One pass over the training set; returns (images seen, mean loss, top-1, seconds). Under
    mpiexec each rank trains on its shard, and the gradients, loss and counts are summed over the
    ranks every step: what is returned and printed is the whole global batch's."""
    args, model, opt = run.args, run.model, run.opt
    world, params = distributed.world(), None
    ln_classes = math.log(len(run.train_set.classes))
    opt.lr = _lr_for(args, epoch, run.plateau)
    loader.set_epoch(epoch)
    t0, seen, loss_sum, correct, layers = time.perf_counter(), 0, 0.0, 0, None
    bar = _progress(len(loader), f"epoch {epoch}/{args.epochs}")
    sampled_at = len(loader) // 2     # the step whose layers are measured (diagnostics.py)
    try:
        for k, (x, y) in enumerate(loader):
            sampled = k == sampled_at and len(y) > 0   # (a rank's slice may be empty)
            counts = world.gather_counts(len(y))   # every rank's rows of this global batch
            if not counts.sum():                    # no image of it could be read: no step, as in one process
                continue
            offset = int(counts[:world.rank].sum())   # the global index of this rank's first row
            model.zero_grad()
            # A rank none of whose images could be read runs the forward on no rows: it draws the
            # dropout seeds the others draw (one generator, the same on every rank), then no backward.
            with run.diag.recording() if sampled else contextlib.nullcontext(), \
                    random.sample_offset_scope(offset):   # dropout keyed by the global sample
                logits = model(_on_device(x, args.device))
            loss = F.cross_entropy(logits, y) if len(y) else None
            if loss is not None:
                loss.backward()
            hits = int((logits.numpy().argmax(1) == y).sum())
            count = len(y)
            if world.size > 1:  # the global batch's gradient, loss and counts, and any stop request
                params = params or [p for p in model.parameters() if p.requires_grad]
                step_sum, hits, ctrl_c, term, count = world.allreduce_gradients(
                    params, len(y), (loss.item() * len(y) if len(y) else 0.0, hits, *_stop_votes()))
                _stop_if_voted(ctrl_c, term)
                hits, count = int(round(hits)), int(round(count))
                value = step_sum / count
            else:
                value = loss.item()
            if run.step == 0 and run.epoch == 0:
                _say(diagnostics.first_loss_note(value, len(run.train_set.classes)))
            if not math.isfinite(value):
                raise Stopped(f"the training loss became {value} at epoch {epoch}, step {run.step + 1}: "
                              f"stopping. The learning rate is probably too high (it is {opt.lr:g}; try --lr "
                              f"{opt.lr / 10:g}). " + _last_good(run), together=True)
            if sampled:
                run.diag.gradients()
                before = run.diag.weights()
            opt.step()
            if sampled:
                layers = run.diag.updates(before)
            correct += hits
            del loss, logits  # free this step's graph before the next forward
            seen, loss_sum, run.step = seen + count, loss_sum + value * count, run.step + 1
            run.recent = (run.recent + [value])[-50:]
            if not run.warned and run.step >= args.stall_steps and np.mean(run.recent) > 0.98 * ln_classes:
                run.warned = True
                warnings.warn(f"after {run.step} steps the loss is still {np.mean(run.recent):.3f}, about "
                              f"ln({len(run.train_set.classes)}) = {ln_classes:.3f}: the network predicts chance. "
                              f"Likely causes: the learning rate is too low or so high that ReLUs died (it is "
                              f"{opt.lr:g}), labels that do not match the images, or images that all look alike",
                              stacklevel=1)
            bar.set_postfix(loss=f"{value:.3f}", img_s=f"{seen / (time.perf_counter() - t0):.0f}")
            bar.update(1)
    finally:
        bar.close()
    if seen == 0:
        raise Stopped(f"no training image could be read in epoch {epoch}. " + _last_good(run), together=True)
    return seen, loss_sum / seen, correct / seen, time.perf_counter() - t0, layers


def _last_good(run):
    """What last.npz holds now (read from the file, not assumed)."""
    if run.out is None:
        return "Rank 0's run folder holds the checkpoints."
    last = run.out / "last.npz"
    try:
        epoch = int(io.load(last, keys=["meta/epoch"])["meta/epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return "There is no last.npz checkpoint yet."
    return f"The last good checkpoint is {last} (epoch {epoch})."


def _nonfinite_weights(model):
    return [name for name, p in model.named_parameters() if not np.isfinite(p.numpy()).all()]


def end_of_epoch(run, epoch, trained, val_loader, train_skipped):
    """Validate; stop if the validation loss or the weights are not finite; else save last.npz
    (and best.npz) and commit the epoch to the run's state, all before a Ctrl-C can land, then
    append the metrics line and draw the pictures."""
    seen, train_loss, train_top1, seconds, layers = trained
    val_loss, val_top1, val_top5 = evaluate(run.model, val_loader, run.args.device)
    skipped = train_skipped + val_loader.skipped     # unreadable images of this epoch's two passes
    if distributed.world().size > 1:                 # each rank counted its own shard's
        skipped = int(distributed.world().allreduce_sum(np.array([skipped], np.int64), "unreadable image count")[0])
    if not math.isfinite(val_loss):
        raise Stopped(f"the validation loss is {val_loss} after epoch {epoch}"
                      + (" (no validation image could be read)" if math.isnan(val_top1) else
                         f": the weights diverged; the learning rate is probably too high (it is {run.opt.lr:g})")
                      + ". " + _last_good(run), together=True)          # the loss is summed over the ranks
    bad = _nonfinite_weights(run.model)
    if bad:                                                                # the ranks' weights are the same
        raise Stopped(f"the weights became non-finite during epoch {epoch} ({', '.join(bad[:4])}): the learning "
                      f"rate is probably too high (it is {run.opt.lr:g}). " + _last_good(run), together=True)
    record = {"epoch": epoch, "train_loss": train_loss, "train_top1": train_top1,
              "val_loss": val_loss, "val_top1": val_top1, "val_top5": val_top5, "lr": run.opt.lr,
              "images_per_s": seen / seconds, "seconds": seconds, "layers": layers or {}}
    for said in diagnostics.warnings_for(layers or {}, ratios=epoch > 1):  # epoch 1's ratios follow the init
        key = said.split(":")[0] + said.split(",")[0][-20:]
        if key not in run.warned_layers:
            run.warned_layers.add(key)
            warnings.warn(said, stacklevel=2)
    history = run.history + [record]
    plateau = dict(run.plateau)
    if run.args.lr_schedule == "plateau":
        if val_loss < plateau["best"] * (1 - 1e-3):
            plateau["best"], plateau["bad"] = val_loss, 0
        else:
            plateau["bad"] += 1
            if plateau["bad"] >= run.args.patience:
                plateau["lr"], plateau["bad"] = plateau["lr"] / 10, 0
    is_best = val_top1 > run.best["val_top1"]
    best = {"val_loss": val_loss, "val_top1": val_top1, "epoch": epoch} if is_best else run.best
    meta = run.meta(epoch, history, best, plateau)
    with _not_interrupted():
        try:  # best.npz first: a kill between the two leaves best.npz ahead of last.npz, never stale
            if run.out is not None:  # rank 0 only, under mpiexec
                if is_best:
                    checkpoint.save(run.out / "best.npz", run.model, run.opt, meta)
                checkpoint.save(run.out / "last.npz", run.model, run.opt, meta)
                with open(run.out / "metrics.jsonl", "a") as f:
                    f.write(_json_record(record) + "\n")
        except OSError as e:
            raise Stopped(f"writing into {run.out} failed after epoch {epoch} ({e}); "
                          + _last_good(run)) from None
        run.epoch, run.history, run.best, run.plateau = epoch, history, best, plateau
    _say(f"epoch {epoch:3d}/{run.args.epochs}  train loss {train_loss:.4f} top-1 {train_top1:6.2%}"
          f"  |  val loss {val_loss:.4f} top-1 {val_top1:6.2%} top-5 {val_top5:6.2%}  |  lr {run.opt.lr:.2g}"
          f"  {record['images_per_s']:.0f} img/s  {seconds:.1f}s"
         + (f"  ({skipped} unreadable images skipped)" if skipped else ""))
    if run.out is None:
        return
    try:
        _pictures(run.out, run.model, run.history, run.val_set, run.stats, run.size, run.args.device)
    except OSError as e:
        warnings.warn(f"could not draw the pictures into {run.out} ({e})", stacklevel=2)


def _rewrite_metrics(run):
    """metrics.jsonl as the run's history says (a resumed run continues the file it belongs to)."""
    path = run.out / "metrics.jsonl"
    tmp = run.out / f".metrics.jsonl.{os.getpid()}.{secrets.token_hex(4)}.tmp"   # minialex.io's pattern
    try:
        tmp.write_text("".join(_json_record(r) + "\n" for r in run.history))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise TrainError(f"--out {run.out}: cannot write {path} ({e.strerror or e})") from None


def _save_interrupted(run, epoch, signum):
    if run.out is None:  # rank 0 saves
        return
    path = run.out / "interrupted.npz"
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    last = run.out / "last.npz"
    after = (f"{last} holds the end of epoch {run.epoch}" if run.epoch and last.exists() else
             "no epoch had finished, so there is no last.npz")
    try:
        with _not_interrupted():
            checkpoint.save(path, run.model, run.opt, run.meta(interrupted_in_epoch=epoch))
    except (OSError, Interrupted) as e:
        why = e.strerror if isinstance(e, OSError) else "interrupted again"
        print(f"\n{name} during epoch {epoch}: could not save {path} ({why}); {after}", file=sys.stderr)
        return
    print(f"\n{name} during epoch {epoch}: saved {path} (the weights as they were, the state of epoch "
          f"{run.epoch}; --resume {path} repeats epoch {epoch}); {after}", file=sys.stderr)


def run(args, given=None):
    """Train (or evaluate) as the settings say; returns the list of per-epoch metrics."""
    given = set(vars(args)) if given is None else given
    with _signals_stop_the_run():
        r = setup(args, given)
        if r is None:
            return []
        args = r.args
        if args.eval_only:
            val_loader = _loader(args, r.val_set, Transform(r.size, r.stats, "val"))
            loss, top1, top5 = evaluate(r.model, val_loader, args.device)
            _say(f"val (centre crop): loss {loss:.4f}  top-1 {top1:.2%}  top-5 {top5:.2%}")
            if args.ten_crop:
                _ten_crop_report(r.model, r.val_set, r.stats, r.size, args)
            return r.history
        try:
            return _train(r, args)
        finally:
            if r.folder is not None:
                r.folder.unlock()


def _train(r, args):
    world = distributed.world()
    if world.size > 1 and not args.no_cache:  # a shard cannot build the store: the first rank of
        if world.local_rank == 0:             # each machine builds it there, the others wait
            from .prepare import prepare
            for folder in (r.train_set, r.val_set):
                prepare(folder, r.size, args.workers)
        world.barrier("building the decoded store", timeout=0)
    train_loader = _loader(args, r.train_set, Transform(r.size, r.stats, "train", args.flip, args.lighting), train=True)
    val_loader = _loader(args, r.val_set, Transform(r.size, r.stats, "val"))
    if r.folder is not None:
        for name in r.folder.stale:  # --overwrite: the old run's files go now that every check has passed
            (r.out / name).unlink(missing_ok=True)
        if args.resume:
            _rewrite_metrics(r)
    _say(f"data: {len(r.train_set)} training and {len(r.val_set)} validation images, {len(r.train_set.classes)} "
          f"classes ({r.train_set.root.parent}); " + _store_line(args, r))
    _say(f"model: {args.arch} on {args.device}, init {args.init}\n{summary(r.model, args.batch_size, args.device)}")
    if world.size > 1:
        _say(f"data parallel: {world.size} processes, {args.batch_size} images each per step (global batch "
             f"{args.batch_size * world.size}), gradients summed by "
             f"{'NCCL' if backend.is_gpu(args.device) else 'MPI'} every step; {world.local_size} processes on this "
             f"machine, {cpu.cpu_threads()} CPU threads each")
    _say(f"training epochs {r.epoch + 1}..{args.epochs} into {r.out}")
    epoch = r.epoch + 1
    try:
        with _signals_held(world):
            for epoch in range(r.epoch + 1, args.epochs + 1):
                trained = train_epoch(r, epoch, train_loader)
                end_of_epoch(r, epoch, trained, val_loader, train_loader.skipped)
            if world.size > 1:  # a request that came during the last validation's save or pictures
                _stop_if_voted(*world.allreduce_sum(np.array(_stop_votes()), "the last stop request"))
    except (Interrupted, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        _save_interrupted(r, epoch, signum)
        raise Interrupted(signum, together=getattr(e, "together", False)) from None
    if args.ten_crop:
        _ten_crop_report(r.model, r.val_set, r.stats, r.size, args)
    _say(f"done: best val top-1 {r.best['val_top1']:.2%} (epoch {r.best.get('epoch')}); {r.out}/best.npz, "
          f"metrics.jsonl, filters.png, curves.png, layers.png, predictions.png")
    return r.history


def _ten_crop_report(model, val_set, stats, size, args):
    loader = DataLoader(val_set, Transform(size, stats, "ten_crop"), max(1, args.batch_size // 10),
                        workers=args.workers, cache=not args.no_cache)
    loss, top1, top5 = evaluate(model, loader, args.device, ten_crop=True)
    _say(f"val (10 crops): loss {loss:.4f}  top-1 {top1:.2%}  top-5 {top5:.2%}")


def main(argv=None):
    args, given = parse_args(argv)
    cpu.tune()  # process-wide malloc and OpenBLAS settings that speed up CPU training
    try:
        world = distributed.init()
    except distributed.DistributedError as e:
        print(f"minialex-train: error: {e}", file=sys.stderr)
        return 2
    if world.size == 1:
        return _main(args, given)
    if not world.is_root:
        warnings.simplefilter("ignore")      # rank 0 reports; the ranks run the same code
    try:
        distributed.share_cores(world)       # the processes on one machine split its cores
    except ValueError as e:                  # MINIALEX_THREADS
        world.abort(f"minialex-train: error: {e}", 2)
    try:
        code = _main(args, given, prefix="" if world.is_root else f"rank {world.rank}: ", world=world)
    except BaseException:                    # a bug or a library error on this rank: end every rank
        world.abort("failed:\n" + traceback.format_exc())
    if code != 0 and not _ended["together"]:  # this rank alone: the others would wait for it
        world.abort(None, code)
    return code


_ended = {"together": False}   # the last _main ended with a stop every rank made at the same point


def _main(args, given, prefix="", world=None):
    _ended["together"] = False
    quiet = world is not None and not world.is_root    # a stop made together is said by rank 0 only
    try:
        run(args, given)
    except TrainError as e:
        _ended["together"] = e.together
        if e.together and e.rank:
            prefix = f"rank {e.rank}: "
        if not (e.together and quiet):
            print(f"minialex-train: {prefix}error: {e}", file=sys.stderr)
        return 2
    except Stopped as e:
        _ended["together"] = e.together
        if not (e.together and quiet):
            print(f"minialex-train: {prefix}{e}", file=sys.stderr)
        return 1
    except (Interrupted, KeyboardInterrupt) as e:
        _ended["together"] = getattr(e, "together", False)
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        return 128 + int(signum)
    return 0


if __name__ == "__main__":
    sys.exit(main())
