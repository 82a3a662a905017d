"""Per-layer training diagnostics: what a practitioner watches (Karpathy's "A Recipe for Training
Neural Networks", CS231n's notes), measured on one sampled step per epoch so they stay cheap.

For every leaf layer: the mean and standard deviation of its output; for a ReLU, the fraction of
dead units (zero for every example of the batch); for a layer with weights, the norm of the weight
gradient and log10 of the update-to-weight ratio ||dw|| / ||w|| of the SGD step (about -3 is
healthy; much higher and the steps throw the weights around, much lower and they barely move).

    diag = Diagnostics(model)
    with diag.recording():                 # hooks on for this one step (or diag.start() ... diag.stop())
        loss = F.cross_entropy(model(x), y); model.zero_grad(); loss.backward()
    diag.gradients()
    before = diag.weights(); opt.step(); stats = diag.updates(before)
"""
import contextlib
import math

import numpy as np

from . import backend

DEAD_WARNING = 0.9                   # a ReLU layer with more dead units than this is reported
RATIO_RANGE = (-5.5, -0.5)          # log10 update/weight ratios outside this are reported (far from -3)


def _norm(a):
    return float(np.linalg.norm(backend.to_numpy(a).astype(np.float64).ravel()))


class Diagnostics:
    def __init__(self, model):
        self.model = model
        self.layers = [(name, m) for name, m in model.named_modules() if m is not model and not m._modules]
        self.stats = {}
        self._handles = []

    @contextlib.contextmanager
    def recording(self):
        """Record every leaf layer's output during the forward pass inside the block."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def start(self):
        """Hooks on: every leaf layer's output is recorded until stop()."""
        self.stats = {}
        self._handles = [m.register_forward_hook(lambda mod, inp, out, name=name: self._activation(name, mod, out))
                         for name, m in self.layers]

    def stop(self):
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def recording_now(self):
        return bool(self._handles)

    def _activation(self, name, module, out):
        a = backend.to_numpy(out.data).astype(np.float64)
        entry = {"act_mean": float(a.mean()), "act_std": float(a.std())}
        if type(module).__name__ == "ReLU" and a.shape[0] > 0:
            entry["dead"] = float((a.reshape(a.shape[0], -1) == 0).all(axis=0).mean())   # zero for every example
        self.stats[name] = entry

    def gradients(self):
        """After backward: the weight gradient's norm of every layer with weights."""
        for name, m in self.layers:
            w = getattr(m, "weight", None)
            if w is not None and w.grad is not None:
                self.stats.setdefault(name, {})["grad_norm"] = _norm(w.grad)

    def weights(self):
        """Copies of the weights, taken before the optimizer step."""
        return {name: backend.to_numpy(m.weight.data).astype(np.float64).copy()
                for name, m in self.layers if getattr(m, "weight", None) is not None}

    def updates(self, before):
        """After the step: log10 ||w_after - w_before|| / ||w_before||; returns the per-layer stats."""
        for name, m in self.layers:
            if name in before:
                w = backend.to_numpy(m.weight.data).astype(np.float64)
                change, size = np.linalg.norm((w - before[name]).ravel()), np.linalg.norm(before[name].ravel())
                ratio = change / size if size > 0 else math.inf
                self.stats.setdefault(name, {})["update_log10"] = math.log10(ratio) if ratio > 0 else -math.inf
        return self.stats


def warnings_for(stats, ratios=True):
    """Plain-language warnings for dead layers and (with ratios) update ratios far from ~1e-3. In
    the first epoch the ratios mostly reflect the initialisation (fc8 starts near 0), so minialex-train
    asks for them from epoch 2 on."""
    said = []
    for name, s in stats.items():
        if s.get("dead", 0) > DEAD_WARNING:
            said.append(f"{name}: {s['dead']:.0%} of its units are dead (zero for every image of the batch): "
                        "the learning rate may be too high, or the initialisation too small")
        r = s.get("update_log10") if ratios else None
        if r is not None and math.isfinite(r) and not RATIO_RANGE[0] <= r <= RATIO_RANGE[1]:
            side = "large: the steps throw the weights around (lower the learning rate)" if r > RATIO_RANGE[1] else \
                "small: the weights barely move (raise the learning rate?)"
            said.append(f"{name}: update/weight ratio 10^{r:.1f}, far from the usual ~10^-3; {side}")
    return said


def first_loss_note(loss, classes):
    """A line comparing the loss at step 0 with ln(classes), the loss of a uniform prediction."""
    expected = math.log(classes)
    line = f"step 0: loss {loss:.3f}; predicting chance would give ln({classes}) = {expected:.3f}"
    if not 0.5 * expected <= loss <= 1.5 * expected:
        line += (" - far off: check the initialisation of the last layer (its outputs should start near 0), "
                 "the labels, and the input normalisation")
    return line
