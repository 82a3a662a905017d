"""minialex.data: ImageNet-style folders, the paper's augmentation, a threaded loader, and a
built-in synthetic dataset."""
from .folder import IMAGE_EXTENSIONS, ImageFolder
from .loader import DataLoader
from .synthetic import make_synthetic
from .transforms import Transform, dataset_stats, resize_for

__all__ = ["ImageFolder", "IMAGE_EXTENSIONS", "DataLoader", "Transform", "dataset_stats", "resize_for",
           "make_synthetic"]
