"""load(path): an AlexNet-family ONNX graph as a minialex nn.Sequential, with its weights.

The graph must be a chain from its one input to its one output: each node reads the previous
node's output, its other inputs (weights, a Reshape's shape, a Dropout's ratio) are constants
(initializers or Constant nodes). Nodes become layers named after the nodes (or their outputs),
e.g. conv1, pool5 (characters other than letters, digits and _ become _):

    ONNX node                          minialex layer
    Conv (group, symmetric pads)       Conv2d(groups=group)
    Relu                               ReLU
    LRN size, alpha, beta, bias        LocalResponseNorm(size, alpha / size, beta, k = bias)
                                         (ONNX, like Caffe, divides alpha by size; minialex does not)
    MaxPool ceil_mode=0                MaxPool2d, or MaxPool2dPadded where the pads differ per side
                                         (Caffe2's [0, 0, 1, 1] for Caffe's ceil-mode pooling)
    Dropout (not training)             Dropout(ratio)
    Flatten axis=1, Reshape to (N, -1) Flatten
    Gemm (transB 0 or 1), MatMul+Add   Linear (weight (out, in): B as is for transB=1, else B^T)
    Softmax as the last node           nothing: the model returns the scores before it (apply a
                                         softmax for probabilities; top-k is the same)

Anything else (another op, ceil_mode=1, dilation, a branch) is an error naming the node. The
model comes back in eval mode; building it leaves minialex's random stream as it was.
"""
import os
import re

import numpy as np

from .. import nn, random
from .pad import MaxPool2dPadded
from .to_onnx import require_onnx

LOAD = "minialex.onnx.load"
OPS = "Conv, Relu, LRN, MaxPool, Dropout, Flatten, Reshape, Gemm, MatMul+Add, Softmax (last)"


def load(path):
    """The minialex model (nn.Sequential, eval mode) of the ONNX file `path` (or an onnx.ModelProto)."""
    onnx = require_onnx(LOAD)
    proto = path if isinstance(path, onnx.ModelProto) else onnx.load(os.fspath(path))
    graph = Graph(onnx, proto)
    state = random.get_state()          # each layer draws initial weights that its import replaces
    try:
        layers = _read_chain(graph)
    finally:
        random.set_state(state)
    model = nn.Sequential()
    for name, layer in layers:
        setattr(model, name, layer)
    return model.eval()


class Graph:
    """What the readers need of a graph: its constants, the shapes of its values, its opset."""

    def __init__(self, onnx, proto):
        self.onnx, self.proto, self.nodes = onnx, proto, []
        self.consts = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
        for node in proto.graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                value = onnx.helper.get_attribute_value(node.attribute[0])
                self.consts[node.output[0]] = onnx.numpy_helper.to_array(value) \
                    if isinstance(value, onnx.TensorProto) else np.asarray(value)
            else:
                self.nodes.append(node)
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.shapes = _inferred_shapes(onnx, proto)

    def attrs(self, node):
        """{name: value}: strings decoded; floats (float32 in the file) as the shortest decimal
        that is the same float32 (alpha 5e-4, not 5.0000002e-4: minialex's alpha is then 1e-4)."""
        values = {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}
        return {k: v.decode() if isinstance(v, bytes) else _decimal(v) if isinstance(v, float) else v
                for k, v in values.items()}

    def const(self, node, index, what, optional=False):
        """The constant at input `index` of node (None for an absent optional one)."""
        name = node.input[index] if len(node.input) > index else ""
        if not name:
            if optional:
                return None
            _refuse(node, f"has no {what} input")
        if name not in self.consts:
            _refuse(node, f"its {what} '{name}' is computed in the graph; minialex imports it only as a constant "
                         f"(an initializer or a Constant node)")
        return self.consts[name]


def _inferred_shapes(onnx, proto):
    """{value name: dims, None where unknown} by ONNX's shape inference, run on the graph without
    its weights' values (their shapes as inputs): milliseconds, where the whole file would take
    seconds. Where inference fails, the shapes the graph declares: the checks that use shapes take
    what they find."""
    graph = proto.graph
    weights = [onnx.helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in graph.initializer]
    inputs = [v for v in graph.input if v.name not in {t.name for t in weights}]   # (IR 3 lists weights too)
    light = onnx.helper.make_model(
        onnx.helper.make_graph(graph.node, graph.name, inputs + weights, graph.output),
        opset_imports=proto.opset_import, ir_version=proto.ir_version)
    shapes = {}
    try:
        light = onnx.shape_inference.infer_shapes(light)
    except Exception:                    # the declared shapes, at least
        pass
    for v in list(light.graph.input) + list(light.graph.value_info) + list(light.graph.output):
        if v.type.tensor_type.HasField("shape"):
            shapes[v.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                   for d in v.type.tensor_type.shape.dim)
    return shapes


def _decimal(value):
    """A float32 value as the shortest decimal that rounds to it."""
    return float(str(np.float32(value)))


def _label(node):
    return f"node '{node.name or node.output[0]}' (op {node.op_type})"


def _refuse(node, what):
    raise ValueError(f"{LOAD}: {_label(node)} {what}")


def _not_alexnet(node, op=None):
    raise ValueError(f"{LOAD}: node '{node.name or node.output[0]}' (op {op or node.op_type}) is not an "
                     f"AlexNet-family op; minialex imports {OPS}")


def _read_chain(g):
    """[(layer name, module)] from the graph's input to its output, each node checked."""
    inputs = [v.name for v in g.proto.graph.input if v.name not in g.consts]
    if len(inputs) != 1:
        raise ValueError(f"{LOAD}: the graph has {len(inputs)} inputs {inputs}; an AlexNet-family graph has one, "
                         f"the image batch")
    current, layers, taken, i = inputs[0], [], set(dir(nn.Sequential())), 0    # not a Module's attribute
    while i < len(g.nodes):
        node, add = g.nodes[i], None
        if node.domain not in ("", "ai.onnx") or node.op_type not in READERS:
            _not_alexnet(node)
        if not node.input or node.input[0] != current:
            _refuse(node, f"reads '{node.input[0] if node.input else ''}', not '{current}' (the output of the node "
                         f"before it): minialex imports a chain of layers, each reading the one before")
        if node.op_type == "Softmax":
            if i != len(g.nodes) - 1:
                _not_alexnet(node, "Softmax in the middle")
            _check_softmax(g, node)
            current = node.output[0]
            break
        if node.op_type == "MatMul" and i + 1 < len(g.nodes) and g.nodes[i + 1].op_type == "Add" and \
                node.output[0] in g.nodes[i + 1].input:
            add, i = g.nodes[i + 1], i + 1
        try:
            module = READERS[node.op_type](g, node, g.attrs(node), add)
        except (TypeError, ValueError) as e:    # a minialex layer's own check: say which node
            raise type(e)(str(e) if str(e).startswith(LOAD) else f"{LOAD}: {_label(node)}: {e}") from e
        last = add or node
        _check_outputs(g, node, last)
        name = _layer_name(node, taken)
        layers.append((name, module))
        current, i = last.output[0], i + 1
    outputs = [v.name for v in g.proto.graph.output]
    if outputs != [current]:
        raise ValueError(f"{LOAD}: the graph's outputs are {outputs}; the chain of layers ends at '{current}'")
    return layers


def _check_outputs(g, node, last):
    """A node's second output (Dropout's mask, MaxPool's indices) must go unused."""
    used = {name for n in g.nodes for name in n.input} | {v.name for v in g.proto.graph.output}
    extra = [o for n in (node, last) for o in n.output[1:] if o and o in used]
    if extra:
        _refuse(node, f"has its output {extra[0]} used; minialex's layer gives only the first output")
    if last is not node and [n for n in g.nodes if node.output[0] in n.input] != [last]:
        _refuse(node, "feeds more than its Add: minialex imports a chain of layers")


def _layer_name(node, taken):
    """The node's name (or its output's) as a layer name: [A-Za-z0-9_], not one in `taken`."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", node.name or node.output[0]) or "layer"
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _floats(node, what, array):
    """A floating-point constant as float32, or the error naming the node."""
    if np.asarray(array).dtype.kind != "f":
        _refuse(node, f"has a {what} of dtype {np.asarray(array).dtype}; minialex's layers take floating point")
    return np.asarray(array, np.float32)


def _load(node, module, **arrays):
    module.load_state_dict({k: _floats(node, k, v) for k, v in arrays.items() if v is not None})
    return module


def _pads(node, a, rank=2):
    """ONNX's pads [top, left, bottom, right] (auto_pad NOTSET or VALID)."""
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        _refuse(node, f"has auto_pad={a['auto_pad']}; minialex imports explicit pads (auto_pad NOTSET or VALID)")
    pads = [int(p) for p in a.get("pads", [0] * 2 * rank)]
    if len(pads) != 2 * rank:
        _refuse(node, f"has pads {pads}; minialex's layers are 2-D (four pads)")
    if a.get("auto_pad") == "VALID" and any(pads):
        _refuse(node, f"has auto_pad=VALID and pads {pads}")
    return pads


def _square(pair):
    """(h, w) as one int where h == w (how minialex's layers are usually written)."""
    h, w = (int(n) for n in pair)
    return h if h == w else (h, w)


def _check_window(node, a):
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        _refuse(node, f"has dilations {a['dilations']}; minialex's layers are not dilated")


def _conv(g, node, a, _):
    w, b = g.const(node, 1, "weight"), g.const(node, 2, "bias", optional=True)
    if w.ndim != 4:
        _refuse(node, f"has a weight of shape {w.shape}; minialex's Conv2d is 2-D, (O, C/group, KH, KW)")
    _check_window(node, a)
    pads, group = _pads(node, a), int(a.get("group", 1))
    if pads[:2] != pads[2:]:
        _refuse(node, f"has pads {pads} (top, left, bottom, right); minialex's Conv2d pads both sides alike")
    if list(a.get("kernel_shape", w.shape[2:])) != list(w.shape[2:]):
        _refuse(node, f"has kernel_shape {a['kernel_shape']} and a weight of shape {w.shape}")
    if b is not None and b.shape != (w.shape[0],):
        _refuse(node, f"has a bias of shape {b.shape}, expected ({w.shape[0]},)")
    shape = g.shapes.get(node.input[0])
    if shape and len(shape) == 4 and shape[1] not in (None, w.shape[1] * group):
        _refuse(node, f"reads {shape[1]} channels; its weight {w.shape} with group={group} takes {w.shape[1] * group}")
    conv = nn.Conv2d(w.shape[1] * group, w.shape[0], _square(w.shape[2:]), _square(a.get("strides", [1, 1])),
                     _square(pads[:2]), group, bias=b is not None)
    return _load(node, conv, weight=w, bias=b)


def _relu(g, node, a, _):
    return nn.ReLU()


def _required(node, a, name):
    if name not in a:
        _refuse(node, f"has no {name} attribute (ONNX requires one)")
    return a[name]


def _lrn(g, node, a, _):
    size = int(_required(node, a, "size"))
    if size % 2 == 0:
        _refuse(node, f"has an even size {size}: ONNX's window is channels c-{(size - 1) // 2}..c+{size // 2}, "
                     f"minialex's c-{size // 2}..c+{(size - 1) // 2}; only odd sizes agree")
    return nn.LocalResponseNorm(size, a.get("alpha", 1e-4) / size, a.get("beta", 0.75), a.get("bias", 1.0))


def _maxpool(g, node, a, _):
    kernel = [int(k) for k in _required(node, a, "kernel_shape")]
    if len(kernel) != 2:
        _refuse(node, f"has kernel_shape {kernel}; minialex's MaxPool2d is 2-D")
    if a.get("ceil_mode", 0):
        _refuse(node, "has ceil_mode=1 (output sizes rounded up); minialex pools with floor sizes (ceil_mode=0)")
    _check_window(node, a)
    pads, stride = _pads(node, a), _square(a.get("strides", [1, 1]))
    if pads[:2] == pads[2:] and 2 * pads[0] <= kernel[0] and 2 * pads[1] <= kernel[1]:
        return nn.MaxPool2d(_square(kernel), stride, _square(pads[:2]))
    return MaxPool2dPadded(_square(kernel), stride, tuple(pads))


def _dropout(g, node, a, _):
    ratio = a.get("ratio", g.const(node, 1, "ratio", optional=True))
    training = g.const(node, 2, "training_mode", optional=True)
    if training is not None and bool(np.asarray(training)):
        _refuse(node, "has training_mode true; minialex imports a graph for inference (its Dropout follows "
                     "model.train() / model.eval())")
    return nn.Dropout(0.5 if ratio is None else _decimal(np.asarray(ratio).reshape(())))


def _flatten(g, node, a, _):
    axis, rank = int(a.get("axis", 1)), len(g.shapes.get(node.input[0], ()))
    if axis != 1 and not (rank and axis + rank == 1):
        _refuse(node, f"has axis={axis}; minialex's Flatten keeps the batch axis alone (axis=1)")
    return nn.Flatten()


def _reshape(g, node, a, _):
    target = a["shape"] if "shape" in a else g.const(node, 1, "shape")     # an attribute before opset 5
    target, shape = [int(n) for n in np.asarray(target).reshape(-1)], g.shapes.get(node.input[0])
    if not _is_flatten(target, shape) or (a.get("allowzero", 0) and 0 in target):
        _refuse(node, f"reshapes {shape or 'its input'} to {target}; minialex imports a Reshape only as Flatten, "
                     f"to (N, -1) or (N, C*H*W)")
    return nn.Flatten()


def _is_flatten(target, shape):
    """Whether reshaping x of `shape` (None where unknown) to `target` is (N, C*H*W): the target
    (0, -1) or (N, -1), or (anything, C*H*W), as Caffe2 writes it: (1, 9216) for a batch of 1."""
    if len(target) != 2:
        return False
    first, second = target
    batch = shape[0] if shape else None
    rest = int(np.prod(shape[1:])) if shape and None not in shape[1:] else None
    if second == -1:
        return first == 0 or (batch is not None and first == batch)
    return second == rest or (rest is None and first in (0, -1))


def _linear(node, w, b):
    """Linear with weight w (out, in) and bias b broadcast to (out,)."""
    if b is not None:
        try:
            b = np.broadcast_to(b, (1, w.shape[0])).reshape(-1)
        except ValueError:
            _refuse(node, f"has a bias of shape {b.shape}, not one per output ({w.shape[0]},)")
    return _load(node, nn.Linear(w.shape[1], w.shape[0], bias=b is not None), weight=w, bias=b)


def _gemm(g, node, a, _):
    if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
        _refuse(node, f"has alpha={a.get('alpha', 1.0)}, beta={a.get('beta', 1.0)}, transA={a.get('transA', 0)}; "
                     f"minialex's Linear is Gemm with alpha=1, beta=1, transA=0")
    w = g.const(node, 1, "weight")
    if w.ndim != 2:
        _refuse(node, f"has a weight of shape {w.shape}; Gemm's B is 2-D")
    return _linear(node, w if a.get("transB", 0) else w.T, g.const(node, 2, "bias", optional=True))


def _matmul(g, node, a, add):
    w, shape = g.const(node, 1, "weight"), g.shapes.get(node.input[0])
    if w.ndim != 2 or (shape is not None and len(shape) != 2):
        _refuse(node, f"multiplies {shape or 'its input'} by {w.shape}; minialex imports MatMul as Linear, "
                     f"(N, in) by (in, out)")
    b = None if add is None else g.const(add, 1 if add.input[0] == node.output[0] else 0, "bias")
    return _linear(node, w.T, b)


def _check_softmax(g, node):
    a, shape = g.attrs(node), g.shapes.get(node.input[0])
    axis = int(a.get("axis", 1 if g.opset < 13 else -1))
    if axis not in (1, -1) or (shape is not None and len(shape) != 2):
        _refuse(node, f"takes axis {axis} of {shape or 'its input'}; minialex drops a final Softmax over the "
                     f"classes of (N, classes) scores")


READERS = {"Conv": _conv, "Relu": _relu, "LRN": _lrn, "MaxPool": _maxpool, "Dropout": _dropout,
           "Flatten": _flatten, "Reshape": _reshape, "Gemm": _gemm, "MatMul": _matmul, "Softmax": None}
