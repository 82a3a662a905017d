"""Selecting by a mask in one fast pass, exactly.

NumPy's fastest way to zero the dropped elements of an array is a product with a 0/1 mask, but
inf * 0 is NaN; np.where and masked copies are exact but several times slower. Multiplying the
values' bit patterns, read as integers, by 0 or 1 is both: one vectorised pass that leaves a kept
inf or NaN as it is and makes a dropped one +0.0 (all bits 0), what the references' selects give.
"""
import numpy as np


def select(values, keep, out):
    """out = values where keep (bool) is True, +0.0 where it is False (values float32 or float64)."""
    as_int = np.dtype(f"i{values.dtype.itemsize}")
    np.multiply(values.view(as_int), keep, out=out.view(as_int))
    return out
