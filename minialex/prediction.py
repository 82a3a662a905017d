"""minialex-predict: a trained network's top classes for your own images.

    minialex-predict runs/x/best.npz photo.jpg holiday/ --top 3
    minialex-predict runs/x/best.npz photos/ --json > predictions.jsonl    # one JSON object a line
    minialex-predict runs/x/best.npz photo.jpg --ten-crop --device cuda

    import minialex as ma
    ma.predict("runs/x/best.npz", ["photo.jpg", "holiday/"], top=5)
    # [{"path": "photo.jpg", "classes": ["cat", ...], "probabilities": [0.91, ...]}, ...]

The checkpoint (minialex-train's, or examples/export_weights.py's) says everything needed: the
network (an --arch or the --model factory, and its input size), the class names and the training
set's mean and std. Each image gets the validation transform (shorter side resized, centre crop,
normalised), or with ten_crop the paper's 10 crops with the softmax averaged. A folder is walked
(every image at any depth, in sorted order); an image that cannot be read is named on stderr and
skipped. Images are decoded by `workers` threads, `batch_size` at a time (the next batch while the
network runs on this one), so memory stays bounded however many there are.
"""
import argparse
import json
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import backend, checkpoint, nn
from .data.folder import IMAGE_EXTENSIONS, load_image
from .data.transforms import Transform
from .function import no_grad
from .runconfig import TrainError, network
from .tensor import Tensor
from .training.trainer import crop_probabilities


class PredictError(ValueError):
    """A checkpoint or an image list that cannot be used; the message says which and why."""


def load_network(path):
    """(model in eval mode, info {"classes", "mean", "std", "input_size", "arch"}) of a checkpoint."""
    try:
        weights, info = checkpoint.read_network(path)
    except checkpoint.CheckpointError as e:
        raise PredictError(f"{path}: {e}") from None
    arch, classes = info["arch"], info["classes"]
    input_size = info["config"].get("input_size")
    try:
        model, size = network(arch, len(classes), input_size if isinstance(input_size, int) else None,
                              name=f"{path}: meta/arch {arch}")
        model.load_state_dict(weights)
    except TrainError as e:
        raise PredictError(str(e)) from None
    except (KeyError, ValueError, TypeError) as e:
        raise PredictError(f"{path}: its weights do not fit {arch}: {e.args[0] if e.args else e}") from None
    model.eval()
    return model, {**info, "input_size": size}


def image_paths(images):
    """Every image file named or found in the folders named (sorted, at any depth), in order."""
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    for item in images:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if not found:
                warnings.warn(f"predict: no image in {path}", stacklevel=3)
            yield from found
        else:
            yield path


def predictions(source, images, top=5, ten_crop=False, device="cpu", batch_size=64, workers=2, classes=None,
                mean=None, std=None, input_size=None):
    """Yield {"path", "classes", "probabilities"} per readable image, as the batches are done (see
    predict). An image that cannot be read is warned about, naming it and why, and skipped."""
    model, info = _network(source, classes, mean, std, input_size)
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise PredictError(f"predict: top expected an integer >= 1, got {top!r}")
    top = min(top, len(info["classes"]))
    stats = {"mean": np.asarray(info["mean"], np.float32), "std": np.asarray(info["std"], np.float32),
             "eigvals": np.zeros(3, np.float32), "eigvecs": np.eye(3, dtype=np.float32)}
    transform = Transform(info["input_size"], stats, "ten_crop" if ten_crop else "val")
    was_training, was_on = model.training, _device(model)
    model.eval()
    model.to(device)
    paths, pool = image_paths(images), ThreadPoolExecutor(max(1, workers))

    def decode_next():                                   # the next batch's images, decoding in the threads
        batch = [p for _, p in zip(range(batch_size), paths)]
        return [(p, pool.submit(_input, p, transform)) for p in batch]
    try:
        ahead = decode_next()
        while ahead:
            current, ahead = ahead, decode_next()        # the next batch decodes while this one runs
            rows = [(p, x) for p, x in ((p, f.result()) for p, f in current) if x is not None]
            if rows:
                yield from _scores(model, rows, info["classes"], top, device)
    finally:
        for _, f in ahead:
            f.cancel()
        pool.shutdown(wait=True)
        model.to(was_on)                                 # a model of yours: as it was
        model.train(was_training)


def predict(source, images, top=5, ten_crop=False, device="cpu", batch_size=64, workers=2, classes=None,
            mean=None, std=None, input_size=None):
    """The top classes of each image: [{"path", "classes", "probabilities"}], most likely first.
    source: a checkpoint path, or a model (nn.Module) with classes= (default "0", "1", ...),
    mean= and std= (the per-channel normalisation it was trained with; default 0 and 1 on pixels
    in [0, 1]) and input_size= (default its input_size attribute). images: a path (image or
    folder) or a list of them."""
    return list(predictions(source, images, top, ten_crop, device, batch_size, workers, classes, mean, std,
                            input_size))


def _network(source, classes, mean, std, input_size):
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], nn.Module):
        return source                                    # (model, info) as load_network gives them
    if not isinstance(source, nn.Module):
        return load_network(source)
    size = input_size or getattr(source, "input_size", None)
    if size is None:
        raise PredictError("predict: input_size expected (the model has no input_size attribute)")
    with no_grad():
        was = source.training
        source.eval()
        n = source(Tensor(np.zeros((1, 3, size, size), np.float32), device=_device(source))).shape[1]
        source.train(was)
    classes = [str(c) for c in classes] if classes is not None else [str(i) for i in range(n)]
    if len(classes) != n:
        raise PredictError(f"predict: classes expected {n} names (the model's outputs), got {len(classes)}")
    return source, {"classes": classes, "mean": np.zeros(3) if mean is None else mean,
                    "std": np.ones(3) if std is None else std, "input_size": size}


def _device(model):
    params = list(model.parameters())
    return params[0].device if params else "cpu"


def _input(path, transform):
    img, reason = load_image(path, transform.resize)
    if img is None:
        warnings.warn(f"predict: skipping {path}: {reason}", stacklevel=2)
        return None
    return transform(img, np.random.default_rng(0))


def _scores(model, rows, classes, top, device):
    with no_grad():                                      # (B, K); ten crops: the softmax averaged
        probs = crop_probabilities(model, np.stack([r[1] for r in rows]), device)
    best = np.argsort(-probs, axis=1, kind="stable")[:, :top]
    for (path, _), order, row in zip(rows, best, probs):
        yield {"path": str(path), "classes": [classes[k] for k in order],
               "probabilities": [float(row[k]) for k in order]}


# ----- the command -----

def main(argv=None):
    from . import system
    p = argparse.ArgumentParser(prog="minialex-predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("checkpoint", help="a checkpoint of minialex-train (best.npz, last.npz) or exported weights")
    p.add_argument("images", nargs="+", help="image files and folders (walked)")
    p.add_argument("--top", type=int, default=5, help="classes per image (5)")
    p.add_argument("--ten-crop", action="store_true", help="the paper's 10 crops, softmax averaged")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or cuda-emu")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (64)")
    p.add_argument("--workers", type=int, default=2, help="threads decoding images (2)")
    p.add_argument("--json", action="store_true", help="one JSON object a line: path, classes, probabilities")
    args = p.parse_args(argv)
    problems = system.check_environment()
    for key, least in (("top", 1), ("batch_size", 1), ("workers", 1)):
        if getattr(args, key) < least:
            problems.append(f"--{key.replace('_', '-')} expected an integer >= {least}, got {getattr(args, key)}")
    try:
        backend.check_device(args.device)
    except (ValueError, TypeError, RuntimeError) as e:
        problems.append(f"--device {args.device}: {e}")
    try:
        model, info = load_network(args.checkpoint) if not problems else (None, None)
    except PredictError as e:
        problems.append(str(e))
    if problems:
        for line in problems:
            print(f"minialex-predict: error: {line}", file=sys.stderr)
        return 2
    return _print(predictions((model, info), args.images, args.top, args.ten_crop, args.device, args.batch_size,
                              args.workers), args.json)


def _print(results, as_json):
    """Print as the results come; a warning (an unreadable image) goes to stderr as one line."""
    def said(message, category, filename, lineno, file=None, line=None):
        print(f"minialex-predict: {message}", file=sys.stderr)
    shown, count = warnings.showwarning, 0
    warnings.showwarning = said
    try:
        for r in results:
            count += 1
            if as_json:
                print(json.dumps(r), flush=True)
            else:
                pairs = "  ".join(f"{c} {p:.1%}" for c, p in zip(r["classes"], r["probabilities"]))
                print(f"{r['path']}  {pairs}", flush=True)
    except BrokenPipeError:
        return 0
    finally:
        warnings.showwarning = shown
    return 0 if count else 1


if __name__ == "__main__":
    sys.exit(main())
