"""Error messages in one shape: the op, the argument, what was expected, what came."""
import math
import numbers

import numpy as np


def fail(op, arg, expected, got, kind=ValueError):
    """Raise `kind` as "op: arg expected EXPECTED, got GOT"."""
    raise kind(f"{op}: {arg} expected {expected}, got {got}")


def check_positive_int(op, arg, value):
    """An int >= 1 (stride, kernel size, LRN size, groups)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        fail(op, arg, "an integer >= 1", repr(value), TypeError)
    if int(value) < 1:
        fail(op, arg, "an integer >= 1", repr(value))
    return int(value)


def check_pair(op, arg, value, minimum=1):
    """An int or a 2-tuple of ints, each >= minimum, as (h, w)."""
    if isinstance(value, (tuple, list)) or getattr(value, "ndim", 0) == 1:   # a NumPy pair too
        values = tuple(value)
    elif getattr(value, "ndim", 0) > 1:
        fail(op, arg, "an int or a pair of ints", f"an array of shape {value.shape}", TypeError)
    else:
        values = (value, value)
    if len(values) != 2:
        fail(op, arg, "an int or a pair of ints", repr(value), TypeError)
    for v in values:
        if isinstance(v, bool) or not hasattr(v, "__index__"):
            fail(op, arg, "an int or a pair of ints", repr(value), TypeError)
        if int(v) < minimum:
            fail(op, arg, f"integers >= {minimum}", repr(value))
    return int(values[0]), int(values[1])


def check_finite(op, arg, value):
    """A finite real number (not a bool), as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(op, arg, "a real number", repr(value), TypeError)
    if not math.isfinite(value):
        fail(op, arg, "a finite number", repr(value))
    return float(value)


def check_at_least(op, arg, value, low, above=False):
    """A finite real number >= low (> low with above=True), as a float."""
    number = check_finite(op, arg, value)
    if number < low or (above and number == low):
        fail(op, arg, f"a finite number {'>' if above else '>='} {low}", repr(value))
    return number


def check_probability(op, arg, value):
    """A probability p in [0, 1) (dropout's rate: 1 would drop everything), as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        fail(op, arg, "a probability in [0, 1)", repr(value))
    return float(value)


def check_bool(op, arg, value):
    """True or False (NumPy's bool too): a flag such as bias=, not a number or a string that happens
    to be true."""
    if not isinstance(value, (bool, np.bool_)):
        fail(op, arg, "True or False", repr(value), TypeError)
    return bool(value)
