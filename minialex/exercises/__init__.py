"""minialex.exercises: write each op's forward and backward yourself, and have them checked.

    python -m minialex.exercises start DIR              # DIR/<op>.py for every op: the math, and stubs
    python -m minialex.exercises check relu DIR         # grade DIR/relu.py
    python -m minialex.exercises check all DIR1 DIR2 ... --json grades.json --timeout 10   # a class

Each file holds the op's math (the docstring of minialex/ops/<op>.py) and `forward`/`backward`
stubs that raise NotImplementedError. `check` runs each student's op in a child process with a time
limit (grade.py) on cases chosen to catch the usual mistakes (cases_ops.py), compares the outputs
with the reference in the grader's own process and gives a hint from where they differ
(judge.py); a file that imports the library's own implementation is flagged (scan.py). It guards
against accidents and cheap tricks, not a hostile student: their code runs with your rights.
The library's own ops are the solutions (minialex/ops/); do the exercise before reading them.
"""
from .grade import grade, grade_op
from .report import check
from .template import EXERCISES, start

__all__ = ["EXERCISES", "check", "grade", "grade_op", "start"]
