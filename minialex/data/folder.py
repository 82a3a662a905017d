"""ImageFolder: the ImageNet directory layout, root/<class name>/<image file>.

Classes are the sorted names of the sub-folders; a file is an image when its extension is one of
.jpg .jpeg .png .bmp .webp in any case (anything else is ignored), at any depth below its class
folder. Every image is decoded to 8-bit RGB: grayscale, RGBA, CMYK and palette images are
converted, 16-bit and 32-bit grayscale scaled to 8 bits, and a camera's EXIF orientation applied
(a phone's portrait photo, stored sideways, comes out upright).

Hostile or odd files are handled, each with a warning that names the file (once per file):
- an image that cannot be decoded (corrupt, truncated) is skipped, and so is one deleted or
  moved after the folder was read;
- an image over MAX_PIXELS pixels (after JPEG's reduced decoding) is skipped, so memory stays
  bounded whatever the file claims (Pillow's decompression-bomb check is reported the same way);
- an extreme aspect ratio is centre-cropped to MAX_ASPECT : 1 before any resize (a 40000x1 PNG
  would otherwise be resized to 2.9 million x 72 pixels);
- a symbolic link (folder or file) is followed only when its target stays inside the class
  folder's root: a link to the data root or to another split never pulls images in.
The tree is walked iteratively, so any depth works.
"""
import copy
import hashlib
import os
import stat
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..system import ForkSafeLock

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MAX_PIXELS = 40_000_000      # ~120 MB as 8-bit RGB; a 6000x6000 photo fits, a 10000x10000 does not
MAX_ASPECT = 4.0             # longer side at most 4x the shorter
_OPEN_LOCK = ForkSafeLock()


def _inside(path, root):
    """Whether `path` (resolved) lies inside the folder `root` (resolved)."""
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


class ImageFolder:
    def __init__(self, root, classes=None):
        """`classes`: the class list to use (a validation set takes its training set's), else the
        sorted sub-folder names of root."""
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"ImageFolder: root expected a folder of class folders, got "
                                    f"{self.root} (no such folder)")
        self._real_root = self.root.resolve()
        self.unreadable = set()  # paths that failed to decode or were refused
        self._lock = threading.Lock()
        found = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if classes is None:
            classes = found
        else:
            unknown = sorted(set(found) - set(classes))
            if unknown:
                raise ValueError(f"ImageFolder: {self.root} has classes that the training set lacks: "
                                 f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}")
        self.classes = list(classes)
        self.samples = []  # (path, label)
        self.empty_classes = []  # class folders present but holding no image
        for label, name in enumerate(self.classes):
            folder = self.root / name
            if not folder.is_dir():
                continue
            files = self._images_under(folder)
            if not files:
                self.empty_classes.append(name)
            self.samples += [(path, label) for path in files]
        if not self.samples:
            raise ValueError(f"ImageFolder: no images (.jpg .jpeg .png .bmp .webp) under {self.root}/<class>/")

    def _images_under(self, folder):
        """Image files below a class folder, sorted, walking iteratively and never leaving the root."""
        try:
            real = folder.resolve()
            others = [(self.root / c).resolve() for c in self.classes if c != folder.name and (self.root / c).is_dir()]
        except (OSError, RuntimeError) as e:
            warnings.warn(f"ImageFolder: skipping class folder {folder}: the link cannot be followed ({e})", stacklevel=3)
            return []
        if folder.is_symlink() and (not _inside(real, self._real_root) or real == self._real_root
                                    or any(_inside(o, real) or _inside(real, o) for o in others)):
            warnings.warn(f"ImageFolder: skipping class folder {folder}: it is a link to {real}, outside "
                          f"{self.root} or overlapping another class's folder", stacklevel=3)
            return []
        found, files, stack, seen = [], set(), [folder], {real}
        while stack:
            current = stack.pop()
            try:
                entries = list(os.scandir(current))
            except OSError as e:
                warnings.warn(f"ImageFolder: skipping unreadable folder {current}: {e}", stacklevel=3)
                continue
            for entry in entries:
                path = Path(entry.path)
                if entry.name.startswith("."):
                    continue
                if entry.is_symlink():
                    try:
                        target = path.resolve()
                    except (OSError, RuntimeError) as e:  # a link loop, or a name too long
                        warnings.warn(f"ImageFolder: skipping {path}: the link cannot be followed ({e})", stacklevel=3)
                        continue
                    if not _inside(target, real):
                        warnings.warn(f"ImageFolder: skipping {path}: a link to {target}, outside {folder}",
                                      stacklevel=3)
                        continue
                    if entry.is_dir():
                        if target not in seen:  # a link back up would loop forever
                            seen.add(target)
                            stack.append(path)
                        continue
                if entry.is_dir():
                    stack.append(path)
                elif entry.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                    try:
                        st = entry.stat()
                    except OSError:
                        continue
                    if (st.st_dev, st.st_ino) not in files:  # a file reached twice (through a link) counts once
                        files.add((st.st_dev, st.st_ino))
                        found.append(path)
        return sorted(found)

    def __len__(self):
        return len(self.samples)

    def fingerprint(self):
        """A hex digest (SHA-1) of what this folder holds: its resolved root and, per sample, the
        resolved path, label, size and modification time. Any edit to the dataset changes it, so
        caches keyed by it (the decoded store, the dataset statistics) are never read for another
        one; however the root is spelled (`data`, `./data/`, an absolute path, a link to it) the
        digest is the same. A file gone since the folder was scanned (deleted or moved while a run
        goes) is hashed as missing, not an error: the next run's scan no longer lists it."""
        h = hashlib.sha1(os.fsencode(self.root.resolve()))
        parents = {}                                    # each folder resolved once, not each file
        for path, label in self.samples:
            try:
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):            # a link to a file (inside its class folder)
                    real = path.resolve()
                    st = os.stat(real)
                else:
                    if path.parent not in parents:
                        parents[path.parent] = path.parent.resolve()
                    real = parents[path.parent] / path.name
                facts = f"|{label}|{st.st_size}|{st.st_mtime_ns}"
            except OSError:
                real, facts = path, f"|{label}|missing"
            h.update(b"|" + os.fsencode(real) + facts.encode())
        return h.hexdigest()

    def _skip(self, path, reason):
        with self._lock:
            first = path not in self.unreadable
            self.unreadable.add(path)
        if first:
            warnings.warn(f"skipping image {path}: {reason}", stacklevel=3)

    def subset(self, indices):
        """A folder of the same classes that holds only the samples at `indices` (in that order): a
        smaller training set for a short run. It shares this folder's record of unreadable files."""
        sub = copy.copy(self)
        sub.samples = [self.samples[int(i)] for i in indices]
        return sub

    def load(self, i, min_side=None):
        """(8-bit RGB PIL image, label), or (None, label) when the file is skipped (see the module
        docstring). With min_side, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale as long as both
        sides stay >= min_side (libjpeg's draft mode: several times faster for large photos)."""
        path, label = self.samples[i]
        img, reason = load_image(path, min_side)
        if img is None:
            self._skip(path, reason)
        return img, label


def load_image(path, min_side=None, resize=None):
    """(8-bit RGB PIL image, None), or (None, why it was skipped): the whole of ImageFolder.load
    without the folder, so that worker processes can run it. With `resize`, the image comes back
    with its shorter side resized to it (transforms.resize_shorter), converted after the resize."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():  # the lock: catch_warnings is process-wide
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)  # reads the header only
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        return None, f"too many pixels, a possible decompression bomb ({e})"
    except FileNotFoundError:
        return None, "the file is gone (deleted or moved since the folder was read)"
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        return None, f"cannot be decoded ({e})"
    try:
        with img:
            if min_side:
                img.draft("RGB", (min_side, min_side))
            w, h = img.size
            if w * h > MAX_PIXELS:
                return None, f"{w}x{h} pixels, more than the {MAX_PIXELS:,} minialex decodes"
            img.load()  # decode now: a truncated file fails here, not later
            img = upright(img)
            w, h = img.size
            if max(w, h) > MAX_ASPECT * min(w, h):  # centre-crop before any resize
                side = int(MAX_ASPECT * min(w, h))
                box = ((w - side) // 2, 0, (w - side) // 2 + side, h) if w > h else \
                    (0, (h - side) // 2, w, (h - side) // 2 + side)
                img = img.crop(box)
            if resize and img.mode == "RGB":  # resize first: the conversion's copy is then smaller
                from .transforms import resize_shorter
                return resize_shorter(img, resize), None
            rgb = to_rgb8(img)
        if resize:
            from .transforms import resize_shorter
            rgb = resize_shorter(rgb, resize)
        return rgb, None
    except Exception as e:
        return None, f"cannot be decoded ({e})"


ORIENTATION = 0x0112    # the EXIF tag: how the camera held the picture (1 upright, 6 turned right, ...)


def upright(img):
    """The image as it is meant to be seen: its EXIF orientation applied (a phone's portrait photo
    is stored sideways, with orientation 6 or 8), or the image itself when it has none. A
    malformed EXIF block leaves the pixels as stored."""
    try:
        orientation = img.getexif().get(ORIENTATION, 1)
    except Exception:
        return img
    return ImageOps.exif_transpose(img) if orientation in (2, 3, 4, 5, 6, 7, 8) else img


def to_rgb8(img):
    """An 8-bit RGB copy of any PIL image; 16- and 32-bit grayscale are scaled, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img, dtype=np.float64)
        a = np.clip(a, 0, 65535) / 257.0                    # the 16-bit range onto 0..255
        return Image.fromarray(np.round(a).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        a = np.nan_to_num(np.asarray(img, dtype=np.float64))
        lo, hi = a.min(), a.max()
        a = (a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)
        return Image.fromarray(np.round(a).astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")
