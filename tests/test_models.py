"""AlexNet as the paper's table gives it, nn modules, SGD, save/load."""
import numpy as np
import pytest

import minialex as ma
from minialex import functional as F


def test_alexnet_shapes_follow_the_paper_table():
    model = ma.models.AlexNet()
    x = ma.Tensor(np.random.default_rng(0).standard_normal((1, 3, 227, 227)).astype(np.float32))
    expected = {"conv1": (96, 55, 55), "pool1": (96, 27, 27), "norm1": (96, 27, 27),
                "conv2": (256, 27, 27), "pool2": (256, 13, 13), "conv3": (384, 13, 13),
                "conv4": (384, 13, 13), "conv5": (256, 13, 13), "pool5": (256, 6, 6),
                "flatten": (9216,), "fc6": (4096,), "fc7": (4096,), "fc8": (1000,)}
    with ma.no_grad():
        for name in model.layer_order:
            x = getattr(model, name)(x)
            if name in expected:
                assert x.shape[1:] == expected[name], name


def test_alexnet_parameter_count_and_names():
    model = ma.models.AlexNet()
    assert sum(p.size for p in model.parameters()) == 62_378_344
    names = [f"{layer}.{kind}" for layer in ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
             for kind in ["weight", "bias"]]
    assert list(model.state_dict()) == names
    assert all(p.dtype == np.float32 for p in model.parameters())


def test_alexnet_two_towers_and_lrn_first():
    towers = ma.models.AlexNet(groups=2)
    assert towers.conv2.weight.shape == (256, 48, 5, 5) and towers.conv4.weight.shape == (384, 192, 3, 3)
    first = ma.models.AlexNet.mini(lrn_before_pool=True)
    assert first.layer_order[2:4] == ["norm1", "pool1"]
    assert first(ma.Tensor(np.zeros((2, 3, 64, 64), np.float32))).shape == (2, 10)


@pytest.mark.parametrize("init", ["he", "paper", "xavier"])
def test_alexnet_initial_loss_is_near_ln_classes(init):
    ma.manual_seed(0)
    model = ma.models.AlexNet(num_classes=1000, init=init)
    x = ma.Tensor(np.random.default_rng(1).standard_normal((4, 3, 227, 227)).astype(np.float32))
    with ma.no_grad():
        loss = F.cross_entropy(model(x), np.array([0, 1, 2, 3])).item()
    if init == "paper":  # biases of 1 in fc6/fc7 make fc8's inputs large: logits spread out more
        assert np.log(1000) < loss < np.log(1000) + 1.5
        assert np.all(model.conv2.bias.data == 1) and np.all(model.conv3.bias.data == 0)
        assert abs(model.fc6.weight.data.std() - 0.01) < 1e-4
    else:
        assert abs(loss - np.log(1000)) < 0.1


def test_alexnet_float64_gradients_of_every_layer():
    ma.manual_seed(1)
    model = ma.models.AlexNet(num_classes=10).double()
    x = ma.Tensor(np.random.default_rng(2).standard_normal((1, 3, 227, 227)))
    target = np.array([3])
    params = model.parameters()

    def loss(*_):
        ma.manual_seed(5)  # the same dropout masks in every evaluation
        return F.cross_entropy(model(x), target)

    assert ma.gradcheck(loss, params, atol=1e-9, rtol=1e-4, samples=2)
    loss().backward()
    for name, p in model.named_parameters():  # the check above compared real, non-zero gradients
        assert np.abs(p.grad).max() > 1e-6, name


def test_small_alexnet_overfits_a_fixed_batch():
    ma.manual_seed(0)
    model = ma.models.AlexNet.mini(num_classes=4).eval()  # dropout off: it exists to stop memorising
    rng = np.random.default_rng(3)
    x = ma.Tensor(rng.standard_normal((16, 3, 64, 64)).astype(np.float32))
    y = rng.integers(0, 4, 16)
    opt = ma.optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
    losses = []
    for _ in range(50):
        loss = F.cross_entropy(model(x), y)
        model.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses


def test_sgd_two_steps_by_hand():
    w = ma.nn.Parameter(np.array([1.0, -2.0]))
    opt = ma.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.01)
    for _ in range(2):
        w.grad = np.array([0.5, 0.25])
        opt.step()
    # v1 = -0.01*0.1*w0 - 0.1*g = [-0.051, -0.023];            w1 = [0.949, -2.023]
    # v2 = 0.9*v1 - 0.001*w1 - 0.1*g = [-0.096849, -0.043677]; w2 = w1 + v2
    np.testing.assert_allclose(w.data, [0.852151, -2.066677], rtol=1e-12)
    np.testing.assert_allclose(opt.velocity[0], [-0.096849, -0.043677], rtol=1e-12)
    other = ma.optim.SGD([ma.nn.Parameter(np.array([0.0, 0.0]))], lr=1.0)
    other.load_state_dict(opt.state_dict())
    assert other.lr == 0.1 and other.momentum == 0.9
    np.testing.assert_array_equal(other.velocity[0], opt.velocity[0])
    with pytest.raises(ValueError, match="SGD: lr expected a finite number >= 0, got -1"):
        ma.optim.SGD([w], lr=-1)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="SGD: momentum expected a finite number"):
            ma.optim.SGD([w], lr=0.1, momentum=bad)


def test_sgd_skips_parameters_without_gradient():
    a, b = ma.nn.Parameter(np.ones(2)), ma.nn.Parameter(np.ones(2))
    a.grad = np.ones(2)
    ma.optim.SGD([a, b], lr=0.5).step()
    np.testing.assert_array_equal(a.data, [0.5, 0.5])
    np.testing.assert_array_equal(b.data, [1.0, 1.0])


def test_save_load_round_trip_and_strict_loading(tmp_path):
    ma.manual_seed(0)
    model = ma.models.AlexNet.mini()
    path = tmp_path / "w.npz"
    ma.save(model.state_dict(), path)
    ma.manual_seed(1)
    other = ma.models.AlexNet.mini()
    assert not np.array_equal(other.conv1.weight.data, model.conv1.weight.data)
    other.load_state_dict(ma.load(path))
    for (n, a), (_, b) in zip(model.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=n)
    sd = ma.load(path)
    del sd["fc7.bias"]
    with pytest.raises(KeyError, match=r"missing \['fc7.bias'\]"):
        other.load_state_dict(sd)
    sd = ma.load(path)
    sd["extra"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"unexpected \['extra'\]"):
        other.load_state_dict(sd)
    sd = ma.load(path)
    sd["conv1.weight"] = np.zeros((1, 2))
    with pytest.raises(ValueError, match=r"conv1.weight expected shape \(32, 3, 5, 5\)"):
        other.load_state_dict(sd)


def test_load_refuses_pickled_arrays(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        ma.load(path)
    with pytest.raises(TypeError, match="save: x expected a numeric or string array"):
        ma.save({"x": np.array([{"a": 1}], dtype=object)}, tmp_path / "y.npz")


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    ma.save({"w": np.arange(3.0)}, path)

    def crash(f, array, **kw):
        f.write(b"half an array")
        raise KeyboardInterrupt
    monkeypatch.setattr(np.lib.format, "write_array", crash)
    with pytest.raises(KeyboardInterrupt):
        ma.save({"w": np.zeros(3)}, path)
    monkeypatch.undo()
    np.testing.assert_array_equal(ma.load(path)["w"], np.arange(3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]  # no temporary file left behind
    (tmp_path / "plain").write_bytes(b"")
    assert (tmp_path / "ckpt.npz").stat().st_mode == (tmp_path / "plain").stat().st_mode  # umask, not 0600


def test_module_modes_and_to():
    model = ma.nn.Sequential(ma.nn.Linear(3, 2), ma.nn.Dropout(0.5))
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    model.eval()
    assert not model._modules["1"].training
    x = ma.Tensor(np.ones((1, 3), np.float32))
    np.testing.assert_array_equal(model(x).data, model(x).data)  # eval: no dropout
    model.to("cuda-emu")
    assert model.device == "cuda-emu" and model.parameters()[0].device == "cuda-emu"


def _arrays(obj):
    """Every ndarray inside a (nested) cache."""
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _arrays(item)


def test_float32_model_never_makes_float64_arrays():
    ma.manual_seed(0)
    model = ma.models.AlexNet.mini(num_classes=10)
    x = ma.Tensor(np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32))
    loss = F.cross_entropy(model(x), np.array([1, 2, 3, 4]))
    seen, stack, dtypes = set(), [loss], set()
    while stack:  # walk the graph: every output and every array an op kept for its backward
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        dtypes.add(t.dtype)
        if t._ctx is not None:
            dtypes.update(a.dtype for a in _arrays(t._ctx.cache) if a.dtype.kind == "f")
            stack.extend(i for i in t._ctx.inputs if i is not None)
    assert len(seen) > 20 and dtypes == {np.dtype(np.float32)}
    loss.backward()
    ma.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4).step()
    assert {p.grad.dtype for p in model.parameters()} == {np.dtype(np.float32)}
    assert {p.dtype for p in model.parameters()} == {np.dtype(np.float32)}


def test_load_state_dict_checks_every_entry_before_copying_any():
    ma.manual_seed(0)
    model = ma.models.AlexNet.mini()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    ma.manual_seed(1)
    sd = ma.models.AlexNet.mini().state_dict()
    for bad in (np.zeros(10, np.int8), np.zeros(10, np.complex64), np.zeros(11, np.float32)):
        sd["fc8.bias"] = bad                                  # the last key: all others would be copied first
        with pytest.raises((TypeError, ValueError), match="fc8.bias expected"):
            model.load_state_dict(sd)
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_api_refuses_what_it_cannot_represent(tmp_path):
    for bad, words in [(None, "got NoneType"), ("1.5", "got str"), (["1.5", "2"], "dtype <U3"),
                       (np.ma.array([1.0, 2.0], mask=[0, 1]), "masked array"),
                       (np.array(["2020-01-01"], dtype="datetime64[D]"), "datetime64"),
                       (np.array([1 + 2j]), "complex128"), (np.array([{}], dtype=object), "object")]:
        with pytest.raises(TypeError, match=words.replace("[", r"\[")):
            ma.Tensor(bad)
    model = ma.nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"Linear.to: dtype expected float32 or float64 .*got int32"):
        model.to(dtype=np.int32)
    assert model.weight.dtype == np.float32
    for seed in (-1, 1.5, "3", True):
        with pytest.raises(ValueError, match="manual_seed: seed expected an integer >= 0"):
            ma.manual_seed(seed)
    names = {"file": np.arange(3), "allow_pickle": np.ones(2), "a/b.c": np.zeros((2, 2), np.float32)}
    ma.save(names, tmp_path / "odd.npz")
    back = ma.load(tmp_path / "odd.npz")
    assert set(back) == set(names) and all(np.array_equal(back[k], v) for k, v in names.items())
    assert np.load(tmp_path / "odd.npz")["file"].tolist() == [0, 1, 2]     # still a plain .npz


def test_summary_repr_and_forward_hooks_for_any_model():
    model = ma.nn.Sequential(ma.nn.Conv2d(3, 4, 3, padding=1), ma.nn.ReLU(), ma.nn.MaxPool2d(2, 2), ma.nn.Flatten(),
                             ma.nn.Linear(4 * 4 * 4, 5))
    table = ma.summary(model, (3, 8, 8), batch_size=2)
    lines = table.splitlines()
    assert [line.split()[0] for line in lines[1:6]] == ["0", "1", "2", "3", "4"]
    assert "4 x 8 x 8" in lines[1] and "112" in lines[1]                 # conv: 4*3*3*3 + 4 parameters
    assert lines[1].split()[-2] == f"{2 * 4 * 8 * 8 * 4 / 2**20:.1f}"   # activations of a batch of 2, MiB
    assert "325" in lines[5] and lines[5].split()[3] == f"{2 * 64 * 5 / 1e6:.1f}"
    assert repr(model).startswith("Sequential(\n  (0): Conv2d(3, 4, kernel_size=3, stride=1, padding=1)")
    seen = []
    handle = model._modules["1"].register_forward_hook(lambda m, inputs, out: seen.append(out.shape))
    model(ma.Tensor(np.zeros((2, 3, 8, 8), np.float32)))
    handle.remove()
    model(ma.Tensor(np.zeros((2, 3, 8, 8), np.float32)))
    assert seen == [(2, 4, 8, 8)]
