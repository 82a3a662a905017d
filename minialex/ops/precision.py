"""Mixed precision in the ops: which dtype each computes in.

Under `ma.autocast()` (the Trainer's precision="fp16"), the ops that multiply and sum — conv2d and
linear — take float16 copies of their float32 inputs and weights (a differentiable cast: the
float32 master weights get float32 gradients) and give float16 outputs, as a GPU's tensor cores
do; what follows them (ReLU, max-pool, dropout, LRN) stays in float16; cross-entropy casts its
logits to float32 (a softmax's exponentials and the log of a sum need its range and precision).

The reference pairs are the float16 spec: given float16 arrays, they compute in float16 where a GPU
does (ReLU, max-pool and dropout: selects and one product, exact or rounded once) and in float32
where a GPU accumulates (the products and sums of conv2d, linear and Winograd, and LRN's sum of
squares, which would overflow float16 above 256), rounding to float16 once at the end. Each pair
spells it out itself (`a = np.float32 if x.dtype == np.float16 else x.dtype`), so that a pair's
source stands alone, as the exercises hand it out.
"""
import numpy as np

from ..function import autocast_dtype
from .basic import cast


def autocast_inputs(*tensors):
    """Under autocast: the float32 tensors among `tensors` as float16 copies (None stays None)."""
    dtype = autocast_dtype()
    if dtype is None:
        return tensors
    return tuple(t if t is None or t.dtype != np.float32 else cast(t, dtype) for t in tensors)
