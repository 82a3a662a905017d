"""minialex: a from-scratch deep-learning library that teaches backprop op by op and trains AlexNet.

    import minialex as ma
    from minialex import functional as F
    from minialex.training import Trainer, Checkpoint       # the training loop for any model

Importing minialex changes nothing outside minialex; ma.cpu.tune() applies the process-wide CPU
settings that training benefits from (see minialex/cpu/tuning.py).
"""
from . import functional
from . import backend, cpu, cuda, models, nn, onnx, optim, training
from .function import autocast, cpu_path, get_cpu_path, is_grad_enabled, no_grad, set_cpu_path
from .gradcheck import GradcheckError, GradcheckReport, check_parity, gradcheck
from .graph import draw_graph
from .io import load, save
from .prediction import predict
from .random import manual_seed
from .summary import summary
from .tensor import Tensor

__version__ = "0.1.0"

__all__ = ["cuda", "cpu", "Tensor", "no_grad", "is_grad_enabled", "functional", "nn", "optim", "models",
           "gradcheck", "GradcheckError", "save", "load", "manual_seed", "set_cpu_path", "get_cpu_path",
           "cpu_path", "summary", "draw_graph", "GradcheckReport", "check_parity", "training", "predict", "onnx", "autocast"]
