"""Changes in place and second backwards: both gave wrong gradients silently, both are now errors
that name the op and the tensor (minialex/function.py, Tensor._version, retain_graph)."""
import numpy as np
import pytest

import minialex as ma
from minialex import functional as F


def T(a, grad=True):
    return ma.Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def linear_loss(seed=0):
    """(loss, x, layer) for a small Linear layer in float64; loss = sum(layer(x)^2)."""
    ma.manual_seed(seed)
    layer = ma.nn.Linear(4, 3).double()
    x = T(np.random.default_rng(seed).standard_normal((2, 4)))
    return (layer(x) ** 2).sum(), x, layer


def test_an_optimizer_step_between_forward_and_backward_is_refused_and_no_grad_moves():
    loss, x, layer = linear_loss()
    ma.optim.SGD(layer.parameters(), lr=0.1).step()        # no .grad yet: nothing stepped, nothing changed
    layer.weight.grad = np.ones(layer.weight.shape)
    seen = layer.weight._version                            # what the forward saw (.double() assigned .data once)
    ma.optim.SGD([layer.weight], lr=0.1).step()            # the weight is written in place
    with pytest.raises(RuntimeError, match=rf"Linear's input 1 \(weight\), Tensor\(shape=\(3, 4\).*changed in place "
                                           rf"after the forward \(its version is {seen + 1}, the forward saw {seen}\)"):
        loss.backward()
    assert x.grad is None and layer.bias.grad is None       # the check runs before any gradient is added


def test_the_step_after_backward_is_legal_and_the_next_gradient_is_right():
    loss, x, layer = linear_loss()
    loss.backward()
    opt = ma.optim.SGD(layer.parameters(), lr=0.1)
    opt.step()
    opt.zero_grad()
    x.grad = None
    w, b = layer.weight.numpy().copy(), layer.bias.numpy().copy()
    (layer(x) ** 2).sum().backward()
    y = x.data @ w.T + b                                     # by hand: d(sum y^2)/dW = 2 y^T x
    np.testing.assert_allclose(layer.weight.grad, 2 * y.T @ x.data, rtol=1e-12)
    np.testing.assert_allclose(x.grad, 2 * y @ w, rtol=1e-12)


@pytest.mark.parametrize("change", [
    lambda t: t.data.__setitem__(Ellipsis, 0.5),               # t.data[...] = 0.5: past the property
    lambda t: t.data.__setitem__((0, 0), 7.0),                  # the first element alone
    lambda t: t.data.__setitem__((-1, -1), 7.0),                # the last element alone
    lambda t: np.multiply(t.data, 2.0, out=t.data),             # NumPy writing into it
    lambda t: t.detach().data.fill(3.0),                        # through a tensor sharing its memory
])
def test_a_write_into_the_array_is_seen_by_its_values(change):
    x = T(np.arange(1.0, 13.0).reshape(3, 4))
    y = (x * x).sum()
    change(x)
    with pytest.raises(RuntimeError, match=r"Mul's input 0 \(a\), Tensor\(shape=\(3, 4\).*values differ from the "
                                           r"forward's"):
        y.backward()
    assert x.grad is None


@pytest.mark.parametrize("change", [
    lambda t: setattr(t, "data", t.data + 1.0),                # a new array: .data = a
    lambda t: t.__setattr__("data", t.data.__iadd__(0.0)),      # x.data += 0: the same values, still a change
    lambda t: t.bump_version(),                                 # a write the caller tells about
])
def test_an_assignment_to_data_bumps_the_version(change):
    x = T([1.0, 2.0, 3.0])
    y = (x * x).sum()
    before = x._version
    change(x)
    assert x._version == before + 1
    with pytest.raises(RuntimeError, match="its version is 1, the forward saw 0"):
        y.backward()


def test_any_element_of_a_small_array_is_compared_and_a_large_one_is_sampled():
    for k in range(12):                                   # every element of a (3, 4) weight
        x = T(np.arange(12.0).reshape(3, 4))
        y = (x * 2.0).sum()
        x.data.flat[k] = -1.0
        with pytest.raises(RuntimeError, match="values differ"):
            y.backward()
    big = T(np.ones(100_000))
    y = (big * 2.0).sum()
    assert len(y._ctx.stamps[0][1]) == 16 * 8            # 16 float64 values kept, not the array
    big.data[1:-1] = 5.0                                  # a write over the array meets the samples
    with pytest.raises(RuntimeError, match="values differ"):
        y.backward()


def test_an_op_output_changed_before_its_backward_is_refused():
    x = T([0.5, 1.0, 2.0])
    y = x.exp()                                  # Exp's backward reads y itself
    loss = (y * 1.0).sum()
    y.data[...] = 0.0
    with pytest.raises(RuntimeError, match=r"Exp's output, Tensor\(shape=\(3,\)"):
        loss.backward()


def test_a_convolution_weight_stepped_before_backward_is_named():
    ma.manual_seed(0)
    conv = ma.nn.Conv2d(2, 3, 3)
    x = ma.Tensor(np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32))
    loss = F.relu(conv(x)).sum()
    for p in conv.parameters():
        p.grad = np.ones(p.shape, np.float32)
    ma.optim.SGD(conv.parameters(), lr=0.5).step()
    with pytest.raises(RuntimeError, match=r"Conv2d's input 1 \(weight\), Tensor\(shape=\(3, 2, 3, 3\)"):
        loss.backward()


def test_load_state_dict_and_init_weights_count_as_changes():
    loss, x, layer = linear_loss()
    layer.load_state_dict(layer.state_dict())               # the same values, written in place
    with pytest.raises(RuntimeError, match="changed in place"):
        loss.backward()
    model = ma.models.AlexNet.mini(num_classes=3)
    versions = [p._version for p in model.parameters()]
    model.init_weights("paper")
    assert all(p._version > v for p, v in zip(model.parameters(), versions))


def test_moving_a_model_to_where_it_is_changes_nothing():
    loss, x, layer = linear_loss()
    layer.to("cpu").to(dtype=np.float64)
    loss.backward()
    assert layer.weight.grad.shape == (3, 4)


def test_a_second_backward_through_the_same_graph_is_refused_and_grads_stay():
    x = T([1.0, 2.0, 3.0])
    y = (x ** 3).sum()
    y.backward()
    np.testing.assert_allclose(x.grad, [3.0, 12.0, 27.0])
    with pytest.raises(RuntimeError, match=r"already freed by an earlier backward.*backward\(retain_graph=True\)"):
        y.backward()
    np.testing.assert_allclose(x.grad, [3.0, 12.0, 27.0])         # not doubled


def test_retain_graph_keeps_it_and_each_backward_adds():
    x = T([1.0, 2.0, 3.0])
    y = (x ** 3).sum()
    y.backward(retain_graph=True)
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 3 * np.array([3.0, 12.0, 27.0]))
    with pytest.raises(RuntimeError, match="already freed"):
        y.backward()


def test_two_losses_on_one_trunk_need_retain_graph_and_a_refusal_adds_nothing():
    x, w = T([1.0, -2.0]), T([3.0, 4.0])
    h = x * x                                    # the shared trunk
    first, second = (h * 2.0).sum(), (h * w).sum()
    first.backward()
    with pytest.raises(RuntimeError, match="through Mul was already freed"):
        second.backward()                        # w's branch comes before the trunk: w.grad must stay None
    assert w.grad is None
    np.testing.assert_allclose(x.grad, 4 * x.data)
    x.grad = None
    h = x * x
    (h * 2.0).sum().backward(retain_graph=True)
    (h * w).sum().backward()
    np.testing.assert_allclose(x.grad, 4 * x.data + 2 * x.data * w.data)
    np.testing.assert_allclose(w.grad, x.data ** 2)


def test_backward_frees_the_caches_it_used():
    x = T(np.ones((4, 4)))
    y = x.exp()
    loss = (y * y).sum()
    assert y._ctx.cache is not None
    loss.backward()
    assert y._ctx.cache is None and loss._ctx.cache is None
    kept = x.exp()
    (kept * 1.0).sum().backward(retain_graph=True)
    assert kept._ctx.cache is not None


def test_nan_values_are_not_a_change():
    x = T([np.nan, 1.0, 2.0])
    y = (x * 2.0).sum()
    y.backward()
    np.testing.assert_allclose(x.grad, [2.0, 2.0, 2.0])
