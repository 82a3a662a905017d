"""What minialex-train says and draws besides the training itself: the lines before the first
epoch (the data, the store, the model's summary, data parallel), the per-class report of
--eval-only, the ranks that find no decoded store, and the validation images predictions.png
shows. Only rank 0 calls them (the ranks' own parts are gathered first)."""
import socket
import warnings
from pathlib import Path

import numpy as np

from . import backend, cpu, distributed
from .data.transforms import center_crop, resize_for, resize_shorter, to_array, to_chw
from .summary import summary
from .training.callbacks import class_accuracy, most_confused, write_confusion
from .training.progress import say


def input_size(s):
    """The image side the session's network takes."""
    return s.cfg.input_size or s.trainer.model.input_size


def examples(s, count=18):
    """Validation images for predictions.png: (uint8 crops, the model's inputs, labels, class names)."""
    size, val = input_size(s), s.val_set
    shown, truth = [], []
    for i in np.linspace(0, len(val) - 1, num=min(count, len(val))).astype(int):
        img, label = val.load(int(i))
        if img is not None:
            shown.append(center_crop(to_array(resize_shorter(img, resize_for(size))), size))
            truth.append(label)
    if not shown:
        return None
    a = np.stack(shown)
    return (a * 255).clip(0, 255).astype(np.uint8), to_chw(a, s.stats["mean"], s.stats["std"]), truth, val.classes


def per_class_report(s, counts):
    """Each class's accuracy, the most confused pairs, and confusion.csv / confusion.png in --out
    (default: the checkpoint's folder)."""
    classes, out = s.train_set.classes, Path(s.cfg.out or Path(s.cfg.resume).parent)
    width = max(len(c) for c in classes)
    for name, row, accuracy in zip(classes, counts, class_accuracy(counts)):
        say(f"  {name:{width}s}  {accuracy:7.2%}  ({row[classes.index(name)]} of {row.sum()})")
    pairs = most_confused(counts, classes, 5)
    if pairs:
        say("most confused (true -> predicted): " + ", ".join(f"{a} -> {b} {n}" for a, b, n in pairs))
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_confusion(counts, classes, out, s.cfg.scale)
        say(f"confusion matrix: {out / 'confusion.csv'}, {out / 'confusion.png'}")
    except OSError as e:
        warnings.warn(f"could not write the confusion matrix into {out} ({e})", stacklevel=2)


def say_missing_stores(s, size):
    """After the store build: a rank that finds no decoded store where rank 0 has one decodes
    every epoch (its machine's build failed, or its store folder is elsewhere): rank 0 says so."""
    from .data import store
    resize = resize_for(size)
    mine = "".join("1" if store.Store.find(f, resize) is not None else "0" for f in (s.train_set, s.val_set))
    said = distributed.world().allgather_text(f"{mine} {socket.gethostname()} {store.store_root()}",
                                              "looking for the decoded stores")
    if s.strategy.is_root and said[0].startswith("11"):
        for rank, text in enumerate(said[1:], 1):
            found, host, root = text.split(" ", 2)
            if found != "11":
                warnings.warn(f"rank {rank} (on {host}) finds no decoded store in {root}, where rank 0 has one: "
                              "it decodes every image every epoch, which is slower (minialex-prepare DATA on "
                              "that machine builds the store; MINIALEX_STORES sets where it goes)", stacklevel=2)


def preamble(s):
    cfg, world = s.cfg, distributed.world()
    say(f"data: {len(s.train_set)} training and {len(s.val_set)} validation images, {len(s.train_set.classes)} "
        f"classes ({s.train_set.root.parent}); " + store_line(s))
    say(f"model: {cfg.arch} on {cfg.device}" + (f", init {cfg.init}" if not cfg.custom else "") +
        f"\n{summary(s.trainer.model, (3, input_size(s), input_size(s)), cfg.batch_size, cfg.device)}")
    if world.size > 1:
        say(f"data parallel: {world.size} processes, {cfg.batch_size} images each per step (global batch "
            f"{cfg.batch_size * world.size}), gradients summed by "
            f"{'NCCL' if backend.is_gpu(cfg.device) else 'MPI'} every step; {world.local_size} processes on this "
            f"machine, {cpu.cpu_threads()} CPU threads each")
    say(f"training epochs {s.trainer.epoch + 1}..{cfg.epochs} into {s.folder.path}")


def store_line(s):
    """What the decoded store does this run."""
    from .data import store
    if s.cfg.no_cache:
        return "decoding every epoch (--no-cache)"
    resize = resize_for(input_size(s))
    store.Store.find(s.val_set, resize)          # (a damaged val store is set aside now, not at validation)
    if store.Store.find(s.train_set, resize) is not None:
        return "decoded images from the store"
    gib = store.estimated_bytes(len(s.train_set) + len(s.val_set), resize) / 2**30
    return f"decoding once into the store during epoch 1 (about {gib:.1f} GiB in {store.store_root()})"
