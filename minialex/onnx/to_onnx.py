"""export(model, path, input_shape): a minialex model as an ONNX file (opset 13), for inference.

How the graph is found: the model runs once on zeros (eval mode, no graph recorded) with a forward
hook on every leaf module, which records the layers in the order the forward calls them. The
forward must be a chain: each layer's input is the previous layer's output (the first takes the
model's input, the last gives the model's output); anything between two layers that is not a
layer (an F.relu, an addition, a reshape) breaks the chain and is an error naming both layers.
Any model built of the layers below works this way, whatever its forward looks like: AlexNet
(whose forward places LRN before or after pooling), a Sequential, Sequentials inside a Module.

    minialex layer                   ONNX node (opset 13)
    Conv2d(groups=g)                 Conv, group=g, pads [ph, pw, ph, pw], W (O, C/g, KH, KW) as is
    ReLU                             Relu
    LocalResponseNorm(size, alpha,   LRN size, alpha = alpha * size, beta, bias = k  (ONNX, like
      beta, k)                         Caffe and PyTorch, divides alpha by size; minialex does not)
    MaxPool2d(k, s, padding)         MaxPool, ceil_mode=0 (floor sizes), pads never win (as -inf)
    MaxPool2dPadded (ONNX imports)   MaxPool with its four pads
    Dropout(p)                       Dropout(x, ratio=p) without training_mode: identity
    Flatten                          Flatten, axis=1 (C-order after NCHW, as F.flatten)
    Linear                           Gemm, transB=1: y = x W^T + b with W (out, in) as is

Initializers carry the model's parameter names (conv1.weight, ..., fc8.bias; Dropout's ratio as
<layer>.ratio); nodes and their outputs carry the layer names, the last output is "output", the
input "input". Values are float32 (a float64 model is cast).
"""
import importlib.metadata
import os

import numpy as np

from .. import nn
from ..errors import check_pair, fail
from ..function import no_grad
from ..tensor import Tensor
from .pad import MaxPool2dPadded

OPSET = 13   # Dropout's ratio as an input (12), Softmax along one axis (13); every op here is 13's


def require_onnx(what):
    """The onnx package, imported on first use (importing minialex never needs it)."""
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401  (a submodule: imported for its attribute)
    except ImportError as e:
        raise ImportError(f'{what} needs the onnx package: pip install "minialex[onnx]" '
                          f'(or pip install onnx)') from e
    return onnx


def export(model, path, input_shape):
    """Write `model` (in eval mode: dropout off) to the ONNX file `path`; returns the ModelProto.

    input_shape: one example's (C, H, W), as ma.summary takes it, for a graph whose batch size is
    free ("N"); or (N, C, H, W) for a fixed batch. The file passes onnx.checker's full check."""
    onnx = require_onnx("minialex.onnx.export")
    if not isinstance(model, nn.Module):
        fail("minialex.onnx.export", "model", "a minialex Module", type(model).__name__, TypeError)
    shape = _check_input_shape(input_shape)
    calls, y_shape = trace(model, (1,) + shape[1:] if shape[0] == "N" else shape)
    names = {id(p): name for name, p in model.named_parameters()}
    nodes, weights, value = [], {}, "input"
    for i, (name, module) in enumerate(calls):
        out = "output" if i == len(calls) - 1 else name
        op_type, extra, attrs = _node(name, module, names)
        weights.update(extra)
        nodes.append(onnx.helper.make_node(op_type, [value] + list(extra), [out], name=name,
                                           doc_string=_doc(module), **attrs))
        value = out
    graph = onnx.helper.make_graph(
        nodes, "minialex",
        [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, list(shape))],
        [onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [shape[0], *y_shape[1:]])])
    opset = onnx.helper.make_opsetid("", OPSET)
    proto = onnx.helper.make_model(graph, opset_imports=[opset], producer_name="minialex",
                                   producer_version=_version(),
                                   ir_version=onnx.helper.find_min_ir_version_for([opset]))
    for name, array in weights.items():   # written into the model in place: AlexNet's 240 MB copied once
        tensor = proto.graph.initializer.add()
        tensor.name, tensor.data_type = name, onnx.TensorProto.FLOAT
        tensor.dims.extend(array.shape)
        tensor.raw_data = np.ascontiguousarray(array, "<f4").tobytes()    # little-endian float32
    onnx.save(proto, path)
    onnx.checker.check_model(os.fspath(path), full_check=True)   # from the file: no second serialisation
    return proto


def _check_input_shape(input_shape):
    """("N", C, H, W) or (N, C, H, W), or the error naming the argument."""
    ok = hasattr(input_shape, "__len__") and not isinstance(input_shape, (str, bytes)) and \
        len(input_shape) in (3, 4) and all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
                                             for n in input_shape)
    if not ok:
        fail("minialex.onnx.export", "input_shape", "one example's (C, H, W) such as (3, 227, 227), or (N, C, H, W)",
             repr(input_shape))
    shape = tuple(int(n) for n in input_shape)
    return ("N",) + shape if len(shape) == 3 else shape


def trace(model, input_shape):
    """([(layer name, module)] in the order model's forward calls them, the output's shape), from
    one forward on zeros of `input_shape` in eval mode; an error unless the layers form a chain."""
    leaves = [(name or type(m).__name__.lower(), m) for name, m in model.named_modules() if not m._modules]
    calls, handles = [], []
    for name, m in leaves:
        handles.append(m.register_forward_hook(
            lambda mod, inputs, out, name=name: calls.append((name, mod, inputs, out))))
    params = model.parameters()
    x = Tensor(np.zeros(input_shape, params[0].dtype if params else np.float32), device=model.device)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with no_grad():
            y = model(x)
    finally:
        for m, training in modes:
            object.__setattr__(m, "training", training)
        for h in handles:
            h.remove()
    if not calls:
        fail("minialex.onnx.export", "model", "a model with layers (its forward called none)", type(model).__name__)
    _check_chain(x, calls, y)
    counts, layers = {}, []
    for name, module, _, _ in calls:             # a layer called twice: name, name#2
        counts[name] = counts.get(name, 0) + 1
        layers.append((name if counts[name] == 1 else f"{name}#{counts[name]}", module))
    return layers, y.shape


def _check_chain(x, calls, y):
    """Each layer reads the previous layer's output (the first the input), the last gives y."""
    previous, previous_name = x, "the model's input"
    for name, module, inputs, out in calls:
        if len(inputs) != 1 or inputs[0] is not previous:
            raise ValueError(f"minialex.onnx.export: layer '{name}' ({type(module).__name__}) does not read "
                             f"{previous_name}: the forward does something between them that is not a layer "
                             f"(a functional op, an addition, a reshape, a branch); export takes models whose "
                             f"forward is a chain of minialex layers")
        previous, previous_name = out, f"the output of '{name}' ({type(module).__name__})"
    if y is not previous:
        raise ValueError(f"minialex.onnx.export: the model's output is not {previous_name}: the forward changes "
                         f"it after its last layer; export takes models whose forward is a chain of minialex layers")


def _pads(padding):
    """minialex's padding, one int or (ph, pw), as ONNX's [top, left, bottom, right]."""
    ph, pw = check_pair("minialex.onnx.export", "padding", padding, minimum=0)
    return [ph, pw, ph, pw]


def _pair(v):
    """One int or (h, w) as [h, w]."""
    return list(check_pair("minialex.onnx.export", "size", v))


def _node(name, m, names):
    """(op_type, {initializer name: array} in input order, attributes) of layer `m`."""
    kind = type(m)
    if kind is nn.Conv2d:
        extra = {names[id(m.weight)]: m.weight.numpy()}
        if m.bias is not None:
            extra[names[id(m.bias)]] = m.bias.numpy()
        return "Conv", extra, dict(kernel_shape=list(m.kernel_size), strides=_pair(m.stride), pads=_pads(m.padding),
                                   dilations=[1, 1], group=int(m.groups))
    if kind is nn.Linear:
        extra = {names[id(m.weight)]: m.weight.numpy()}
        if m.bias is not None:
            extra[names[id(m.bias)]] = m.bias.numpy()
        return "Gemm", extra, dict(transB=1)
    if kind is nn.ReLU:
        return "Relu", {}, {}
    if kind is nn.LocalResponseNorm:
        if m.size % 2 == 0:
            raise ValueError(f"minialex.onnx.export: layer '{name}' (LocalResponseNorm) has an even size {m.size}: "
                             f"ONNX's LRN window is channels c-{(m.size - 1) // 2}..c+{m.size // 2}, minialex's "
                             f"c-{m.size // 2}..c+{(m.size - 1) // 2}; only odd sizes agree")
        return "LRN", {}, dict(size=int(m.size), alpha=float(m.alpha) * m.size, beta=float(m.beta), bias=float(m.k))
    if kind is nn.MaxPool2d:
        return "MaxPool", {}, dict(kernel_shape=_pair(m.kernel_size), strides=_pair(m.stride),
                                   pads=_pads(m.padding), ceil_mode=0)
    if kind is MaxPool2dPadded:
        return "MaxPool", {}, dict(kernel_shape=list(m.kernel_size), strides=list(m.stride), pads=list(m.pads),
                                   ceil_mode=0)
    if kind is nn.Dropout:   # the ratio by the module's name: a Dropout called twice shares one
        return "Dropout", {f"{name.split('#')[0]}.ratio": np.array(m.p, np.float32)}, {}
    if kind is nn.Flatten:
        return "Flatten", {}, dict(axis=1)
    raise TypeError(f"minialex.onnx.export: layer '{name}' ({kind.__name__}) is not a layer export knows; it "
                    f"exports Conv2d, ReLU, LocalResponseNorm, MaxPool2d, Dropout, Flatten and Linear, in any "
                    f"Module whose forward chains them (Sequential, AlexNet)")


def _doc(m):
    """The layer as minialex writes it, for whoever opens the file (Netron shows it)."""
    doc = f"minialex {type(m).__name__}({m.extra_repr()})"
    if type(m) is nn.LocalResponseNorm:
        doc += f": ONNX's alpha {m.alpha * m.size:g} = size * minialex's alpha (ONNX divides it by size)"
    return doc


def _version():
    try:
        return importlib.metadata.version("minialex")
    except importlib.metadata.PackageNotFoundError:   # a source checkout that was never installed
        return ""
