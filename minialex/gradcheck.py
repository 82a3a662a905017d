"""Numerical gradient checking: the analytic backward against central differences.

For a random projection r of the output (so every output element matters, with a fixed seed):
    L(inputs) = sum(r * fn(*inputs))
    analytic:  backward with grad r
    numerical: dL/dx[i] ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)     error O(eps^2)
Each element must satisfy |analytic - numerical| <= atol + rtol * |numerical|.
Use float64: in float32 the differences drown in rounding error.
"""
import warnings

import numpy as np

from . import backend
from .function import no_grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    pass


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, samples=None, seed=0):
    """True if fn's analytic gradients match central differences for every input that requires
    grad; raises GradcheckError naming the worst element otherwise. `samples` checks only that
    many randomly chosen elements per input (for large inputs such as AlexNet's weights)."""
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: inputs expected at least one Tensor with requires_grad=True, got none")
    for i in checked:
        if inputs[i].dtype != np.float64:
            warnings.warn(f"gradcheck: input {i} is {inputs[i].dtype}; use float64, central "
                          f"differences in lower precision are dominated by rounding", stacklevel=2)
    rng = np.random.default_rng(seed)
    out = fn(*inputs)
    r = backend.to_device(rng.standard_normal(out.shape), out.device, out.dtype)

    def projected_loss():
        with no_grad():
            return float((fn(*inputs).data * r).sum())

    saved = {i: inputs[i].grad for i in checked}
    for i in checked:
        inputs[i].grad = None
    if out.requires_grad:  # else no input reaches the output: every gradient is 0
        out.backward(r)
    # an input the backward never reached has gradient 0 (it does not affect the output)
    analytic = {i: np.zeros(inputs[i].shape) if inputs[i].grad is None else backend.to_numpy(inputs[i].grad)
                for i in checked}
    for i in checked:
        inputs[i].grad = saved[i]

    worst = None  # (excess over tolerance, input, element, analytic, numerical)
    for i in checked:
        data = inputs[i].data
        flat = range(data.size) if samples is None or samples >= data.size else \
            rng.choice(data.size, size=samples, replace=False)
        for f in flat:
            idx = np.unravel_index(int(f), data.shape)
            orig = data[idx].item()
            data[idx] = orig + eps
            plus = projected_loss()
            data[idx] = orig - eps
            minus = projected_loss()
            data[idx] = orig
            numerical = (plus - minus) / (2 * eps)
            a = float(analytic[i][idx])
            excess = abs(a - numerical) - (atol + rtol * abs(numerical))
            if worst is None or excess > worst[0]:
                worst = (excess, i, idx, a, numerical)
    if worst is not None and worst[0] > 0:  # None: every checked input is empty
        _, i, idx, a, numerical = worst
        raise GradcheckError(f"gradcheck: input {i} element {tuple(int(k) for k in idx)}: analytic "
                             f"{a:.10g}, numerical {numerical:.10g} (|diff| {abs(a - numerical):.3g} > "
                             f"atol {atol} + rtol {rtol} * |numerical|)")
    return True
