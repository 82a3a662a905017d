"""Opening a data folder in the ImageNet layout, DATA/train/<class>/<images> and
DATA/val/<class>/<images>, checked the same way for every command (minialex-train, -prepare):

    train, val = open_splits(root)             # DataError says what is wrong, before any work

Checked: the folders exist; train has at least 2 classes and none of them is empty; val has no
class that train lacks; at least one image of every training class, and of val, decodes (an
empty validation class is a warning: nothing to score there, nothing wrong with training).
"""
import warnings
from pathlib import Path

from .folder import ImageFolder


class DataError(ValueError):
    """A data folder that cannot be trained on; the message says what is wrong and where."""


def open_splits(root, need_train=True, need_val=True):
    """(train ImageFolder, val ImageFolder or None when there is none and need_val is False)."""
    root = Path(root)
    try:
        if not root.is_dir():
            raise DataError(f"expected a folder with train/ and val/ inside, got {root} (no such folder)")
        for split in ("train", "val") if need_val else ("train",):
            if not (root / split).is_dir():
                raise DataError(f"expected {root / split}/<class>/<images> (ImageNet layout), "
                                f"but {root / split} does not exist")
        train = ImageFolder(root / "train")
        val = ImageFolder(root / "val", classes=train.classes) if (root / "val").is_dir() else None
    except (OSError, ValueError) as e:
        raise DataError(str(e)) from None
    if len(train.classes) < 2:
        raise DataError(f"expected at least 2 classes in {root / 'train'}, got {train.classes} "
                        "(a classifier of one class has nothing to learn)")
    if train.empty_classes:
        raise DataError(f"class folder(s) with no images in {root / 'train'}: {train.empty_classes[:10]} "
                        "(a class needs training images; remove the folder or add images)")
    if val is not None and val.empty_classes:
        warnings.warn(f"validation class folder(s) with no images: {val.empty_classes[:10]}", stacklevel=2)
    with warnings.catch_warnings():  # the files that fail are reported again, by name, when they are read
        warnings.simplefilter("ignore")
        if need_train:
            _first_readable(train, per_class=True)
        if val is not None:
            _first_readable(val)
    return train, val


def _first_readable(folder, per_class=False):
    """Decode images until one works (one per class with per_class); DataError when a split (or a
    class) has none that decodes."""
    by_class = {}
    for i, (_, label) in enumerate(folder.samples):
        by_class.setdefault(label if per_class else 0, []).append(i)
    for label, indices in by_class.items():
        if not any(folder.load(i)[0] is not None for i in indices):
            where = f"class {folder.classes[label]!r} of {folder.root}" if per_class else str(folder.root)
            raise DataError(f"none of the {len(indices)} images under {where} can be decoded "
                            f"(e.g. {folder.samples[indices[0]][0]})")
