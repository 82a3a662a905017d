"""Dynamic loss scaling for float16 training (Micikevicius et al. 2018, "Mixed Precision Training").

Gradients of a float16 network underflow: many are below float16's smallest normal (6e-5) and
vanish. Multiplying the loss by a large scale S before the backward multiplies every gradient by S
(the chain rule is linear), lifting them into float16's range; the float32 master gradients are
divided by S again before the optimizer step. Too large an S overflows instead: a gradient becomes
inf or NaN. So the scale adapts:

    start at 2^16;  a step with a non-finite gradient is skipped and S halved;
    after `every` (2000) clean steps in a row, S doubled.

    scaler = LossScaler()
    (loss * scaler.scale).backward()
    if scaler.unscale(params):        # False: an inf or NaN in a gradient: skip this step
        optimizer.step()

Its state (scale, clean steps, steps skipped) goes into a checkpoint with the trainer's.
"""
import math

from .. import backend


class LossScaler:
    def __init__(self, scale=2.0 ** 16, every=2000, factor=2.0):
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"LossScaler: scale expected a number > 0, got {scale!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"LossScaler: every expected an integer >= 1, got {every!r}")
        if not (isinstance(factor, (int, float)) and factor > 1):
            raise ValueError(f"LossScaler: factor expected a number > 1, got {factor!r}")
        self.scale, self.every, self.factor = float(scale), every, float(factor)
        self.clean, self.skipped = 0, 0

    def unscale(self, params):
        """Divide every parameter's gradient by the scale, in place; True when all are finite. A
        step that comes back False must be skipped (update() has halved the scale)."""
        checks, xp = [], None
        for p in params:
            if p.grad is None:
                continue
            xp = backend.xp_of(p.grad)
            p.grad *= p.grad.dtype.type(1.0 / self.scale)
            checks.append(xp.isfinite(p.grad).all())        # (on the gradients' device: one wait below)
        finite = bool(xp.stack(checks).all()) if checks else True
        self.update(finite)
        return finite

    def update(self, finite):
        if not finite:
            self.scale, self.clean, self.skipped = self.scale / self.factor, 0, self.skipped + 1
            return
        self.clean += 1
        if self.clean >= self.every:
            self.scale, self.clean = self.scale * self.factor, 0

    def state_dict(self):
        return {"scale": self.scale, "clean": self.clean, "skipped": self.skipped}

    def load_state_dict(self, state):
        self.scale = float(state.get("scale", self.scale))
        self.clean, self.skipped = int(state.get("clean", 0)), int(state.get("skipped", 0))

    def __repr__(self):
        return f"LossScaler(scale={self.scale:g}, clean={self.clean}, skipped={self.skipped})"

