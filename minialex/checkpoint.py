"""minialex-train's checkpoints: one .npz holding a run's weights, optimizer and state.

    model/<name>          the model's state_dict (float arrays)
    optim/lr, optim/momentum, optim/weight_decay, optim/velocity.<i>
    meta/format           FORMAT (a checkpoint of a newer format is refused)
    meta/arch, meta/epoch (epochs completed), meta/classes, meta/mean, meta/std, meta/eigvals,
    meta/eigvecs          (the training set's statistics), meta/rng_state, meta/history,
    meta/best, meta/plateau, meta/config (JSON: every setting that defines the run)

`read` trusts nothing in the file: it reads only the names above (a large unknown entry is never
read), and checks each one's type, shape and value, so that a damaged or hostile file is refused
with a message naming the entry before anything is built from it.
"""
import json
import math

import numpy as np

from . import io, random

FORMAT = 2                 # 2: meta/config added (format 1 files can still be evaluated and resumed)
LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
META = ["format", "arch", "epoch", "rng_state", "classes", "history", "best", "plateau", "config",
        "mean", "std", "eigvals", "eigvecs", "interrupted_in_epoch", "processes"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the entry and what is wrong."""


def strict_json(value):
    """json.dumps, with non-finite floats (an unset best loss) written as null: strict JSON."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(value), allow_nan=False)


def save(path, model, opt, meta):
    """Weights, optimizer momentum and the run's state in one .npz, written atomically (ma.save)."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim/{k}": v for k, v in opt.state_dict().items()})
    arrays.update({f"meta/{k}": np.asarray(v) for k, v in meta.items()})
    io.save(arrays, path)


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


class Checkpoint:
    """A read and checked checkpoint: .model, .optim ({name: array}), .meta (decoded), .config."""

    def __init__(self, model, optim, meta, config):
        self.model, self.optim, self.meta, self.config = model, optim, meta, config


def _without_path(error, path):
    """io's message without its "load: <path>" prefix (the caller names the file)."""
    text, prefix = str(error), f"load: {path}"
    return text[len(prefix):].lstrip(": ") if text.startswith(prefix) else text


def read(path):
    """Read and check a checkpoint; CheckpointError names the problem (the entry, what is wrong)."""
    try:
        names = set(io.names(path))
    except (ValueError, OSError) as e:
        raise CheckpointError(_without_path(e, path)) from None
    if "meta/format" not in names:
        raise CheckpointError("it is not a minialex-train checkpoint (no meta/format)")
    wanted = [f"meta/{k}" for k in META] + [f"model/{layer}.{kind}" for layer in LAYERS for kind in ("weight", "bias")]
    wanted += [f"optim/{k}" for k in ("lr", "momentum", "weight_decay")] + [f"optim/velocity.{i}" for i in range(16)]
    try:
        arrays = io.load(path, keys=[k for k in wanted if k in names])
    except (ValueError, OSError) as e:
        raise CheckpointError(_without_path(e, path)) from None
    fmt = _scalar(arrays, "meta/format", "i")
    if fmt > FORMAT or fmt < 1:
        raise CheckpointError(f"meta/format is {fmt}; this minialex reads formats 1 to {FORMAT} "
                              "(a newer minialex wrote it?)")
    meta = {k[5:]: v for k, v in arrays.items() if k.startswith("meta/")}
    for key in ("arch", "classes"):
        if key not in meta or meta[key].dtype.kind != "U":
            raise CheckpointError(f"meta/{key} expected text, got "
                                  + ("nothing" if key not in meta else f"dtype {meta[key].dtype}"))
    decoded = {"format": fmt, "arch": str(meta["arch"][()]), "classes": [str(c) for c in meta["classes"].ravel()],
               "epoch": _scalar(arrays, "meta/epoch", "i")}
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
    decoded["best"] = _json(meta, "best", dict, infinity=True)
    decoded["plateau"] = _json(meta, "plateau", dict, infinity=True)
    for key, fields in (("best", ("val_top1", "val_loss")), ("plateau", ("lr", "best", "bad"))):
        for f in fields:  # null stands for a best loss not yet set (infinity)
            value = decoded[key].get(f, None if f in ("val_loss", "best") else "missing")
            if value is None and f in ("val_loss", "best"):
                decoded[key][f] = math.inf
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise CheckpointError(f"meta/{key} expected numbers for {fields}, got {decoded[key]}")
    for key, shape in (("mean", (3,)), ("std", (3,)), ("eigvals", (3,)), ("eigvecs", (3, 3))):
        decoded[key] = _float_array(arrays, f"meta/{key}", shape).astype(np.float32)
    if (decoded["std"] <= 0).any():
        raise CheckpointError(f"meta/std expected positive standard deviations, got {decoded['std']}")
    if "interrupted_in_epoch" in meta:
        decoded["interrupted_in_epoch"] = _scalar(arrays, "meta/interrupted_in_epoch", "i")
    decoded["processes"] = _scalar(arrays, "meta/processes", "i") if "processes" in meta else 1  # data parallel
    if decoded["processes"] < 1:
        raise CheckpointError(f"meta/processes expected a count of processes >= 1, got {decoded['processes']}")
    config = _json(meta, "config", dict, required=fmt >= 2) or {}

    model = {}
    for k in [k for k in arrays if k.startswith("model/")]:
        model[k[6:]] = _float_array(arrays, k)
    if not model:
        raise CheckpointError("it holds no model/ weights")
    optim = {k: _scalar(arrays, f"optim/{k}") for k in ("lr", "momentum", "weight_decay")}
    for k in [k for k in arrays if k.startswith("optim/velocity.")]:
        optim[k[6:]] = _float_array(arrays, k)
    return Checkpoint(model, optim, decoded, config)
