"""minialex.training from Python: a user's own CNN on an image folder with checkpoints, exact
resume, custom callbacks, schedules, evaluation, stop requests, silence without callbacks, and
data parallel under mpiexec; minialex-train --model with a user's factory, and --resume alone."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import minialex as ma
from minialex import functional as F
from minialex import nn, train
from minialex.data import DataLoader, ImageFolder, Transform, dataset_stats, make_synthetic
from minialex.training import (Callback, Checkpoint, Constant, Plateau, StepLR, Stopped, Trainer, evaluate)

from .test_distributed import MPIEXEC, ROOT, needs_mpi

SIZE = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("data") / "tiny", train_per_class=4, val_per_class=2, quiet=True)


@pytest.fixture(scope="module")
def stats(tiny):
    return dataset_stats(ImageFolder(tiny / "train"))


def small_cnn(num_classes=10, dropout=0.3):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
                         nn.Dropout(dropout), nn.Linear(16 * 8 * 8, num_classes))


def _parts(tiny, stats, batch=8, seed=0):
    """A freshly seeded model (seed: minialex's generator), its SGD, and the loaders: what a user writes."""
    ma.manual_seed(seed)
    model = small_cnn()
    opt = ma.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    tr = ImageFolder(tiny / "train")
    va = ImageFolder(tiny / "val", classes=tr.classes)
    train_loader = DataLoader(tr, Transform(SIZE, stats, "train"), batch, shuffle=True, drop_last=True, workers=0)
    return model, opt, train_loader, DataLoader(va, Transform(SIZE, stats, "val"), 8, workers=0)


class Counter(Callback):
    """A custom callback with state: the records it saw, the steps it counted (kept by a Checkpoint)."""

    def __init__(self):
        self.records, self.steps = [], 0

    def on_step_end(self, trainer, step):
        self.steps += 1

    def on_epoch_end(self, trainer, record):
        self.records.append(dict(record))

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def _fit(tiny, stats, out, epochs, resume=None, seed=0):
    model, opt, tl, vl = _parts(tiny, stats, seed=seed)
    counter = Counter()
    trainer = Trainer(model, opt, tl, vl, epochs=epochs, schedule=Plateau(patience=1, factor=0.5),
                      callbacks=[Checkpoint(out), counter])
    return trainer, trainer.fit(resume=resume), counter


def test_a_users_cnn_trains_checkpoints_and_resumes_exactly(tiny, stats, tmp_path):
    whole, history, counter = _fit(tiny, stats, tmp_path / "whole", 3)
    assert [r["epoch"] for r in history] == [1, 2, 3] == [r["epoch"] for r in counter.records]
    assert {"epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr", "images_per_s",
            "seconds"} <= set(history[0])
    assert counter.steps == 15 and whole.step == 15                     # 40 images, batches of 8
    assert history[-1]["train_loss"] < history[0]["train_loss"]         # it learns
    _fit(tiny, stats, tmp_path / "part", 1)
    # a new process would build everything afresh: another seed changes nothing once resumed
    resumed, history2, counter2 = _fit(tiny, stats, tmp_path / "part", 3, resume=tmp_path / "part" / "last.npz", seed=7)
    assert [r["epoch"] for r in counter2.records] == [2, 3] and counter2.steps == 15
    assert [r["lr"] for r in history2] == [r["lr"] for r in history]     # the schedule's state came back
    a, b = ma.load(tmp_path / "whole" / "last.npz"), ma.load(tmp_path / "part" / "last.npz")
    arrays = [k for k in a if k.startswith(("model/", "optim/"))]
    assert len(arrays) == 3 + 2 * 3 + 6                                  # lr, momentum, wd; 6 velocities
    for k in arrays:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert str(a["meta/rng_state"]) == str(b["meta/rng_state"])
    lines = [json.loads(s) for s in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert (tmp_path / "part" / "best.npz").is_file() and not (tmp_path / "part" / ".minialex-train.lock").exists()


def test_a_folder_holding_a_run_is_refused_unless_resumed_or_overwritten(tiny, stats, tmp_path):
    _fit(tiny, stats, tmp_path, 1)
    before = (tmp_path / "last.npz").read_bytes()
    with pytest.raises(Exception, match="already holds a run"):
        _fit(tiny, stats, tmp_path, 1)
    assert (tmp_path / "last.npz").read_bytes() == before
    model, opt, tl, vl = _parts(tiny, stats)
    Trainer(model, opt, tl, vl, epochs=1, callbacks=[Checkpoint(tmp_path, overwrite=True)]).fit()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_fit_prints_nothing_without_callbacks(tiny, stats, capsys):
    model, opt, tl, vl = _parts(tiny, stats)
    history = Trainer(model, opt, tl, vl, epochs=1).fit()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "" and len(history) == 1


class InterruptAt(Callback):
    """Ctrl-C at a given global step: a real SIGINT to this process, or the notebook's KeyboardInterrupt."""

    def __init__(self, at, real_signal):
        self.at, self.real = at, real_signal

    def on_step_end(self, trainer, step):
        if trainer.step == self.at:
            if self.real:
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt


@pytest.mark.parametrize("real_signal", [True, False])
def test_ctrl_c_saves_through_checkpoint_and_returns_the_history(tiny, stats, tmp_path, capsys, real_signal):
    model, opt, tl, vl = _parts(tiny, stats)
    trainer = Trainer(model, opt, tl, vl, epochs=3, callbacks=[Checkpoint(tmp_path), InterruptAt(7, real_signal)])
    history = trainer.fit()                                              # returns: no exception, no exit
    assert [r["epoch"] for r in history] == [1] and trainer.interrupted.signum == signal.SIGINT
    saved = ma.load(tmp_path / "interrupted.npz")
    assert int(saved["meta/epoch"]) == 1 and int(saved["meta/interrupted_in_epoch"]) == 2
    np.testing.assert_array_equal(saved["model/8.weight"], model.state_dict()["8.weight"])   # as they were
    assert "Ctrl-C during epoch 2: saved" in capsys.readouterr().err
    assert not (tmp_path / ".minialex-train.lock").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # the handler is given back
    model, opt, tl, vl = _parts(tiny, stats)
    again = Trainer(model, opt, tl, vl, epochs=2, callbacks=[Checkpoint(tmp_path)])
    assert [r["epoch"] for r in again.fit(resume=tmp_path / "interrupted.npz")] == [1, 2]


def test_a_diverging_loss_raises_stopped_naming_the_last_good_checkpoint(tiny, stats, tmp_path):
    model, opt, tl, vl = _parts(tiny, stats)
    opt.lr = 1e12
    with np.errstate(all="ignore"), pytest.raises(Stopped, match="no last.npz checkpoint yet") as stop:
        Trainer(model, opt, tl, vl, epochs=1, callbacks=[Checkpoint(tmp_path)]).fit()
    assert "training loss became" in str(stop.value) and not (tmp_path / "last.npz").exists()


def test_evaluate_scores_logits_and_averages_ten_crops():
    rng = np.random.default_rng(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 7))
    x = rng.standard_normal((9, 3, 2, 2)).astype(np.float32)
    y = rng.integers(0, 7, 9)
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]
    logits = model(ma.Tensor(x)).numpy().astype(np.float64)
    order = np.argsort(-logits, axis=1)
    m = evaluate(model, batches)
    assert m["top1"] == pytest.approx(np.mean(order[:, 0] == y))
    assert m["top5"] == pytest.approx(np.mean([y[i] in order[i, :5] for i in range(9)]))
    expected = np.mean([F.cross_entropy(model(ma.Tensor(xb)), yb).item() * len(yb) for xb, yb in batches]) * 2 / 9
    assert m["loss"] == pytest.approx(expected, rel=1e-6)
    crops = rng.standard_normal((4, 10, 3, 2, 2)).astype(np.float32)     # (B, 10 crops, C, H, W)
    yc = rng.integers(0, 7, 4)
    out = model(ma.Tensor(crops.reshape(40, 3, 2, 2))).numpy().astype(np.float64).reshape(4, 10, 7)
    p = np.exp(out - out.max(-1, keepdims=True))
    probs = (p / p.sum(-1, keepdims=True)).mean(1)
    mc = evaluate(model, [(crops, yc)])
    assert mc["loss"] == pytest.approx(-np.log(probs[np.arange(4), yc]).mean(), rel=1e-6)
    assert mc["top1"] == pytest.approx(np.mean(probs.argmax(1) == yc))
    empty = evaluate(model, [])
    assert all(np.isnan(empty[k]) for k in ("loss", "top1", "top5")) and empty["confusion"].sum() == 0
    counts = evaluate(model, batches)["confusion"]                        # rows: true class; columns: top-1
    expected = np.zeros((7, 7), np.int64)
    np.add.at(expected, (y, order[:, 0]), 1)
    np.testing.assert_array_equal(counts, expected)


def test_schedules_give_the_rate_of_each_epoch_and_keep_their_state():
    step = StepLR(2, gamma=0.5)
    step.start(0.1)
    assert [step.lr(e) for e in range(1, 6)] == [0.1, 0.1, 0.05, 0.05, 0.025]
    plateau = Plateau(patience=2, factor=0.1)
    plateau.start(1.0)
    for loss in (5.0, 4.0, 4.0, 4.0, 3.0, 3.0):
        plateau.step({"val_loss": loss})
    assert plateau.lr(7) == pytest.approx(0.1) and plateau.bad == 1 and plateau.best == 3.0
    copy = Plateau(patience=2, factor=0.1)
    copy.load_state_dict(json.loads(json.dumps(plateau.state_dict())))
    copy.step({"val_loss": 3.0})
    assert copy.lr(8) == pytest.approx(0.01)                             # a second bad epoch after the resume
    constant = Constant()
    constant.start(0.3)
    assert constant.lr(100) == 0.3
    for bad in (lambda: StepLR(0), lambda: StepLR(2, gamma=0), lambda: Plateau(factor=1.5),
                lambda: Plateau(patience=0)):
        with pytest.raises((ValueError, TypeError)):
            bad()


def test_any_iterable_of_tensor_batches_trains():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 3, 4, 4)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    ma.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    opt = ma.optim.SGD(model.parameters(), lr=0.5)
    batches = [(ma.Tensor(x[i:i + 4]), ma.Tensor(y[i:i + 4].astype(np.float32)).numpy().astype(np.int64))
               for i in range(0, 16, 4)]
    history = Trainer(model, opt, batches, batches, epochs=8).fit()
    assert history[-1]["val_top1"] == 1.0 and history[-1]["train_loss"] < history[0]["train_loss"]
    with pytest.raises(ValueError, match="epochs expected an integer >= 1"):
        Trainer(model, opt, batches, epochs=0)


# ----- minialex-train --model: a network of the user's -----

FACTORY = """
from minialex import nn

def small(num_classes):
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
                        nn.Dropout(0.2), nn.Linear(8 * 16 * 16, num_classes))
    net.input_size = 32
    return net

def no_size(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))

def not_a_module(num_classes):
    return 42

def three_classes(num_classes):
    net = no_size(3)
    net.input_size = 32
    return net

def broken(num_classes):
    raise RuntimeError("my bug")

def exits(num_classes):
    import sys
    sys.exit(3)

def float_size(num_classes):
    net = small(num_classes)
    net.input_size = 32.0
    return net

def numpy_size(num_classes):
    import numpy as np
    net = small(num_classes)
    net.input_size = np.int64(32)
    return net
"""


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.chdir(tmp_path)            # `minialex-train --model mynets:small`, run where mynets.py is
    yield tmp_path
    sys.modules.pop("mynets", None)


def test_model_factory_trains_and_resume_alone_continues_it_on_its_data(tiny, factories, capsys):
    run = ["--data", str(tiny), "--model", "mynets:small", "--batch-size", "8", "--workers", "0"]
    assert train.main(run + ["--epochs", "2", "--out", "whole"]) == 0
    assert "model: mynets:small" in capsys.readouterr().out
    assert train.main(run + ["--epochs", "1", "--out", "part"]) == 0
    ckpt = ma.load(factories / "part" / "last.npz")
    assert str(ckpt["meta/arch"]) == "mynets:small" and str(ckpt["meta/data"]) == str(tiny.resolve())
    assert json.loads(str(ckpt["meta/config"]))["input_size"] == 32
    sys.modules.pop("mynets", None)
    assert train.main(["--resume", "part/last.npz", "--epochs", "2"]) == 0   # no --data, no --model
    a, b = ma.load(factories / "whole" / "last.npz"), ma.load(factories / "part" / "last.npz")
    for k in [k for k in a if k.startswith(("model/", "optim/"))]:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert int(b["meta/epoch"]) == 2 and (factories / "part" / "filters.png").is_file()


def test_a_model_factory_given_by_its_file_path(tiny, factories):
    assert train.main(["--data", str(tiny), "--model", "./mynets.py:numpy_size", "--batch-size", "8", "--epochs", "1",
                       "--workers", "0", "--out", str(factories / "run")]) == 0
    spec = f"{factories / 'mynets.py'}:numpy_size"                   # recorded with its absolute path
    assert str(ma.load(factories / "run" / "last.npz")["meta/arch"]) == spec
    assert train.main(["--resume", "run/last.npz", "--model", "mynets.py:numpy_size", "--epochs", "2"]) == 0
    os.chdir(tiny)                                                     # anywhere: the path is absolute
    assert train.main(["--resume", str(factories / "run" / "last.npz"), "--epochs", "3"]) == 0
    assert int(ma.load(factories / "run" / "last.npz")["meta/epoch"]) == 3


@pytest.fixture
def no_work(monkeypatch):
    def forbidden(*args, **kw):
        raise AssertionError("work started before the bad input was reported")
    monkeypatch.setattr(train, "dataset_stats", forbidden)
    monkeypatch.setattr(Trainer, "train_epoch", forbidden)


@pytest.mark.parametrize("flags,said", [
    (["--model", "nosuchmodule:f"], "cannot import nosuchmodule (ModuleNotFoundError"),
    (["--model", "mynets:missing"], "mynets has no function missing"),
    (["--model", "mynets"], "expected package.module:function"),
    (["--model", "mynets:not_a_module"], "not_a_module(10) expected to return a minialex nn.Module, got int"),
    (["--model", "mynets:broken"], "broken(10) failed (RuntimeError: my bug)"),
    (["--model", "mynets:exits"], "exits(10) failed (SystemExit: 3)"),
    (["--model", "mynets:float_size"], "the network's input_size expected an integer >= 1, got 32.0"),
    (["--model", "mynets:no_size"], "give --input-size"),
    (["--model", "mynets:no_size", "--input-size", "16"], "does not go through it"),
    (["--model", "mynets:three_classes"], "expected (N, 10) logits"),
    (["--model", "mynets:small", "--init", "paper"], "--init is an option of --arch"),
    (["--model", "mynets:small", "--arch", "alexnet"], "both name the network"),
    (["--arch", "alexnet", "--input-size", "64"], "--input-size is for a --model"),
    (["--model", "missing_file.py:small"], "no such file"),
])
def test_a_bad_model_factory_is_a_clear_error_before_any_work(tiny, factories, capsys, no_work, flags, said):
    capsys.readouterr()
    assert train.main(["--data", str(tiny), "--out", "o", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minialex-train: error: ") and said in err and "Traceback" not in err, err
    assert not (factories / "o").exists()


def test_resume_alone_says_when_the_runs_data_folder_is_gone(tiny, tmp_path, capsys):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(tiny, data)
    assert train.main(["--data", str(data), "--batch-size", "8", "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    data.rename(tmp_path / "moved")
    capsys.readouterr()
    last = str(tmp_path / "run" / "last.npz")
    assert train.main(["--resume", last, "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert f"its run trained on {data}" in err and "give --data" in err
    assert train.main(["--resume", last, "--epochs", "2", "--data", str(tmp_path / "moved")]) == 0
    assert str(ma.load(last)["meta/data"]) == str(tmp_path / "moved")


# ----- data parallel from Python -----

SCRIPT = """
import sys
import minialex as ma
from minialex import nn
from minialex.data import DataLoader, ImageFolder, Transform, dataset_stats
from minialex.training import Checkpoint, Trainer

data, out, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
tr = ImageFolder(data + "/train")
stats = dataset_stats(tr)
ma.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(), nn.Dropout(0.5),
                      nn.Linear(8 * 16 * 16, 10))
opt = ma.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
loader = DataLoader(tr, Transform(32, stats, "train"), batch, shuffle=True, drop_last=True, workers=0, cache=False)
trainer = Trainer(model, opt, loader, epochs=2, callbacks=[Checkpoint(out)])
trainer.fit()
print("strategy", type(trainer.strategy).__name__, trainer.strategy.size)
"""


@needs_mpi
def test_under_mpiexec_the_trainer_is_data_parallel_and_equals_one_process(tiny, tmp_path):
    script = tmp_path / "fit.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    env.update(MINIALEX_THREADS="1", PYTHONPATH=str(ROOT))
    one = subprocess.run([sys.executable, str(script), str(tiny), str(tmp_path / "one"), "8"], env=env,
                         capture_output=True, text=True, timeout=240)
    assert one.returncode == 0 and "strategy Local 1" in one.stdout, one.stderr
    two = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(script), str(tiny), str(tmp_path / "two"), "4"],
                         env=env, capture_output=True, text=True, timeout=240)
    assert two.returncode == 0 and "strategy DataParallel 2" in two.stdout, two.stderr
    a, b = ma.load(tmp_path / "one" / "last.npz"), ma.load(tmp_path / "two" / "last.npz")
    for k in [k for k in a if k.startswith("model/")]:
        err = np.abs(a[k] - b[k]).max() / np.abs(a[k]).max()
        assert err < 1e-5, (k, err)
    assert int(b["meta/processes"]) == 2


def test_the_custom_training_example_runs_and_resumes(tiny, tmp_path, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_custom", ROOT / "examples" / "train_custom.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = str(tmp_path / "run")
    assert len(example.main(data=str(tiny), epochs=1, out=out)) == 1
    history = example.main(data=str(tiny), epochs=2, out=out, resume=f"{out}/last.npz")
    printed = capsys.readouterr().out
    assert [r["epoch"] for r in history] == [1, 2] and "epoch   2/2" in printed and "checkpoints in" in printed
    state = json.loads(str(ma.load(f"{out}/last.npz")["meta/trainer"]))["callbacks"]
    assert state["BestSoFar"]["best"] == max(r["val_top1"] for r in history)


# ----- what a user finds when things go wrong -----

def test_resume_from_an_interrupt_in_epoch_one_counts_the_steps_of_an_uninterrupted_run(tiny, stats, tmp_path):
    model, opt, tl, vl = _parts(tiny, stats)
    counter = Counter()
    trainer = Trainer(model, opt, tl, vl, epochs=2, callbacks=[Checkpoint(tmp_path), counter, InterruptAt(3, False)])
    assert trainer.fit() == [] and trainer.interrupted is not None
    saved = json.loads(str(ma.load(tmp_path / "interrupted.npz")["meta/trainer"]))
    assert saved["step"] == 0 and saved["callbacks"]["Counter"] == {"steps": 0}   # the kept state: none yet
    model, opt, tl, vl = _parts(tiny, stats)
    counter = Counter()
    again = Trainer(model, opt, tl, vl, epochs=2, callbacks=[Checkpoint(tmp_path), counter])
    assert [r["epoch"] for r in again.fit(resume=tmp_path / "interrupted.npz")] == [1, 2]
    assert again.step == 10 and counter.steps == 10                     # as if never interrupted


class Broken(Callback):
    def __init__(self, where):
        self.where = where

    def on_step_end(self, trainer, step):
        if trainer.step == 2:
            raise RuntimeError("the user's bug")

    def on_exception(self, trainer, error):
        if self.where == "on_exception":
            raise ValueError("a bug in on_exception")

    def on_fit_end(self, trainer):
        if self.where == "on_fit_end":
            raise ValueError("a bug in on_fit_end")


def test_a_failing_callback_never_leaves_the_folder_locked_nor_hides_the_error(tiny, stats, tmp_path):
    model, opt, tl, vl = _parts(tiny, stats)
    with pytest.warns(UserWarning, match="Broken.on_exception failed: ValueError"), \
            pytest.raises(RuntimeError, match="the user's bug"):
        Trainer(model, opt, tl, vl, epochs=1, callbacks=[Checkpoint(tmp_path / "a"), Broken("on_exception")]).fit()
    assert not (tmp_path / "a" / ".minialex-train.lock").exists()
    model, opt, tl, vl = _parts(tiny, stats)
    quiet = Broken("on_fit_end")
    quiet.on_step_end = lambda trainer, step: None
    with pytest.warns(UserWarning, match="Broken.on_fit_end failed"), pytest.raises(ValueError, match="on_fit_end"):
        Trainer(model, opt, tl, vl, epochs=1, callbacks=[Checkpoint(tmp_path / "b"), quiet]).fit()
    assert not (tmp_path / "b" / ".minialex-train.lock").exists() and (tmp_path / "b" / "last.npz").exists()


def test_a_checkpoint_folder_keeps_its_run_from_other_and_older_checkpoints(tiny, stats, tmp_path):
    _fit(tiny, stats, tmp_path / "mine", 3)
    _fit(tiny, stats, tmp_path / "other", 1)
    with pytest.raises(Exception, match="already holds a run"):          # resumed from elsewhere
        _fit(tiny, stats, tmp_path / "mine", 3, resume=tmp_path / "other" / "last.npz")
    import shutil
    shutil.copy(tmp_path / "other" / "last.npz", tmp_path / "mine" / "old.npz")   # epoch 1 into a folder at epoch 3
    with pytest.raises(Exception, match="would overwrite the epochs after 1"):
        _fit(tiny, stats, tmp_path / "mine", 3, resume=tmp_path / "mine" / "old.npz")
    assert int(ma.load(tmp_path / "mine" / "last.npz")["meta/epoch"]) == 3
    with pytest.raises(TypeError, match="Checkpoint: out expected a folder path, got ''"):
        Checkpoint("")


class Adds(Callback):
    def on_validation_end(self, trainer, record):
        record["extra"] = np.float32(1.5)

    def state_dict(self):
        return {"count": np.int64(3), "seen": np.arange(2)}


class Opaque(Callback):
    def state_dict(self):
        return {"thing": object()}


def test_numpy_values_are_saved_as_numbers_and_other_objects_are_named(tiny, stats, tmp_path):
    model, opt, tl, vl = _parts(tiny, stats)
    Trainer(model, opt, tl, vl, epochs=1, callbacks=[Adds(), Checkpoint(tmp_path / "a")]).fit()
    saved = ma.load(tmp_path / "a" / "last.npz")
    assert json.loads(str(saved["meta/trainer"]))["callbacks"]["Adds"] == {"count": 3, "seen": [0, 1]}
    assert json.loads(str(saved["meta/history"]))[0]["extra"] == 1.5
    model, opt, tl, vl = _parts(tiny, stats)
    with pytest.raises(TypeError, match=r"Opaque.state_dict\(\).*\['thing'\].*got object"):
        Trainer(model, opt, tl, vl, epochs=1, callbacks=[Opaque()]).fit()


def test_checkpoint_monitors_a_loss_as_lower_is_better(tiny, stats, tmp_path):
    model, opt, tl, vl = _parts(tiny, stats)
    check = Checkpoint(tmp_path / "loss", monitor="val_loss")
    history = Trainer(model, opt, tl, vl, epochs=3, callbacks=[check]).fit()
    losses = [r["val_loss"] for r in history]
    assert check.best["epoch"] == 1 + int(np.argmin(losses))
    assert int(ma.load(tmp_path / "loss" / "best.npz")["meta/epoch"]) == check.best["epoch"]
    model, opt, tl, vl = _parts(tiny, stats)
    with pytest.raises(ValueError, match="monitor expected one of the record's keys"):
        Trainer(model, opt, tl, vl, epochs=1, callbacks=[Checkpoint(tmp_path / "bogus", monitor="bogus")]).fit()
    assert not (tmp_path / "bogus" / "last.npz").exists()


def test_evaluate_leaves_the_model_in_the_mode_it_found_and_one_pass_loaders_are_refused(tiny, stats):
    model, opt, tl, vl = _parts(tiny, stats)
    model.eval()
    Trainer(model, opt, tl, vl, epochs=1).evaluate(vl)
    assert model.training is False
    batches = iter([(np.zeros((2, 3, SIZE, SIZE), np.float32), np.array([0, 1]))])
    with pytest.raises(TypeError, match="train_loader expected a loader that can be iterated once per epoch"):
        Trainer(model, opt, batches, epochs=2)
    with pytest.raises(TypeError, match="schedule expected a schedule"):
        Trainer(model, opt, tl, epochs=1, schedule="step")
    with pytest.raises(TypeError, match=r"got the class Counter \(write Counter\(\)\)"):
        Trainer(model, opt, tl, epochs=1, callbacks=[Counter])


def test_the_stall_warning_tells_a_loss_above_chance_apart(tiny, stats):
    model, opt, tl, vl = _parts(tiny, stats)
    opt.lr = 2.0                                                          # far too high, not yet infinite
    with np.errstate(all="ignore"), pytest.warns(UserWarning, match="does worse than chance"):
        try:
            Trainer(model, opt, tl, epochs=1, callbacks=[train.StallWarning(2)]).fit()
        except Stopped:
            pytest.skip("the loss became infinite before the warning")


def test_an_interrupted_fit_returns_to_the_kept_state_and_continues_as_one_run(tiny, stats, tmp_path):
    from minialex.training import StepLog
    model, opt, tl, vl = _parts(tiny, stats)
    log = StepLog(every=1)
    trainer = Trainer(model, opt, tl, vl, epochs=2, callbacks=[log, InterruptAt(7, False)])
    assert [r["epoch"] for r in trainer.fit()] == [1] and trainer.step == 5          # epoch 2's steps undone
    assert [r["step"] for r in log.records] == [1, 2, 3, 4, 5]
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, InterruptAt)]
    trainer.fit()
    assert trainer.step == 10 and [r["step"] for r in log.records] == list(range(1, 11))


def test_resume_from_a_read_checkpoint_object_into_its_own_folder(tiny, stats, tmp_path):
    from minialex import checkpoint
    _fit(tiny, stats, tmp_path, 1)
    ckpt = checkpoint.read(tmp_path / "last.npz")
    trainer, history, _ = _fit(tiny, stats, tmp_path, 2, resume=ckpt)
    assert [r["epoch"] for r in history] == [1, 2] and trainer.restored_from == tmp_path / "last.npz"


def test_a_resumed_command_run_keeps_its_best_checkpoint(tiny, tmp_path):
    run = ["--data", str(tiny), "--batch-size", "8", "--workers", "0"]
    assert train.main(run + ["--epochs", "1", "--out", str(tmp_path)]) == 0
    assert train.main(run + ["--resume", str(tmp_path / "last.npz"), "--epochs", "3"]) == 0
    state = json.loads(str(ma.load(tmp_path / "last.npz")["meta/trainer"]))
    tops = [r["val_top1"] for r in json.loads(str(ma.load(tmp_path / "last.npz")["meta/history"]))]
    assert state["callbacks"]["Checkpoint"]["best"]["epoch"] == 1 + tops.index(max(tops))   # the first best
    assert int(ma.load(tmp_path / "best.npz")["meta/epoch"]) == 1 + tops.index(max(tops))
