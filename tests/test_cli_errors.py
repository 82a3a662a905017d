"""minialex-train on bad input: each case ends with one line "minialex-train: error: ...", exit
status 2, no traceback, before the dataset statistics pass or any epoch, and writes nothing."""
import json
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

import minialex as ma
from minialex import train
from minialex.data import make_synthetic


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("data") / "tiny", train_per_class=4, val_per_class=2, quiet=True)


@pytest.fixture(scope="module")
def good_ckpt(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert train.main(["--data", str(tiny), "--batch-size", "8", "--epochs", "1", "--out", str(out)]) == 0
    return out / "last.npz"


@pytest.fixture
def no_work(monkeypatch):
    """Fail loudly if the statistics pass or an epoch starts."""
    def forbidden(*args, **kw):
        raise AssertionError("work started before the bad input was reported")
    monkeypatch.setattr(train, "dataset_stats", forbidden)
    monkeypatch.setattr(train.Trainer, "train_epoch", forbidden)


def refused(capsys, argv, *words):
    """main(argv) exits 2 with one line naming `words`, and no traceback."""
    capsys.readouterr()
    try:
        code = train.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minialex-train: error: ") and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


FLAG_CASES = [
    (["--batch-size", "0"], "--batch-size"), (["--workers", "-1"], "--workers"), (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"), (["--lr", "-0.1"], "--lr"), (["--momentum", "nan"], "--momentum"),
    (["--momentum", "-1"], "--momentum"), (["--momentum", "1.5"], "--momentum"), (["--weight-decay", "nan"], "--weight-decay"),
    (["--weight-decay", "-1"], "--weight-decay"), (["--lr-step", "0"], "--lr-step"), (["--lr-step", "-1"], "--lr-step"),
    (["--patience", "0"], "--patience"), (["--dropout", "1"], "--dropout"), (["--dropout", "2"], "--dropout"),
    (["--dropout", "nan"], "--dropout"), (["--dropout", "0.99999999"], "--dropout"), (["--seed", "-1"], "--seed"),
    (["--seed", str(2**40)], "--seed"), (["--epochs", "0"], "--epochs"), (["--epochs", "-3"], "--epochs"),
    (["--device", "bogus"], "--device bogus"), (["--device", "cuda:abc"], "--device cuda:abc"),
    (["--stall-steps", "0"], "--stall-steps"), (["--batch-size", "abc"], "--batch-size"),
    (["--arch", "vgg"], "--arch"), (["--eval-only"], "--eval-only"), (["--lr"], "--lr"),
    (["--data", ""], "--data expected a path"), (["--out", ""], "--out expected a path"),
    (["--resume", ""], "--resume expected a path"), (["--batch-size", "41"], "larger than the 40 training images"),
]


@pytest.mark.parametrize("flags,word", FLAG_CASES)
def test_bad_flags(tiny, tmp_path, capsys, no_work, flags, word):
    refused(capsys, ["--data", str(tiny), "--out", str(tmp_path / "o"), *flags], word)
    assert not (tmp_path / "o").exists()


def test_cuda_without_a_usable_gpu_is_reported_before_any_work(tiny, tmp_path, capsys, no_work):
    try:
        ma.backend.cupy()
        pytest.skip("this machine has a usable GPU")
    except RuntimeError:
        pass
    refused(capsys, ["--data", str(tiny), "--out", str(tmp_path / "o"), "--device", "cuda"], "--device cuda", "cuda-emu")
    refused(capsys, ["--data", str(tiny), "--out", str(tmp_path / "o"), "--device", "cuda:3"], "--device cuda:3")


# ----- checkpoints given to --resume -----

def _rewrite(src, dst, drop=(), put=None):
    """A copy of checkpoint src with entries dropped or replaced (written as .npy members)."""
    arrays = ma.load(src)
    for k in drop:
        del arrays[k]
    arrays.update(put or {})
    with zipfile.ZipFile(dst, "w") as z:
        for k, v in arrays.items():
            with z.open(k + ".npy", "w") as f:
                np.lib.format.write_array(f, np.asarray(v), allow_pickle=True)
    return dst


def _bad_checkpoints(good, d):
    data = good.read_bytes()
    (d / "empty.npz").write_bytes(b"")
    (d / "truncated.npz").write_bytes(data[: len(data) // 2])
    (d / "text.npz").write_text("model weights, honest\n")
    np.save(d / "array.npy", np.ones(3))
    (d / "folder.npz").mkdir()
    vel = ma.load(good)["optim/velocity.0"]
    return [
        (d / "empty.npz", "an empty file"), (d / "truncated.npz", "damaged or truncated"),
        (d / "text.npz", "not a zip archive"), (d / "array.npy", "a .npy array"), (d / "folder.npz", "is a folder"),
        (d / "missing.npz", "no such file"),
        (_rewrite(good, d / "objects.npz", put={"model/conv1.bias": np.array([{}], dtype=object)}), "Python objects"),
        (_rewrite(good, d / "no_rng.npz", drop=["meta/rng_state"]), "meta/rng_state is missing"),
        (_rewrite(good, d / "no_lr.npz", drop=["optim/lr"]), "optim/lr is missing"),
        (_rewrite(good, d / "bad_rng.npz", put={"meta/rng_state": np.array("{not json")}), "meta/rng_state"),
        (_rewrite(good, d / "bad_history.npz", put={"meta/history": np.array("[{")}), "meta/history expected JSON"),
        (_rewrite(good, d / "bad_config.npz", put={"meta/config": np.array("[1, 2]")}), "meta/config expected a JSON dict"),
        (_rewrite(good, d / "velocity.npz", put={"optim/velocity.0": vel[..., :2]}), "velocity.0 expected shape"),
        (_rewrite(good, d / "future.npz", put={"meta/format": np.array(99)}), "meta/format is 99"),
        (_rewrite(good, d / "no_format.npz", drop=["meta/format"]), "not a minialex-train checkpoint"),
        (_rewrite(good, d / "int8.npz", put={"model/fc8.weight": np.zeros((10, 512), np.int8)}),
         "model/fc8.weight expected a floating-point array, got dtype int8"),
        (_rewrite(good, d / "complex.npz", put={"model/fc8.bias": np.zeros(10, np.complex64)}),
         "model/fc8.bias expected a floating-point array, got dtype complex64"),
        (_rewrite(good, d / "nan.npz", put={"model/conv2.weight": np.full((64, 32, 5, 5), np.nan, np.float32)}),
         "model/conv2.weight holds non-finite values"),
        (_rewrite(good, d / "zero_std.npz", put={"meta/std": np.zeros(3, np.float32)}), "meta/std expected positive"),
        (_rewrite(good, d / "shape.npz", put={"model/fc6.weight": np.zeros((3, 3), np.float32)}), "fc6.weight expected shape"),
        (_rewrite(good, d / "epoch.npz", put={"meta/epoch": np.array(-4)}), "meta/epoch"),
        (_rewrite(good, d / "arch.npz", put={"meta/arch": np.array(3)}), "meta/arch expected text"),
        (_rewrite(good, d / "arch2.npz", put={"meta/arch": np.array("bogus")}), "meta/arch expected one of"),
        (_rewrite(good, d / "arch3.npz", put={"meta/arch": np.array("alexnet")}), "meta/config arch expected meta/arch"),
        (_config(good, d / "c_arch.npz", arch="bogus"), "meta/config arch expected one of"),
        (_config(good, d / "c_init.npz", init="bogus"), "meta/config init"),
        (_config(good, d / "c_lr.npz", lr="x"), "meta/config lr expected a number"),
        (_config(good, d / "c_seed.npz", seed=1.5), "meta/config seed expected an integer"),
        (_config(good, d / "c_batch.npz", batch_size="8"), "meta/config batch_size expected an integer"),
        (_config(good, d / "c_sched.npz", lr_schedule="bogus"), "meta/config lr_schedule"),
        (_config(good, d / "c_flip.npz", flip="no"), "meta/config flip expected true or false"),
        (_config(good, d / "c_missing.npz", drop="lr"), "meta/config has no lr"),
        (_config(good, d / "c_neg.npz", batch_size=-3), "meta/config batch_size expected an integer >= 1, got -3"),
        (_rewrite(good, d / "deep.npz", put={"meta/history": np.array("[" * 100000 + "]" * 100000)}), "meta/history"),
        (_rewrite(good, d / "nested_nan.npz", put={"meta/history": np.array('[{"epoch": 1, "val_loss": [NaN]}]')}),
         "meta/history"),
        (_rewrite(good, d / "rng_big.npz", put={"meta/rng_state": np.array(
            '{"bit_generator": "PCG64", "state": {"state": ' + "9" * 400 + ', "inc": 1}, "has_uint32": 0, "uinteger": 0}')}),
         "meta/rng_state"),
        (_huge(good, d / "huge.npz"), "declares float32 shape (1000000000000,)"),
        (_rewrite(good, d / "momentum.npz", put={"optim/momentum": np.array(2.0)}), "optim/momentum 2.0 disagrees"),
        (_rewrite(good, d / "no_velocity.npz", drop=["optim/velocity.3"]), "optim/velocity.3 is missing"),
    ]


def _config(good, dst, drop=None, **changes):
    config = json.loads(str(ma.load(good)["meta/config"]))
    config.update(changes)
    config.pop(drop, None)
    return _rewrite(good, dst, put={"meta/config": np.array(json.dumps(config))})


def _huge(good, dst):
    """A checkpoint whose conv1.weight header declares 10^12 floats but holds 16 bytes."""
    import io as _io
    _rewrite(good, dst, drop=["model/conv1.weight"])
    header = _io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    with zipfile.ZipFile(dst, "a") as z:
        z.writestr("model/conv1.weight.npy", header.getvalue() + b"\0" * 16)
    return dst


def test_bad_checkpoints_are_refused_naming_the_problem(tiny, good_ckpt, tmp_path, capsys, no_work):
    for path, words in _bad_checkpoints(good_ckpt, tmp_path):
        refused(capsys, ["--data", str(tiny), "--resume", str(path), "--epochs", "2", "--out", str(tmp_path / "o")],
                f"--resume {path}", words)
        refused(capsys, ["--data", str(tiny), "--resume", str(path), "--eval-only"], f"--resume {path}", words)
    assert not (tmp_path / "o").exists()


def test_a_fifo_is_refused_without_blocking(tiny, tmp_path, capsys, no_work):
    import os
    os.mkfifo(tmp_path / "pipe.npz")
    refused(capsys, ["--data", str(tiny), "--resume", str(tmp_path / "pipe.npz")], "not a regular file")


def test_unknown_entries_in_a_checkpoint_are_never_read(tiny, good_ckpt, tmp_path, monkeypatch):
    """An unknown entry (here one that would fail if read: Python objects) is skipped unread."""
    path = _rewrite(good_ckpt, tmp_path / "extra.npz", put={"huge/blob": np.array([{"x": 1}], dtype=object)})
    assert train.main(["--data", str(tiny), "--resume", str(path), "--eval-only"]) == 0


# ----- the output folder -----

def test_an_unwritable_out_is_reported_at_the_start(tiny, tmp_path, capsys, no_work, monkeypatch):
    (tmp_path / "a_file").write_text("x")
    refused(capsys, ["--data", str(tiny), "--out", str(tmp_path / "a_file")], "is a file")
    refused(capsys, ["--data", str(tiny), "--out", str(tmp_path / "a_file" / "below")], "cannot be created")
    from minialex import runfolder

    def full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(runfolder.os, "fsync", full)
    refused(capsys, ["--data", str(tiny), "--out", str(tmp_path / "o")], "not writable", "No space left")
    monkeypatch.undo()
    refused(capsys, ["--data", str(tiny), "--out", str(tmp_path / ("a" * 300))], "File name too long")
    refused(capsys, ["--data", str(tiny), "--out", str(tiny / "train" / "cross")], "inside the data folder")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("a file where the default folder's parent goes")
    refused(capsys, ["--data", str(tiny)], "cannot make a run folder under runs", "give --out")


# ----- data -----

def _dataset(root, train_files, val_files):
    """train_files / val_files: {class: [(name, bytes or None for a valid image)]}."""
    for split, files in (("train", train_files), ("val", val_files)):
        for cls, items in files.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for name, content in items:
                if content is None:
                    Image.new("RGB", (20, 20), (200, 30, 30)).save(root / split / cls / name)
                else:
                    (root / split / cls / name).write_bytes(content)
    return root


@pytest.mark.filterwarnings("ignore:skipping image")
def test_data_that_cannot_train(tmp_path, capsys, no_work):
    junk = b"\xff\xd8 not a jpeg"
    bad_train = _dataset(tmp_path / "a", {"x": [("1.jpg", junk)], "y": [("2.jpg", junk)]}, {"x": [("3.jpg", None)]})
    refused(capsys, ["--data", str(bad_train)], "none of the 1 images under class 'x'", "can be decoded")
    one_bad_class = _dataset(tmp_path / "d", {"x": [("1.jpg", None)], "y": [("2.jpg", junk), ("4.jpg", junk)]},
                             {"x": [("3.jpg", None)]})
    refused(capsys, ["--data", str(one_bad_class)], "none of the 2 images under class 'y'")
    one_class = _dataset(tmp_path / "e", {"x": [("1.jpg", None), ("2.jpg", None)]}, {"x": [("3.jpg", None)]})
    refused(capsys, ["--data", str(one_class)], "at least 2 classes")
    bad_val = _dataset(tmp_path / "b", {"x": [("1.jpg", None)], "y": [("2.jpg", None)]}, {"x": [("3.jpg", junk)]})
    refused(capsys, ["--data", str(bad_val)], "none of the 1 images", "val")
    empty = _dataset(tmp_path / "c", {"x": [("1.jpg", None)], "y": []}, {"x": [("3.jpg", None)]})
    refused(capsys, ["--data", str(empty)], "no images", "['y']")
    refused(capsys, ["--data", str(tmp_path / "nowhere")], "no such folder")
    shutil.rmtree(empty / "val")
    refused(capsys, ["--data", str(empty)], "val does not exist")


@pytest.mark.filterwarnings("ignore:skipping image")
def test_minialex_prepare_refuses_the_data_minialex_train_refuses(tmp_path, capsys):
    """One validation for both commands (minialex/data/splits.py): each case one clean line, exit 2."""
    from minialex import prepare
    junk = b"\xff\xd8 not a jpeg"
    cases = [
        (_dataset(tmp_path / "a", {"x": [("1.jpg", None)], "y": []}, {"x": [("3.jpg", None)]}), "no images"),
        (_dataset(tmp_path / "b", {"x": [("1.jpg", None)], "y": [("2.jpg", None)]}, {"z": [("3.jpg", None)]}),
         "classes that the training set lacks"),
        (_dataset(tmp_path / "c", {"x": [("1.jpg", None), ("2.jpg", None)]}, {"x": [("3.jpg", None)]}),
         "at least 2 classes"),
        (_dataset(tmp_path / "d", {"x": [("1.jpg", junk)], "y": [("2.jpg", None)]}, {"x": [("3.jpg", None)]}),
         "none of the 1 images under class 'x'"),
        (tmp_path / "nowhere", "no such folder"),
    ]
    for root, words in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            prepare.main([str(root)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "Traceback" not in err, err
        assert err.strip().splitlines()[-1].startswith("minialex-prepare: error: ") and words in err, err
        assert train.main(["--data", str(root), "--out", str(tmp_path / "o")]) == 2
        assert words in capsys.readouterr().err


@pytest.mark.parametrize("name,value,said", [
    ("MINIALEX_CPU_PATH", "bogus", "MINIALEX_CPU_PATH expected reference or fast, got 'bogus'"),
    ("MINIALEX_GEMM", "fast", "MINIALEX_GEMM"), ("MINIALEX_THREADS", "0", "MINIALEX_THREADS"),
    ("MINIALEX_THREADS", "two", "MINIALEX_THREADS")])
def test_a_bad_environment_variable_is_one_line_from_each_command(tiny, tmp_path, capsys, monkeypatch, no_work,
                                                                  name, value, said):
    import subprocess
    import sys
    from minialex import prepare
    monkeypatch.setenv(name, value)
    refused(capsys, ["--data", str(tiny), "--out", str(tmp_path / "o")], said)
    with pytest.raises(SystemExit) as exit_:
        prepare.main([str(tiny)])
    assert exit_.value.code == 2 and said in capsys.readouterr().err
    run = subprocess.run([sys.executable, "-c", "import minialex"], capture_output=True, text=True,
                         env={**__import__("os").environ, name: value})
    assert run.returncode == 0 and run.stderr == "", run.stderr          # importing never fails for it


def test_a_bad_emulator_time_limit_is_said_by_the_commands(tiny, tmp_path, capsys, monkeypatch, no_work):
    monkeypatch.setenv("MINIALEX_EMU_TIMEOUT", "soon")
    refused(capsys, ["--data", str(tiny), "--out", str(tmp_path / "o")],
            "MINIALEX_EMU_TIMEOUT expected seconds (a number > 0), got 'soon'")
