"""Layers: Module (the container), Parameter (a Tensor that wants a gradient) and the layers of AlexNet.

A Module registers, in the order they are assigned, the Parameters and sub-Modules set as its
attributes; `named_parameters()` walks them as ("conv1.weight", Parameter) pairs and
`state_dict()` / `load_state_dict()` use the same names.
"""
from collections import OrderedDict
import math

import numpy as np

from collections.abc import Mapping

from . import backend, functional as F, random
from .errors import (check_at_least, check_bool, check_finite, check_pair, check_positive_int, check_probability,
                     fail)
from .tensor import Tensor, add_hook
from .ops.convolution import check_settings as check_conv_settings
from .ops.dropout import MASK_BITS, keep_threshold


class Parameter(Tensor):
    """A Tensor with requires_grad=True, registered by the Module it is assigned to."""

    def __init__(self, data, device="cpu"):
        super().__init__(data, requires_grad=True, device=device)


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_forward_hooks", [])

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call Module.__init__() before assigning {name}")
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__} defines no forward()")

    def __call__(self, *args):
        out = self.forward(*args)
        for hook in self.__dict__.get("_forward_hooks", ()):
            hook(self, args, out)
        return out

    def register_forward_hook(self, fn):
        """fn(module, inputs, output) after every forward of this module; returns a handle with .remove()."""
        return add_hook(self.__dict__.setdefault("_forward_hooks", []), fn)

    def named_modules(self, prefix=""):
        """(dotted name, module) for this module ("" for itself) and every sub-module, each once."""
        seen, stack = set(), [(prefix, self)]
        while stack:
            name, m = stack.pop(0)
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield name, m
            stack[:0] = [(f"{name}.{k}" if name else k, c) for k, c in m._modules.items()]

    def extra_repr(self):
        """The settings shown in repr, e.g. "3, 96, kernel_size=11, stride=4"."""
        return ""

    def __repr__(self):
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, m in self._modules.items():
            lines.append("  (" + name + "): " + repr(m).replace("\n", "\n  "))
        return "\n".join(lines) + "\n)"

    # ----- parameters -----
    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) pairs: own parameters first, then each sub-module's. A parameter
        shared by several modules comes once, under the first name it is reached by (as in PyTorch),
        so an optimizer steps it once and a state_dict holds it once."""
        seen = set()
        for name, p in self._named_parameters(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _named_parameters(self, prefix):
        for name, p in self._parameters.items():
            yield prefix + name, p
        for name, m in self._modules.items():
            yield from m._named_parameters(prefix + name + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def state_dict(self):
        """An ordered {name: NumPy array} copy of every parameter."""
        return OrderedDict((name, p.numpy().copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict):
        """Copy arrays (or Tensors) into the parameters, keeping their device and dtype. Strict: a
        missing, unexpected or mis-shaped key, or an array that is not real floating point, is an
        error that names it, raised before anything is copied."""
        if not isinstance(state_dict, Mapping):
            fail("load_state_dict", "state_dict", "a mapping {name: array} (model.state_dict(), ma.load(path))",
                 type(state_dict).__name__, TypeError)
        state_dict = {k: v.data if isinstance(v, Tensor) else v for k, v in state_dict.items()}
        own = OrderedDict(self.named_parameters())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if missing or unexpected:
            raise KeyError(f"load_state_dict: {type(self).__name__} expected the keys of its "
                           f"state_dict(); missing {missing}, unexpected {unexpected}")
        for name, p in own.items():
            value = state_dict[name]
            shape, dtype = tuple(np.shape(value)), getattr(value, "dtype", np.asarray(value).dtype)
            if shape != p.shape:
                raise ValueError(f"load_state_dict: {name} expected shape {p.shape}, got {shape}")
            if np.dtype(dtype).kind != "f":
                raise TypeError(f"load_state_dict: {name} expected a floating-point array, got dtype {dtype}")
        for name, p in own.items():
            with backend.device_scope(p.device):  # the in-place copy runs on the parameter's GPU
                p.data[...] = backend.to_device(backend.to_numpy(state_dict[name]), p.device, p.dtype)
            p.bump_version()

    # ----- mode, device, dtype -----
    def modules(self):
        """This module and every sub-module, each once."""
        seen, stack = set(), [self]
        while stack:
            m = stack.pop(0)
            if id(m) not in seen:
                seen.add(id(m))
                yield m
                stack[:0] = list(m._modules.values())

    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def to(self, device=None, dtype=None):
        """Move (and/or cast, to float32 or float64) every parameter in place; returns self."""
        device = None if device is None else backend.check_device(device)
        if dtype is not None and np.dtype(dtype) not in (np.float32, np.float64, np.float16):
            raise TypeError(f"{type(self).__name__}.to: dtype expected float32 or float64 (parameters are "
                            f"trained by gradients), or float16 (for inference: to train in float16 keep float32 "
                            f"master weights under ma.autocast()), got {np.dtype(dtype)}")
        for p in self.parameters():
            target = device or p.device
            moved = backend.to_device(p.data, target, dtype or p.dtype)
            if moved is not p.data:  # assigning counts as a change (Tensor._version): only when one happened
                p.data = moved
            p.device = target
            p.grad = None
        return self

    def double(self):
        """float64 parameters (for gradient checks)."""
        return self.to(dtype=np.float64)

    @property
    def device(self):
        params = self.parameters()
        return params[0].device if params else "cpu"


def _check_weight_std(op, weight_std):
    """None (He's std) or a finite number >= 0."""
    return None if weight_std is None else check_at_least(op, "weight_std", weight_std, 0)


def he_std(fan_in):
    """He et al. 2015: weights N(0, 2/fan_in) keep the activations' scale through ReLU layers."""
    return math.sqrt(2.0 / fan_in)


def fan_in(weight_shape):
    """Inputs feeding one output: in_features, or C/groups * KH * KW."""
    return int(np.prod(weight_shape[1:]))


def normal(shape, std):
    """N(0, std^2) float32 weights from minialex's generator (ma.manual_seed)."""
    return random.generator().standard_normal(shape, dtype=np.float32) * np.float32(std)


class Conv2d(Module):
    """Weights N(0, weight_std^2), He's std (he_std) when not given; bias 0."""

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, padding=0, groups=1, bias=True, *, weight_std=None,
                 algorithm="auto"):
        super().__init__()
        in_ch, out_ch = check_positive_int("Conv2d", "in_ch", in_ch), check_positive_int("Conv2d", "out_ch", out_ch)
        kh, kw = check_pair("Conv2d", "kernel_size", kernel_size)
        bias, weight_std = check_bool("Conv2d", "bias", bias), _check_weight_std("Conv2d", weight_std)
        check_conv_settings("Conv2d", in_ch, out_ch, stride, padding, groups, algorithm)  # F.conv2d's checks
        self.algorithm = algorithm  # F.conv2d's: "auto" takes Winograd where it pays
        self.stride, self.padding, self.groups = stride, padding, groups
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, (kh, kw)
        shape = (out_ch, in_ch // groups, kh, kw)
        self.weight = Parameter(normal(shape, he_std(fan_in(shape)) if weight_std is None else weight_std))
        self.bias = Parameter(np.zeros(out_ch, np.float32)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.groups, self.algorithm)

    def extra_repr(self):
        k = self.kernel_size[0] if self.kernel_size[0] == self.kernel_size[1] else self.kernel_size
        return (f"{self.in_ch}, {self.out_ch}, kernel_size={k}, stride={self.stride}, padding={self.padding}"
                + (f", groups={self.groups}" if self.groups != 1 else "") + (", bias=False" if self.bias is None else "")
                + (f", algorithm={self.algorithm!r}" if self.algorithm != "auto" else ""))


class Linear(Module):
    """Weights N(0, weight_std^2), He's std (he_std) when not given; bias 0."""

    def __init__(self, in_f, out_f, bias=True, *, weight_std=None):
        super().__init__()
        in_f, out_f = check_positive_int("Linear", "in_f", in_f), check_positive_int("Linear", "out_f", out_f)
        bias, weight_std = check_bool("Linear", "bias", bias), _check_weight_std("Linear", weight_std)
        self.in_f, self.out_f = in_f, out_f
        self.weight = Parameter(normal((out_f, in_f), he_std(in_f) if weight_std is None else weight_std))
        self.bias = Parameter(np.zeros(out_f, np.float32)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.in_f}, {self.out_f}" + (", bias=False" if self.bias is None else "")


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class LocalResponseNorm(Module):
    """The paper's LRN; alpha is NOT divided by size (PyTorch's alpha = size * ours)."""

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=2.0):
        super().__init__()
        op = "LocalResponseNorm"                              # F.local_response_norm's checks, when built
        size, beta = check_positive_int(op, "size", size), check_finite(op, "beta", beta)
        alpha = check_at_least(op, "alpha", alpha, 0)
        if check_finite(op, "k", k) <= 0:
            fail(op, "k", "a number > 0 (s = k + alpha*sum must stay positive)", repr(k))
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self):
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class MaxPool2d(Module):
    def __init__(self, kernel_size=3, stride=2, padding=0):
        super().__init__()
        op = "MaxPool2d"                                      # F.max_pool2d's checks, when built
        kernel, _ = check_pair(op, "kernel_size", kernel_size), check_pair(op, "stride", stride)
        pads = check_pair(op, "padding", padding, minimum=0)
        if pads[0] * 2 > kernel[0] or pads[1] * 2 > kernel[1]:
            fail(op, "padding", f"at most half the kernel {kernel}", repr(padding))
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}" + (f", padding={self.padding}" if self.padding else "")


class Dropout(Module):
    def __init__(self, p=0.5):
        super().__init__()
        if keep_threshold(check_probability("Dropout", "p", p)) >= 1 << MASK_BITS:   # F.dropout's checks
            fail("Dropout", "p", f"a probability below 1 - 2^-{MASK_BITS + 1} (this p would drop every element)",
                 repr(p))
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class Flatten(Module):
    def forward(self, x):
        return F.flatten(x)


class Sequential(Module):
    """Layers applied in order; their parameters are named "0.weight", "1.weight", ..."""

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                what = f"the class {layer.__name__} (call it: {layer.__name__}())" if isinstance(layer, type) else \
                    type(layer).__name__
                fail("Sequential", f"layer {i}", "a Module", what, TypeError)
            setattr(self, str(i), layer)

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x
