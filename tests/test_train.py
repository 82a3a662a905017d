"""minialex-train end to end on a tiny rendered dataset: metrics, checkpoints, pictures, exact
resume, the run folder's safety (refusal, lock, temporaries), interrupts, the NaN guard, logs."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import minialex as ma
from minialex import checkpoint, train
from minialex.data import make_synthetic

KEYS = {"epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr", "images_per_s", "seconds",
        "layers"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("data") / "tiny", train_per_class=4, val_per_class=2, quiet=True)


def _run(tiny, out, *extra):
    return train.main(["--data", str(tiny), "--batch-size", "8", "--workers", "2", "--out", str(out), *extra])


def _strict_json_lines(path):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def test_one_epoch_writes_metrics_checkpoints_and_pictures(tiny, tmp_path, capsys):
    assert _run(tiny, tmp_path, "--epochs", "1") == 0
    printed = capsys.readouterr().out
    assert "conv1" in printed and "MFLOPs" in printed and "epoch   1/1" in printed
    assert "step 0: loss 2." in printed and "ln(10) = 2.303" in printed and "far off" not in printed
    records = _strict_json_lines(tmp_path / "metrics.jsonl")
    assert len(records) == 1 and set(records[0]) == KEYS and records[0]["epoch"] == 1
    layers = records[0]["layers"]
    assert [n for n in layers if "grad_norm" in layers[n]] == ["conv1", "conv2", "conv3", "conv4", "conv5",
                                                               "fc6", "fc7", "fc8"]
    assert all(0 <= layers[f"relu{i}"]["dead"] <= 1 for i in (1, 2, 3, 4, 5, 6, 7))
    assert all(-8 < layers[n]["update_log10"] < 0 and layers[n]["grad_norm"] > 0 for n in ("conv1", "fc8"))
    assert layers["conv1"]["act_std"] > 0 and "act_mean" in layers["pool1"]
    assert 0 <= records[0]["val_top1"] <= records[0]["val_top5"] <= 1 and records[0]["lr"] == 0.01
    for name in ("filters.png", "curves.png", "predictions.png", "layers.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.size[0] > 100 and len(np.unique(np.asarray(img.convert("L")))) > 2
    ckpt = ma.load(tmp_path / "last.npz")
    assert str(ckpt["meta/arch"]) == "alexnet-mini" and int(ckpt["meta/epoch"]) == 1
    assert [str(c) for c in ckpt["meta/classes"]][:2] == ["checker", "circle"]
    assert ckpt["meta/mean"].shape == (3,) and "optim/velocity.0" in ckpt
    config = json.loads(str(ckpt["meta/config"]))
    assert config["batch_size"] == 8 and config["lr"] == 0.01 and config["flip"] is True
    assert (tmp_path / "best.npz").is_file() and not (tmp_path / train.LOCK_NAME).exists()


NON_DEFAULT = ["--lr", "0.02", "--lr-schedule", "constant", "--momentum", "0.8", "--weight-decay", "0.001",
               "--dropout", "0.1", "--seed", "3", "--init", "xavier", "--no-flip", "--no-lighting"]


def test_resume_alone_continues_the_same_run_exactly(tiny, tmp_path):
    """A run with non-default settings, resumed with nothing but --resume (and more --epochs),
    ends with the very weights, momentum and random state of one uninterrupted run."""
    assert _run(tiny, tmp_path / "two", "--epochs", "2", *NON_DEFAULT) == 0
    assert _run(tiny, tmp_path / "one", "--epochs", "1", *NON_DEFAULT) == 0
    assert train.main(["--data", str(tiny), "--resume", str(tmp_path / "one" / "last.npz"), "--epochs", "2"]) == 0
    a, b = ma.load(tmp_path / "two" / "last.npz"), ma.load(tmp_path / "one" / "last.npz")
    weights = [k for k in a if k.startswith(("model/", "optim/"))]
    assert len(weights) == 35
    for k in weights:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert str(a["meta/rng_state"]) == str(b["meta/rng_state"]) and int(b["meta/epoch"]) == 2
    assert [r["epoch"] for r in _strict_json_lines(tmp_path / "one" / "metrics.jsonl")] == [1, 2]


@pytest.mark.filterwarnings("ignore:after 5 steps the loss")
def test_resume_refuses_a_contradicting_flag_and_allows_the_changeable_ones(tiny, tmp_path, capsys):
    assert _run(tiny, tmp_path, "--epochs", "1", *NON_DEFAULT) == 0
    last = str(tmp_path / "last.npz")
    for flag in (["--lr", "0.5"], ["--momentum", "0.9"], ["--batch-size", "4"], ["--seed", "1"], ["--arch", "alexnet"],
                 ["--lr-schedule", "step"], ["--dropout", "0.5"], ["--init", "he"], ["--weight-decay", "0"]):
        capsys.readouterr()
        assert train.main(["--data", str(tiny), "--resume", last, "--epochs", "2", *flag]) == 2, flag
        err = capsys.readouterr().err
        assert err.startswith(f"minialex-train: error: {flag[0]}") and "contradicts the checkpoint" in err, err
    assert train.main(["--data", str(tiny), "--resume", last, "--epochs", "2", "--lr", "0.02", "--no-flip",
                       "--workers", "0", "--stall-steps", "5"]) == 0   # agreeing flags and changeable ones


def test_resume_at_or_past_the_last_epoch_says_so_and_rewrites_nothing(tiny, tmp_path, capsys):
    assert _run(tiny, tmp_path, "--epochs", "2") == 0
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    capsys.readouterr()
    for epochs in ("2", "1"):
        assert train.main(["--data", str(tiny), "--resume", str(tmp_path / "last.npz"), "--epochs", epochs]) == 0
        assert "nothing to do" in capsys.readouterr().out
    assert train.main(["--data", str(tiny), "--resume", str(tmp_path / "last.npz")]) == 0  # the run's own 2 epochs
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_an_out_folder_holding_a_run_is_refused(tiny, tmp_path, capsys):
    assert _run(tiny, tmp_path, "--epochs", "1") == 0
    best = (tmp_path / "best.npz").read_bytes()
    capsys.readouterr()
    assert _run(tiny, tmp_path, "--epochs", "1") == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "best.npz").read_bytes() == best and len(_strict_json_lines(tmp_path / "metrics.jsonl")) == 1
    assert _run(tiny, tmp_path, "--epochs", "1", "--overwrite", "--lr", "0.001") == 0
    assert len(_strict_json_lines(tmp_path / "metrics.jsonl")) == 1        # a fresh run, not appended


def test_resuming_an_older_checkpoint_into_its_folder_would_overwrite_later_epochs(tiny, tmp_path, capsys):
    assert _run(tiny, tmp_path, "--epochs", "1") == 0
    (tmp_path / "keep.npz").write_bytes((tmp_path / "last.npz").read_bytes())   # epoch 1
    assert train.main(["--data", str(tiny), "--resume", str(tmp_path / "last.npz"), "--epochs", "2"]) == 0
    capsys.readouterr()
    assert train.main(["--data", str(tiny), "--resume", str(tmp_path / "keep.npz"), "--epochs", "3"]) == 2
    assert "would overwrite epochs after 1" in capsys.readouterr().err
    assert int(ma.load(tmp_path / "last.npz")["meta/epoch"]) == 2


def test_default_folders_are_unique(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train.time, "strftime", lambda fmt, *a: "20260101-000000")   # the same second
    for _ in range(2):
        assert train.main(["--data", str(tiny), "--batch-size", "8", "--epochs", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["alexnet-mini-20260101-000000",
                                                                       "alexnet-mini-20260101-000000-2"]


def test_a_live_lock_refuses_a_second_run_and_a_stale_one_is_taken_over(tiny, tmp_path, capsys):
    tmp_path.mkdir(exist_ok=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket
        (tmp_path / train.LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        assert _run(tiny, tmp_path, "--epochs", "1") == 2
        assert f"in use by another minialex-train (pid {sleeper.pid}" in capsys.readouterr().err
    finally:
        sleeper.kill()
        sleeper.wait()
    assert _run(tiny, tmp_path, "--epochs", "1") == 0                # its process is gone: stale
    assert not (tmp_path / train.LOCK_NAME).exists()


def test_temporary_files_of_a_killed_save_are_removed_at_the_next_start(tiny, tmp_path):
    assert _run(tiny, tmp_path, "--epochs", "1") == 0
    leftover = tmp_path / ".last.npz.99999.0badf00d.tmp"
    leftover.write_bytes(b"half a checkpoint")
    (tmp_path / "notes.tmp").write_text("mine")                      # not a save's temporary: kept
    assert train.main(["--data", str(tiny), "--resume", str(tmp_path / "last.npz"), "--epochs", "2"]) == 0
    assert not leftover.exists() and (tmp_path / "notes.tmp").exists()


def test_ctrl_c_during_the_end_of_epoch_save_leaves_consistent_checkpoints(tiny, tmp_path, monkeypatch):
    real, calls = checkpoint.save, {"n": 0}

    def save_then_signal(path, *args):
        real(path, *args)
        calls["n"] += 1
        if calls["n"] == 3:                     # epoch 2's last.npz (epoch 1 saved last and best)
            os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(checkpoint, "save", save_then_signal)
    assert _run(tiny, tmp_path, "--epochs", "3") == 130
    last, interrupted = ma.load(tmp_path / "last.npz"), ma.load(tmp_path / "interrupted.npz")
    for ckpt in (last, interrupted):            # each consistent with itself
        history = json.loads(str(ckpt["meta/history"]))
        assert int(ckpt["meta/epoch"]) == 2 == len(history) == history[-1]["epoch"]
    np.testing.assert_array_equal(last["model/fc8.weight"], interrupted["model/fc8.weight"])
    assert len(_strict_json_lines(tmp_path / "metrics.jsonl")) == 2


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_in_epoch_one_saves_the_weights_and_claims_no_last_checkpoint(tiny, tmp_path, monkeypatch,
                                                                               capsys, signum, code):
    real, calls = train.F.cross_entropy, {"n": 0}

    def signal_on_third(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signum)
        return real(*args)
    monkeypatch.setattr(train.F, "cross_entropy", signal_on_third)
    assert _run(tiny, tmp_path, "--epochs", "2") == code
    saved = ma.load(tmp_path / "interrupted.npz")
    assert int(saved["meta/epoch"]) == 0 and int(saved["meta/interrupted_in_epoch"]) == 1
    assert json.loads(str(saved["meta/history"])) == [] and "model/fc8.weight" in saved
    err = capsys.readouterr().err
    assert "no last.npz" in err and not (tmp_path / "last.npz").exists()
    assert not (tmp_path / train.LOCK_NAME).exists()


def test_nan_weights_stop_the_run_and_keep_the_last_finite_checkpoint(tiny, tmp_path, monkeypatch, capsys):
    real, steps = ma.optim.SGD.step, {"n": 0}

    def step_then_poison(self):
        real(self)
        steps["n"] += 1
        if steps["n"] == 10:                    # the last step of epoch 2 (5 steps an epoch)
            self.params[0].data[0, 0, 0, 0] = np.nan
    monkeypatch.setattr(ma.optim.SGD, "step", step_then_poison)
    assert _run(tiny, tmp_path, "--epochs", "3") == 1
    err = capsys.readouterr().err
    assert "after epoch 2" in err and "last good checkpoint is" in err and "(epoch 1)" in err
    last = ma.load(tmp_path / "last.npz")
    assert int(last["meta/epoch"]) == 1 and all(np.isfinite(v).all() for k, v in last.items() if k.startswith("model/"))
    assert len(_strict_json_lines(tmp_path / "metrics.jsonl")) == 1


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's overflow warnings on the way to inf
def test_a_diverging_loss_stops_at_once_without_claiming_a_checkpoint(tiny, tmp_path, capsys):
    assert _run(tiny, tmp_path, "--epochs", "1", "--lr", "1e12") == 1
    err = capsys.readouterr().err
    assert "learning rate" in err and "no last.npz checkpoint yet" in err and not (tmp_path / "last.npz").exists()


def test_a_write_failure_keeps_the_last_good_checkpoint(tiny, tmp_path, monkeypatch, capsys):
    real, calls = checkpoint.save, {"n": 0}

    def disk_full(path, *args):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(28, "No space left on device")
        real(path, *args)
    monkeypatch.setattr(checkpoint, "save", disk_full)
    assert _run(tiny, tmp_path, "--epochs", "3") == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "(epoch 1)" in err
    assert int(ma.load(tmp_path / "last.npz")["meta/epoch"]) == 1


def test_stall_warning(tiny, tmp_path):
    with pytest.warns(UserWarning, match=r"still .* about ln\(10\)"):
        assert _run(tiny, tmp_path, "--epochs", "1", "--lr", "0", "--stall-steps", "2") == 0


def test_eval_only_with_ten_crops(tiny, tmp_path, capsys):
    assert _run(tiny, tmp_path, "--epochs", "1") == 0
    capsys.readouterr()
    assert _run(tiny, tmp_path, "--resume", str(tmp_path / "last.npz"), "--eval-only", "--ten-crop") == 0
    out = capsys.readouterr().out
    assert "val (centre crop)" in out and "val (10 crops)" in out


def test_a_log_file_gets_a_few_plain_progress_lines(tiny, tmp_path):
    """Not a terminal: no carriage-return bar updates, a few progress lines per epoch."""
    run = subprocess.run([sys.executable, "-m", "minialex.train", "--data", str(tiny), "--batch-size", "2",
                          "--epochs", "2", "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    log = run.stdout + run.stderr
    assert "\r" not in log
    progress = [line for line in log.splitlines() if " batches" in line]
    assert 2 <= len(progress) <= 8                                     # 20 batches an epoch, 2 epochs


def test_odd_lock_files_never_crash_and_an_unreadable_one_is_refused(tiny, tmp_path, capsys):
    import socket
    host = socket.gethostname()
    for content, outcome in [(json.dumps({"pid": 10**20, "host": host}), 2), ("[1, 2]", 2), ("", 2),
                             (json.dumps({"pid": -1, "host": host}), 2), (json.dumps({"pid": 2**22 - 3, "host": host}), 0)]:
        out = tmp_path / f"run{len(content)}-{outcome}"
        out.mkdir()
        (out / train.LOCK_NAME).write_text(content)
        capsys.readouterr()
        assert _run(tiny, out, "--epochs", "1") == outcome, content
        err = capsys.readouterr().err
        assert "Traceback" not in err
        if outcome == 2:
            assert "in use by another minialex-train (its lock file cannot be read)" in err and "delete" in err


def test_overwrite_keeps_the_old_run_until_every_check_has_passed(tiny, tmp_path, capsys):
    assert _run(tiny, tmp_path, "--epochs", "1") == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix in (".npz", ".jsonl")}
    assert _run(tiny, tmp_path, "--epochs", "1", "--overwrite", "--batch-size", "100") == 2   # too large: refused
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix in (".npz", ".jsonl")} == before
    (tmp_path / "best.npz").unlink()
    (tmp_path / "best.npz").mkdir()                                      # not a file: refused, not crashed
    capsys.readouterr()
    assert _run(tiny, tmp_path, "--epochs", "1", "--overwrite") == 2
    assert "best.npz is not a regular file" in capsys.readouterr().err


def test_a_folder_left_by_an_interrupted_first_epoch_points_to_interrupted_npz(tiny, tmp_path, monkeypatch, capsys):
    real, calls = train.F.cross_entropy, {"n": 0}

    def interrupt_on_second(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args)
    monkeypatch.setattr(train.F, "cross_entropy", interrupt_on_second)
    assert _run(tiny, tmp_path, "--epochs", "1") == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert _run(tiny, tmp_path, "--epochs", "1") == 2
    assert f"--resume {tmp_path / 'interrupted.npz'}" in capsys.readouterr().err
    assert train.main(["--data", str(tiny), "--resume", str(tmp_path / "interrupted.npz")]) == 0


def test_best_is_saved_before_last(tiny, tmp_path, monkeypatch):
    """A kill between the two saves leaves best.npz ahead of last.npz, never behind it."""
    order = []
    real = train.checkpoint.save
    monkeypatch.setattr(train.checkpoint, "save", lambda path, *a: (order.append(path.name), real(path, *a)))
    assert _run(tiny, tmp_path, "--epochs", "1") == 0
    assert order == ["best.npz", "last.npz"]


def test_a_closed_stdout_does_not_end_the_run(tiny, tmp_path):
    """Like `minialex-train ... | head -1`: every write to stdout fails with a broken pipe."""
    read_end, write_end = os.pipe()
    os.close(read_end)                                                 # nobody will ever read
    r = subprocess.run([sys.executable, "-m", "minialex.train", "--data", str(tiny), "--batch-size", "8",
                        "--epochs", "1", "--out", str(tmp_path / "run")], stdout=write_end, stderr=subprocess.PIPE,
                       text=True, timeout=300)
    os.close(write_end)
    assert r.returncode == 0, r.stderr
    assert "BrokenPipeError" not in r.stderr and (tmp_path / "run" / "last.npz").exists()


def test_a_lab_sized_run_stops_at_max_steps_trains_a_subset_and_draws_per_step_pictures(tiny, tmp_path):
    from minialex import pictures
    out = tmp_path / "lab"
    assert _run(tiny, out, "--epochs", "3", "--batch-size", "4", "--train-subset", "24", "--max-steps", "9") == 0
    last = ma.load(out / "last.npz")
    state = json.loads(str(last["meta/trainer"]))
    assert int(last["meta/epoch"]) == 2 and state["step"] == 9                # 6 steps an epoch: 6 + 3
    assert json.loads(str(last["meta/config"]))["train_subset"] == 24
    steps = state["callbacks"]["StepLog"]
    assert [r["step"] for r in steps["records"]][-1] == 9 and len(steps["records"]) >= 5
    assert steps["epoch_ends"] == {"1": 6, "2": 9}
    samples = state["callbacks"]["LayerDiagnostics"]["samples"]
    assert len(samples) >= 3 and all("conv1" in s["layers"] for s in samples)
    history = _strict_json_lines(out / "metrics.jsonl")
    pictures.training_curves(history, tmp_path / "by_epoch.png")
    with Image.open(out / "curves.png") as by_step, Image.open(tmp_path / "by_epoch.png") as by_epoch:
        assert by_step.size == by_epoch.size and not np.array_equal(np.asarray(by_step), np.asarray(by_epoch))
    assert train.main(["--resume", str(out / "last.npz"), "--max-steps", "14"]) == 0    # 3 more, then 2
    state = json.loads(str(ma.load(out / "last.npz")["meta/trainer"]))
    assert state["step"] == 14 and int(ma.load(out / "last.npz")["meta/epoch"]) == 3
    capture = train.main(["--resume", str(out / "last.npz"), "--max-steps", "14"])
    assert capture == 0                                                      # nothing to do


def test_pictures_grow_with_scale(tiny, tmp_path):
    assert _run(tiny, tmp_path / "one", "--epochs", "1", "--max-steps", "2") == 0
    assert _run(tiny, tmp_path / "two", "--epochs", "1", "--max-steps", "2", "--scale", "2") == 0
    for name in ("filters.png", "curves.png", "layers.png", "predictions.png"):
        with Image.open(tmp_path / "one" / name) as a, Image.open(tmp_path / "two" / name) as b:
            assert 1.8 < b.size[0] / a.size[0] < 2.2, name
    with Image.open(tmp_path / "one" / "curves.png") as a:
        assert a.size[0] >= 1600                                             # slide-sized at scale 1


def test_per_class_accuracy_and_the_confusion_matrix(tiny, tmp_path, capsys):
    assert _run(tiny, tmp_path, "--epochs", "1") == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("epoch   1/1"))
    rows = (tmp_path / "confusion.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert header[1:3] == ["checker", "circle"] and header[-1] == "accuracy" and len(rows) == 11
    counts = np.array([[int(v) for v in r.split(",")[1:-1]] for r in rows[1:]])
    record = _strict_json_lines(tmp_path / "metrics.jsonl")[0]
    assert counts.sum() == 20 and np.trace(counts) / counts.sum() == pytest.approx(record["val_top1"])
    off = counts.copy()
    np.fill_diagonal(off, 0)
    if off.max() > 0:
        i, j = np.unravel_index(off.argmax(), off.shape)
        assert "most confused: " in line and f"-> " in line and str(off.max()) in line.split("most confused: ")[1]
    with Image.open(tmp_path / "confusion.png") as img:
        assert img.size[0] > 500
    capsys.readouterr()
    assert _run(tiny, tmp_path, "--resume", str(tmp_path / "last.npz"), "--eval-only") == 0
    out = capsys.readouterr().out
    assert "circle" in out and "confusion.csv" in out and " of 2)" in out      # per class: hits of its 2 images


def test_the_confusion_picture_reads_with_a_hundred_classes(tmp_path):
    from minialex import pictures
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, (100, 100)) + np.diag(rng.integers(20, 50, 100))
    pictures.confusion_matrix(counts, [f"class_{i:03d}" for i in range(100)], tmp_path / "c.png")
    with Image.open(tmp_path / "c.png") as img:
        assert 1000 <= img.size[0] <= 2400 and img.size[0] == img.size[1]


def test_export_onnx_writes_the_best_checkpoints_network(tiny, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    assert _run(tiny, tmp_path, "--epochs", "2", "--export-onnx") == 0
    best = ma.load(tmp_path / "best.npz")
    model = ma.models.AlexNet.mini(10)
    model.load_state_dict({k[6:]: v for k, v in best.items() if k.startswith("model/")})
    model.eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with ma.no_grad():
        expected = model(ma.Tensor(x)).numpy()
    session = ort.InferenceSession(str(tmp_path / "best.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_mixed_precision_from_the_command(tiny, tmp_path, capsys):
    assert _run(tiny, tmp_path, "--epochs", "1", "--precision", "fp16") == 0
    record = _strict_json_lines(tmp_path / "metrics.jsonl")[0]
    assert record["loss_scale"] > 0 and record["skipped_steps"] >= 0 and np.isfinite(record["train_loss"])
    assert json.loads(str(ma.load(tmp_path / "last.npz")["meta/config"]))["precision"] == "fp16"
    capsys.readouterr()
    assert train.main(["--data", str(tiny), "--resume", str(tmp_path / "last.npz"), "--precision", "fp32"]) == 2
    assert "--precision fp32 contradicts the checkpoint" in capsys.readouterr().err
    assert train.main(["--data", str(tiny), "--resume", str(tmp_path / "last.npz"), "--epochs", "2"]) == 0
    state = json.loads(str(ma.load(tmp_path / "last.npz")["meta/trainer"]))
    assert state["precision"] == "fp16" and state["scaler"]["scale"] > 0
