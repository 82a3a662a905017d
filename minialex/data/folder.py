"""ImageFolder: the ImageNet directory layout, root/<class name>/<image file>.

Classes are the sorted names of the sub-folders; a file is an image when its extension is one of
.jpg .jpeg .png .bmp .webp in any case (anything else is ignored). Every image is decoded to RGB
(grayscale, RGBA, CMYK and palette images are converted). An image that cannot be decoded
(corrupt or truncated) is skipped with a warning that names the file, once per file.
"""
import threading
import warnings
from pathlib import Path

from PIL import Image

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class ImageFolder:
    def __init__(self, root, classes=None):
        """`classes`: the class list to use (a validation set takes its training set's), else the
        sorted sub-folder names of root."""
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"ImageFolder: root expected a folder of class folders, got "
                                    f"{self.root} (no such folder)")
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
        for label, name in enumerate(self.classes):
            folder = self.root / name
            if not folder.is_dir():
                continue
            for path in sorted(folder.rglob("*")):
                if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                    self.samples.append((path, label))
        if not self.samples:
            raise ValueError(f"ImageFolder: no images (.jpg .jpeg .png .bmp .webp) under {self.root}/<class>/")
        self.unreadable = set()  # paths that failed to decode
        self._lock = threading.Lock()

    def __len__(self):
        return len(self.samples)

    def load(self, i, min_side=None):
        """(RGB PIL image, label), or (None, label) when the file cannot be decoded. With min_side,
        a JPEG may be decoded at 1/2, 1/4 or 1/8 scale as long as both sides stay >= min_side
        (libjpeg's draft mode: several times faster for photos much larger than the network's input)."""
        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                if min_side:
                    img.draft("RGB", (min_side, min_side))
                img.load()  # decode now: a truncated file fails here, not later
                return img.convert("RGB"), label
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for bad files
            with self._lock:
                first = path not in self.unreadable
                self.unreadable.add(path)
            if first:
                warnings.warn(f"skipping unreadable image {path}: {e}", stacklevel=2)
            return None, label
