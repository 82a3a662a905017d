"""minialex's random numbers: one seeded generator for initialisation and dropout seeds, and the
sample offset of this process.

`manual_seed(s)` makes a run reproducible. `get_state()` / `set_state()` give the generator's state
as plain JSON text, so a checkpoint can store it without pickle.

`sample_offset()` is the global index of this process's first sample in the current batch (0 in a
single process; r * B for rank r of a data-parallel run with B samples per process). Counter-based
ops (dropout) key their randomness by the global sample index, so N data-parallel processes, each
holding a slice of the batch, reproduce one process with the whole batch.
"""
import contextlib
import json

import numpy as np

_generator = np.random.default_rng(0)
_sample_offset = 0


def manual_seed(seed):
    """Reset minialex's generator (initialisation, dropout masks) to a known state; seed an int >= 0."""
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed expected an integer >= 0, got {seed!r}")
    _generator = np.random.default_rng(int(seed))


def generator():
    """The numpy Generator behind minialex's randomness."""
    return _generator


def next_seed():
    """A fresh 31-bit seed for a counter-based op (dropout), drawn from the generator."""
    return int(_generator.integers(0, 2**31 - 1))


def get_state():
    """The generator's state as a JSON string."""
    return json.dumps(_generator.bit_generator.state)


def check_state(state):
    """The parsed state, or ValueError when `state` is not the JSON of a generator state."""
    try:
        parsed = json.loads(state)
        probe = np.random.default_rng()
        probe.bit_generator.state = parsed         # validates every field
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as e:
        raise ValueError(f"expected the JSON of a generator state, got {str(state)[:60]!r} ({str(e)[:80]})") from None
    return parsed


def set_state(state):
    """Restore a state returned by get_state(); ValueError (before any change) when it is not one."""
    try:
        parsed = check_state(state)
    except ValueError as e:
        raise ValueError(f"random.set_state: state {e}") from None
    _generator.bit_generator.state = parsed


def set_sample_offset(k):
    """Set the global index of this process's first sample in the current batch (an int >= 0):
    counter-based ops (dropout) then key sample n of the local batch as global sample k + n."""
    global _sample_offset
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"set_sample_offset: k expected an integer >= 0, got {k!r}")
    _sample_offset = int(k)


def sample_offset():
    """The global index of this process's first sample in the current batch (default 0)."""
    return _sample_offset


@contextlib.contextmanager
def sample_offset_scope(k):
    """with sample_offset_scope(k): ... runs the block with sample offset k, then restores the previous one."""
    previous = sample_offset()
    set_sample_offset(k)
    try:
        yield
    finally:
        set_sample_offset(previous)
