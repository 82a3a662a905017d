"""Stochastic gradient descent with momentum and weight decay, the paper's rule (section 5):

    v <- momentum * v - weight_decay * lr * w - lr * dL/dw
    w <- w + v

Paper: batch 128, momentum 0.9, weight decay 5e-4, lr 0.01 divided by 10 when the validation
error stops improving. With a fixed lr this equals PyTorch's SGD (v' = m v + g + wd w; w -= lr v')
with the same momentum and weight_decay; the two differ only in when an lr change takes effect.
The update itself is minialex/ops/sgd.py (with its fast CPU and CUDA versions).
"""
import numpy as np

from . import backend
from .errors import check_at_least, check_finite, fail
from .ops.sgd import sgd_update
from .tensor import Tensor


def _parameters(params):
    """The distinct Tensors of `params` (a parameter shared by two modules is one parameter,
    stepped once), each a floating Tensor that wants a gradient; at least one."""
    if isinstance(params, Tensor) or hasattr(params, "parameters") or isinstance(params, (str, bytes, dict)):
        hint = " (give model.parameters())" if hasattr(params, "parameters") else " (give a list of them)"
        fail("SGD", "params", "an iterable of Parameters" + hint, type(params).__name__, TypeError)
    try:
        given = list(params)
    except TypeError:
        fail("SGD", "params", "an iterable of Parameters", type(params).__name__, TypeError)
    unique = {}
    for i, p in enumerate(given):
        if not isinstance(p, Tensor) or not p.requires_grad:
            what = type(p).__name__ if not isinstance(p, Tensor) else "a Tensor with requires_grad=False"
            fail("SGD", f"params[{i}]", "a Parameter (a Tensor with requires_grad=True)", what, TypeError)
        unique.setdefault(id(p), p)
    if not unique:
        fail("SGD", "params", "at least one Parameter", "none (an empty list: does the model have parameters?)")
    return list(unique.values())


class SGD:
    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        self.params = _parameters(params)
        lr, weight_decay = check_at_least("SGD", "lr", lr, 0), check_at_least("SGD", "weight_decay", weight_decay, 0)
        if not 0 <= check_finite("SGD", "momentum", momentum) < 1:
            fail("SGD", "momentum", "a number in [0, 1) (v keeps this part of itself each step)", repr(momentum))
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.velocity = [None] * len(self.params)  # v per parameter, made at its first step

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        """One update of every parameter that has a gradient."""
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            if tuple(p.grad.shape) != p.shape:
                raise ValueError(f"SGD.step: parameter {i} has shape {p.shape}, its .grad {tuple(p.grad.shape)}")
            with backend.device_scope(p.device):  # on "cuda:N": v made, and the update launched, on GPU N
                xp = backend.xp_of(p.data)
                if not p.data.flags.c_contiguous:  # updated in place: it must be its own flat memory
                    p.data = xp.ascontiguousarray(p.data)
                if self.velocity[i] is None:
                    self.velocity[i] = xp.zeros_like(p.data)
                grad = backend.to_device(p.grad, p.device, p.dtype)   # C-contiguous, the parameter's dtype
                sgd_update(p.data, self.velocity[i], grad, self.lr, self.momentum, self.weight_decay, p.device)
                p.bump_version()   # written in place: a graph made before this step cannot run backward

    def state_dict(self):
        """{"lr", "momentum", "weight_decay", "velocity.<i>"} as NumPy arrays (for ma.save); a
        parameter not stepped yet has velocity zeros (what its first step starts from), so every
        parameter's velocity is in it."""
        state = {"lr": np.array(self.lr), "momentum": np.array(self.momentum),
                 "weight_decay": np.array(self.weight_decay)}
        for i, (p, v) in enumerate(zip(self.params, self.velocity)):
            state[f"velocity.{i}"] = np.zeros(p.shape, p.dtype) if v is None else backend.to_numpy(v).copy()
        return state

    def load_state_dict(self, state):
        for i, p in enumerate(self.params):
            v = state.get(f"velocity.{i}")
            if v is not None and tuple(np.shape(v)) != p.shape:
                raise ValueError(f"SGD.load_state_dict: velocity.{i} expected shape {p.shape}, "
                                 f"got {tuple(np.shape(v))}")
        self.lr, self.momentum = float(state["lr"]), float(state["momentum"])
        self.weight_decay = float(state["weight_decay"])
        self.velocity = [None if state.get(f"velocity.{i}") is None
                         else backend.to_device(state[f"velocity.{i}"], p.device, p.dtype, copy=True)
                         for i, p in enumerate(self.params)]
