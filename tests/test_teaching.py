"""The teaching tools: the whole-model audit and its injected bugs, the graph picture."""
import re

import numpy as np
import pytest
from PIL import Image

import minialex as ma
from minialex import audit, bugs
from minialex import functional as F

LAYER_OF = {"LRN": "norm", "max-pool": "pool", "conv": "conv", "dropout": "drop", "ReLU": "relu", "loss": "loss",
            "fully connected": "fc", "optimizer": "optimizer"}


def test_the_audit_passes_on_alexnet_mini(capsys):
    assert audit.main([]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "## each layer alone" in out and "## the whole model" in out
    rows = audit.audit(samples=3)
    layers = {r.layer for r in rows}
    assert {"conv1", "relu1", "pool1", "norm1", "drop6", "fc8", "loss", "optimizer", "input"} <= layers


def test_there_are_at_least_eight_bugs_and_each_quotes_the_math_it_breaks(capsys):
    assert audit.main(["--list-bugs"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(bugs.BUGS) >= 8
    for bug in bugs.BUGS:
        line = bugs.broken_line(bug)
        doc = __import__(bug.target.__module__, fromlist=["_"]).__doc__
        assert bug.breaks in line and line in doc, bug.name


@pytest.mark.parametrize("name", [b.name for b in bugs.BUGS])
def test_the_audit_fails_under_each_injected_bug_and_names_the_layer(name, capsys):
    bug = bugs.get(name)
    assert audit.main(["--inject", name, "--explain", "--samples", "3"]) == 1
    out = capsys.readouterr().out
    failed = [line.split()[0] for line in out.splitlines() if line.rstrip().endswith("FAIL") or "  FAIL  (" in line]
    assert any(f.startswith(LAYER_OF[bug.layers]) for f in failed), (name, failed)
    assert bugs.broken_line(bug) in out and bug.explain in out
    x = ma.Tensor(np.random.default_rng(0).standard_normal((2, 4, 6, 6)), requires_grad=True)
    assert ma.gradcheck(lambda x: F.local_response_norm(F.max_pool2d(F.relu(x), 3, 2), 3, 0.5), [x])  # restored
    assert bug.target.fast is not None or bug.target.__name__ in ("CrossEntropy", "Linear")


def test_injection_is_undone_even_when_the_block_raises():
    before = (ma.ops.relu.ReLU.reference, ma.ops.relu.ReLU.fast)
    with pytest.raises(KeyError):
        with bugs.inject("relu-mask-from-output"):
            assert ma.ops.relu.ReLU.reference != before[0] and ma.ops.relu.ReLU.fast is None
            raise KeyError("inside")
    assert (ma.ops.relu.ReLU.reference, ma.ops.relu.ReLU.fast) == before
    with pytest.raises(ValueError, match="no injected bug named"):
        with bugs.inject("nonsense"):
            pass


def test_the_audit_checks_the_kernels_on_the_emulator_and_draws_the_graph(tmp_path, capsys):
    assert audit.main(["--device", "cuda-emu", "--samples", "2", "--graph", str(tmp_path / "g.png")]) == 0
    out = capsys.readouterr().out
    assert "## kernels (cuda-emu) against the reference" in out and out.count("y and gradients") == 23
    with Image.open(tmp_path / "g.png") as img:
        assert img.format == "PNG" and img.size[0] > 1000 and img.size[0] > 2 * img.size[1]   # landscape


def test_draw_graph_labels_ops_shapes_and_gradient_norms(tmp_path):
    x = ma.Tensor(np.ones((2, 3)), requires_grad=True)
    w = ma.Tensor(np.full((3, 4), 0.5), requires_grad=True)
    h = (x @ w).retain_grad()
    y = (h * h).sum()
    y.backward()
    dot = ma.graph.to_dot(y, {id(x): "x", id(w): "w"})
    assert 'label="x\\n2x3\\n|grad| ' in dot and 'label="MatMul\\n2x4\\n|grad| ' in dot and '"Sum\\nscalar"' in dot
    assert f"{np.linalg.norm(x.grad):.3g}" in dot and dot.count("->") == 5
    ma.draw_graph(y, tmp_path / "g.dot")
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    ma.draw_graph(y, tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as img:
        assert img.format == "PNG" and len(np.unique(np.asarray(img.convert("L")))) > 2
    ma.draw_graph(y, tmp_path / "g.svg", names={id(x): "x", id(w): "w"})
    svg = (tmp_path / "g.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<rect") >= 4 and ">MatMul<" in svg and ">x<" in svg
    with pytest.raises(ValueError, match="draw_graph: path expected a .png, .svg or .dot file"):
        ma.draw_graph(y, tmp_path / "g.gif")


def test_draw_graph_names_a_models_parameters_and_lies_in_landscape(tmp_path):
    model = ma.nn.Sequential(ma.nn.Linear(3, 4), ma.nn.ReLU(), ma.nn.Linear(4, 2))
    loss = F.cross_entropy(model(ma.Tensor(np.ones((2, 3), np.float32))), np.array([0, 1]))
    ma.draw_graph(loss, tmp_path / "g.svg", model=model)
    svg = (tmp_path / "g.svg").read_text()
    assert all(f">{name}<" in svg for name in ("0.weight", "0.bias", "2.weight", "2.bias"))
    width, height = (float(v) for v in re.search(r'width="(\d+)" height="(\d+)"', svg).groups())
    assert width > height
    ma.draw_graph(loss, tmp_path / "g.dot", model=model, direction="TB")
    assert "rankdir=TB" in (tmp_path / "g.dot").read_text() and '"0.weight' in (tmp_path / "g.dot").read_text()


# ----- exercises: tests/test_exercises.py (the grader), tests/test_exercises_hints.py (the checks)


# ----- training diagnostics -----

def test_diagnostics_measure_dead_units_gradients_and_update_ratios():
    from minialex import diagnostics
    ma.manual_seed(0)
    model = ma.nn.Sequential(ma.nn.Linear(6, 8), ma.nn.ReLU(), ma.nn.Linear(8, 3))
    model._modules["0"].bias.data[:6] = -100.0                # 6 of 8 units can never fire
    diag = diagnostics.Diagnostics(model)
    x = ma.Tensor(np.random.default_rng(1).standard_normal((16, 6)).astype(np.float32))
    opt = ma.optim.SGD(model.parameters(), lr=0.1)
    with diag.recording():
        loss = F.cross_entropy(model(x), np.arange(16) % 3)
    model.zero_grad()
    loss.backward()
    diag.gradients()
    before = diag.weights()
    opt.step()
    stats = diag.updates(before)
    assert stats["1"]["dead"] == 0.75
    w = model._modules["2"].weight
    np.testing.assert_allclose(stats["2"]["grad_norm"], np.linalg.norm(w.grad), rtol=1e-6)
    expected = np.log10(np.linalg.norm(w.data - before["2"]) / np.linalg.norm(before["2"]))
    np.testing.assert_allclose(stats["2"]["update_log10"], expected, rtol=1e-6)
    model._modules["0"].bias.data[:] = -100.0
    with diag.recording():
        model(x)
    said = diagnostics.warnings_for({**stats, **diag.stats, "2": {"update_log10": -0.3}})
    assert any(s.startswith("1: 100% of its units are dead") for s in said)
    assert any(s.startswith("2: update/weight ratio 10^-0.3") and "lower the learning rate" in s for s in said)
    assert "far off" in diagnostics.first_loss_note(9.0, 10) and "far off" not in diagnostics.first_loss_note(2.4, 10)
