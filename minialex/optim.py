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
from .errors import check_finite
from .ops.sgd import sgd_update


class SGD:
    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        unique = {}
        for p in params:  # a parameter shared by two modules is one parameter, stepped once
            unique.setdefault(id(p), p)
        self.params = list(unique.values())
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if check_finite("SGD", name, value) < 0:
                raise ValueError(f"SGD: {name} expected a finite number >= 0, got {value!r}")
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
