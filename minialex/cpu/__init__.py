"""minialex.cpu: the fast CPU path, and the CPU's process-wide tuning.

Each op's math and its plain NumPy reference live in minialex/ops/<op>.py. The files here hold
the fast CPU pair of the op families that have one; each must give the reference's results (tests
hold them to it), by threads, other memory layouts, fewer passes over memory:

    relu.py  lrn.py  pool.py  conv.py  dropout.py  sgd.py    the fast pairs
    threads.py     parallel(): a big NumPy pass split over the cores (cpu_threads() of them,
                   from minialex/system.py)
    masks.py       select(): zeroing by a mask in one exact pass (inf stays inf, never NaN)
    tuning.py      tune(): malloc and OpenBLAS settings for training, made only when called

Which CPU pair runs: ma.set_cpu_path("fast" | "reference") or MINIALEX_CPU_PATH (default "fast").
"""
from ..system import cpu_threads
from .threads import parallel
from .tuning import tune

__all__ = ["tune", "parallel", "cpu_threads"]
