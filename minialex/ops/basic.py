"""Basic differentiable ops: what a user needs to write a loss by hand.

add, sub, mul, div, neg, pow (by a constant), exp, log, sum, mean, reshape, transpose, matmul,
indexing. Each works on any device (written with the inputs' array module `xp`), broadcasts like
NumPy, and its backward sums a gradient back over the broadcast axes (`_unbroadcast`):
if y = f(a, b) broadcast a from shape (3, 1) to (3, 4), then dL/da[i, 0] = sum_j dL/dy[i, j].

Non-Tensor operands (Python numbers, arrays) become constants of the Tensor operand's dtype.
"""
import numbers

import numpy as np

from .. import backend
from ..errors import fail
from ..function import Function
from ..tensor import Tensor


def _unbroadcast(g, shape):
    """Sum g down to `shape`: over leading axes added by broadcasting and axes that were size 1."""
    if g.shape == tuple(shape):
        return g
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))  # axes broadcasting put in front
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _tensors(op, a, b):
    """Both operands as Tensors; a constant takes the dtype and device of the Tensor operand."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{op}: expected at least one Tensor operand, got {type(a).__name__} and "
                        f"{type(b).__name__}")
    like = a if isinstance(a, Tensor) else b

    def as_tensor(v):
        if isinstance(v, Tensor):
            return v
        return Tensor(backend.to_device(backend.to_numpy(v), like.device, like.dtype), device=like.device)
    return as_tensor(a), as_tensor(b)


# ----- elementwise, two operands: forward(a, b) -> y, cache; backward(dy, cache) -> da, db -----

def _add_forward(a, b):
    return a + b, (a.shape, b.shape)


def _add_backward(dy, cache):
    a_shape, b_shape = cache
    return _unbroadcast(dy, a_shape), _unbroadcast(dy, b_shape).copy()  # copy: no two grads share memory


def _sub_forward(a, b):
    return a - b, (a.shape, b.shape)


def _sub_backward(dy, cache):
    a_shape, b_shape = cache
    return _unbroadcast(dy, a_shape), _unbroadcast(-dy, b_shape)


def _mul_forward(a, b):
    return a * b, (a, b)


def _mul_backward(dy, cache):
    a, b = cache
    return _unbroadcast(dy * b, a.shape), _unbroadcast(dy * a, b.shape)  # d(ab)/da = b, d(ab)/db = a


def _div_forward(a, b):
    return a / b, (a, b)


def _div_backward(dy, cache):
    a, b = cache
    return _unbroadcast(dy / b, a.shape), _unbroadcast(-dy * a / (b * b), b.shape)  # d(a/b)/db = -a/b^2


class Add(Function):
    input_names = ("a", "b")
    reference = (_add_forward, _add_backward)


class Sub(Function):
    input_names = ("a", "b")
    reference = (_sub_forward, _sub_backward)


class Mul(Function):
    input_names = ("a", "b")
    reference = (_mul_forward, _mul_backward)


class Div(Function):
    input_names = ("a", "b")
    reference = (_div_forward, _div_backward)


def add(a, b):
    return Add.apply(*_tensors("add", a, b))


def sub(a, b):
    return Sub.apply(*_tensors("sub", a, b))


def mul(a, b):
    return Mul.apply(*_tensors("mul", a, b))


def div(a, b):
    return Div.apply(*_tensors("div", a, b))


# ----- elementwise, one operand -----

class Neg(Function):
    input_names = ("x",)
    reference = (lambda x: (-x, None),
                 lambda dy, cache: (-dy,))


def _pow_forward(x, p):
    return x ** p, (x, p)


def _pow_backward(dy, cache):
    x, p = cache
    if p == 0:  # x^0 = 1 is flat everywhere; p x^(p-1) would be 0 * inf = NaN at x = 0
        return (backend.xp_of(dy).zeros_like(dy),)
    return (dy * p * x ** (p - 1),)  # d(x^p)/dx = p x^(p-1)


class Pow(Function):
    input_names = ("x",)
    reference = (_pow_forward, _pow_backward)


def _exp_forward(x):
    y = backend.xp_of(x).exp(x)
    return y, y


class Exp(Function):
    input_names = ("x",)
    reference = (_exp_forward,
                 lambda dy, y: (dy * y,))  # d(e^x)/dx = e^x


class Log(Function):
    input_names = ("x",)
    reference = (lambda x: (backend.xp_of(x).log(x), x),
                 lambda dy, x: (dy / x,))  # d(log x)/dx = 1/x


def neg(x):
    return Neg.apply(x)


def pow(x, exponent):
    if isinstance(exponent, (Tensor, bool)) or not isinstance(exponent, numbers.Real):
        raise TypeError(f"pow: exponent expected a constant real number, got {type(exponent).__name__}")
    # a Python number, so that it never changes x's dtype (np.float64(2) would make float32 float64)
    exponent = int(exponent) if float(exponent).is_integer() else float(exponent)
    return Pow.apply(x, p=exponent)


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


# ----- reductions and shape -----

def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_axes(op, arg, axes, ndim, given):
    """Each of `axes` an int in [-ndim, ndim), none twice: as non-negative ints."""
    if not all(_is_int(a) for a in axes):
        fail(op, arg, "an int or a tuple of ints", repr(given), TypeError)
    if not all(-ndim <= a < ndim for a in axes):
        fail(op, arg, f"values in [{-ndim}, {ndim})", repr(given))
    axes = tuple(int(a) % ndim for a in axes)
    if len(set(axes)) != len(axes):
        fail(op, arg, "each axis once", repr(given))
    return axes


def _normalise_axis(op, axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    return tuple(sorted(_check_axes(op, "axis", axes, ndim, axis)))


def _sum_forward(x, axes, keepdims):
    return x.sum(axis=axes, keepdims=keepdims), (x.shape, axes)


def _sum_backward(dy, cache):
    x_shape, axes = cache
    kept = [1 if i in axes else n for i, n in enumerate(x_shape)]  # dy with the summed axes as 1
    xp = backend.xp_of(dy)
    return (xp.broadcast_to(dy.reshape(kept), x_shape).copy(),)  # each x element fed the sum once


class Sum(Function):
    input_names = ("x",)
    reference = (_sum_forward, _sum_backward)


def sum(x, axis=None, keepdims=False):
    return Sum.apply(x, axes=_normalise_axis("sum", axis, x.ndim), keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    axes = _normalise_axis("mean", axis, x.ndim)
    count = int(np.prod([x.shape[a] for a in axes])) if axes else 1
    # the mean of nothing is NaN (as in NumPy and PyTorch), not a ZeroDivisionError
    return mul(sum(x, axes, keepdims), 1.0 / count if count else float("nan"))


def _cast_forward(x, dtype):
    return x.astype(dtype), x.dtype                             # cache: the input's dtype


def _cast_backward(dy, dtype):
    return (dy.astype(dtype),)                                  # the gradient in the input's dtype


class Cast(Function):
    """x in another floating dtype; its gradient comes back in x's (mixed precision: float16
    copies of float32 master weights, whose gradients stay float32)."""
    reference = (_cast_forward, _cast_backward)
    changes_dtype = True


def cast(x, dtype):
    """x as `dtype` (float16, float32 or float64), differentiable."""
    if np.dtype(dtype) not in (np.float16, np.float32, np.float64):
        raise TypeError(f"cast: dtype expected float16, float32 or float64, got {np.dtype(dtype)}")
    return x if x.dtype == np.dtype(dtype) else Cast.apply(x, dtype=np.dtype(dtype))


class Reshape(Function):
    input_names = ("x",)
    reference = (lambda x, shape: (x.reshape(shape), x.shape),
                 lambda dy, x_shape: (dy.reshape(x_shape),))


def reshape(x, shape):
    if not all(_is_int(n) and n >= -1 for n in shape):
        fail("reshape", "shape", "sizes that are ints >= 0, and at most one -1", repr(tuple(shape)), TypeError
             if not all(_is_int(n) for n in shape) else ValueError)
    shape = tuple(int(n) for n in shape)
    known = int(np.prod([n for n in shape if n != -1]))
    if shape.count(-1) > 1 or (-1 in shape and (known == 0 or x.size % known)) or \
            (-1 not in shape and known != x.size):
        raise ValueError(f"reshape: shape expected to hold {x.size} elements (from {x.shape}), "
                         f"got {shape}")
    return Reshape.apply(x, shape=shape)


def flatten(x):
    """(N, ...) -> (N, -1): the bridge from conv feature maps to fully connected layers."""
    if x.ndim < 2:
        raise ValueError(f"flatten: x expected at least 2 dimensions (N, ...), got shape {x.shape}")
    return reshape(x, (x.shape[0], int(np.prod(x.shape[1:]))))   # not -1: an empty batch gives (0, C*H*W)


class Transpose(Function):
    input_names = ("x",)
    reference = (lambda x, axes: (x.transpose(axes), axes),
                 lambda dy, axes: (dy.transpose(np.argsort(axes)),))  # the inverse permutation


def transpose(x, axes=None):
    axes = tuple(reversed(range(x.ndim))) if axes is None else _check_axes("transpose", "axes", tuple(axes), x.ndim,
                                                                            axes)
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"transpose: axes expected a permutation of 0..{x.ndim - 1}, got {axes}")
    return Transpose.apply(x, axes=axes)


def _matmul_forward(a, b):
    return a @ b, (a, b)


def _matmul_backward(dy, cache):
    a, b = cache  # y = a @ b: dA = dY @ B^T, dB = A^T @ dY (summed over broadcast batch axes)
    return (_unbroadcast(dy @ b.swapaxes(-1, -2), a.shape),
            _unbroadcast(a.swapaxes(-1, -2) @ dy, b.shape))


class MatMul(Function):
    input_names = ("a", "b")
    reference = (_matmul_forward, _matmul_backward)


def matmul(a, b):
    a, b = _tensors("matmul", a, b)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: operands expected shapes (..., M, K) and (..., K, N), "
                         f"got {a.shape} and {b.shape}")
    return MatMul.apply(a, b)


def _getitem_forward(x, index):
    return x[index], (x.shape, index)


def _getitem_backward(dy, cache):
    x_shape, index = cache
    dx = backend.xp_of(dy).zeros(x_shape, dtype=dy.dtype)
    backend.scatter_add(dx, index, dy)  # an element picked twice gets both gradients
    return (dx,)


class GetItem(Function):
    input_names = ("x",)
    reference = (_getitem_forward, _getitem_backward)


def getitem(x, index):
    def plain(i):
        return i.data if isinstance(i, Tensor) else i
    index = tuple(plain(i) for i in index) if isinstance(index, tuple) else plain(index)
    return GetItem.apply(x, index=index)
