"""Tensor: an array, the device it lives on, and (optionally) the op that made it.

    x = Tensor(array, requires_grad=False, device="cpu")
    x.data    the array (numpy.ndarray, or cupy.ndarray on "cuda")
    x.grad    an array of x.shape once a backward pass has reached x, else None
    x._ctx    the Function that computed x, or None for a leaf (an input or a Parameter)
    x._version  how many times x.data was changed in place (see "Changes in place" below)

Floating arrays are float32 by default; float64 is kept (gradient checks run in float64).
Integer and bool arrays are kept as they are and cannot require a gradient (labels, indices);
Python numbers and lists become float32. The array is always C-contiguous (a transposed import is
copied), so that in-place updates (SGD) and the kernels see the tensor's own memory.
The arithmetic operators record basic ops (minialex/ops/basic.py), so a loss can be written by hand.

Changes in place. A backward reads arrays that its forward saw (an op's inputs, its output). If
one of them is changed between the forward and the backward, the gradient comes out of the new
values: wrong, and silently. So, as in PyTorch, each tensor counts its changes in `_version`:
assigning `x.data = a` (and `x.data += 1`, which assigns) adds one, and so do the library's own
writes into a tensor's memory (an optimizer step, load_state_dict) through `x.bump_version()`.
The engine notes the versions when an op runs and refuses a backward when one has moved
(minialex/function.py). A write INTO the array, `x.data[...] = v`, goes past the property: NumPy
cannot tell anyone. The engine also compares the array's values (all of an array of up to 4096
elements, 16 spread over a larger one), so such a write is caught on a small array and over a
whole large one; after writing single elements of a large array (or any GPU array, whose values
are not read back), call x.bump_version().
"""
import numpy as np

from . import backend


class HookHandle:
    """What register_hook / register_forward_hook return: .remove() takes the hook out again."""

    def __init__(self, hooks, fn):
        self._hooks, self._fn = hooks, fn

    def remove(self):
        if self._fn in self._hooks:
            self._hooks.remove(self._fn)


def add_hook(hooks, fn):
    """Append fn to the list `hooks`; returns its HookHandle."""
    hooks.append(fn)
    return HookHandle(hooks, fn)


def _as_array(data, device):
    """The array behind a Tensor: float32, except that float64 and float16 arrays and integer or
    bool arrays keep their dtype (Python numbers and lists always become float32). Anything that is not real
    numbers is refused: None, strings, complex, dates, objects, masked arrays (the mask would be lost)."""
    if isinstance(data, Tensor):
        data = data.data
    if data is None or isinstance(data, (str, bytes)):
        raise TypeError(f"Tensor: data expected an array, a number or a list of numbers, got {type(data).__name__}")
    if isinstance(data, np.ma.MaskedArray):
        raise TypeError("Tensor: data expected a plain array, got a masked array (its mask would be lost); "
                        "use array.filled(value) first")
    from_array = isinstance(data, np.generic) or (hasattr(data, "dtype") and not isinstance(data, (bool, int, float)))
    if not backend.is_cupy_array(data):
        data = np.asarray(data)          # numbers, lists, another library's array (torch, ...)
    if data.dtype.kind not in "biuf":
        raise TypeError(f"Tensor: data expected real numbers (bool, int or float), got dtype {data.dtype}"
                        + (" (take .real or abs() first)" if data.dtype.kind == "c" else ""))
    if from_array and (data.dtype in (np.float64, np.float16) or data.dtype.kind in "iub"):
        return backend.to_device(data, device)
    return backend.to_device(data, device, dtype=np.float32)


class Tensor:
    __array_priority__ = 1000  # numpy_scalar * tensor calls Tensor.__rmul__, not numpy's broadcast

    def __init__(self, data, requires_grad=False, device="cpu"):
        self.device = backend.check_device(device)
        self._data, self._version = _as_array(data, self.device), 0
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"Tensor: requires_grad expected a floating dtype, got {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._ctx = None
        self._hooks, self._retain = None, False

    # ----- the array, and its changes in place -----
    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, array):
        """Assigning .data counts as a change in place (`x.data += 1` assigns the same array)."""
        self._data = array
        self._version += 1

    def bump_version(self):
        """Count a change written into x.data's memory (x.data[...] = v, an optimizer step): a
        backward that needs the old values then raises instead of computing a wrong gradient."""
        self._version += 1

    # ----- array facts -----
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return int(self.data.size)

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, device={self.device!r}{grad})"

    @classmethod
    def _make(cls, data, device, requires_grad=False, ctx=None):
        """The one constructor of op outputs: `data` is already an array of `device` (no conversion)."""
        out = cls.__new__(cls)
        out.device, out._data, out.requires_grad, out.grad, out._ctx = device, data, requires_grad, None, ctx
        out._version, out._hooks, out._retain = 0, None, False
        return out

    # ----- moving and reading -----
    def to(self, device):
        """This tensor on `device`: itself when it is already there, else a leaf copy (its own
        memory, even between "cpu" and "cuda-emu", whose arrays are both NumPy) with the same
        requires_grad."""
        device = backend.check_device(device)
        if device == self.device:
            return self
        return Tensor(backend.to_device(self.data, device, copy=True), self.requires_grad, device)

    def astype(self, dtype):
        """This tensor as float16, float32 or float64, differentiable (a gradient comes back in this
        tensor's dtype): mixed precision keeps float32 master weights and computes with float16 copies."""
        return _basic.cast(self, dtype)

    def numpy(self):
        """The values as a NumPy array (a host copy when the tensor lives on a GPU)."""
        return backend.to_numpy(self.data)

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.size != 1:
            raise ValueError(f"item: expected a tensor with one element, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def detach(self):
        """The same array, cut from the graph."""
        return Tensor._make(self.data, self.device)

    def zero_grad(self):
        self.grad = None

    # ----- autograd -----
    def retain_grad(self):
        """Keep this (intermediate) tensor's gradient in .grad after backward, as leaves do."""
        self._retain = True
        return self

    def register_hook(self, fn):
        """fn(grad) runs when backward has this tensor's whole gradient (a Tensor); returning a
        Tensor or array replaces it for the rest of the pass. Returns a handle with .remove()."""
        if self._hooks is None:
            self._hooks = []
        return add_hook(self._hooks, fn)

    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) * grad into every leaf's .grad (grad defaults to 1 for a scalar).
        The graph's caches are freed as the pass goes: a second backward through it is an error
        unless this one was given retain_graph=True (then each backward adds into .grad again)."""
        _function.backward(self, grad, retain_graph)

    # ----- basic differentiable ops (minialex/ops/basic.py) -----
    def __add__(self, other):
        return _basic.add(self, other)

    def __radd__(self, other):
        return _basic.add(other, self)

    def __sub__(self, other):
        return _basic.sub(self, other)

    def __rsub__(self, other):
        return _basic.sub(other, self)

    def __mul__(self, other):
        return _basic.mul(self, other)

    def __rmul__(self, other):
        return _basic.mul(other, self)

    def __truediv__(self, other):
        return _basic.div(self, other)

    def __rtruediv__(self, other):
        return _basic.div(other, self)

    def __neg__(self):
        return _basic.neg(self)

    def __pow__(self, exponent):
        return _basic.pow(self, exponent)

    def __matmul__(self, other):
        return _basic.matmul(self, other)

    def __rmatmul__(self, other):
        return _basic.matmul(other, self)

    def __getitem__(self, index):
        return _basic.getitem(self, index)

    def sum(self, axis=None, keepdims=False):
        return _basic.sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return _basic.mean(self, axis, keepdims)

    def reshape(self, *shape):
        return _basic.reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)

    def transpose(self, *axes):
        return _basic.transpose(self, axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes or None)

    @property
    def T(self):
        return _basic.transpose(self, None)

    def exp(self):
        return _basic.exp(self)

    def log(self):
        return _basic.log(self)


# Imported last: both modules use Tensor, which is defined above.
from . import function as _function  # noqa: E402
from .ops import basic as _basic  # noqa: E402
