"""The autograd engine: Function (one recorded op), no_grad, and the backward pass.

An op is a Function subclass that names its array-level pair(s):

    forward(*arrays, **hyper) -> (y, cache)      arrays: the inputs' .data (None for an absent bias)
    backward(dy, cache)       -> (dx1, dx2, ...) one gradient per input, same shape, fresh arrays;
                                                 None where an input needs none

`numpy` is the pair for device "cpu"; `cuda` the pair for "cuda" and "cuda-emu" (our kernels).
Ops without a `cuda` pair are written against the inputs' array module and run on every device.
This file's `Function.apply` is the one place that picks a pair by device.

Backward (as in micrograd's engine.py, without recursion):
    1. topologically sort the graph behind the output, with an explicit stack
    2. walk it in reverse: each node turns d(out)/d(node) into d(out)/d(its inputs)
    3. gradients meeting at a tensor (it fed several ops) are added; leaves add into .grad
"""
import contextlib

import numpy as np

from . import backend
from .tensor import Tensor

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Inside this block ops record nothing: no graph, no caches kept for backward."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled():
    return _grad_enabled


class Function:
    numpy = None  # (forward, backward) for device "cpu"
    cuda = None   # (forward, backward) for "cuda" and "cuda-emu"; None: `numpy` runs everywhere

    def __init__(self, backward, cache, inputs):
        self.backward_fn = backward
        self.cache = cache
        self.inputs = inputs  # the input Tensors (None for an absent optional input)

    @classmethod
    def name(cls):
        return cls.__name__

    @classmethod
    def apply(cls, *inputs, **hyper):
        """Run the op on its inputs' device and record it when a gradient is wanted."""
        tensors = [t for t in inputs if t is not None]
        device, dtype = tensors[0].device, None
        for i, t in enumerate(inputs):
            if t is None:
                continue
            if not isinstance(t, Tensor):
                raise TypeError(f"{cls.name()}: input {i} expected a Tensor, got {type(t).__name__}")
            if t.device != device:
                raise ValueError(f"{cls.name()}: input {i} expected device {device!r} like input 0, "
                                 f"got {t.device!r}; move it with .to({device!r})")
            if t.dtype.kind == "f":
                if dtype is None:
                    dtype = t.dtype
                elif t.dtype != dtype:
                    raise TypeError(f"{cls.name()}: input {i} expected dtype {dtype} like the other "
                                    f"inputs, got {t.dtype}")
        pair = cls.cuda if cls.cuda is not None and backend.uses_kernels(device) else cls.numpy
        if pair is cls.cuda and dtype is not None and dtype != np.float32:
            raise TypeError(f"{cls.name()}: the CUDA kernels expected float32 on device {device!r}, "
                            f"got {dtype}; use device='cpu' for float64")
        forward, backward = pair
        arrays = [None if t is None else t.data for t in inputs]
        if pair is cls.cuda:  # kernels index flat memory: give them C-contiguous arrays
            arrays = [None if a is None else backend.xp_of(a).ascontiguousarray(a) for a in arrays]
            backward = _contiguous_dy(backward)
        y, cache = forward(*arrays, **hyper)
        needs_grad = _grad_enabled and any(t.requires_grad for t in tensors)
        out = Tensor.__new__(Tensor)
        out.device, out.data, out.requires_grad, out.grad, out._ctx = device, y, needs_grad, None, None
        if needs_grad:
            out._ctx = cls(backward, cache, inputs)
        return out


def _contiguous_dy(backward):
    def wrapped(dy, cache):
        return backward(backend.xp_of(dy).ascontiguousarray(dy), cache)
    return wrapped


def _topological_order(root):
    """Tensors behind `root`, every tensor after the inputs of the op that made it."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        t, inputs_done = stack.pop()
        if inputs_done:  # all its inputs are already in `order`
            order.append(t)
            continue
        if id(t) in visited:
            continue
        visited.add(id(t))
        stack.append((t, True))
        if t._ctx is not None:
            for parent in t._ctx.inputs:
                if parent is not None and parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    return order


def backward(root, grad=None):
    """d(root)/d(leaf) . grad, added into each leaf's .grad."""
    if not root.requires_grad:
        raise RuntimeError("backward: the tensor does not require a gradient (no input had "
                           "requires_grad=True, or it was computed under no_grad)")
    if grad is None:
        if root.size != 1:
            raise ValueError(f"backward: grad expected for a non-scalar output, got None "
                             f"(output shape {root.shape})")
        grad = backend.xp_of(root.data).ones_like(root.data)
    else:
        grad = grad.data if isinstance(grad, Tensor) else backend.to_device(grad, root.device, root.dtype)
        if tuple(grad.shape) != root.shape:
            raise ValueError(f"backward: grad expected shape {root.shape}, got {tuple(grad.shape)}")
        grad = grad.copy()  # the engine may store it as a leaf's .grad

    grads = {id(root): grad}  # d(root)/d(t) for tensors t reached so far
    for t in reversed(_topological_order(root)):
        g = grads.pop(id(t), None)
        if g is None:
            continue
        if t._ctx is None:  # a leaf: keep the gradient
            t.grad = g if t.grad is None else t.grad + g
            continue
        ctx = t._ctx
        input_grads = ctx.backward_fn(g, ctx.cache)
        for i, (x, dx) in enumerate(zip(ctx.inputs, input_grads)):
            if x is None or dx is None or not x.requires_grad:
                continue
            if tuple(dx.shape) != x.shape:
                raise AssertionError(f"{ctx.name()} backward: gradient of input {i} has shape "
                                     f"{tuple(dx.shape)}, expected the input's shape {x.shape}")
            grads[id(x)] = dx if id(x) not in grads else grads[id(x)] + dx
