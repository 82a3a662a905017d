"""Training checkpoints: one .npz holding a run's weights, optimizer and state (no pickle).

    model/<name>          the model's state_dict (float arrays)
    optim/<name>          the optimizer's state_dict: for SGD lr, momentum, weight_decay, velocity.<i>
    meta/format           FORMAT (a checkpoint of a newer format is refused)
    meta/epoch            epochs completed;  meta/history: JSON, one metrics record per epoch
    meta/rng_state        minialex.random's generator (JSON)
    meta/trainer          JSON: the Trainer's step count, its schedule's state and each callback's
                          state by key (minialex/training)
    meta/processes        the data-parallel processes that trained it (1 alone)
    meta/interrupted_in_epoch    only in interrupted.npz
  minialex-train adds:
    meta/arch (alexnet, alexnet-mini, or a model factory module:function), meta/classes,
    meta/mean, meta/std, meta/eigvals, meta/eigvecs (the training set's statistics),
    meta/config (JSON: every setting that defines the run), meta/data (the data folder, "" for
    the built-in data)
  Format 2 (before minialex.training) kept meta/best and meta/plateau instead of meta/trainer;
  format 1 had no meta/config. Both are still read (`read` turns them into format 3's state).

`read` trusts nothing in the file: it reads only the meta/ names above and the model/ and optim/
arrays (an unknown entry is never read, and minialex.io checks each array's size before
allocating it), and checks each one's type, shape and value, so that a damaged or hostile file is
refused with a message naming the entry before anything is built from it.
"""
import json
import math

import numpy as np

from . import io, random

FORMAT = 3                 # 3: meta/trainer (2: meta/config added; 1: the first)
META = ["format", "arch", "epoch", "rng_state", "classes", "history", "best", "plateau", "config", "trainer",
        "data", "mean", "std", "eigvals", "eigvecs", "interrupted_in_epoch", "processes"]
STATS = {"mean": (3,), "std": (3,), "eigvals": (3,), "eigvecs": (3, 3)}
# The most bytes each meta/ entry may hold, refused by minialex.io before it is read (text takes 4
# bytes a character, and its JSON about 13 times that once decoded): a settings text needs
# kilobytes, a history a few KiB an epoch. model/ and optim/ arrays have no limit of their own:
# io holds them to their file (and a compressed one to io.MAX_INFLATION).
LIMITS = {"meta/": 64 << 10, "meta/history": 32 << 20, "meta/trainer": 4 << 20, "meta/config": 1 << 20,
          "meta/classes": 4 << 20}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the entry and what is wrong."""


def strict_json(value):
    """json.dumps, with non-finite floats (an unset best loss) written as null: strict JSON. NumPy
    numbers and arrays become plain numbers and lists; anything else that JSON cannot hold is a
    TypeError naming where it is (e.g. "['layers']['conv1']: ... float16")."""
    def clean(v, where):
        if isinstance(v, (np.generic, np.ndarray)) and v.dtype.kind in "biuf":
            v = v.tolist() if isinstance(v, np.ndarray) else v.item()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x, f"{where}[{k!r}]") for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        raise TypeError(f"{where or 'the value'}: expected a number, text, list or dict (JSON), got "
                        f"{type(v).__name__}")
    return json.dumps(clean(value, ""), allow_nan=False)


def save(path, model, opt, meta):
    """Weights, optimizer state and the run's state in one .npz, written atomically (ma.save)."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim/{k}": v for k, v in opt.state_dict().items()})
    arrays.update({f"meta/{k}": np.asarray(v) for k, v in meta.items()})
    io.save(arrays, path)


class Checkpoint:
    """A read and checked checkpoint: .model, .optim ({name: array or number}), .meta (decoded),
    .config (meta/config, {} when absent), .path (the file it was read from)."""

    def __init__(self, model, optim, meta, config, path=None):
        self.model, self.optim, self.meta, self.config, self.path = model, optim, meta, config, path


# ----- checks of single entries -----

def _json(meta, key, kind, required=True, infinity=False):
    """meta/key parsed as strict JSON (NaN refused; Infinity only where `infinity`: format-1 files
    wrote an unset best loss that way)."""
    if key not in meta:
        if required:
            raise CheckpointError(f"meta/{key} is missing")
        return None

    def refuse(constant):
        if infinity and constant == "Infinity":
            return math.inf
        raise ValueError(f"{constant} is not JSON")
    try:
        value = json.loads(str(meta[key][()]), parse_constant=refuse)
    except (ValueError, TypeError, RecursionError) as e:
        raise CheckpointError(f"meta/{key} expected JSON text, got {str(meta[key])[:40]!r} ({str(e)[:80]})") from None
    if not isinstance(value, kind):
        raise CheckpointError(f"meta/{key} expected a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def _numbers(record, depth=0):
    """A metrics record: numbers or null, or (the per-layer diagnostics) dicts of such, two deep."""
    return all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) or
               (isinstance(v, dict) and depth < 2 and _numbers(v, depth + 1)) for v in record.values())


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _scalar(arrays, key, kind="f"):
    if key not in arrays:
        raise CheckpointError(f"{key} is missing")
    a = arrays[key]
    if a.shape != () or a.dtype.kind not in ("iu" if kind == "i" else "iuf"):
        raise CheckpointError(f"{key} expected a {'whole' if kind == 'i' else 'real'} number, got "
                              f"dtype {a.dtype} shape {a.shape}")
    value = a.item()
    if not math.isfinite(value):
        raise CheckpointError(f"{key} expected a finite number, got {value}")
    return value


def _float_array(arrays, key, shape=None):
    a = arrays.get(key)
    if a is None:
        raise CheckpointError(f"{key} is missing")
    if a.dtype.kind != "f":
        raise CheckpointError(f"{key} expected a floating-point array, got dtype {a.dtype}")
    if shape is not None and a.shape != shape:
        raise CheckpointError(f"{key} expected shape {shape}, got {a.shape}")
    if not np.isfinite(a).all():
        raise CheckpointError(f"{key} holds non-finite values (NaN or inf)")
    return a


def _text(meta, key):
    if meta[key].dtype.kind != "U":
        raise CheckpointError(f"meta/{key} expected text, got dtype {meta[key].dtype}")
    return str(meta[key][()]) if meta[key].ndim == 0 else [str(c) for c in meta[key].ravel()]


def _without_path(error, path):
    """io's message without its "load: <path>" prefix (the caller names the file)."""
    text, prefix = str(error), f"load: {path}"
    return text[len(prefix):].lstrip(": ") if text.startswith(prefix) else text


# ----- reading -----

def read(path):
    """Read and check a checkpoint; CheckpointError names the problem (the entry, what is wrong)."""
    try:
        names = set(io.names(path))
        if "meta/format" not in names:
            raise CheckpointError("it is not a minialex-train checkpoint (no meta/format)")
        wanted = [f"meta/{k}" for k in META] + sorted(n for n in names if n.startswith(("model/", "optim/")))
        arrays = io.load(path, keys=[k for k in wanted if k in names], limits=LIMITS)
    except (ValueError, OSError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(_without_path(e, path)) from None
    fmt = _scalar(arrays, "meta/format", "i")
    if fmt > FORMAT or fmt < 1:
        raise CheckpointError(f"meta/format is {fmt}; this minialex reads formats 1 to {FORMAT} "
                              "(a newer minialex wrote it?)")
    meta = {k[5:]: v for k, v in arrays.items() if k.startswith("meta/")}
    decoded = _run_state(arrays, meta, fmt)
    decoded.update(_extras(meta, fmt))
    config = _json(meta, "config", dict, required=fmt == 2) or {}
    model = {k[6:]: _float_array(arrays, k) for k in arrays if k.startswith("model/")}
    if not model:
        raise CheckpointError("it holds no model/ weights")
    optim = {"lr": _scalar(arrays, "optim/lr")}
    for k in [k for k in arrays if k.startswith("optim/") and k != "optim/lr"]:
        optim[k[6:]] = _scalar(arrays, k) if arrays[k].ndim == 0 else _float_array(arrays, k)
    return Checkpoint(model, optim, decoded, config, path)


def _run_state(arrays, meta, fmt):
    """format, epoch, random state, history, processes and the trainer's state, checked."""
    decoded = {"format": fmt, "epoch": _scalar(arrays, "meta/epoch", "i")}
    if decoded["epoch"] < 0:
        raise CheckpointError(f"meta/epoch expected a count of epochs >= 0, got {decoded['epoch']}")
    if "rng_state" not in meta:
        raise CheckpointError("meta/rng_state is missing")
    try:
        random.check_state(str(meta["rng_state"][()]))
    except ValueError as e:
        raise CheckpointError(f"meta/rng_state: {e}") from None
    decoded["rng_state"] = str(meta["rng_state"][()])
    decoded["history"] = _json(meta, "history", list)
    if not all(isinstance(r, dict) and isinstance(r.get("epoch"), int) and _numbers(r) for r in decoded["history"]):
        raise CheckpointError("meta/history expected a list of per-epoch records of numbers")
    if "interrupted_in_epoch" in meta:
        decoded["interrupted_in_epoch"] = _scalar(arrays, "meta/interrupted_in_epoch", "i")
    decoded["processes"] = _scalar(arrays, "meta/processes", "i") if "processes" in meta else 1  # data parallel
    if decoded["processes"] < 1:
        raise CheckpointError(f"meta/processes expected a count of processes >= 1, got {decoded['processes']}")
    decoded["trainer"] = _trainer_state(meta) if fmt >= 3 else _legacy_trainer_state(meta)
    return decoded


def _trainer_state(meta):
    state = _json(meta, "trainer", dict)
    step, schedule, callbacks = state.get("step"), state.get("schedule"), state.get("callbacks")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"meta/trainer step expected a count of steps >= 0, got {step!r}")
    if not isinstance(schedule, dict) or not all(v is None or _is_number(v) for v in schedule.values()):
        raise CheckpointError(f"meta/trainer schedule expected a dict of numbers, got {str(schedule)[:60]}")
    if not isinstance(callbacks, dict) or not all(isinstance(v, dict) for v in callbacks.values()):
        raise CheckpointError(f"meta/trainer callbacks expected a dict of dicts, got {str(callbacks)[:60]}")
    scaler = state.get("scaler")
    if scaler is not None and (not isinstance(scaler, dict) or not all(_is_number(v) for v in scaler.values())
                               or not (isinstance(scaler.get("scale"), (int, float)) and scaler["scale"] > 0)):
        raise CheckpointError(f"meta/trainer scaler expected a dict of numbers with a scale > 0, got {str(scaler)[:60]}")
    precision = state.get("precision", "fp32")
    if precision not in ("fp32", "fp16"):
        raise CheckpointError(f"meta/trainer precision expected 'fp32' or 'fp16', got {precision!r}")
    return {"step": step, "schedule": schedule, "callbacks": callbacks, "precision": precision, "scaler": scaler}


def _legacy_trainer_state(meta):
    """Format 1 and 2 kept meta/best (the Checkpoint's state) and meta/plateau (the schedule's)."""
    best = _json(meta, "best", dict, infinity=True)
    plateau = _json(meta, "plateau", dict, infinity=True)
    for key, value, fields in (("best", best, ("val_top1", "val_loss")), ("plateau", plateau, ("lr", "best", "bad"))):
        for f in fields:  # null stands for a best loss not yet set (infinity)
            v = value.get(f, None if f in ("val_loss", "best") else "missing")
            if v is None and f in ("val_loss", "best"):
                value[f] = math.inf
            elif not _is_number(v) or math.isnan(v):
                raise CheckpointError(f"meta/{key} expected numbers for {fields}, got {value}")
    seen = best["val_top1"] >= 0
    kept = {"epoch": best.get("epoch") if seen else None, "value": best["val_top1"] if seen else None,
            "key": "val_top1", "val_loss": best["val_loss"] if seen else None, "val_top1": best["val_top1"] if seen else None}
    schedule = {"lr": plateau["lr"], "best": None if math.isinf(plateau["best"]) else plateau["best"], "bad": plateau["bad"]}
    return {"step": 0, "schedule": schedule, "callbacks": {"Checkpoint": {"best": kept}}}


def _extras(meta, fmt):
    """minialex-train's entries, checked where present (formats 1 and 2 always had them)."""
    decoded = {}
    for key in ("arch", "classes", "data"):
        if key in meta:
            decoded[key] = _text(meta, key)
        elif fmt < 3 and key != "data":
            raise CheckpointError(f"meta/{key} expected text, got nothing")
    if "classes" in decoded and isinstance(decoded["classes"], str):
        decoded["classes"] = [decoded["classes"]]
    if fmt < 3 or any(k in meta for k in STATS):
        arrays = {f"meta/{k}": meta[k] for k in STATS if k in meta}
        for key, shape in STATS.items():
            decoded[key] = _float_array(arrays, f"meta/{key}", shape).astype(np.float32)
        if (decoded["std"] <= 0).any():
            raise CheckpointError(f"meta/std expected positive standard deviations, got {decoded['std']}")
    return decoded


def read_network(path):
    """What using a trained network needs, checked: (its weights {name: array}, {"arch", "classes",
    "mean", "std", "config"}) of a checkpoint or of weights exported from one
    (examples/export_weights.py); neither the optimizer nor the random state is asked for."""
    try:
        names = set(io.names(path))
        wanted = [f"meta/{k}" for k in ("arch", "classes", "mean", "std", "config")]
        wanted += sorted(n for n in names if n.startswith("model/"))
        arrays = io.load(path, keys=[k for k in wanted if k in names], limits=LIMITS)
    except (ValueError, OSError) as e:
        raise CheckpointError(_without_path(e, path)) from None
    meta = {k[5:]: v for k, v in arrays.items() if k.startswith("meta/")}
    for key in ("arch", "classes", "mean", "std"):
        if key not in meta:
            raise CheckpointError(f"meta/{key} is missing: not a checkpoint of minialex-train (nor its exported "
                                  "weights)")
    classes = _text(meta, "classes")
    info = {"arch": _text(meta, "arch"), "classes": [classes] if isinstance(classes, str) else classes,
            "config": _json(meta, "config", dict, required=False) or {}}
    for key in ("mean", "std"):
        info[key] = _float_array(arrays, f"meta/{key}", STATS[key]).astype(np.float32)
    if (info["std"] <= 0).any():
        raise CheckpointError(f"meta/std expected positive standard deviations, got {info['std']}")
    model = {k[6:]: _float_array(arrays, k) for k in arrays if k.startswith("model/")}
    if not model:
        raise CheckpointError("it holds no model/ weights")
    return model, info
