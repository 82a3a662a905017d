"""API calls that accepted nonsense or failed with an error naming no argument: each is now
refused when called, as "<function>: <argument> expected ..., got ..." (minialex/errors.py)."""
import numpy as np
import pytest

import minialex as ma
from minialex import functional as F
from minialex import nn
from minialex.data import Transform

STATS = {"mean": np.zeros(3, np.float32), "std": np.ones(3, np.float32), "eigvals": np.ones(3, np.float32),
         "eigvecs": np.eye(3, dtype=np.float32)}


def refused(kind, message, fn):
    """fn() raises `kind` with exactly `message`."""
    with pytest.raises(kind) as caught:
        fn()
    assert str(caught.value) == message
    return caught.value


@pytest.mark.parametrize("kind, message, make", [
    (ValueError, "Conv2d: kernel_size expected integers >= 1, got 0", lambda: nn.Conv2d(3, 4, 0)),
    (ValueError, "Conv2d: kernel_size expected integers >= 1, got (3, 0)", lambda: nn.Conv2d(3, 4, (3, 0))),
    (ValueError, "Conv2d: in_ch expected an integer >= 1, got 0", lambda: nn.Conv2d(0, 4, 3)),
    (ValueError, "Conv2d: out_ch expected an integer >= 1, got -2", lambda: nn.Conv2d(3, -2, 3)),
    (TypeError, "Conv2d: in_ch expected an integer >= 1, got 3.0", lambda: nn.Conv2d(3.0, 4, 3)),
    (TypeError, "Conv2d: bias expected True or False, got 'no'", lambda: nn.Conv2d(3, 4, 3, bias="no")),
    (ValueError, "Conv2d: weight_std expected a finite number >= 0, got -0.1", lambda: nn.Conv2d(3, 4, 3, weight_std=-0.1)),
    (ValueError, "Linear: in_f expected an integer >= 1, got 0", lambda: nn.Linear(0, 3)),
    (ValueError, "Linear: out_f expected an integer >= 1, got 0", lambda: nn.Linear(3, 0)),
    (TypeError, "Linear: bias expected True or False, got 2", lambda: nn.Linear(3, 4, 2)),
    (TypeError, "Linear: bias expected True or False, got None", lambda: nn.Linear(3, 4, bias=None)),
    (ValueError, "Linear: weight_std expected a finite number, got nan", lambda: nn.Linear(3, 4, weight_std=float("nan"))),
    (ValueError, "Dropout: p expected a probability in [0, 1), got 2", lambda: nn.Dropout(p=2)),
    (ValueError, "Dropout: p expected a probability in [0, 1), got 1.0", lambda: nn.Dropout(1.0)),
    (ValueError, "Dropout: p expected a probability in [0, 1), got -0.1", lambda: nn.Dropout(-0.1)),
    (ValueError, "Dropout: p expected a probability in [0, 1), got True", lambda: nn.Dropout(True)),
    (ValueError, "MaxPool2d: kernel_size expected integers >= 1, got 0", lambda: nn.MaxPool2d(0)),
    (ValueError, "MaxPool2d: stride expected integers >= 1, got 0", lambda: nn.MaxPool2d(3, 0)),
    (ValueError, "MaxPool2d: padding expected integers >= 0, got -1", lambda: nn.MaxPool2d(3, 2, -1)),
    (ValueError, "MaxPool2d: padding expected at most half the kernel (3, 3), got 2", lambda: nn.MaxPool2d(3, 2, 2)),
    (ValueError, "LocalResponseNorm: size expected an integer >= 1, got 0", lambda: nn.LocalResponseNorm(size=0)),
    (ValueError, "LocalResponseNorm: k expected a number > 0 (s = k + alpha*sum must stay positive), got 0",
     lambda: nn.LocalResponseNorm(k=0)),
    (ValueError, "LocalResponseNorm: alpha expected a finite number >= 0, got -1", lambda: nn.LocalResponseNorm(alpha=-1)),
    (ValueError, "LocalResponseNorm: beta expected a finite number, got inf", lambda: nn.LocalResponseNorm(beta=float("inf"))),
    (TypeError, "Sequential: layer 1 expected a Module, got the class ReLU (call it: ReLU())",
     lambda: nn.Sequential(nn.Flatten(), nn.ReLU)),
    (TypeError, "Sequential: layer 0 expected a Module, got function", lambda: nn.Sequential(F.relu)),
])
def test_layers_check_their_settings_when_built(kind, message, make):
    refused(kind, message, make)


def test_alexnet_checks_its_settings():
    refused(ValueError, "AlexNet: num_classes expected an integer >= 1, got 0", lambda: ma.models.AlexNet.mini(num_classes=0))
    refused(TypeError, "AlexNet: num_classes expected an integer >= 1, got '10'", lambda: ma.models.AlexNet.mini(num_classes="10"))
    refused(ValueError, "AlexNet: dropout expected a probability in [0, 1), got 1", lambda: ma.models.AlexNet.mini(dropout=1))
    refused(TypeError, "AlexNet: lrn_before_pool expected True or False, got 'yes'",
            lambda: ma.models.AlexNet.mini(lrn_before_pool="yes"))
    refused(ValueError, "AlexNet: groups expected 1 or 2 (the paper's two towers), got True",
            lambda: ma.models.AlexNet.mini(groups=True))
    assert ma.models.AlexNet.mini(num_classes=np.int64(3)).fc8.weight.shape == (3, 512)


def test_sgd_checks_its_parameters_and_rates():
    model = nn.Linear(2, 3)
    refused(ValueError, "SGD: params expected at least one Parameter, got none (an empty list: does the model have "
                        "parameters?)", lambda: ma.optim.SGD([], lr=0.1))
    refused(ValueError, "SGD: params expected at least one Parameter, got none (an empty list: does the model have "
                        "parameters?)", lambda: ma.optim.SGD(nn.ReLU().parameters(), lr=0.1))
    refused(TypeError, "SGD: params expected an iterable of Parameters (give model.parameters()), got Linear",
            lambda: ma.optim.SGD(model, lr=0.1))
    refused(TypeError, "SGD: params expected an iterable of Parameters (give a list of them), got Parameter",
            lambda: ma.optim.SGD(model.weight, lr=0.1))
    refused(TypeError, "SGD: params[1] expected a Parameter (a Tensor with requires_grad=True), got ndarray",
            lambda: ma.optim.SGD([model.weight, np.zeros(3)], lr=0.1))
    refused(TypeError, "SGD: params[0] expected a Parameter (a Tensor with requires_grad=True), got a Tensor with "
                       "requires_grad=False", lambda: ma.optim.SGD([ma.Tensor([1.0])], lr=0.1))
    refused(ValueError, "SGD: lr expected a finite number >= 0, got -1", lambda: ma.optim.SGD(model.parameters(), lr=-1))
    refused(ValueError, "SGD: momentum expected a number in [0, 1) (v keeps this part of itself each step), got 1.0",
            lambda: ma.optim.SGD(model.parameters(), lr=0.1, momentum=1.0))
    refused(ValueError, "SGD: weight_decay expected a finite number >= 0, got -0.5",
            lambda: ma.optim.SGD(model.parameters(), lr=0.1, weight_decay=-0.5))
    assert len(ma.optim.SGD(iter(model.parameters()), lr=0.1).params) == 2       # any iterable, once


def test_conv2d_refuses_integer_arrays_and_empty_kernels():
    x = ma.Tensor(np.ones((1, 3, 5, 5), np.float32))
    w = ma.Tensor(np.ones((4, 3, 3, 3), np.float32))
    refused(TypeError, "conv2d: x expected a floating-point Tensor (float32 or float64), got dtype int64",
            lambda: F.conv2d(ma.Tensor(np.ones((1, 3, 5, 5), np.int64)), w))
    refused(TypeError, "conv2d: weight expected a floating-point Tensor (float32 or float64), got dtype int32",
            lambda: F.conv2d(x, ma.Tensor(np.ones((4, 3, 3, 3), np.int32))))
    refused(TypeError, "conv2d: bias expected a floating-point Tensor (float32 or float64), got dtype bool",
            lambda: F.conv2d(x, w, ma.Tensor(np.ones(4, bool))))
    refused(ValueError, "conv2d: weight expected at least one filter, one channel and a 1x1 kernel, got shape "
                        "(4, 3, 0, 0)", lambda: F.conv2d(x, ma.Tensor(np.ones((4, 3, 0, 0), np.float32))))
    refused(ValueError, "conv2d: weight expected at least one filter, one channel and a 1x1 kernel, got shape "
                        "(0, 3, 3, 3)", lambda: F.conv2d(x, ma.Tensor(np.ones((0, 3, 3, 3), np.float32))))
    refused(ValueError, "conv2d: x expected at least one channel, got shape (1, 0, 5, 5)",
            lambda: F.conv2d(ma.Tensor(np.ones((1, 0, 5, 5), np.float32)), ma.Tensor(np.ones((4, 0, 3, 3), np.float32))))
    refused(TypeError, "conv2d: x expected a Tensor, got ndarray (wrap it: ma.Tensor(array))",
            lambda: F.conv2d(np.ones((1, 3, 5, 5), np.float32), w))
    assert F.conv2d(ma.Tensor(np.ones((0, 3, 5, 5), np.float32)), w).shape == (0, 4, 3, 3)   # an empty batch is fine


def test_gradcheck_checks_its_arguments():
    x = ma.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    refused(ValueError, "gradcheck: eps expected a finite number > 0, got 0", lambda: ma.gradcheck(lambda x: x * x, [x], eps=0))
    refused(ValueError, "gradcheck: eps expected a finite number > 0, got -1e-06",
            lambda: ma.gradcheck(lambda x: x * x, [x], eps=-1e-6))
    refused(ValueError, "gradcheck: atol expected a finite number >= 0, got -1", lambda: ma.gradcheck(lambda x: x, [x], atol=-1))
    refused(ValueError, "gradcheck: rtol expected a finite number, got nan",
            lambda: ma.gradcheck(lambda x: x, [x], rtol=float("nan")))
    refused(ValueError, "gradcheck: samples expected an integer >= 1, got 0", lambda: ma.gradcheck(lambda x: x, [x], samples=0))
    refused(ValueError, "gradcheck: seed expected an integer >= 0, got -1", lambda: ma.gradcheck(lambda x: x, [x], seed=-1))
    refused(TypeError, "gradcheck: fn expected to return a Tensor (made by minialex ops from the inputs, so it has a "
                       "graph), got ndarray (a NumPy array: its gradient cannot be traced)",
            lambda: ma.gradcheck(lambda x: x.data * 2, [x]))
    refused(TypeError, "gradcheck: fn expected a function of the inputs returning a Tensor, got Tensor",
            lambda: ma.gradcheck(x, [x]))
    refused(TypeError, "gradcheck: inputs expected a list of inputs (Tensors; [x] for one), got Tensor",
            lambda: ma.gradcheck(lambda x: x, x))
    assert ma.gradcheck(lambda x: x * x, (x,))


def test_transform_checks_its_size_stats_and_flags():
    refused(ValueError, "Transform: size expected an integer >= 1, got 0", lambda: Transform(0, STATS))
    refused(TypeError, "Transform: size expected an integer >= 1, got 64.5", lambda: Transform(64.5, STATS))
    refused(TypeError, "Transform: stats expected a dict with mean, std, eigvals, eigvecs (dataset_stats), got NoneType",
            lambda: Transform(64, None))
    refused(ValueError, "Transform: stats['std'] expected finite numbers of shape (3,), got nothing",
            lambda: Transform(64, {"mean": np.zeros(3)}, "val"))
    refused(ValueError, "Transform: stats['std'] expected standard deviations > 0, got [1.0, 0.0, 1.0]",
            lambda: Transform(64, dict(STATS, std=np.array([1.0, 0.0, 1.0])), "val"))
    refused(ValueError, "Transform: stats['eigvecs'] expected finite numbers of shape (3, 3), got dtype float64 shape (3,)",
            lambda: Transform(64, dict(STATS, eigvecs=np.ones(3))))
    refused(TypeError, "Transform: flip expected True or False, got 'no'", lambda: Transform(64, STATS, flip="no"))
    assert Transform(64, {"mean": np.zeros(3), "std": np.ones(3)}, "val").size == 64   # no PCA needed to validate
    assert Transform(64, {"mean": np.zeros(3), "std": np.ones(3)}, lighting=False).lighting is False


def test_load_state_dict_accepts_tensors_and_refuses_what_is_no_mapping():
    ma.manual_seed(0)
    source, target = nn.Linear(3, 2), nn.Linear(3, 2)
    given = {"weight": source.weight, "bias": ma.Tensor(source.bias.numpy() + 1.0)}
    target.load_state_dict(given)
    np.testing.assert_array_equal(target.weight.data, source.weight.data)
    np.testing.assert_array_equal(target.bias.data, source.bias.data + 1.0)
    assert target.weight.data is not source.weight.data                    # copied, not shared
    refused(TypeError, "load_state_dict: state_dict expected a mapping {name: array} (model.state_dict(), "
                       "ma.load(path)), got str", lambda: target.load_state_dict("weights.npz"))
    refused(ValueError, "load_state_dict: weight expected shape (2, 3), got (3, 3)",
            lambda: target.load_state_dict({"weight": ma.Tensor(np.zeros((3, 3))), "bias": np.zeros(2)}))


def test_summary_checks_its_arguments():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    refused(TypeError, "summary: input_shape expected one example's shape, a tuple of sizes >= 1 such as "
                       "(3, 227, 227), got 64", lambda: ma.summary(model, 64))
    refused(ValueError, "summary: input_shape expected one example's shape, a tuple of sizes >= 1 such as "
                        "(3, 227, 227), got (3, 0, 8)", lambda: ma.summary(model, (3, 0, 8)))
    refused(ValueError, "summary: batch_size expected an integer >= 1, got 0", lambda: ma.summary(model, (3, 8, 8), 0))
    refused(TypeError, "summary: model expected a Module, got tuple", lambda: ma.summary((3, 8, 8), model))
    assert "4 x 6 x 6" in ma.summary(model, [3, 8, 8])


def test_basic_ops_name_the_axis_and_the_shape():
    x = ma.Tensor(np.ones((2, 3)))
    refused(TypeError, "sum: axis expected an int or a tuple of ints, got 'a'", lambda: x.sum(axis="a"))
    refused(ValueError, "sum: axis expected each axis once, got (0, 0)", lambda: x.sum(axis=(0, 0)))
    refused(ValueError, "mean: axis expected values in [-2, 2), got 2", lambda: x.mean(axis=2))
    refused(TypeError, "reshape: shape expected sizes that are ints >= 0, and at most one -1, got (2.5, 2)",
            lambda: x.reshape(2.5, 2))
    refused(ValueError, "reshape: shape expected sizes that are ints >= 0, and at most one -1, got (-2, -3)",
            lambda: x.reshape(-2, -3))
    refused(ValueError, "transpose: axes expected values in [-2, 2), got (0, 5)", lambda: x.transpose(0, 5))
    assert x.transpose(-1, 0).shape == (3, 2) and x.sum(axis=np.int64(-1)).shape == (2,)
