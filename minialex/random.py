"""minialex's random numbers: one seeded generator for initialisation and dropout seeds.

`manual_seed(s)` makes a run reproducible. `get_state()` / `set_state()` give the generator's state
as plain JSON text, so a checkpoint can store it without pickle.
"""
import json

import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed):
    """Reset minialex's generator (initialisation, dropout masks) to a known state."""
    global _generator
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


def set_state(state):
    """Restore a state returned by get_state()."""
    _generator.bit_generator.state = json.loads(state)
