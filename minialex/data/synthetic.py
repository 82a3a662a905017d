"""The built-in dataset: an ImageFolder of rendered JPEGs, made on first use, no download.

Ten classes of shapes and textures, each image with a random background colour, a random
foreground colour, position, scale and rotation, clutter (a few random lines and blobs) and pixel
noise, so that the network has to learn the shape, not a colour or a position:
    circle, square, triangle, star, cross, crescent   (rotated freely, except the circle)
    ring (an outline), stripes, checker, dots         (textures in a rotated patch)
Rendered at 80x80 (the alexnet-mini pipeline resizes to 72 and crops 64).
"""
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..paths import cache_root

CLASSES = ["checker", "circle", "crescent", "cross", "dots", "ring", "square", "star", "stripes", "triangle"]
VERSION = 3


def default_root():
    """$MINIALEX_DATA/synthetic-vN if set, else in minialex's cache folder."""
    base = os.environ.get("MINIALEX_DATA")
    return (Path(base) if base else cache_root()) / f"synthetic-v{VERSION}"


def _colour(rng, away_from=None):
    while True:
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        if away_from is None or sum(abs(a - b) for a, b in zip(c, away_from)) > 200:
            return c


def _polygon(cx, cy, radius, angle, points):
    """Vertices (radius_k, angle_k) around (cx, cy), rotated by `angle`."""
    return [(cx + radius * r * math.cos(a + angle), cy + radius * r * math.sin(a + angle)) for r, a in points]


def _shape_points(name):
    if name == "square":
        return [(1.0, math.pi / 4 + k * math.pi / 2) for k in range(4)]
    if name == "triangle":
        return [(1.0, -math.pi / 2 + k * 2 * math.pi / 3) for k in range(3)]
    if name == "star":
        return [(1.0 if k % 2 == 0 else 0.42, -math.pi / 2 + k * math.pi / 5) for k in range(10)]
    if name == "cross":  # a plus sign: 12 corners, arms a third as wide as the span
        t = 1 / 3
        corners = [(t, 1), (t, t), (1, t), (1, -t), (t, -t), (t, -1), (-t, -1), (-t, -t), (-1, -t),
                   (-1, t), (-t, t), (-t, 1)]
        return [(math.hypot(x, y), math.atan2(y, x)) for x, y in corners]
    raise ValueError(name)


def _texture(name, side, fg, rng):
    """An RGBA patch of the texture, side x side, transparent between the marks."""
    patch = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    d = ImageDraw.Draw(patch)
    period = int(rng.integers(12, 19))   # coarse enough to survive conv1's and pool1's strides
    width = period // 2
    if name == "stripes":
        for x in range(0, side, period):
            d.rectangle([x, 0, x + width - 1, side], fill=fg)
    elif name == "checker":
        for y in range(0, side, period):
            for x in range(0, side, period):
                if (x // period + y // period) % 2 == 0:
                    d.rectangle([x, y, x + period - 1, y + period - 1], fill=fg)
    elif name == "dots":
        for y in range(period // 2, side, period):
            for x in range(period // 2, side, period):
                r = period / 3.5
                d.ellipse([x - r, y - r, x + r, y + r], fill=fg)
    return patch


NOISE = 8.0        # std of the pixel noise, in 0..255 units
CLUTTER = (1, 4)   # how many distractor lines and blobs (low, high exclusive)


def render(name, rng, size=80):
    """One image of class `name` as a PIL RGB image."""
    bg = _colour(rng)
    fg = _colour(rng, away_from=bg)
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(*CLUTTER))):  # clutter: thin lines and small blobs in a third colour
        c = _colour(rng)
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size, 4))
        if rng.random() < 0.5:
            d.line([x0, y0, x1, y1], fill=c, width=1)
        else:
            r = float(rng.uniform(1, 3))
            d.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=c)
    radius = float(rng.uniform(0.22, 0.38)) * size
    cx, cy = (float(v) for v in rng.uniform(radius + 2, size - radius - 2, 2))
    angle = float(rng.uniform(0, 2 * math.pi))
    if name == "circle":
        d.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fg)
    elif name == "crescent":  # a disc with a disc of the background bitten out, turned by `angle`
        d.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fg)
        bx, by = cx + 0.45 * radius * math.cos(angle), cy + 0.45 * radius * math.sin(angle)
        d.ellipse([bx - 0.8 * radius, by - 0.8 * radius, bx + 0.8 * radius, by + 0.8 * radius], fill=bg)
    elif name == "ring":
        d.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=fg,
                  width=max(3, int(radius * 0.3)))
    elif name in ("square", "triangle", "star", "cross"):
        d.polygon(_polygon(cx, cy, radius, angle, _shape_points(name)), fill=fg)
    else:
        side = int(2.3 * radius)
        patch = _texture(name, side * 2, fg, rng).rotate(math.degrees(angle), resample=Image.NEAREST)
        patch = patch.crop((side // 2, side // 2, side // 2 + side, side // 2 + side))
        img.paste(patch, (int(cx - side / 2), int(cy - side / 2)), patch)
    a = np.asarray(img, dtype=np.float32) + rng.normal(0, NOISE, (size, size, 3))  # sensor noise
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def make_synthetic(root=None, train_per_class=600, val_per_class=100, size=80, seed=0, quiet=False):
    """Render the dataset into root/train/<class>/*.jpg and root/val/<class>/*.jpg (once: an existing
    complete copy with the same settings is reused). Returns root. Without a root it goes to the
    cache folder, or, where that cannot be written (a read-only home, a full disk), to a folder in
    the system's temporary folder, with a warning saying where; a given root that cannot be
    written is an OSError naming it."""
    stamp = f"{VERSION} {train_per_class} {val_per_class} {size} {seed}"
    if root is not None:
        return _render(Path(root), stamp, train_per_class, val_per_class, size, seed, quiet)
    try:
        return _render(default_root(), stamp, train_per_class, val_per_class, size, seed, quiet)
    except OSError as e:
        fallback = Path(tempfile.gettempdir()) / f"minialex-{os.getuid() if hasattr(os, 'getuid') else 'user'}" / \
            f"synthetic-v{VERSION}"
        warnings.warn(f"cannot render the built-in dataset into {default_root()} ({e.strerror or e}): rendering it "
                      f"into {fallback} instead (set MINIALEX_DATA to a writable folder to keep it)", stacklevel=2)
        return _render(fallback, stamp, train_per_class, val_per_class, size, seed, quiet)


def _render(root, stamp, train_per_class, val_per_class, size, seed, quiet):
    done = root / "COMPLETE"
    if done.is_file() and done.read_text() == stamp:
        return root
    if not quiet:
        print(f"rendering the built-in dataset into {root} (once) ...", flush=True)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=root.parent))
    except OSError as e:
        raise OSError(e.errno, f"cannot write into {root.parent}: {e.strerror or e}") from None
    try:
        for split, per_class, offset in (("train", train_per_class, 0), ("val", val_per_class, 1)):
            for c, name in enumerate(CLASSES):
                folder = staging / split / name
                folder.mkdir(parents=True)
                rng = np.random.default_rng([seed, offset, c])
                for i in range(per_class):
                    render(name, rng, size).save(folder / f"{name}_{i:04d}.jpg", quality=90)
        (staging / "COMPLETE").write_text(stamp)
        if root.exists():
            shutil.rmtree(root)
        os.replace(staging, root)  # a half-rendered set is never seen under root
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root
