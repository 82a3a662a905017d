"""ma.summary(model, input_shape): what each layer of any model makes of one input.

A forward pass of zeros (no graph, dropout off) with a forward hook on every leaf module records
its output shape; the table adds each layer's parameters, forward FLOPs per example (multiply-adds
count two) and the activation memory of a batch.
"""
import numpy as np

from .errors import check_positive_int, fail
from .function import no_grad
from .tensor import Tensor


def _flops(module, x, y):
    """Forward floating-point operations per example, by what the layer computes."""
    kind, per_example = type(module).__name__, y.size // max(y.shape[0], 1)
    if kind == "Conv2d":
        return 2 * int(np.prod(module.weight.shape[1:])) * per_example       # a multiply-add per weight
    if kind == "Linear":
        return 2 * module.weight.shape[1] * per_example
    if kind == "MaxPool2d":
        k = module.kernel_size
        return (k * k if isinstance(k, int) else int(np.prod(k))) * per_example      # a comparison per pixel
    if kind == "LocalResponseNorm":
        return (module.size + 4) * per_example
    if kind == "Flatten":
        return 0
    return x.size // max(x.shape[0], 1)                                       # an elementwise op


def summary(model, input_shape, batch_size=1, device=None):
    """A table (str): layer, output shape, parameters, MFLOPs per example, activations of a batch.
    input_shape is one example's shape, e.g. (3, 227, 227)."""
    if not hasattr(model, "named_modules") or not callable(model):
        fail("summary", "model", "a Module", type(model).__name__, TypeError)
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__len__") or \
            not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in input_shape):
        fail("summary", "input_shape", "one example's shape, a tuple of sizes >= 1 such as (3, 227, 227)",
             repr(input_shape), TypeError if not hasattr(input_shape, "__len__") else ValueError)
    batch_size = check_positive_int("summary", "batch_size", batch_size)
    device = device or model.device
    rows, handles = [], []
    for name, m in model.named_modules():
        if m is not model and not m._modules:
            handles.append(m.register_forward_hook(
                lambda mod, inputs, out, name=name: rows.append((name, mod, inputs[0], out))))
    was_training = model.training
    model.eval()  # no dropout: the summary must not draw from the random generator
    try:
        with no_grad():
            model(Tensor(np.zeros((1, *map(int, input_shape)), np.float32), device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    lines = [f"{'layer':8} {'output':>16} {'params':>12} {'MFLOPs':>9} {'activations':>12}"]
    total_params = total_flops = total_bytes = 0
    for name, mod, x, y in rows:
        params = sum(p.size for p in mod.parameters())
        flops = _flops(mod, x, y)
        act = y.size * y.data.itemsize * batch_size
        total_params, total_flops, total_bytes = total_params + params, total_flops + flops, total_bytes + act
        lines.append(f"{name:8} {' x '.join(str(d) for d in y.shape[1:]):>16} {params:>12,} {flops / 1e6:>9.1f} "
                     f"{act / 2**20:>9.1f} MiB")
    lines.append(f"{'total':8} {'':>16} {total_params:>12,} {total_flops / 1e6:>9.1f} {total_bytes / 2**20:>9.1f} MiB"
                 f"   (per example; activations for a batch of {batch_size}; a train step is about 3x the forward FLOPs)")
    return "\n".join(lines)
