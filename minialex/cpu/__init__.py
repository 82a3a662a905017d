"""minialex.cpu: the fast CPU path, and the CPU's process-wide tuning.

Each op's math and its plain NumPy reference live in minialex/ops/<op>.py. The files here hold
the fast CPU pair of the op families that have one; each must give the reference's results (tests
hold them to it), by threads, reused buffers, other memory layouts:

    relu.py  lrn.py  pool.py  conv.py  sgd.py    the fast pairs
    threads.py     parallel(): a big NumPy pass split over the cores
    buffers.py     the workspace: big temporaries reused between steps, each owned by one holder at a time
    tuning.py      tune(): malloc and OpenBLAS settings for training, made only when called

Which CPU pair runs: ma.set_cpu_path("fast" | "reference") or MINIALEX_CPU_PATH (default "fast").
"""
from .threads import cpu_threads, parallel
from .tuning import tune
from .buffers import workspace

__all__ = ["tune", "parallel", "cpu_threads", "workspace"]
