"""minialex-train's settings: the flags, a resumed run's recorded settings and the defaults, made
into one frozen RunConfig and checked before any work.

- A run setting (RUN_SETTINGS: what defines a run) comes from the checkpoint when resuming (a flag
  that contradicts it is an error naming both), else from its flag, else from the defaults (the
  paper's for alexnet, ones tuned to the built-in data for alexnet-mini and for your own models).
- The others (epochs, device, workers, out, data, ...) may change between invocations; --data and
  --epochs default to the resumed run's own.
- Every error is a TrainError naming the flag, or the checkpoint entry the value came from.
"""
import argparse
import importlib
import importlib.util
import math
import numbers
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from . import backend, distributed, nn, random
from .function import no_grad
from .models import INITS, AlexNet
from .ops.dropout import MASK_BITS, keep_threshold
from .tensor import Tensor
from .training import SetupError

NETWORKS = {"alexnet": AlexNet, "alexnet-mini": AlexNet.mini}
ARCHS = tuple(NETWORKS)
# Per-architecture defaults: the paper's for alexnet; tuned to the built-in data for alexnet-mini
# (and used for a --model of your own).
ARCH_DEFAULTS = {"alexnet": dict(epochs=90, batch_size=128, lr=0.01, lr_step=30, dropout=0.5),
                 "alexnet-mini": dict(epochs=10, batch_size=32, lr=0.01, lr_step=8, dropout=0.25)}
DEFAULTS = dict(momentum=0.9, weight_decay=5e-4, lr_schedule="step", patience=1, init="he", seed=0,
                flip=True, lighting=True, device="cpu", workers=2, stall_steps=300,
                dist_timeout=distributed.DEFAULT_TIMEOUT, input_size=None, train_subset=None, max_steps=None,
                scale=1.0, precision="fp32")
# The settings that define a run: recorded in each checkpoint (meta/config) and restored by
# --resume; a flag on --resume that contradicts one is an error. The others may change.
RUN_SETTINGS = ("arch", "batch_size", "lr", "lr_schedule", "lr_step", "patience", "momentum",
                "weight_decay", "dropout", "seed", "init", "flip", "lighting", "input_size", "train_subset",
                "precision")
OPTIONAL = ("input_size", "train_subset", "precision")   # run settings that older checkpoints did not record
SCHEDULES = ("step", "plateau", "constant")
SEED_LIMIT = 2**32 - 1


class TrainError(SetupError):
    """Bad input found before training (a flag, a file, a folder): one line, exit status 2.
    together / rank: as minialex.training.SetupError's (data parallel)."""


@dataclass(frozen=True)
class RunConfig:
    arch: str = "alexnet-mini"       # alexnet, alexnet-mini, or a model factory "module:function"
    batch_size: int = 32
    lr: float = 0.01
    lr_schedule: str = "step"
    lr_step: int = 8
    patience: int = 1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dropout: float = 0.25
    seed: int = 0
    init: str = "he"
    flip: bool = True
    lighting: bool = True
    input_size: int = None           # a --model's (None: its input_size attribute)
    train_subset: int = None         # train on this many images of the training set (a seeded pick)
    precision: str = "fp32"          # "fp16": mixed precision (float16 compute, float32 master weights)
    max_steps: int = None            # end the run after this many steps
    scale: float = 1.0               # the pictures' size: 2 draws them twice as large (slides)
    epochs: int = 10
    device: str = "cpu"
    workers: int = 2
    stall_steps: int = 300
    dist_timeout: float = distributed.DEFAULT_TIMEOUT
    data: str = None                 # None: the built-in dataset
    out: str = None
    resume: str = None
    overwrite: bool = False
    eval_only: bool = False
    ten_crop: bool = False
    no_cache: bool = False
    export_onnx: bool = False        # write best.onnx at the end
    from_checkpoint: frozenset = field(default_factory=frozenset)   # their errors name the checkpoint
    model_flag: bool = False         # the network was given by --model (errors say so)

    @property
    def custom(self):
        """Whether the network is a model factory of the user's (--model), not an AlexNet."""
        return self.arch not in ARCHS

    def run_settings(self):
        """meta/config: what defines the run, and the planned epochs."""
        return {**{k: getattr(self, k) for k in RUN_SETTINGS}, "epochs": self.epochs}

    def shared(self):
        """The settings every rank of a data-parallel run must share (device and workers may differ)."""
        return {k: v for k, v in asdict(self).items() if k not in ("device", "workers")}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clean line and exit status 2, as every other user error here
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser(doc):
    S = argparse.SUPPRESS  # an absent flag stays absent: `given` tells what the user typed
    p = _Parser(prog="minialex-train", description=doc.split("\n\n")[0], argument_default=S,
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc.split("\n\n", 1)[1])
    p.add_argument("--data", help="folder with train/ and val/ class folders (default: the built-in dataset; "
                                  "on --resume, the run's own)")
    p.add_argument("--arch", choices=ARCHS, help="alexnet: the paper's table at 227x227; alexnet-mini: the same "
                                                 "layers, narrower, 64x64 (default: alexnet-mini)")
    p.add_argument("--model", help="your own network instead: package.module:factory (or path/file.py:factory), "
                                   "factory(num_classes) returning a minialex nn.Module")
    p.add_argument("--input-size", type=int, help="the image side a --model takes (default: its input_size attribute)")
    p.add_argument("--epochs", type=int, help="total epochs (alexnet 90, alexnet-mini 10)")
    p.add_argument("--batch-size", type=int, help="alexnet 128 (the paper), alexnet-mini 32")
    p.add_argument("--lr", type=float, help="initial learning rate (0.01)")
    p.add_argument("--momentum", type=float, help="in [0, 1) (0.9)")
    p.add_argument("--weight-decay", type=float, help="(5e-4)")
    p.add_argument("--lr-schedule", choices=SCHEDULES,
                   help="step (default): divide by 10 every --lr-step epochs; plateau: divide by 10 when "
                        "the validation loss stops improving (the paper's rule)")
    p.add_argument("--lr-step", type=int, help="epochs between divisions with --lr-schedule step (alexnet 30, "
                                                "alexnet-mini 8)")
    p.add_argument("--patience", type=int, help="epochs without improvement before a plateau division (1)")
    p.add_argument("--init", choices=INITS, help="AlexNet's weight initialisation (he)")
    p.add_argument("--dropout", type=float, help="AlexNet's dropout rate in fc6 and fc7, in [0, 1) (alexnet 0.5 "
                                                  "as in the paper, alexnet-mini 0.25)")
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
    p.add_argument("--max-steps", type=int, help="end the run after this many steps (a lab-sized run: the epoch "
                                                  "in progress ends there, validated and saved)")
    p.add_argument("--train-subset", type=int, help="train on this many of the training images (a pick seeded "
                                                     "by --seed; recorded with the run)")
    p.add_argument("--scale", type=float, help="the pictures' size: 2 draws them twice as large, for slides (1)")
    p.add_argument("--precision", choices=("fp32", "fp16"),
                   help="fp16: mixed precision, float16 products with float32 accumulation, float32 master "
                        "weights and a dynamic loss scale (fp32)")
    p.add_argument("--export-onnx", action="store_true",
                   help="at the end, also write best.onnx: the best checkpoint's network as ONNX (needs "
                        "pip install 'minialex[onnx]')")
    p.add_argument("--stall-steps", type=int,
                   help="warn when the loss is still at ln(classes) after this many steps (300)")
    p.add_argument("--dist-timeout", type=float,
                   help="under mpiexec: seconds a rank waits for the others in a step before the job "
                        f"is stopped ({distributed.DEFAULT_TIMEOUT:g})")
    return p


def parse_args(argv, doc):
    """(the flags given, as a dict: an absent flag is absent)."""
    return dict(vars(build_parser(doc).parse_args(argv)))


# ----- settings: from the flags, the checkpoint and the defaults -----

def _flag(key, value):
    return {"flip": "--no-flip", "lighting": "--no-lighting"}.get(key, f"--{key.replace('_', '-')} {value}")


def resolve(flags, ckpt):
    """The RunConfig for the flags given (a dict) and the checkpoint being resumed (or None)."""
    flags = dict(flags)
    if "model" in flags:
        if "arch" in flags:
            raise TrainError(f"--arch {flags['arch']} and --model {flags['model']} both name the network; give one")
        flags["arch"] = canonical_spec(flags.pop("model"))
        model_flag = True
    else:
        model_flag = False
    saved = _saved_settings(flags, ckpt)
    arch = saved.get("arch") or flags.get("arch", "alexnet-mini")
    defaults = {**DEFAULTS, **ARCH_DEFAULTS.get(arch, ARCH_DEFAULTS["alexnet-mini"]), "arch": arch}
    eval_only = flags.get("eval_only", False)
    values, from_ckpt = {}, set()
    for key in RUN_SETTINGS:
        if key in saved:
            ignored = eval_only and key == "batch_size" and key in flags    # evaluation may batch its own way
            if key in flags and flags[key] != saved[key] and not ignored:
                raise TrainError(f"{'--model ' + flags[key] if key == 'arch' and model_flag else _flag(key, flags[key])} "
                                 f"contradicts the checkpoint {flags['resume']}, whose run has {key} = {saved[key]!r} "
                                 "(--resume continues that run; start a new run to change it)")
            values[key] = flags[key] if ignored else saved[key]
            from_ckpt |= set() if ignored else {key}
        else:
            values[key] = flags.get(key, defaults[key])
    values["epochs"] = flags.get("epochs", saved.get("epochs", defaults["epochs"]))
    if "epochs" not in flags and "epochs" in saved:
        from_ckpt.add("epochs")
    for key in ("device", "workers", "stall_steps", "dist_timeout", "max_steps", "scale"):
        values[key] = flags.get(key, defaults[key])
    if "data" in flags:
        values["data"] = flags["data"]
    else:                                              # the resumed run's own ("" for the built-in data)
        values["data"] = (ckpt.meta.get("data") or None) if ckpt else None
        if values["data"]:
            from_ckpt.add("data")
    for key in ("out", "resume"):
        values[key] = flags.get(key)
    for key in ("overwrite", "eval_only", "ten_crop", "no_cache", "export_onnx"):
        values[key] = key in flags
    return RunConfig(**values, from_checkpoint=frozenset(from_ckpt), model_flag=model_flag)


def canonical_spec(spec):
    """A --model spec as a checkpoint records it: a file's path made absolute."""
    where, sep, attr = spec.rpartition(":")
    if sep and (where.endswith(".py") or os.sep in where):
        return f"{Path(where).resolve()}:{attr}"
    return spec


def _saved_settings(flags, ckpt):
    """The checkpoint's run settings, checked (a format-1 file knows only its arch)."""
    if ckpt is None:
        return {}
    path = flags["resume"]
    if "arch" not in ckpt.meta:
        raise TrainError(f"--resume {path}: meta/arch expected text, got nothing (it was not written by minialex-train)")
    meta_arch = ckpt.meta["arch"]
    if meta_arch not in ARCHS and ":" not in meta_arch:
        raise TrainError(f"--resume {path}: meta/arch expected one of {ARCHS} or a model factory "
                         f"module:function, got {meta_arch!r}")
    for key in ("classes", "mean"):
        if key not in ckpt.meta:
            raise TrainError(f"--resume {path}: meta/{key} is missing (it was not written by minialex-train)")
    saved = dict(ckpt.config)
    check_config(saved, ckpt.meta["format"], meta_arch, path)
    if "arch" not in saved:
        return {"arch": meta_arch}                     # a format-1 checkpoint: only its arch is known
    for key in OPTIONAL:
        saved.setdefault(key, DEFAULTS[key])           # (precision: fp32, the only one then)
    for key in ("momentum", "weight_decay"):
        if ckpt.optim.get(key) != saved[key]:
            raise TrainError(f"--resume {path}: optim/{key} {ckpt.optim.get(key)} disagrees with "
                             f"meta/config {key} {saved[key]}: the file is damaged")
    return saved


CHOICES = {"lr_schedule": SCHEDULES, "init": INITS}
INTS = ("batch_size", "lr_step", "patience", "seed", "epochs")
FLOATS = ("lr", "momentum", "weight_decay", "dropout")


def check_config(config, fmt, meta_arch, path):
    """TrainError unless a checkpoint's meta/config holds every run setting with a valid type and
    value (a hostile or damaged file must not run as another run, or crash)."""
    def bad(key, expected):
        raise TrainError(f"--resume {path}: meta/config {key} expected {expected}, got {config.get(key)!r}")
    if fmt < 2:
        return
    if not config:
        raise TrainError(f"--resume {path}: meta/config is missing: the run's settings are unknown")
    for key in RUN_SETTINGS + ("epochs",):
        if key not in config:
            if key in OPTIONAL:                        # (older checkpoints: an AlexNet knows its size, all images)
                continue
            raise TrainError(f"--resume {path}: meta/config has no {key}: the run's settings are incomplete")
        value = config[key]
        if key == "arch" and not (value in ARCHS or (isinstance(value, str) and ":" in value)):
            bad(key, f"one of {ARCHS} or a model factory module:function")
        if key in CHOICES and value not in CHOICES[key]:
            bad(key, f"one of {CHOICES[key]}")
        if key in INTS and (isinstance(value, bool) or not isinstance(value, int)):
            bad(key, "an integer")
        if key in FLOATS and (isinstance(value, bool) or not isinstance(value, (int, float))):
            bad(key, "a number")
        if key in ("flip", "lighting") and not isinstance(value, bool):
            bad(key, "true or false")
        if key == "precision" and value not in ("fp32", "fp16"):
            bad(key, "'fp32' or 'fp16'")
        elif key in OPTIONAL and key != "precision" and value is not None and (
                isinstance(value, bool) or not isinstance(value, int)):
            bad(key, "an integer or null")
    if config["arch"] != meta_arch:
        bad("arch", f"meta/arch {meta_arch!r}")


# ----- checks of the values, whatever their source -----

def name_of(cfg, key):
    """How an error names a setting: its flag, or the checkpoint entry it came from."""
    if key in cfg.from_checkpoint:
        return f"--resume {cfg.resume}: meta/config {key}"
    return "--" + key.replace("_", "-")


def validate(cfg):
    """The config with its device normalised; TrainError naming the flag for any setting out of
    range (flags and checkpoint alike)."""
    for key in ("data", "out", "resume"):
        if getattr(cfg, key) == "":
            raise TrainError(f"--{key} expected a path, got an empty string")
    for key, least in (("epochs", 1), ("batch_size", 1), ("workers", 0), ("lr_step", 1), ("patience", 1),
                       ("stall_steps", 1), ("input_size", 1), ("train_subset", 1), ("max_steps", 1)):
        value = getattr(cfg, key)
        if value is not None and value < least:
            raise TrainError(f"{name_of(cfg, key)} expected an integer >= {least}, got {value}")
    if not 0 <= cfg.seed <= SEED_LIMIT:
        raise TrainError(f"{name_of(cfg, 'seed')} expected an integer in 0 .. {SEED_LIMIT}, got {cfg.seed}")
    for key, low, high in (("lr", 0.0, None), ("momentum", 0.0, 1.0), ("weight_decay", 0.0, None),
                           ("dropout", 0.0, 1.0)):
        value = getattr(cfg, key)
        if not math.isfinite(value) or value < low or (high is not None and value >= high):
            expected = f"a finite number >= {low:g}" + (f" and < {high:g}" if high is not None else "")
            raise TrainError(f"{name_of(cfg, key)} expected {expected}, got {value}")
    if not math.isfinite(cfg.scale) or not 0.25 <= cfg.scale <= 8:
        raise TrainError(f"--scale expected a number in 0.25 .. 8 (the pictures' size), got {cfg.scale}")
    if not math.isfinite(cfg.dist_timeout) or cfg.dist_timeout <= 0:
        raise TrainError(f"--dist-timeout expected a number of seconds > 0, got {cfg.dist_timeout}")
    if keep_threshold(cfg.dropout) >= 1 << MASK_BITS:
        raise TrainError(f"{name_of(cfg, 'dropout')} expected a rate below 1 - 2^-{MASK_BITS + 1} (it would drop "
                         f"every unit), got {cfg.dropout}")
    if cfg.eval_only and not cfg.resume:
        raise TrainError("--eval-only needs --resume CHECKPOINT")
    if cfg.export_onnx:
        try:
            import onnx  # noqa: F401  (checked before any work; used at the end)
        except ImportError:
            raise TrainError("--export-onnx needs the onnx package: pip install 'minialex[onnx]'") from None
    if "data" in cfg.from_checkpoint and not Path(cfg.data).is_dir():
        raise TrainError(f"--resume {cfg.resume}: its run trained on {cfg.data}, which is not a folder any more "
                         "(moved or removed?); give --data DIR to continue on the data where it is now")
    return replace(cfg, device=_device(cfg))


def check_custom(cfg, given):
    """A --model run takes no AlexNet option; an AlexNet run takes no --input-size."""
    if cfg.custom:
        for key in ("init", "dropout"):
            if key in given:
                raise TrainError(f"--{key} is an option of --arch alexnet|alexnet-mini; a --model factory "
                                 "builds (and initialises) its own network")
    elif "input_size" in given:
        raise TrainError(f"--input-size is for a --model of your own; --arch {cfg.arch} takes its own size")


def _device(cfg):
    try:
        device = backend.check_device(distributed.device_for(cfg.device, distributed.world()))
        if backend.is_gpu(device):
            cp = backend.cupy()
            if int(device[5:]) >= cp.cuda.runtime.getDeviceCount():
                raise RuntimeError(f"there is no GPU {device[5:]} (this machine has "
                                   f"{cp.cuda.runtime.getDeviceCount()})")
            if distributed.world().size > 1 and not cfg.eval_only:
                distributed.check_nccl()
    except (ValueError, TypeError, RuntimeError) as e:
        raise TrainError(f"--device {cfg.device}: {str(e).replace('device: ', '', 1)}") from None
    return device


# ----- the network: an AlexNet, or a factory of the user's -----

def _model_name(cfg):
    return f"--model {cfg.arch}" if cfg.model_flag else f"{name_of(cfg, 'arch')} {cfg.arch}"


def load_factory(cfg):
    """(factory, its spec as recorded: a file's path made absolute) of a --model module:function
    (or path/file.py:function); TrainError when it cannot be imported or is not callable."""
    return import_factory(cfg.arch, _model_name(cfg))


def import_factory(spec, name):
    """load_factory for a spec; errors start with `name` (how the spec was given)."""
    where, _, attr = spec.rpartition(":")
    if not where or not attr.isidentifier():
        raise TrainError(f"{name}: expected package.module:function or path/file.py:function")
    try:
        if where.endswith(".py") or os.sep in where:
            path = Path(where).resolve()
            if not path.is_file():
                raise TrainError(f"{name}: no such file {path}")
            spec = importlib.util.spec_from_file_location(f"minialex_model_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            where = str(path)
        else:
            sys.path.insert(0, os.getcwd())          # like python -m: a module in the current folder
            try:
                module = importlib.import_module(where)
            finally:
                sys.path.remove(os.getcwd())
    except TrainError:
        raise
    except (Exception, SystemExit) as e:
        hint = (" (a module is looked for in the current folder and on PYTHONPATH: run where it is, or add its "
                "folder to PYTHONPATH)" if isinstance(e, ModuleNotFoundError) and e.name == where.split(".")[0] else "")
        raise TrainError(f"{name}: cannot import {where} ({type(e).__name__}: {e}){hint}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise TrainError(f"{name}: {where} has no function {attr}")
    return factory, f"{where}:{attr}"


def build_model(cfg, classes):
    """(the network for `classes` classes, the config with its input size)."""
    if not cfg.custom:
        return NETWORKS[cfg.arch](num_classes=classes, init=cfg.init, dropout=cfg.dropout), cfg
    model, size = network(cfg.arch, classes, cfg.input_size, _model_name(cfg))
    return model, replace(cfg, input_size=size)


def network(arch, classes, input_size=None, name="--model"):
    """(the network `arch` names for `classes` classes — an AlexNet variant or a factory spec —,
    its input size), checked: a factory's network must map one image to (1, classes) logits."""
    if arch in NETWORKS:
        model = NETWORKS[arch](num_classes=classes)
        return model, model.input_size
    factory, spec = import_factory(arch, name)
    try:
        model = factory(classes)
    except (Exception, SystemExit) as e:
        raise TrainError(f"{name}: {spec.rpartition(':')[2]}({classes}) failed ({type(e).__name__}: {e})") from None
    if not isinstance(model, nn.Module):
        raise TrainError(f"{name}: {spec.rpartition(':')[2]}({classes}) expected to return a minialex nn.Module, "
                         f"got {type(model).__name__}")
    size = input_size or getattr(model, "input_size", None)
    if size is None:
        raise TrainError(f"{name}: the network has no input_size attribute (the image side it takes); give "
                         "--input-size N")
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise TrainError(f"{name}: the network's input_size expected an integer >= 1, got {size!r}")
    size = int(size)
    state = random.get_state()                       # a trial forward must not move the generator
    try:
        model.eval()
        with no_grad():
            out = model(Tensor(np.zeros((1, 3, size, size), np.float32)))
        model.train()
    except Exception as e:
        raise TrainError(f"{name}: a {size}x{size} RGB image does not go through it ({type(e).__name__}: {e})") from None
    finally:
        random.set_state(state)
    if out.shape != (1, classes):
        raise TrainError(f"{name}: expected (N, {classes}) logits for {classes} classes, got shape {out.shape} "
                         f"for one {size}x{size} image")
    return model, size
