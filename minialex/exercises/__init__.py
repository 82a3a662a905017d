"""minialex.exercises: write each op's forward and backward yourself, and have them checked.

    python -m minialex.exercises start DIR          # DIR/<op>.py for every op: the math, and stubs
    python -m minialex.exercises check relu DIR     # grade DIR/relu.py
    python -m minialex.exercises check all DIR

Each file holds the op's math (the docstring of minialex/ops/<op>.py) and `forward`/`backward`
stubs that raise NotImplementedError. `check` runs your pair through the same checks the library's
tests use: forward values against the reference, float64 gradient checks, and the edge cases that
catch the usual mistakes, and prints a hint for every failure. The library's own ops are the
solutions (minialex/ops/); do the exercise before reading them.
"""
from .checks import EXERCISES, check, start

__all__ = ["EXERCISES", "check", "start"]
