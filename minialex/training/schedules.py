"""Learning-rate schedules: the rate of each epoch, with a state that a checkpoint keeps.

    Constant()                       the optimizer's rate every epoch
    StepLR(step, gamma=0.1)          rate * gamma ** ((epoch - 1) // step): divided by 10 every
                                     `step` epochs with the default gamma
    Plateau(patience=1, factor=0.1)  the paper's rule (section 5): times `factor` when the
                                     validation loss has not improved for `patience` epochs

The Trainer calls `start(lr)` once with the optimizer's rate (the base), `lr(epoch)` before each
epoch, and `step(record)` after each epoch's validation. `state_dict()` / `load_state_dict()`
give the state as plain JSON numbers.
"""
import math

from ..errors import check_finite, check_positive_int


class Schedule:
    def __init__(self):
        self.base = None

    def start(self, lr):
        """The base rate (the optimizer's, when the trainer is made); kept when resumed."""
        if self.base is None:
            self.base = float(lr)

    def lr(self, epoch):
        return self.base

    def step(self, record):
        """After an epoch: record is its metrics (val_loss when there is a validation loader)."""

    def state_dict(self):
        return {"base": self.base}

    def load_state_dict(self, state):
        self.base = float(state["base"]) if state.get("base") is not None else self.base

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.state_dict().items())})"


class Constant(Schedule):
    """The optimizer's learning rate, every epoch."""


class StepLR(Schedule):
    """base * gamma ** ((epoch - 1) // step)."""

    def __init__(self, step, gamma=0.1):
        super().__init__()
        self.step_size = check_positive_int("StepLR", "step", step)
        self.gamma = check_finite("StepLR", "gamma", gamma)
        if self.gamma <= 0:
            raise ValueError(f"StepLR: gamma expected a number > 0, got {gamma!r}")

    def lr(self, epoch):
        return self.base * self.gamma ** ((epoch - 1) // self.step_size)


class Plateau(Schedule):
    """The paper's rule: the rate times `factor` after `patience` epochs in which the validation
    loss (the training loss without a validation loader) did not improve by a relative 1e-3."""

    def __init__(self, patience=1, factor=0.1):
        super().__init__()
        self.patience = check_positive_int("Plateau", "patience", patience)
        self.factor = check_finite("Plateau", "factor", factor)
        if not 0 < self.factor < 1:
            raise ValueError(f"Plateau: factor expected a number in (0, 1), got {factor!r}")
        self.current, self.best, self.bad = None, math.inf, 0

    def start(self, lr):
        super().start(lr)
        if self.current is None:
            self.current = self.base

    def lr(self, epoch):
        return self.current

    def step(self, record):
        loss = record.get("val_loss", record.get("train_loss"))
        if loss < self.best * (1 - 1e-3):
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                self.current, self.bad = self.current * self.factor, 0

    def state_dict(self):
        return {"base": self.base, "lr": self.current, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.current = float(state.get("lr", self.current))
        best = state.get("best")
        self.best = math.inf if best is None else float(best)    # null: no loss seen yet
        self.bad = int(state.get("bad", self.bad))
