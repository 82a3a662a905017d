"""The last steps of the training and validation transforms, for a whole batch of uint8 crops:

    x = crop / 255                     (float32, HWC, in [0, 1])
    x = x[:, ::-1]                     where the image is flipped
    x = x + offset                     the PCA colour shift of the image (zeros without lighting)
    x = (x - mean) / std               per channel, the training set's statistics
    out = x as (3, S, S)               NCHW for the network

`augment_batch` is the NumPy reference: per image it equals Transform.from_array on the same crop
and draws, bit for bit (the same float32 operations in the same order). kernels/augment.cu does
the same on a GPU from the uint8 crops (DataLoader(device=...)), so the host copies one byte per
channel instead of four.
"""
import numpy as np


def augment_batch(crops, flips, offsets, mean, std):
    """crops (N, S, S, 3) uint8, flips (N,) bool, offsets (N, 3) float32 -> (N, 3, S, S) float32."""
    x = crops.astype(np.float32) / 255.0                              # (N, S, S, 3)
    x = np.where(flips[:, None, None, None], x[:, :, ::-1], x)         # mirror the flipped images
    x = x + offsets[:, None, None, :].astype(np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)
