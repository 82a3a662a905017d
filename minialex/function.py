"""The autograd engine: Function (one recorded op), no_grad, the choice of implementation, and the
backward pass.

An op is a Function subclass that names its array-level pairs:

    forward(*arrays, **hyper)  -> (y, cache)       arrays: the inputs' .data (None for an absent bias)
    backward(dy, cache, needs) -> (dx1, dx2, ...)  one gradient per input, same shape and dtype, fresh
                                                   arrays; `needs[i]` says whether input i wants one
                                                   (None where it does not). A backward written as
                                                   backward(dy, cache) is called without `needs`.

    reference  the plain NumPy pair, the spec (minialex/ops/<op>.py); `numpy` is its older name
    fast       the fast CPU pair (minialex/cpu/<op>.py), or None: the reference runs on "cpu"
    cuda       the kernels' pair (minialex/cuda_ops/<op>.py) for "cuda" and "cuda-emu", or None:
               the reference runs there too (it must then be written with the inputs' array module)

A pair is either the two functions themselves (an op of your own) or their names,
    fast = ("minialex.cpu.relu", "relu_forward", "relu_backward")      module, then attributes
which is how minialex's op files name their fast and CUDA pairs: those files import their op file
for its spec, so the op file must not import them. `resolve` imports a named pair on first use
and keeps it.

`implementation` is the one place that picks a pair: by the inputs' device, and on "cpu" by
set_cpu_path("fast" | "reference") (or MINIALEX_CPU_PATH; default "fast").

Backward (as in micrograd's engine.py, without recursion):
    1. topologically sort the graph behind the output, with an explicit stack
    2. check every node before any gradient moves: its arrays unchanged since its forward, and its
       caches not yet freed by an earlier backward (both would give a wrong gradient silently)
    3. walk it in reverse: each node turns d(out)/d(node) into d(out)/d(its inputs)
    4. gradients meeting at a tensor (it fed several ops) are added; leaves add into .grad
    5. each node's cache is freed once used (memory goes back as the pass runs), unless
       backward(retain_graph=True): only then may a second backward run through the same graph

Changes in place: a Function keeps a stamp of each input and of its output (`_stamp`): the
tensor's version (Tensor._version, bumped by x.data = a, x.data += 1, SGD.step, load_state_dict)
and its values (all of a small array, 16 spread over a large one: they catch x.data[...] = v, a
write no property can see, and cost microseconds where a full copy would cost the step's
memory). Backward refuses a node whose stamps changed, naming the op and the tensor, as
PyTorch's version counter does: an optimizer step between a forward and its backward is the
usual way to get there.
"""
import contextlib
import importlib
import inspect

import numpy as np

from . import backend
from .system import CPU_PATHS, env_choice

_grad_enabled = True
# MINIALEX_CPU_PATH, read once at import: a bad value falls back to "fast" (importing never fails
# for an environment variable; a command reports it first: system.check_environment)
_cpu_path = env_choice("MINIALEX_CPU_PATH", "fast")


def set_cpu_path(path):
    """Which pair the ops run on device "cpu": "fast" (default) or "reference" (the plain NumPy spec)."""
    global _cpu_path
    if path not in CPU_PATHS:
        raise ValueError(f"set_cpu_path: path expected 'fast' or 'reference', got {path!r}")
    _cpu_path = path


def get_cpu_path():
    return _cpu_path


@contextlib.contextmanager
def cpu_path(path):
    """with cpu_path("reference"): ... runs the block on that CPU path, then restores the previous one."""
    previous = get_cpu_path()
    set_cpu_path(path)
    try:
        yield
    finally:
        set_cpu_path(previous)


_resolved = {}  # a named pair -> its functions, imported once


def resolve(pair):
    """The functions of a pair: a named one, ("minialex.cpu.relu", "relu_forward", "relu_backward"),
    is imported on first use and kept (one name gives the function itself, not a 1-tuple); any
    other pair (functions, or None) is returned as it is."""
    if not (isinstance(pair, tuple) and pair and isinstance(pair[0], str)):
        return pair
    if pair not in _resolved:
        module = importlib.import_module(pair[0])
        functions = tuple(getattr(module, name) for name in pair[1:])
        _resolved[pair] = functions[0] if len(functions) == 1 else functions
    return _resolved[pair]


def implementation(op, device, dtype=None):
    """(pair, kind) for running `op` on `device`; kind is "cuda", "fast" or "reference". float16
    on the CPU runs the reference (the fast pairs are float32/float64 code): the reference pairs
    are the float16 spec, computing in float16 where a GPU does and in float32 where it
    accumulates (each op's docstring says which)."""
    if op.cuda is not None and backend.uses_kernels(device):
        return resolve(op.cuda), "cuda"
    if op.fast is not None and device == "cpu" and _cpu_path == "fast" and dtype != np.float16:
        return resolve(op.fast), "fast"
    if op.reference is None:
        raise TypeError(f"{op.__name__}: no reference pair: a Function names its NumPy pair as "
                        "`reference = (forward, backward)` (see minialex/ops/relu.py)")
    return resolve(op.reference), "reference"


_autocast = None   # the dtype ops compute in under autocast(), or None


@contextlib.contextmanager
def autocast(dtype="float16"):
    """Mixed precision for the block: the ops that compute products (conv2d, linear) take float32
    inputs and weights as float16 copies (a differentiable cast: the float32 master weights get
    float32 gradients), and their outputs, and what follows them, are float16; cross-entropy
    always computes in float32. dtype: "float16" (None: off)."""
    global _autocast
    if dtype is not None and np.dtype(dtype) != np.float16:
        raise ValueError(f"autocast: dtype expected 'float16' or None, got {dtype!r} (NumPy has no bfloat16)")
    previous, _autocast = _autocast, None if dtype is None else np.dtype(np.float16)
    try:
        yield
    finally:
        _autocast = previous


def autocast_dtype():
    """The dtype of autocast() now, or None."""
    return _autocast


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


_takes_needs = {}  # backward function -> whether it has a third parameter (needs)


def _wants_needs(fn):
    if fn not in _takes_needs:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        _takes_needs[fn] = len(params) >= 3
    return _takes_needs[fn]


class Function:
    reference = None  # (forward, backward): the NumPy spec
    numpy = None      # the older name of `reference`
    fast = None       # (forward, backward), or their names, for "cpu" on the fast path, or None
    cuda = None       # (forward, backward), or their names, for "cuda" and "cuda-emu", or None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.reference is None and cls.numpy is not None:
            cls.reference = cls.numpy

    def __init__(self, backward, cache, inputs, on_kernels):
        self.backward_fn = backward
        self.cache = cache
        self.inputs = inputs  # the input Tensors (None for an absent optional input)
        self.on_kernels = on_kernels
        self.stamps = [None if t is None else _stamp(t) for t in inputs]  # what the forward saw
        self.output_stamp = None  # set by apply once the output exists
        self.freed = False        # True once a backward (without retain_graph) used and freed the cache

    input_names = ()  # optional: the inputs' argument names, for error messages
    changes_dtype = False  # True for an op whose output has another dtype than its inputs (a cast)

    @classmethod
    def name(cls):
        return cls.__name__

    @classmethod
    def _input(cls, i):
        """"input i", with its argument name where the op gives one: "input 1 (weight)"."""
        return f"input {i}" + (f" ({cls.input_names[i]})" if i < len(cls.input_names) else "")

    @classmethod
    def apply(cls, *inputs, **hyper):
        """Run the op on its inputs' device and record it when a gradient is wanted."""
        device, dtype = None, None
        for i, t in enumerate(inputs):
            if t is None:
                continue
            if not isinstance(t, Tensor):
                raise TypeError(f"{cls.name()}: {cls._input(i)} expected a Tensor, got {type(t).__name__}")
            if device is None:
                device, dtype = t.device, t.dtype
            elif t.device != device:
                raise ValueError(f"{cls.name()}: {cls._input(i)} expected device {device!r} like input 0, "
                                 f"got {t.device!r}; move it with .to({device!r})")
            elif t.dtype != dtype:
                raise TypeError(f"{cls.name()}: {cls._input(i)} expected dtype {dtype} like the other "
                                f"inputs, got {t.dtype}")
        (forward, backward), kind = implementation(cls, device, dtype)
        arrays = [None if t is None else t.data for t in inputs]
        if kind == "cuda" and dtype.kind == "f" and dtype not in (np.float32, np.float16):
            raise TypeError(f"{cls.name()}: the CUDA kernels expected float32 (or float16) on device {device!r}, "
                            f"got {dtype}; use device='cpu' for float64")
        with backend.device_scope(device):  # on "cuda:N", allocate and launch on GPU N
            if kind == "cuda":  # kernels index flat memory: give them C-contiguous arrays
                arrays = [None if a is None else backend.xp_of(a).ascontiguousarray(a) for a in arrays]
            result = forward(*arrays, **hyper)
        if not isinstance(result, tuple) or len(result) != 2:
            raise TypeError(f"{cls.name()} forward ({kind}): expected to return a pair (y, cache), got "
                            f"{_describe(result)} (the contract: forward(*arrays, **hyper) -> (y, cache))")
        y, cache = result
        if isinstance(y, np.generic):  # a NumPy reduction to a scalar: keep it a 0-d array
            y = np.asarray(y)
        if not (isinstance(y, np.ndarray) or backend.is_cupy_array(y)):
            raise TypeError(f"{cls.name()} forward ({kind}): expected y to be an array, got {_describe(y)}")
        if dtype.kind == "f" and y.dtype != dtype and not cls.changes_dtype:
            raise TypeError(f"{cls.name()} forward ({kind}): output dtype {y.dtype}, expected the "
                            f"inputs' {dtype}")
        needs_grad = _grad_enabled and any(t is not None and t.requires_grad for t in inputs)
        ctx = cls(backward, cache, inputs, kind == "cuda") if needs_grad else None
        out = Tensor._make(y, device, needs_grad, ctx)
        if ctx is not None:
            ctx.output_stamp = _stamp(out)
        return out

    def check_usable(self, output):
        """RuntimeError unless a backward may run through this op: its cache not freed, its inputs
        and its output (`output`, the tensor it made) as the forward saw them."""
        if self.freed:
            raise RuntimeError(f"backward: the graph through {self.name()} was already freed by an earlier "
                               f"backward (each backward frees the caches it used); to run backward through "
                               f"a graph twice, call the first one as backward(retain_graph=True)")
        seen = [(self._input(i), t, s) for i, (t, s) in enumerate(zip(self.inputs, self.stamps)) if t is not None]
        for what, t, then in seen + [("output", output, self.output_stamp)]:
            now = _stamp(t)
            if now != then:
                how = (f"its version is {now[0]}, the forward saw {then[0]}" if now[0] != then[0] else
                       "its values differ from the forward's (a write into .data[...])")
                raise RuntimeError(f"backward: {self.name()}'s {what}, {t!r}, was changed in place after the "
                                   f"forward ({how}): the gradient would come from the new values. Change it "
                                   f"after backward (an optimizer step belongs there), or run the forward again")

    def free(self):
        """Let go of the cache: a backward without retain_graph is done with this op."""
        self.cache, self.freed = None, True

    def run_backward(self, dy):
        """The input gradients for the output gradient dy (None where an input needs none), each
        checked against the contract: one per input, the input's shape and dtype."""
        if self.on_kernels:
            dy = backend.xp_of(dy).ascontiguousarray(dy)
        if _wants_needs(self.backward_fn):
            needs = tuple(t is not None and t.requires_grad for t in self.inputs)
            grads = self.backward_fn(dy, self.cache, needs)
        else:
            grads = self.backward_fn(dy, self.cache)
        n = len(self.inputs)
        if not isinstance(grads, (tuple, list)) or len(grads) != n:
            raise TypeError(f"{self.name()} backward: expected a tuple of {n} gradient(s), one per input (None "
                            f"where an input needs none), got {_describe(grads)}; a single input still "
                            f"returns a tuple: (dx,)")
        grads = [np.asarray(g) if isinstance(g, np.generic) else g for g in grads]
        for i, (x, dx) in enumerate(zip(self.inputs, grads)):
            if x is None or dx is None or not x.requires_grad:
                continue
            if not (isinstance(dx, np.ndarray) or backend.is_cupy_array(dx)):
                raise TypeError(f"{self.name()} backward: gradient of input {i} expected an array (or None), "
                                f"got {_describe(dx)}")
            if tuple(dx.shape) != x.shape or dx.dtype != x.dtype:
                raise ValueError(f"{self.name()} backward: gradient of input {i} has shape {tuple(dx.shape)} and "
                                 f"dtype {dx.dtype}, expected the input's shape {x.shape} and dtype {x.dtype}")
        return grads


_STAMP_ALL = 4096    # an array of up to this many elements is kept whole (16 KiB of float32: a bias)
_STAMP_VALUES = 16   # of a larger one (an activation, a weight), 16 values: the first, the last, 14 between


def _stamp(t):
    """(version, values as bytes) of tensor t: what `check_usable` compares. The values are read
    only from NumPy arrays (reading a GPU array back would wait for the GPU); bytes, so that NaN
    compares equal to itself."""
    a = t.data
    if not isinstance(a, np.ndarray) or a.size == 0:
        return t._version, None
    n = a.size
    if n <= _STAMP_ALL:
        return t._version, a.tobytes()
    picks = _picks.get(n)
    if picks is None:                 # (one index array per size: a step stamps the same sizes again)
        picks = _picks[n] = np.array([k * (n - 1) // (_STAMP_VALUES - 1) for k in range(_STAMP_VALUES)], np.intp)
    return t._version, a.reshape(-1)[picks].tobytes()


_picks = {}    # array size -> the positions _stamp reads


def _describe(value):
    """A short description of a returned value, for contract errors."""
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    if isinstance(value, np.ndarray) or backend.is_cupy_array(value):
        return f"an array of shape {tuple(value.shape)}"
    return type(value).__name__


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


def backward(root, grad=None, retain_graph=False):
    """d(root)/d(leaf) . grad, added into each leaf's .grad; the caches used are freed unless
    retain_graph."""
    if not root.requires_grad:
        raise RuntimeError("backward: the tensor does not require a gradient (no input had "
                           "requires_grad=True, or it was computed under no_grad)")
    if grad is None:
        if root.size != 1:
            raise ValueError(f"backward: grad expected for a non-scalar output, got None "
                             f"(output shape {root.shape})")
        with backend.device_scope(root.device):
            grad = backend.xp_of(root.data).ones_like(root.data)
    else:
        if isinstance(grad, Tensor):
            if grad.device != root.device:
                raise ValueError(f"backward: grad expected device {root.device!r}, got {grad.device!r}")
            grad = grad.data
        grad = backend.to_device(grad, root.device, root.dtype, copy=True)  # the engine may store it as .grad
        if tuple(grad.shape) != root.shape:
            raise ValueError(f"backward: grad expected shape {root.shape}, got {tuple(grad.shape)}")

    order = _topological_order(root)
    for t in order:  # every check before any gradient is added: an error leaves every .grad as it was
        if t._ctx is not None:
            t._ctx.check_usable(t)
    grads = {id(root): grad}  # d(root)/d(t) for tensors t reached so far
    for t in reversed(order):
        g = grads.pop(id(t), None)
        if g is None:
            continue
        # on "cuda:N" the hooks, the op's backward and the sums below allocate and launch on GPU N
        # (t lives where its op's inputs live: Function.apply made it there)
        with backend.device_scope(t.device):
            for hook in t._hooks or ():  # register_hook: see (or replace) the gradient once it is complete
                changed = hook(Tensor._make(g, t.device))
                if changed is not None:
                    g = changed.data if isinstance(changed, Tensor) else changed
            if t._ctx is None or t._retain:  # a leaf, or a tensor that asked to keep its gradient
                t.grad = g if t.grad is None else t.grad + g
            if t._ctx is None:
                continue
            ctx = t._ctx
            input_grads = ctx.run_backward(g)
            if not retain_graph:
                ctx.free()
            for i, (x, dx) in enumerate(zip(ctx.inputs, input_grads)):
                if x is None or dx is None or not x.requires_grad:
                    continue
                grads[id(x)] = dx if id(x) not in grads else grads[id(x)] + dx


# Imported last, as tensor.py imports this module and ops/basic.py (whose ops subclass Function):
# whichever of the three is imported first, Function and Tensor are defined before either is used.
from .tensor import Tensor  # noqa: E402
