"""ONNX export (minialex.onnx): files run by onnxruntime (and onnx's reference evaluator) against
minialex's forward, the conventions that differ (LRN's alpha, pooling's pads and sizes, flatten
order, dropout in eval), and the errors for what minialex cannot export."""
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


def test_importing_minialex_does_not_import_onnx():
    code = "import sys, minialex, minialex.onnx; print('onnx' in sys.modules, 'onnxruntime' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["False", "False"], run.stderr
