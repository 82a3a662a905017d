"""ONNX export and import (minialex.onnx): files run by onnxruntime (and onnx's reference evaluator)
against minialex's forward, the conventions that differ (LRN's alpha, pooling's pads and sizes,
flatten order, dropout in eval), the model zoo's bvlc_alexnet layout built with random weights, and
the errors for what minialex cannot import or export."""
import importlib.util
import re
import subprocess
import sys

import numpy as np
import pytest

import minialex as ma
import minialex.onnx as mo
from minialex import functional as F, nn
from minialex.onnx import MaxPool2dPadded

HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None
pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason='needs pip install "minialex[onnx]"')
needs_ort = pytest.mark.skipif(not HAVE_ORT, reason="onnxruntime has no wheel for this platform")


def run_onnx(model, x):
    """The first output of an ONNX file or ModelProto on x, by onnxruntime."""
    import onnxruntime as ort
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def forward(model, x):
    model.eval()
    with ma.no_grad():
        return model(ma.Tensor(x)).numpy()


def assert_close(got, want, rel=1e-4):
    assert got.shape == want.shape
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= rel, f"max error {err:.2e} of the largest value"


def images(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------- export

@needs_ort
def test_alexnet_exports_with_its_parameter_names_and_runs_as_in_minialex(tmp_path):
    import onnx
    ma.manual_seed(0)
    model = ma.models.AlexNet(init="paper")
    proto = mo.export(model, tmp_path / "alexnet.onnx", (3, 227, 227))
    onnx.checker.check_model(str(tmp_path / "alexnet.onnx"), full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", mo.OPSET)] and mo.OPSET == 13
    assert [n.name for n in proto.graph.node] == model.layer_order
    weights = {t.name: np.frombuffer(t.raw_data, "<f4").reshape(t.dims) for t in proto.graph.initializer}
    params = dict(model.named_parameters())
    assert sorted(weights) == sorted(list(params) + ["drop6.ratio", "drop7.ratio"])
    assert all(np.array_equal(weights[k], p.data) for k, p in params.items())
    assert model.training                                           # eval only while tracing
    x = images((2, 3, 227, 227))
    assert_close(run_onnx(tmp_path / "alexnet.onnx", x), forward(model, x))     # batch 2 on an "N" batch axis


@needs_ort
def test_grouped_alexnet_mini_with_lrn_before_pooling(tmp_path):
    ma.manual_seed(1)
    model = ma.models.AlexNet.mini(groups=2, lrn_before_pool=True, init="paper")
    proto = mo.export(model, tmp_path / "mini.onnx", (3, 64, 64))
    ops = [n.op_type for n in proto.graph.node]
    assert ops[:4] == ["Conv", "Relu", "LRN", "MaxPool"]             # the forward's order, not the attributes'
    groups = [a.i for n in proto.graph.node for a in n.attribute if a.name == "group"]
    assert groups == [1, 2, 1, 2, 2]
    x = images((3, 3, 64, 64))
    # 32 -> 15 -> 7 -> 3 pixels: ceil sizes (16, 8, 4) would not fit fc6; fc6's random weights see the
    # flatten order
    assert_close(run_onnx(proto, x), forward(model, x))


def test_the_reference_evaluator_agrees(tmp_path):
    from onnx.reference import ReferenceEvaluator
    ma.manual_seed(2)
    model = ma.models.AlexNet.mini(groups=2, init="paper")
    mo.export(model, tmp_path / "mini.onnx", (2, 3, 64, 64))          # a fixed batch of 2
    x = images((2, 3, 64, 64))
    assert_close(ReferenceEvaluator(str(tmp_path / "mini.onnx")).run(None, {"input": x})[0], forward(model, x))


@needs_ort
def test_lrn_alpha_is_written_times_size(tmp_path):
    """A large alpha, so that an alpha not multiplied by size is far off (with 1e-4 it would pass)."""
    ma.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.LocalResponseNorm(5, alpha=0.5, beta=0.75, k=1.0))
    proto = mo.export(model, tmp_path / "lrn.onnx", (3, 9, 9))
    lrn = proto.graph.node[1]
    assert {a.name: round(a.f, 6) for a in lrn.attribute} == {"size": 0, "alpha": 2.5, "beta": 0.75, "bias": 1.0}
    x = images((2, 3, 9, 9))
    want = forward(model, x)
    assert_close(run_onnx(proto, x), want)
    next(a for a in lrn.attribute if a.name == "alpha").f = 0.5   # the paper's alpha, as ONNX would misread it
    assert np.abs(run_onnx(proto, x) - want).max() / np.abs(want).max() > 0.1


@needs_ort
def test_max_pool_floor_sizes_and_pads_that_never_win(tmp_path):
    """All-negative inputs: a pad counted as 0 would win every border window."""
    x = -1 - np.random.default_rng(4).random((2, 3, 8, 9)).astype(np.float32)
    for pool in (nn.MaxPool2d(3, 2, padding=1), nn.MaxPool2d(3, 2), MaxPool2dPadded(3, 2, (0, 0, 1, 2))):
        want = forward(nn.Sequential(pool), x)
        got = run_onnx(mo.export(nn.Sequential(pool), tmp_path / "pool.onnx", (3, 8, 9)), x)
        assert_close(got, want, 1e-6)
        assert (got < -1).all()
    assert got.shape == (2, 3, 4, 5)                                   # 8+1 -> 4, 9+2 -> 5: the pads count
    assert run_onnx(mo.export(nn.Sequential(nn.MaxPool2d(3, 2)), tmp_path / "p.onnx", (3, 8, 9)), x).shape == \
        (2, 3, 3, 4)                                                   # floor: 8 -> 3 (ceil would give 4)


def test_uneven_padding_passes_gradients_to_the_image_only():
    """MaxPool2dPadded's backward (pad_inf's slice, then max-pool's) by central differences."""
    x = ma.Tensor(np.random.default_rng(13).permutation(2 * 3 * 6 * 7).reshape(2, 3, 6, 7) / 10.0,
                  requires_grad=True)                                  # distinct values: no ties
    assert ma.gradcheck(lambda x: MaxPool2dPadded(3, 2, (1, 0, 2, 1))(x), [x])
    y = MaxPool2dPadded(3, 2, (1, 0, 2, 1))(x)
    assert y.shape == (2, 3, 4, 3)                                     # (6+3-3)//2+1, (7+1-3)//2+1


@needs_ort
def test_dropout_exports_as_identity_from_a_model_in_training(tmp_path):
    ma.manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(12, 4))
    proto = mo.export(model, tmp_path / "drop.onnx", (3, 2, 2))
    node = proto.graph.node[1]
    assert node.op_type == "Dropout" and list(node.input) == ["0", "1.ratio"]     # no training_mode: false
    assert all(m.training for m in model.modules())                   # eval only while tracing
    x = images((5, 3, 2, 2))
    assert_close(run_onnx(proto, x), forward(model, x), 1e-6)


class Scale(nn.Module):
    def forward(self, x):
        return F.relu(x)


class Between(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 3, 3), nn.ReLU()

    def forward(self, x):
        return self.b(F.relu(self.a(x)))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x) + x


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Conv2d(3, 4, 3), Scale()), "layer '1' (Scale) is not a layer export knows"),
    (Between(), "layer 'b' (ReLU) does not read the output of 'a' (Conv2d)"),
    (Residual(), "the model's output is not the output of 'conv' (Conv2d)"),
    (nn.Sequential(nn.LocalResponseNorm(4)), "even size 4"),
])
def test_export_refuses_what_it_cannot_write(tmp_path, model, message):
    with pytest.raises((TypeError, ValueError), match=re.escape(message)):
        mo.export(model, tmp_path / "x.onnx", (3, 8, 8))


def test_export_checks_input_shape_and_says_which_extra_is_missing(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="input_shape expected one example's"):
        mo.export(nn.Sequential(nn.ReLU()), tmp_path / "x.onnx", (8, 8))
    monkeypatch.setitem(sys.modules, "onnx", None)                     # as if onnx were not installed
    with pytest.raises(ImportError, match=re.escape('pip install "minialex[onnx]"')):
        mo.export(nn.Sequential(nn.ReLU()), tmp_path / "x.onnx", (3, 8, 8))
    with pytest.raises(ImportError, match=re.escape('pip install "minialex[onnx]"')):
        mo.load(tmp_path / "x.onnx")


def test_importing_minialex_does_not_import_onnx():
    code = "import sys, minialex, minialex.onnx; print('onnx' in sys.modules, 'onnxruntime' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["False", "False"], run.stderr


# ---------------------------------------------------------------- import

def he(rng, *shape):
    return (rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))).astype(np.float32)


def bvlc_alexnet(side=103, fcs=(64, 64, 10), alpha=1e-4, softmax=True):
    """The model zoo's bvlc_alexnet layout (Caffe's AlexNet through Caffe2, opset 9) with random
    weights: two-tower groups, LRN (bias 1: Caffe's k) before pooling, pools with pads [0, 0, 1, 1]
    (Caffe's ceil sizes), a Reshape to (1, C*H*W) by a shape initializer, Gemm with transB=1, Dropout
    with its ratio attribute, Softmax; weights listed among the inputs too (IR 3). At side=103 every
    pad is used (24 -> 12, 12 -> 6, 6 -> 3, where floor without the pad gives 11, 5, 2)."""
    from onnx import TensorProto, helper, numpy_helper
    rng, nodes, weights = np.random.default_rng(6), [], {}
    x = "data_0"

    def add(op, name, extra=(), **attrs):
        nonlocal x
        nodes.append(helper.make_node(op, [x, *extra], [name + "_1"], name=name, **attrs))
        x = name + "_1"
    convs = [("conv1", 96, 3, 11, 4, 0, 1), ("conv2", 256, 96, 5, 1, 2, 2), ("conv3", 384, 256, 3, 1, 1, 1),
             ("conv4", 384, 384, 3, 1, 1, 2), ("conv5", 256, 384, 3, 1, 1, 2)]
    side_now = side
    for name, out, inp, k, stride, pad, group in convs:
        weights[name + "_w_0"], weights[name + "_b_0"] = he(rng, out, inp // group, k, k), rng.random(out, np.float32)
        add("Conv", name, [name + "_w_0", name + "_b_0"], kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4,
            group=group)
        add("Relu", "relu" + name[-1])
        side_now = (side_now + 2 * pad - k) // stride + 1
        if name in ("conv1", "conv2"):
            add("LRN", "norm" + name[-1], size=5, alpha=alpha, beta=0.75, bias=1.0)
        if name in ("conv1", "conv2", "conv5"):
            add("MaxPool", "pool" + name[-1], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1])
            side_now = (side_now + 1 - 3) // 2 + 1
    weights["OC2_DUMMY_1"] = np.array([1, 256 * side_now ** 2], np.int64)
    add("Reshape", "OC2_DUMMY_0", ["OC2_DUMMY_1"])
    width = 256 * side_now ** 2
    for i, out in zip((6, 7, 8), fcs):
        weights[f"fc{i}_w_0"], weights[f"fc{i}_b_0"] = he(rng, out, width), rng.random(out, np.float32) - 0.5
        add("Gemm", f"fc{i}", [f"fc{i}_w_0", f"fc{i}_b_0"], transB=1)
        if i < 8:
            add("Relu", f"relu{i}")
            add("Dropout", f"drop{i}", ratio=0.5)
        width = out
    if softmax:
        add("Softmax", "prob")
    inputs = [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, 3, side, side])]
    inputs += [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
               for k, v in weights.items()]
    graph = helper.make_graph(nodes, "bvlc_alexnet", inputs,
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, fcs[-1]])],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3)


@needs_ort
@pytest.mark.parametrize("alpha", [1e-4, 0.5])          # 0.5: an alpha not divided by size would show
def test_bvlc_alexnet_layout_imports_and_runs_as_onnxruntime_does(tmp_path, alpha):
    import onnx
    onnx.save(bvlc_alexnet(alpha=alpha), tmp_path / "bvlc.onnx")
    model = mo.load(tmp_path / "bvlc.onnx")
    names = [name for name, _ in model.named_modules()][1:]
    assert names[:8] == ["conv1", "relu1", "norm1", "pool1", "conv2", "relu2", "norm2", "pool2"]
    assert names[-2:] == ["drop7", "fc8"] and not model.training   # no softmax layer; eval mode
    layers = dict(model.named_modules())
    assert (layers["norm1"].size, layers["norm1"].alpha, layers["norm1"].k) == (5, alpha / 5, 1.0)
    assert layers["conv2"].groups == 2 and layers["conv3"].groups == 1 and layers["drop6"].p == 0.5
    assert type(layers["pool5"]) is MaxPool2dPadded and layers["pool5"].pads == (0, 0, 1, 1)
    x = images((1, 3, 103, 103), seed=7)
    logits = forward(model, x)
    assert_close(logits, run_onnx(bvlc_alexnet(alpha=alpha, softmax=False), x))
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert_close(probs, run_onnx(tmp_path / "bvlc.onnx", x))


@needs_ort
def test_the_zoo_sizes_at_224_pixels(tmp_path):
    """The zoo's input, 1x3x224x224: 54 -> 27 -> 13 -> 6 pixels through pads [0, 0, 1, 1], so fc6
    takes 256*6*6 = 9216 inputs as in Caffe's 227-pixel AlexNet (fc widths cut for speed)."""
    proto = bvlc_alexnet(side=224, fcs=(32, 32, 1000), softmax=False)
    model = mo.load(proto)
    assert dict(model.named_modules())["fc6"].weight.shape == (32, 9216)
    x = images((1, 3, 224, 224), seed=8)
    assert_close(forward(model, x), run_onnx(proto, x))


@needs_ort
def test_round_trips(tmp_path):
    """export -> load -> export gives the same file; a zoo-layout graph -> load -> export -> load
    computes the same, its uneven pools written back with their pads."""
    ma.manual_seed(9)
    model = ma.models.AlexNet.mini(groups=2)
    first = mo.export(model, tmp_path / "a.onnx", (3, 64, 64))
    again = mo.export(mo.load(tmp_path / "a.onnx"), tmp_path / "b.onnx", (3, 64, 64))
    assert again.SerializeToString() == first.SerializeToString()
    bvlc = mo.load(bvlc_alexnet())
    proto = mo.export(bvlc, tmp_path / "c.onnx", (1, 3, 103, 103))
    assert [list(a.ints) for n in proto.graph.node if n.op_type == "MaxPool" for a in n.attribute
            if a.name == "pads"] == [[0, 0, 1, 1]] * 3
    x = images((1, 3, 103, 103), seed=10)
    assert_close(forward(mo.load(tmp_path / "c.onnx"), x), forward(bvlc, x), 1e-6)
    assert_close(run_onnx(proto, x), forward(bvlc, x))


def small_graph(nodes, weights, in_shape=(2, 3, 8, 8), out=None, opset=13):
    """A chain of nodes from "x" to the last node's first output (or `out`)."""
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info(out or nodes[-1].output[0], TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@needs_ort
def test_matmul_add_a_constant_shape_and_a_flatten(tmp_path):
    from onnx import helper, numpy_helper
    rng = np.random.default_rng(11)
    w1, b1, w2 = he(rng, 5, 48).T.copy(), rng.random(5, np.float32), he(rng, 7, 5).T.copy()   # (in, out)
    nodes = [helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([0, -1]))),
             helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("MatMul", ["r", "w1"], ["m1"], name="fc1"), helper.make_node("Add", ["b1", "m1"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"], name="fc2")]
    proto = small_graph(nodes, {"w1": w1, "b1": b1, "w2": w2}, (2, 3, 4, 4))
    model = mo.load(proto)
    assert [type(m).__name__ for _, m in model.named_modules()][1:] == ["Flatten", "Linear", "ReLU", "Linear"]
    assert dict(model.named_modules())["fc2"].bias is None
    x = images((2, 3, 4, 4), seed=12)
    assert_close(forward(model, x), run_onnx(proto, x))
    again = mo.export(model, tmp_path / "again.onnx", (3, 4, 4))      # fc2 without a bias: Gemm of two inputs
    assert [len(n.input) for n in again.graph.node if n.op_type == "Gemm"] == [3, 2]
    assert_close(run_onnx(again, x), run_onnx(proto, x))


def test_load_leaves_the_random_stream_as_it_was():
    ma.manual_seed(0)
    want = ma.random.generator().standard_normal(3)
    ma.manual_seed(0)
    mo.load(bvlc_alexnet())
    assert np.array_equal(ma.random.generator().standard_normal(3), want)


def _node(op, inputs=("x",), name="bad", **attrs):
    from onnx import helper
    return helper.make_node(op, list(inputs), [name], name=name, **attrs)


W = np.ones((4, 3, 3, 3), np.float32)
REFUSED = [
    ([_node("Sigmoid")], {}, "node 'bad' (op Sigmoid) is not an AlexNet-family op; minialex imports Conv, Relu, LRN, "
                             "MaxPool, Dropout, Flatten, Reshape, Gemm, MatMul+Add, Softmax (last)"),
    ([_node("Softmax", name="s"), _node("Relu", ["s"])], {}, "node 's' (op Softmax in the middle) is not an AlexNet"),
    ([_node("MaxPool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)], {}, "ceil_mode=1"),
    ([_node("Conv", ["x", "w"], dilations=[2, 2])], {"w": W}, "dilations [2, 2]"),
    ([_node("Conv", ["x", "w"], pads=[0, 0, 1, 1])], {"w": W}, "pads both sides alike"),
    ([_node("LRN", size=4)], {}, "even size 4"),
    ([_node("Relu", name="r"), _node("Relu", ["x"], name="bad")], {}, "reads 'x', not 'r'"),
    ([_node("Conv", ["x", "x"])], {}, "its weight 'x' is computed in the graph"),
    ([_node("Reshape", ["x", "s"])], {"s": np.array([2, -1, 4])}, "minialex imports a Reshape only as Flatten"),
    ([_node("Dropout", ["x", "", "t"])], {"t": np.array(True)}, "training_mode true"),
    ([_node("Gemm", ["x", "w"], transA=1)], {"w": np.ones((3, 3), np.float32)}, "transA=1"),
    ([_node("Conv", ["x", "w"], group=2)], {"w": W}, "reads 3 channels; its weight (4, 3, 3, 3) with group=2 takes 6"),
    ([_node("LRN", size=3, bias=0.0)], {}, "node 'bad' (op LRN): LocalResponseNorm: k expected a number > 0"),
]


@pytest.mark.parametrize("nodes, weights, message", REFUSED)
def test_load_refuses_what_minialex_cannot_compute_naming_the_node(nodes, weights, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        mo.load(small_graph(nodes, weights, out=nodes[-1].output[0]))


def test_load_refuses_a_graph_with_two_inputs_or_a_second_output_in_use():
    from onnx import TensorProto, helper
    proto = small_graph([_node("Relu")], {})
    proto.graph.input.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1]))
    with pytest.raises(ValueError, match=re.escape("the graph has 2 inputs ['x', 'y']")):
        mo.load(proto)
    pool = helper.make_node("MaxPool", ["x"], ["p", "i"], name="pool", kernel_shape=[2, 2])
    proto = small_graph([pool, helper.make_node("Relu", ["i"], ["bad"])], {})
    with pytest.raises(ValueError, match="has its output i used"):
        mo.load(proto)
