"""minialex-train: train AlexNet on an ImageNet-style folder, or on the built-in dataset.

    minialex-train                                   # built-in data, CPU, alexnet-mini
    minialex-train --data ~/imagenette2 --arch alexnet --device cuda --epochs 30
    minialex-train --resume runs/x/last.npz          # continue exactly where it stopped
    minialex-train --resume runs/x/best.npz --eval-only --ten-crop

--data DIR must hold DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg. The run writes to --out:
metrics.jsonl (one JSON object per epoch), last.npz and best.npz (atomic checkpoints), and the
pictures filters.png (conv1's filters), curves.png and predictions.png.
"""
import argparse
import hashlib
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import functional as F
from . import cpu, io, random
from .paths import cache_root
from .data import DataLoader, ImageFolder, Transform, dataset_stats, make_synthetic, resize_for
from .data.transforms import center_crop, resize_shorter, to_array, to_chw
from .function import no_grad
from .models import AlexNet
from .optim import SGD
from .pictures import filter_grid, prediction_grid, training_curves
from .tensor import Tensor

ARCHS = {"alexnet": AlexNet, "alexnet-mini": AlexNet.mini}
# Per-architecture defaults: the paper's for alexnet; tuned to the built-in data for alexnet-mini.
DEFAULTS = {"alexnet": dict(epochs=90, batch_size=128, lr=0.01, lr_step=30, dropout=0.5),
            "alexnet-mini": dict(epochs=10, batch_size=32, lr=0.01, lr_step=8, dropout=0.25)}
FORMAT = 1


class TrainError(Exception):
    """A problem found before training starts (bad data folder, mismatched checkpoint)."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="minialex-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data", help="folder with train/ and val/ class folders (default: the built-in dataset)")
    p.add_argument("--arch", choices=sorted(ARCHS), default=None,
                   help="alexnet: the paper's table at 227x227; alexnet-mini: the same layers, narrower, 64x64 "
                        "(default: alexnet-mini, or the checkpoint's with --resume)")
    p.add_argument("--epochs", type=int, help="total epochs (alexnet 90, alexnet-mini 10)")
    p.add_argument("--batch-size", type=int, help="alexnet 128 (the paper), alexnet-mini 32")
    p.add_argument("--lr", type=float, help="initial learning rate (alexnet 0.01, alexnet-mini 0.01)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--lr-schedule", choices=["step", "plateau", "constant"], default="step",
                   help="step: divide by 10 every --lr-step epochs; plateau: divide by 10 when the "
                        "validation loss stops improving (the paper's rule)")
    p.add_argument("--lr-step", type=int, help="epochs between divisions with --lr-schedule step")
    p.add_argument("--patience", type=int, default=1, help="epochs without improvement before a plateau division")
    p.add_argument("--init", choices=["he", "paper", "xavier"], default="he")
    p.add_argument("--dropout", type=float, help="dropout rate in fc6 and fc7 (alexnet 0.5 as in the paper, "
                                                  "alexnet-mini 0.25)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or cuda-emu")
    p.add_argument("--workers", type=int, default=2, help="threads decoding and augmenting images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output folder (default: runs/<arch>-<date>-<time>)")
    p.add_argument("--resume", help="a checkpoint (.npz) to continue from")
    p.add_argument("--eval-only", action="store_true", help="evaluate the --resume checkpoint and stop")
    p.add_argument("--ten-crop", action="store_true", help="also evaluate with the paper's 10 crops")
    p.add_argument("--stall-steps", type=int, default=300,
                   help="warn when the loss is still at ln(classes) after this many steps")
    return p.parse_args(argv)


# ----- data -----

def _stats_for(folder):
    """Mean, std and RGB PCA of a training folder, cached by its path and contents' sizes."""
    sizes = sum(p.stat().st_size for p, _ in folder.samples)
    key = hashlib.sha1(f"{folder.root.resolve()}|{len(folder)}|{sizes}".encode()).hexdigest()[:16]
    cache = cache_root() / "stats" / f"{key}.npz"
    if cache.is_file():
        return {k: v for k, v in io.load(cache).items()}
    stats = dataset_stats(folder)
    cache.parent.mkdir(parents=True, exist_ok=True)
    io.save(stats, cache)
    return stats


def open_data(data):
    """(train folder, val folder) for --data, or the built-in dataset."""
    root = Path(data) if data else make_synthetic()
    if not root.is_dir():
        raise TrainError(f"--data: expected a folder with train/ and val/ inside, got {root} (no such folder)")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise TrainError(f"--data: expected {root / split}/<class>/<images> (ImageNet layout), "
                             f"but {root / split} does not exist")
    try:
        train = ImageFolder(root / "train")
        val = ImageFolder(root / "val", classes=train.classes)
    except (FileNotFoundError, ValueError) as e:
        raise TrainError(str(e)) from None
    return train, val


# ----- reporting -----

def summary(model, batch_size, device):
    """Per layer: output shape, parameters, forward FLOPs per image, activation memory of a batch."""
    size = model.input_size
    x = Tensor(np.zeros((1, 3, size, size), np.float32), device=device)
    rows, total_params, total_flops, total_bytes = [], 0, 0, 0
    model.eval()  # no dropout: the summary must not draw from the random generator (exact resume)
    with no_grad():
        for name in model.layer_order:
            layer = getattr(model, name)
            x_in, x = x, layer(x)
            out = x.size
            params = sum(p.size for p in layer.parameters())
            if name.startswith("conv"):
                flops = 2 * int(np.prod(layer.weight.shape[1:])) * out      # multiply-adds per output
            elif name.startswith("fc"):
                flops = 2 * layer.weight.shape[1] * out
            elif name.startswith("pool"):
                flops = 9 * out
            elif name.startswith("norm"):
                flops = (layer.size + 4) * out
            elif name == "flatten":
                flops = 0
            else:
                flops = x_in.size
            act = out * 4 * batch_size
            rows.append((name, " x ".join(str(d) for d in x.shape[1:]), params, flops, act))
            total_params, total_flops, total_bytes = total_params + params, total_flops + flops, total_bytes + act
    model.train()
    lines = [f"{'layer':8} {'output':>16} {'params':>12} {'MFLOPs/img':>11} {'activations':>12}"]
    for name, shape, params, flops, act in rows:
        lines.append(f"{name:8} {shape:>16} {params:>12,} {flops / 1e6:>11.1f} {act / 2**20:>9.1f} MiB")
    lines.append(f"{'total':8} {'':>16} {total_params:>12,} {total_flops / 1e6:>11.1f} {total_bytes / 2**20:>9.1f} MiB"
                 f"   (batch {batch_size}; a train step is about 3x the forward FLOPs)")
    return "\n".join(lines)


# ----- checkpoints -----

def save_checkpoint(path, model, opt, state):
    """Weights, optimizer momentum and the run's state in one .npz, written atomically (ma.save)."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim/{k}": v for k, v in opt.state_dict().items()})
    arrays.update({f"meta/{k}": np.asarray(v) for k, v in state.items()})
    io.save(arrays, path)


def load_checkpoint(path):
    raw = io.load(path)
    if raw.get("meta/format") is None:
        raise TrainError(f"--resume: {path} is not a minialex-train checkpoint (no meta/format)")
    model = {k[6:]: v for k, v in raw.items() if k.startswith("model/")}
    optim = {k[6:]: v for k, v in raw.items() if k.startswith("optim/")}
    meta = {k[5:]: v for k, v in raw.items() if k.startswith("meta/")}
    return model, optim, meta


# ----- evaluation -----

def evaluate(model, loader, device, ten_crop=False):
    """(mean loss, top-1, top-5) on the loader; with ten_crop the softmax is averaged over 10 crops."""
    model.eval()
    total, loss_sum, top1, top5 = 0, 0.0, 0, 0
    with no_grad():
        for x, y in loader:
            if ten_crop:  # x: (B, 10, 3, S, S)
                b = x.shape[0]
                logits = model(Tensor(x.reshape(b * 10, *x.shape[2:]), device=device)).numpy().astype(np.float64)
                logits = logits.reshape(b, 10, -1)
                p = np.exp(logits - logits.max(-1, keepdims=True))
                probs = (p / p.sum(-1, keepdims=True)).mean(1)
                loss_sum += float(-np.log(np.maximum(probs[np.arange(b), y], 1e-12)).sum())
                scores = probs
            else:
                out = model(Tensor(x, device=device))
                loss_sum += F.cross_entropy(out, y).item() * len(y)
                scores = out.numpy()
            k = min(5, scores.shape[1])
            best = np.argsort(-scores, axis=1)[:, :k]
            top1 += int((best[:, 0] == y).sum())
            top5 += int((best == y[:, None]).any(axis=1).sum())
            total += len(y)
    model.train()
    return loss_sum / max(total, 1), top1 / max(total, 1), top5 / max(total, 1)


def _pictures(out, model, history, val, stats, size, device):
    filter_grid(model.conv1.weight.numpy(), out / "filters.png")
    training_curves(history, out / "curves.png")
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

class Run:
    """Everything a training run carries from one epoch to the next."""

    def __init__(self, args, train_set, val_set, stats, model, opt):
        self.args, self.train_set, self.val_set, self.stats = args, train_set, val_set, stats
        self.model, self.opt, self.size = model, opt, model.input_size
        self.start_epoch, self.history = 1, []
        self.best = {"val_loss": math.inf, "val_top1": -1.0}
        self.plateau = {"lr": args.lr, "best": math.inf, "bad": 0}
        self.out = None
        self.step, self.recent, self.warned = 0, [], False   # for the stall warning

    def state(self, epoch):
        """The run's state after `epoch`, as a checkpoint's meta/ entries."""
        return {"format": FORMAT, "arch": self.args.arch, "epoch": epoch, "rng_state": random.get_state(),
                "classes": np.array(self.train_set.classes), "history": json.dumps(self.history),
                "best": json.dumps(self.best), "plateau": json.dumps(self.plateau), **self.stats}


def _lr_for(args, epoch, plateau):
    if args.lr_schedule == "step":
        return args.lr * 0.1 ** ((epoch - 1) // args.lr_step)
    if args.lr_schedule == "plateau":
        return plateau["lr"]
    return args.lr


def setup(args):
    """Data, statistics, model and optimizer, from scratch or from --resume; returns a Run."""
    resume = load_checkpoint(args.resume) if args.resume else None
    if resume and args.arch and args.arch != str(resume[2]["arch"]):
        raise TrainError(f"--resume: the checkpoint holds arch {str(resume[2]['arch'])!r}, but --arch is "
                         f"{args.arch!r}")
    args.arch = args.arch or (str(resume[2]["arch"]) if resume else "alexnet-mini")
    for key, value in DEFAULTS[args.arch].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.eval_only and not resume:
        raise TrainError("--eval-only needs --resume CHECKPOINT")

    train_set, val_set = open_data(args.data)
    if resume:
        meta = resume[2]
        classes = [str(c) for c in meta["classes"]]
        if classes != train_set.classes:
            raise TrainError(f"--resume: the checkpoint was trained on classes {classes[:5]}..., the data has "
                             f"{train_set.classes[:5]}... ({len(classes)} vs {len(train_set.classes)})")
        stats = {k: meta[k] for k in ("mean", "std", "eigvals", "eigvecs")}
    else:
        stats = _stats_for(train_set)

    random.manual_seed(args.seed)
    model = ARCHS[args.arch](num_classes=len(train_set.classes), init=args.init, dropout=args.dropout)
    opt = SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    run = Run(args, train_set, val_set, stats, model, opt)
    if resume:
        model_sd, optim_sd, meta = resume
        try:
            model.load_state_dict(model_sd)
        except (KeyError, ValueError) as e:
            raise TrainError(f"--resume: the checkpoint does not fit {args.arch}: {e}") from None
        opt.load_state_dict(optim_sd)
        random.set_state(str(meta["rng_state"]))
        run.start_epoch = int(meta["epoch"]) + 1
        run.history = json.loads(str(meta["history"]))
        run.best = json.loads(str(meta["best"]))
        run.plateau = json.loads(str(meta["plateau"]))
    model.to(args.device)
    return run


def train_epoch(run, epoch, loader):
    """One pass over the training set; returns (images seen, mean loss, top-1, seconds)."""
    args, model, opt = run.args, run.model, run.opt
    ln_classes = math.log(len(run.train_set.classes))
    opt.lr = _lr_for(args, epoch, run.plateau)
    loader.set_epoch(epoch)
    t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
    bar = _progress(len(loader), f"epoch {epoch}/{args.epochs}")
    try:
        for x, y in loader:
            logits = model(Tensor(x, device=args.device))
            loss = F.cross_entropy(logits, y)
            value = loss.item()
            if not math.isfinite(value):
                last = run.out / "last.npz"
                raise FloatingPointError(
                    f"the loss became {value} at epoch {epoch}, step {run.step + 1}: stopping. The learning "
                    f"rate is probably too high (it is {opt.lr:g}; try --lr {opt.lr / 10:g}). The last "
                    f"good checkpoint is {last}" + ("" if last.exists() else " (none yet)"))
            model.zero_grad()
            loss.backward()
            opt.step()
            correct += int((logits.numpy().argmax(1) == y).sum())
            del loss, logits  # free this step's graph before the next forward
            seen, loss_sum, run.step = seen + len(y), loss_sum + value * len(y), run.step + 1
            run.recent = (run.recent + [value])[-50:]
            if not run.warned and run.step >= args.stall_steps and np.mean(run.recent) > 0.98 * ln_classes:
                run.warned = True
                warnings.warn(f"after {run.step} steps the loss is still {np.mean(run.recent):.3f}, about "
                              f"ln({len(run.train_set.classes)}) = {ln_classes:.3f}: the network predicts chance. "
                              f"Likely causes: the learning rate is too low or so high that ReLUs died (it is "
                              f"{opt.lr:g}), labels that do not match the images, or images that all look alike",
                              stacklevel=1)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}", img_s=f"{seen / (time.perf_counter() - t0):.0f}")
    finally:
        bar.close()
    return seen, loss_sum / seen, correct / seen, time.perf_counter() - t0


def end_of_epoch(run, epoch, trained, val_loader, skipped):
    """Validate, record the epoch's metrics, step the plateau schedule, print one line; returns the record."""
    seen, train_loss, train_top1, seconds = trained
    val_loss, val_top1, val_top5 = evaluate(run.model, val_loader, run.args.device)
    record = {"epoch": epoch, "train_loss": train_loss, "train_top1": train_top1,
              "val_loss": val_loss, "val_top1": val_top1, "val_top5": val_top5, "lr": run.opt.lr,
              "images_per_s": seen / seconds, "seconds": seconds}
    run.history.append(record)
    if run.args.lr_schedule == "plateau":
        p = run.plateau
        if val_loss < p["best"] * (1 - 1e-3):
            p["best"], p["bad"] = val_loss, 0
        else:
            p["bad"] += 1
            if p["bad"] >= run.args.patience:
                p["lr"], p["bad"] = p["lr"] / 10, 0
    with open(run.out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"epoch {epoch:3d}/{run.args.epochs}  train loss {train_loss:.4f} top-1 {train_top1:6.2%}"
          f"  |  val loss {val_loss:.4f} top-1 {val_top1:6.2%} top-5 {val_top5:6.2%}  |  lr {run.opt.lr:.2g}"
          f"  {record['images_per_s']:.0f} img/s  {seconds:.1f}s"
          + (f"  ({skipped} unreadable images skipped)" if skipped else ""), flush=True)
    return record


def checkpoint(run, epoch, record):
    """last.npz after every epoch, best.npz when validation top-1 improved, then the pictures."""
    is_best = record["val_top1"] > run.best["val_top1"]
    if is_best:
        run.best = {"val_loss": record["val_loss"], "val_top1": record["val_top1"], "epoch": epoch}
    save_checkpoint(run.out / "last.npz", run.model, run.opt, run.state(epoch))
    if is_best:
        save_checkpoint(run.out / "best.npz", run.model, run.opt, run.state(epoch))
    _pictures(run.out, run.model, run.history, run.val_set, run.stats, run.size, run.args.device)


def run(args):
    """Train (or evaluate) as the arguments say; returns the list of per-epoch metrics."""
    r = setup(args)
    val_loader = DataLoader(r.val_set, Transform(r.size, r.stats, "val"), args.batch_size, workers=args.workers)
    if args.eval_only:
        loss, top1, top5 = evaluate(r.model, val_loader, args.device)
        print(f"val (centre crop): loss {loss:.4f}  top-1 {top1:.2%}  top-5 {top5:.2%}")
        if args.ten_crop:
            _ten_crop_report(r.model, r.val_set, r.stats, r.size, args)
        return r.history

    r.out = Path(args.out or f"runs/{args.arch}-{time.strftime('%Y%m%d-%H%M%S')}")
    r.out.mkdir(parents=True, exist_ok=True)
    train_loader = DataLoader(r.train_set, Transform(r.size, r.stats, "train"), args.batch_size, shuffle=True,
                              drop_last=True, workers=args.workers, seed=args.seed)
    if len(train_loader) == 0:
        raise TrainError(f"--batch-size {args.batch_size} is larger than the {len(r.train_set)} training images")
    print(f"data: {len(r.train_set)} training and {len(r.val_set)} validation images, {len(r.train_set.classes)} "
          f"classes ({r.train_set.root.parent})")
    print(f"model: {args.arch} on {args.device}, init {args.init}\n{summary(r.model, args.batch_size, args.device)}")
    print(f"training epochs {r.start_epoch}..{args.epochs} into {r.out}", flush=True)

    epoch = r.start_epoch
    try:
        for epoch in range(r.start_epoch, args.epochs + 1):
            trained = train_epoch(r, epoch, train_loader)
            record = end_of_epoch(r, epoch, trained, val_loader, train_loader.skipped + val_loader.skipped)
            checkpoint(r, epoch, record)
    except KeyboardInterrupt:
        path = r.out / "interrupted.npz"
        save_checkpoint(path, r.model, r.opt, r.state(epoch - 1))
        print(f"\ninterrupted during epoch {epoch}: saved {path} (weights as they were; --resume {path} "
              f"repeats epoch {epoch}); {r.out / 'last.npz'} holds the end of epoch {epoch - 1}", file=sys.stderr)
        raise
    if args.ten_crop:
        _ten_crop_report(r.model, r.val_set, r.stats, r.size, args)
    print(f"done: best val top-1 {r.best['val_top1']:.2%} (epoch {r.best.get('epoch')}); {r.out}/best.npz, "
          f"metrics.jsonl, filters.png, curves.png, predictions.png")
    return r.history


def _ten_crop_report(model, val_set, stats, size, args):
    loader = DataLoader(val_set, Transform(size, stats, "ten_crop"), max(1, args.batch_size // 10),
                        workers=args.workers)
    loss, top1, top5 = evaluate(model, loader, args.device, ten_crop=True)
    print(f"val (10 crops): loss {loss:.4f}  top-1 {top1:.2%}  top-5 {top5:.2%}")


def _progress(total, desc):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, mininterval=0.5)


def main(argv=None):
    args = parse_args(argv)
    cpu.tune()  # process-wide malloc and OpenBLAS settings that speed up CPU training
    try:
        run(args)
    except TrainError as e:
        print(f"minialex-train: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"minialex-train: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
