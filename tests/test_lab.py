"""What a lab needs besides the exercises: the shipped trained alexnet-mini and the filters it
shows, and the README's learner install (a clone that cannot shadow the package)."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import minialex as ma
from minialex.data import DataLoader, ImageFolder, Transform, make_synthetic
from minialex.training import evaluate

ROOT = Path(__file__).resolve().parent.parent


def _smoothness(w):
    """The correlation of horizontally and vertically adjacent weights of each filter (0 for noise)."""
    w = w - w.mean(axis=(2, 3), keepdims=True)
    pairs = [(w[..., :, :-1], w[..., :, 1:]), (w[..., :-1, :], w[..., 1:, :])]
    return float(np.mean([np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in pairs]))


def test_the_shipped_alexnet_mini_classifies_the_built_in_data_and_its_filters_are_learned(tmp_path):
    model, info = ma.models.pretrained_mini()
    assert info["classes"][:2] == ["checker", "circle"] and len(info["classes"]) == 10
    assert info["history"][-1]["val_top1"] >= 0.9
    data = make_synthetic(tmp_path / "few", train_per_class=1, val_per_class=6, quiet=True)  # its val images
    val = ImageFolder(data / "val")
    stats = {"mean": info["mean"], "std": info["std"], "eigvals": np.zeros(3, np.float32),
             "eigvecs": np.eye(3, dtype=np.float32)}
    scores = evaluate(model, DataLoader(val, Transform(model.input_size, stats, "val"), 30, workers=0, cache=False))
    assert scores["top1"] >= 0.8, scores
    ma.manual_seed(0)
    fresh = ma.models.AlexNet.mini(10).conv1.weight.numpy()
    assert _smoothness(model.conv1.weight.numpy()) > _smoothness(fresh) + 0.15


def test_show_filters_draws_the_shipped_weights_slide_sized(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "show_filters.py")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    with Image.open(tmp_path / "filters.png") as img:
        assert img.size[0] >= 1400 and len(np.unique(np.asarray(img.convert("L")))) > 50


def test_the_readme_clones_into_a_folder_that_cannot_shadow_the_package():
    readme = (ROOT / "README.md").read_text()
    clones = re.findall(r"git clone \S+(?: \S+)* (\S+) && cd (\S+)", readme)
    assert clones, "the README has no clone command"
    for target, into in clones:
        assert target == into and target.rstrip("/") != "minialex", target
