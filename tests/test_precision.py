"""Mixed precision: float16 compute with float32 accumulation where a GPU accumulates (the CPU
reference is the spec), float32 master weights through a differentiable cast, autocast, the
dynamic loss scaler, and float16 training that tracks float32's."""
import json

import numpy as np
import pytest

import minialex as ma
from minialex import functional as F
from minialex.training import LossScaler, Trainer

RNG = np.random.default_rng


def _t(a, grad=False):
    return ma.Tensor(a, requires_grad=grad)


def test_products_accumulate_in_float32_and_round_once():
    """A long dot product of float16 numbers: summed in float16 it drifts far from the float64
    value; the reference sums in float32 and rounds once (what tensor cores do)."""
    rng = RNG(0)
    x = rng.uniform(0.5, 1.0, (2, 4096)).astype(np.float16)
    w = rng.uniform(0.5, 1.0, (3, 4096)).astype(np.float16)
    exact = (x.astype(np.float64) @ w.T.astype(np.float64))
    got = F.linear(_t(x), _t(w)).numpy()
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, (x.astype(np.float32) @ w.T.astype(np.float32)).astype(np.float16))
    half_sums = np.zeros((2, 3), np.float16)
    for k in range(4096):                                                  # summed in float16
        half_sums = (half_sums + (x[:, k:k + 1] * w[:, k]).astype(np.float16)).astype(np.float16)
    assert np.abs(got - exact).max() / exact.max() < 1e-3 < np.abs(half_sums - exact).max() / exact.max()
    xc = rng.uniform(0.5, 1.0, (1, 64, 9, 9)).astype(np.float16)
    wc = rng.uniform(0.5, 1.0, (4, 64, 3, 3)).astype(np.float16)
    y = F.conv2d(_t(xc), _t(wc)).numpy()
    ref = F.conv2d(_t(xc.astype(np.float64)), _t(wc.astype(np.float64))).numpy()
    assert y.dtype == np.float16 and np.abs(y - ref).max() / ref.max() < 1e-3


def test_lrn_sums_squares_in_float32_where_float16_would_overflow():
    x = np.full((1, 5, 2, 2), 300.0, np.float16)                          # 300^2 overflows float16
    y = F.local_response_norm(_t(x), size=5, alpha=1e-4, beta=0.75, k=2.0).numpy()
    ref = F.local_response_norm(_t(x.astype(np.float64)), size=5, alpha=1e-4, beta=0.75, k=2.0).numpy()
    assert y.dtype == np.float16 and np.isfinite(y).all()
    np.testing.assert_allclose(y, ref, rtol=1e-3)


def test_autocast_casts_products_and_master_weights_get_float32_gradients():
    rng = RNG(1)
    model = ma.nn.Sequential(ma.nn.Conv2d(3, 4, 3, padding=1), ma.nn.ReLU(), ma.nn.Flatten(), ma.nn.Linear(4 * 6 * 6, 5))
    x = _t(rng.standard_normal((2, 3, 6, 6)).astype(np.float32))
    with ma.autocast():
        logits = model(x)
    assert logits.dtype == np.float16
    loss = F.cross_entropy(logits, np.array([1, 3]))
    assert loss.dtype == np.float32                                        # the softmax in float32
    loss.backward()
    assert all(p.grad.dtype == np.float32 for p in model.parameters())
    with_32 = model(x)                                                     # outside autocast: float32
    loss32 = F.cross_entropy(with_32, np.array([1, 3]))
    assert with_32.dtype == np.float32 and abs(loss32.item() - loss.item()) < 1e-2
    w = _t(rng.standard_normal((3, 3)).astype(np.float32), grad=True)
    (w.astype("float16") * 2).sum().backward()
    assert w.grad.dtype == np.float32 and np.all(w.grad == 2)


def test_the_loss_scaler_skips_and_halves_on_overflow_and_grows_after_clean_steps():
    p = _t(np.ones(3, np.float32), grad=True)
    scaler = LossScaler(scale=1024.0, every=3)
    p.grad = np.array([2048.0, np.inf, 0.0], np.float32)
    assert scaler.unscale([p]) is False and scaler.scale == 512.0 and scaler.skipped == 1
    for k in range(3):
        p.grad = np.array([512.0, 0.0, -512.0], np.float32)
        assert scaler.unscale([p]) is True
        np.testing.assert_array_equal(p.grad, [1.0, 0.0, -1.0])
    assert scaler.scale == 1024.0 and scaler.clean == 0
    copy = LossScaler()
    copy.load_state_dict(json.loads(json.dumps(scaler.state_dict())))
    assert (copy.scale, copy.skipped) == (1024.0, 1)
    with pytest.raises(ValueError, match="LossScaler: scale expected a number > 0"):
        LossScaler(scale=0)


def _batches(n=8, seed=3):
    rng = RNG(seed)
    x = rng.standard_normal((n * 16, 3, 8, 8)).astype(np.float32)
    y = (x[:, 0].mean(axis=(1, 2)) > 0).astype(np.int64) + 2 * (x[:, 1].mean(axis=(1, 2)) > 0)
    return [(x[i:i + 16], y[i:i + 16]) for i in range(0, n * 16, 16)]


def _net():
    ma.manual_seed(0)
    return ma.nn.Sequential(ma.nn.Conv2d(3, 8, 3, padding=1), ma.nn.ReLU(), ma.nn.MaxPool2d(2, 2), ma.nn.Flatten(),
                            ma.nn.Linear(8 * 4 * 4, 4))


def test_an_overflow_is_skipped_and_training_recovers(tmp_path):
    """A scale far too large (2^40) overflows float16 gradients: steps are skipped, the scale
    halves until it fits, and then the network learns (its loss falls below ln(4), chance's)."""
    model = _net()
    opt = ma.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = LossScaler(scale=2.0 ** 40, every=1000)
    trainer = Trainer(model, opt, _batches(), _batches(4, seed=4), epochs=6, precision="fp16", scaler=scaler,
                      callbacks=[ma.training.Checkpoint(tmp_path)])
    history = trainer.fit()
    assert history[0]["skipped_steps"] >= 8 and sum(r["skipped_steps"] for r in history) == scaler.skipped
    assert scaler.scale < 2.0 ** 30 and history[-1]["skipped_steps"] == 0
    assert history[-1]["train_loss"] < min(0.8 * history[1]["train_loss"], np.log(4))   # below chance's loss
    saved = json.loads(str(ma.load(tmp_path / "last.npz")["meta/trainer"]))
    assert saved["precision"] == "fp16" and saved["scaler"]["skipped"] == scaler.skipped


def test_float16_training_reaches_float32_accuracy_and_resumes_exactly(tmp_path):
    """The same run in both precisions (a scale that never overflows here, so no step is skipped):
    the losses track each other and the final validation accuracy agrees within 0.5 points (of
    1,024 images)."""
    runs = {}
    for precision in ("fp32", "fp16"):
        model = _net()
        opt = ma.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
        runs[precision] = Trainer(model, opt, _batches(32), _batches(64, seed=5), epochs=5, precision=precision,
                                  scaler=LossScaler(2.0 ** 8) if precision == "fp16" else None).fit()
    fp32, fp16 = runs["fp32"], runs["fp16"]
    assert abs(fp32[-1]["val_top1"] - fp16[-1]["val_top1"]) <= 0.005 and fp16[-1]["val_top1"] > 0.5
    assert all(abs(a["train_loss"] - b["train_loss"]) < 0.03 * a["train_loss"] for a, b in zip(fp32, fp16))
    assert sum(r["skipped_steps"] for r in fp16) == 0
    for folder, epochs in (("whole", 2), ("part", 1)):
        model = _net()
        opt = ma.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        Trainer(model, opt, _batches(), epochs=epochs, precision="fp16",
                callbacks=[ma.training.Checkpoint(tmp_path / folder)]).fit()
    model = _net()
    opt = ma.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    Trainer(model, opt, _batches(), epochs=2, precision="fp16",
            callbacks=[ma.training.Checkpoint(tmp_path / "part")]).fit(resume=tmp_path / "part" / "last.npz")
    a, b = ma.load(tmp_path / "whole" / "last.npz"), ma.load(tmp_path / "part" / "last.npz")
    for k in [k for k in a if k.startswith(("model/", "optim/"))]:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert a["meta/trainer"] == b["meta/trainer"]
