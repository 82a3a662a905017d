"""Stochastic gradient descent with momentum and weight decay, the paper's rule (section 5):

    v <- momentum * v - weight_decay * lr * w - lr * dL/dw
    w <- w + v

Paper: batch 128, momentum 0.9, weight decay 5e-4, lr 0.01 divided by 10 when the validation
error stops improving. With a fixed lr this equals PyTorch's SGD (v' = m v + g + wd w; w -= lr v')
with the same momentum and weight_decay; the two differ only in when an lr change takes effect.
"""
import numpy as np

from . import backend
from .function import no_grad
from .ops.sgd import SGDUpdate
from .tensor import Tensor


class SGD:
    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        self.params = list(params)
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not isinstance(value, (int, float, np.floating)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"SGD: {name} expected a number >= 0, got {value!r}")
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
            if self.velocity[i] is None:
                self.velocity[i] = backend.xp_of(p.data).zeros_like(p.data)
            with no_grad():  # updates p.data and the velocity in place (minialex/ops/sgd.py)
                SGDUpdate.apply(p.detach(), Tensor(self.velocity[i], device=p.device),
                                Tensor(p.grad, device=p.device),
                                lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def state_dict(self):
        """{"lr", "momentum", "weight_decay", "velocity.<i>"} as NumPy arrays (for ma.save)."""
        state = {"lr": np.array(self.lr), "momentum": np.array(self.momentum),
                 "weight_decay": np.array(self.weight_decay)}
        for i, v in enumerate(self.velocity):
            if v is not None:
                state[f"velocity.{i}"] = backend.to_numpy(v).copy()
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
                         else backend.to_device(state[f"velocity.{i}"], p.device, p.dtype)
                         for i, p in enumerate(self.params)]
