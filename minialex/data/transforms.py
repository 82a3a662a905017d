"""Data augmentation as in the paper (section 4.1), and the test-time crops.

Training: resize the shorter side to `resize` (256 for 227x227 inputs; scaled for small inputs),
take a random `size` x `size` crop and flip it horizontally with probability 1/2 ("translations
and horizontal reflections"), then add the PCA colour noise (each can be turned off: flip=False,
lighting=False):
    each RGB pixel += [p1 p2 p3] @ (alpha * lambda),  alpha ~ N(0, 0.1^2) per image per component
where p_i, lambda_i are the eigenvectors and eigenvalues of the 3x3 covariance of RGB pixel
values over the training set (`dataset_stats`). Then subtract the training set's mean and, unlike
the paper, divide by its standard deviation (per channel), which keeps a He-initialised network's
activations near unit scale.
Validation: the centre crop. Test ("--ten-crop"): the four corner crops and the centre crop, each
also flipped; the network's softmax outputs are averaged over the ten.
Arrays here are HWC float32 in [0, 1] until `to_chw`.
"""
import numpy as np
from PIL import Image

from ..errors import check_bool, check_positive_int, fail


def resize_for(size):
    """The shorter-side resize for a `size` crop: 256 for 227 as in the paper, scaled alike."""
    return int(round(size * 256 / 227))


def resize_shorter(img, shorter):
    w, h = img.size
    scale = shorter / min(w, h)
    return img.resize((max(shorter, round(w * scale)), max(shorter, round(h * scale))), Image.BILINEAR)


def to_array(img):
    return np.asarray(img, dtype=np.float32) / 255.0             # (H, W, 3) in [0, 1]


def random_crop(a, size, rng):
    h, w = a.shape[:2]
    top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    return a[top:top + size, left:left + size]


def center_crop(a, size):
    h, w = a.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return a[top:top + size, left:left + size]


def hflip(a):
    return a[:, ::-1]


def pca_lighting(a, eigvals, eigvecs, rng, std=0.1):
    """Add eigvecs @ (alpha * eigvals) to every pixel (one alpha per image), the paper's colour noise."""
    alpha = rng.normal(0.0, std, size=3)
    return a + (eigvecs @ (alpha * eigvals)).astype(np.float32)   # broadcast over (H, W, 3)


def ten_crops(a, size):
    """(10, size, size, 3): top-left, top-right, bottom-left, bottom-right, centre, then each flipped."""
    h, w = a.shape[:2]
    crops = [a[:size, :size], a[:size, w - size:], a[h - size:, :size], a[h - size:, w - size:],
             center_crop(a, size)]
    return np.stack(crops + [hflip(c) for c in crops])


def to_chw(a, mean, std):
    """Normalise per channel and reorder (..., H, W, 3) -> (..., 3, H, W), float32."""
    a = (a - mean) / std
    return np.ascontiguousarray(np.moveaxis(a, -1, -3), dtype=np.float32)


STATS = {"mean": (3,), "std": (3,), "eigvals": (3,), "eigvecs": (3, 3)}   # what dataset_stats gives


def _check_stats(stats, lighting):
    """stats as given, once it holds a finite mean and a positive std per channel (and, for the
    colour noise, the PCA's eigvals and eigvecs): else the error naming the entry."""
    if not hasattr(stats, "keys") or not hasattr(stats, "__getitem__"):
        fail("Transform", "stats", "a dict with mean, std, eigvals, eigvecs (dataset_stats)", type(stats).__name__,
             TypeError)
    for key, shape in STATS.items():
        if key in ("eigvals", "eigvecs") and not lighting:
            continue
        value = np.asarray(stats[key]) if key in stats else None
        if value is None or value.shape != shape or value.dtype.kind not in "iuf" or not np.isfinite(value).all():
            got = "nothing" if value is None else f"dtype {value.dtype} shape {value.shape}"
            fail("Transform", f"stats['{key}']", f"finite numbers of shape {shape}", got)
    if (np.asarray(stats["std"]) <= 0).any():
        fail("Transform", "stats['std']", "standard deviations > 0", np.asarray(stats["std"]).tolist())
    return stats


class Transform:
    """The per-image pipeline for one mode: "train", "val" or "ten_crop". flip=False and
    lighting=False turn off the horizontal flips and the PCA colour noise of training, which suit
    photos but not digits, text or images whose left and right differ (many medical images)."""

    def __init__(self, size, stats, mode="train", flip=True, lighting=True):
        if mode not in ("train", "val", "ten_crop"):
            raise ValueError(f"Transform: mode expected 'train', 'val' or 'ten_crop', got {mode!r}")
        self.size = check_positive_int("Transform", "size", size)
        self.flip, self.lighting = check_bool("Transform", "flip", flip), check_bool("Transform", "lighting", lighting)
        self.stats, self.mode = _check_stats(stats, mode == "train" and self.lighting), mode
        self.resize = resize_for(size)

    def __call__(self, img, rng):
        """A PIL image -> the network's input (float32, CHW; (10, 3, S, S) for ten_crop)."""
        return self.from_array(np.asarray(resize_shorter(img, self.resize), dtype=np.uint8), rng)

    def plan(self, h, w, rng):
        """The training draws for an (h, w) image, in the order they are drawn: (top, left, flip,
        offset), offset the PCA colour shift (3,) float32 (zeros without lighting)."""
        top, left = rng.integers(0, h - self.size + 1), rng.integers(0, w - self.size + 1)
        flip = bool(rng.random() < 0.5) and self.flip   # drawn either way: the same crops with or without flips
        offset = np.zeros(3, np.float32)
        if self.lighting:
            alpha = rng.normal(0.0, 0.1, size=3)
            offset = (self.stats["eigvecs"] @ (alpha * self.stats["eigvals"])).astype(np.float32)
        return int(top), int(left), flip, offset

    def from_array(self, a, rng):
        """The same as __call__ for an image already resized to shorter side `resize`: (H, W, 3)
        uint8, e.g. from the decoded store. Cropping before the float conversion changes nothing."""
        if self.mode == "train":
            top, left, flip, offset = self.plan(a.shape[0], a.shape[1], rng)
            x = to_array(a[top:top + self.size, left:left + self.size])
            if flip:
                x = hflip(x)
            if self.lighting:
                x = x + offset                             # the paper's colour noise (pca_lighting)
        elif self.mode == "val":
            x = to_array(center_crop(a, self.size))
        else:
            x = ten_crops(to_array(a), self.size)
        return to_chw(x, self.stats["mean"], self.stats["std"])


def dataset_stats(folder, max_images=1000, side=64, seed=0):
    """Per-channel mean and std, and the PCA of RGB pixel values (eigenvalues ascending, eigenvectors
    as columns), from up to `max_images` training images resized to side x side, in [0, 1]."""
    rng = np.random.default_rng(seed)
    picks = rng.permutation(len(folder))[:max_images]
    pixels = []
    for i in picks:
        img, _ = folder.load(int(i))
        if img is not None:
            pixels.append(to_array(img.resize((side, side), Image.BILINEAR)).reshape(-1, 3))
    if not pixels:
        raise ValueError(f"dataset_stats: no readable images in {folder.root}")
    p = np.concatenate(pixels).astype(np.float64)                    # (pixels, 3)
    eigvals, eigvecs = np.linalg.eigh(np.cov(p, rowvar=False))       # 3x3 covariance of RGB
    return {"mean": p.mean(0).astype(np.float32), "std": np.maximum(p.std(0), 1e-3).astype(np.float32),
            "eigvals": np.maximum(eigvals, 0).astype(np.float32), "eigvecs": eigvecs.astype(np.float32)}
