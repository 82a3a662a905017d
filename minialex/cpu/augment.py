"""The batch augmentation, fast CPU version: equal bit for bit to the reference
(minialex/data/augment.py, augment_batch), with no float32 temporaries: the flipped crops are
mirrored in place as uint8, then each channel goes straight into the NCHW output with in-place
operations, the images split over the cores."""
import numpy as np

from .threads import parallel


def augment_batch(crops, flips, offsets, mean, std):
    """crops (N, S, S, 3) uint8 (flipped images are mirrored in place), flips (N,) bool, offsets
    (N, 3) float32 -> (N, 3, S, S) float32."""
    n, s = crops.shape[0], crops.shape[1]
    out = np.empty((n, 3, s, s), np.float32)
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

    def part(lo, hi):
        for k in range(lo, hi):
            if flips[k]:
                crops[k] = crops[k, :, ::-1].copy()
        for c in range(3):
            o = out[lo:hi, c]                                          # (hi-lo, S, S), contiguous
            np.divide(crops[lo:hi, :, :, c], np.float32(255), out=o)   # x = crop / 255
            o += offsets[lo:hi, c, None, None]                         # + the colour shift
            o -= mean[c]                                               # (x - mean) / std
            o /= std[c]
    parallel(part, n, crops.size * 4)
    return out
