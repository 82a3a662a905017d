"""minialex: a from-scratch deep-learning library that teaches backprop op by op and trains AlexNet.

    import minialex as ma
    from minialex import functional as F
"""
from . import backend, cuda, functional, models, nn, optim
from .function import is_grad_enabled, no_grad
from .gradcheck import GradcheckError, gradcheck
from .io import load, save
from .random import manual_seed
from .tensor import Tensor

__version__ = "0.1.0"

backend.tune_allocator()  # reuse freed memory between training steps (see its docstring)
backend.tune_blas()  # idle BLAS threads sleep, leaving the cores to minialex's own passes

__all__ = ["cuda", "Tensor", "no_grad", "is_grad_enabled", "functional", "nn", "optim", "models",
           "gradcheck", "GradcheckError", "save", "load", "manual_seed"]
