"""minialex-train end to end on a tiny rendered dataset: metrics, checkpoints, pictures, resume,
guard rails."""
import json

import numpy as np
import pytest
from PIL import Image

import minialex as ma
from minialex import train
from minialex.data import make_synthetic

KEYS = {"epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr", "images_per_s", "seconds"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("data") / "tiny", train_per_class=4, val_per_class=2, quiet=True)


def _run(tiny, out, *extra):
    return train.main(["--data", str(tiny), "--batch-size", "8", "--workers", "2", "--out", str(out), *extra])


def test_one_epoch_writes_metrics_checkpoints_and_pictures(tiny, tmp_path, capsys):
    assert _run(tiny, tmp_path, "--epochs", "1") == 0
    printed = capsys.readouterr().out
    assert "conv1" in printed and "MFLOPs" in printed and "epoch   1/1" in printed
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and set(records[0]) == KEYS and records[0]["epoch"] == 1
    assert 0 <= records[0]["val_top1"] <= records[0]["val_top5"] <= 1 and records[0]["lr"] == 0.01
    for name in ("filters.png", "curves.png", "predictions.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.size[0] > 100 and len(np.unique(np.asarray(img.convert("L")))) > 2
    ckpt = ma.load(tmp_path / "last.npz")
    assert str(ckpt["meta/arch"]) == "alexnet-mini" and int(ckpt["meta/epoch"]) == 1
    assert [str(c) for c in ckpt["meta/classes"]][:2] == ["checker", "circle"]
    assert ckpt["meta/mean"].shape == (3,) and "optim/velocity.0" in ckpt
    assert (tmp_path / "best.npz").is_file()


def test_resume_equals_continuous(tiny, tmp_path):
    assert _run(tiny, tmp_path / "two", "--epochs", "2") == 0
    assert _run(tiny, tmp_path / "one", "--epochs", "1") == 0
    assert _run(tiny, tmp_path / "resumed", "--epochs", "2", "--resume", str(tmp_path / "one" / "last.npz")) == 0
    a, b = ma.load(tmp_path / "two" / "last.npz"), ma.load(tmp_path / "resumed" / "last.npz")
    weights = [k for k in a if k.startswith(("model/", "optim/velocity"))]
    assert len(weights) == 32
    for k in weights:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert str(a["meta/rng_state"]) == str(b["meta/rng_state"])


def test_errors_before_training(tiny, tmp_path, capsys):
    assert train.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err
    bad = tmp_path / "bad"
    (bad / "train" / "cat").mkdir(parents=True)
    (bad / "val" / "dog").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(bad / "train" / "cat" / "1.png")
    Image.new("RGB", (8, 8)).save(bad / "val" / "dog" / "1.png")
    assert train.main(["--data", str(bad), "--out", str(tmp_path)]) == 2
    assert "classes that the training set lacks: ['dog']" in capsys.readouterr().err
    assert _run(tiny, tmp_path / "run", "--epochs", "1") == 0
    capsys.readouterr()
    assert _run(tiny, tmp_path / "x", "--arch", "alexnet", "--resume", str(tmp_path / "run" / "last.npz")) == 2
    assert "holds arch 'alexnet-mini'" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's overflow warnings on the way to inf
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path, capsys):
    assert _run(tiny, tmp_path, "--epochs", "1") == 0
    before = ma.load(tmp_path / "last.npz")["model/conv1.weight"]
    assert _run(tiny, tmp_path, "--epochs", "3", "--lr", "1e12", "--resume", str(tmp_path / "last.npz")) == 1
    err = capsys.readouterr().err
    assert "learning rate" in err and "last.npz" in err
    np.testing.assert_array_equal(ma.load(tmp_path / "last.npz")["model/conv1.weight"], before)


def test_stall_warning(tiny, tmp_path):
    with pytest.warns(UserWarning, match=r"still .* about ln\(10\)"):
        assert _run(tiny, tmp_path, "--epochs", "1", "--lr", "0", "--stall-steps", "2") == 0


def test_ctrl_c_saves_a_checkpoint(tiny, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = train.F.cross_entropy

    def interrupt_on_third(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)
    monkeypatch.setattr(train.F, "cross_entropy", interrupt_on_third)
    assert _run(tiny, tmp_path, "--epochs", "2") == 130
    saved = ma.load(tmp_path / "interrupted.npz")
    assert int(saved["meta/epoch"]) == 0 and "model/fc8.weight" in saved


def test_eval_only_with_ten_crops(tiny, tmp_path, capsys):
    assert _run(tiny, tmp_path, "--epochs", "1") == 0
    capsys.readouterr()
    assert _run(tiny, tmp_path, "--resume", str(tmp_path / "last.npz"), "--eval-only", "--ten-crop") == 0
    out = capsys.readouterr().out
    assert "val (centre crop)" in out and "val (10 crops)" in out
