"""AlexNet (Krizhevsky, Sutskever, Hinton 2012) as the paper's table lays it out, and a small variant.

    input 3x227x227
    conv1 96 11x11/4      -> 96x55x55    relu, maxpool 3/2 -> 27, LRN
    conv2 256 5x5 pad 2   -> 256x27x27   relu, maxpool 3/2 -> 13, LRN
    conv3 384 3x3 pad 1   -> 384x13x13   relu
    conv4 384 3x3 pad 1   -> 384x13x13   relu
    conv5 256 3x3 pad 1   -> 256x13x13   relu, maxpool 3/2 -> 6
    flatten 9216, dropout, fc6 4096, relu, dropout, fc7 4096, relu, fc8 num_classes
    62,378,344 parameters for 1000 classes.

Paper variants: `lrn_before_pool=True` puts LRN before pooling (the paper's text, section 3.5);
`groups=2` splits conv2, conv4 and conv5 into the paper's two GPU towers.
`AlexNet.mini()`: the same eight layers, LRN, overlapping pooling and dropout, narrower and for
64x64 images, so it trains on a laptop CPU in minutes.
"""
import json
from pathlib import Path

import numpy as np

from . import backend, nn
from .errors import check_bool, check_positive_int, check_probability

# (out_channels, kernel, stride, padding) of conv1..conv5, then the widths of fc6 and fc7.
FULL = dict(input_size=227, convs=[(96, 11, 4, 0), (256, 5, 1, 2), (384, 3, 1, 1), (384, 3, 1, 1),
                                   (256, 3, 1, 1)], fcs=[4096, 4096])
MINI = dict(input_size=64, convs=[(32, 5, 2, 2), (64, 5, 1, 2), (96, 3, 1, 1), (96, 3, 1, 1),
                                  (64, 3, 1, 1)], fcs=[512, 512])
INITS = ("he", "paper", "xavier")


LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]  # the layers with weights


class AlexNet(nn.Module):
    """AlexNet on 227x227 inputs (the paper's table).

    init="he" (default): conv1..fc7 weights N(0, 2/fan_in) (He et al. 2015, keeps the activation
        scale through the ReLU layers, so any depth and width starts well), fc8 N(0, 0.001^2) so
        the first predictions are near uniform (loss ~ ln(num_classes)); biases 0.
    init="paper": every weight N(0, 0.01^2); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0
        (section 5: the 1s give the ReLUs positive inputs early on).
    init="xavier": weights N(0, 2/(fan_in + fan_out)) (Glorot and Bengio 2010), biases 0.
    Each weight is drawn once, from minialex.random (ma.manual_seed).
    """

    def __init__(self, num_classes=1000, init="he", groups=1, lrn_before_pool=False, dropout=0.5, config=FULL):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"AlexNet: init expected one of {INITS}, got {init!r}")
        if isinstance(groups, bool) or groups not in (1, 2):
            raise ValueError(f"AlexNet: groups expected 1 or 2 (the paper's two towers), got {groups!r}")
        num_classes = check_positive_int("AlexNet", "num_classes", num_classes)
        lrn_before_pool = check_bool("AlexNet", "lrn_before_pool", lrn_before_pool)
        check_probability("AlexNet", "dropout", dropout)
        self.num_classes, self.input_size = num_classes, config["input_size"]
        self.lrn_before_pool = lrn_before_pool
        (c1, k1, s1, p1), (c2, k2, s2, p2), (c3, k3, s3, p3), (c4, k4, s4, p4), (c5, k5, s5, p5) = \
            config["convs"]
        f6, f7 = config["fcs"]
        side = self._pooled_side(config)

        def conv(name, *args, **kw):
            shape = (args[1], args[0] // kw.get("groups", 1), args[2], args[2])
            return nn.Conv2d(*args, **kw, weight_std=weight_std(init, name, shape))

        def fc(name, in_f, out_f):
            return nn.Linear(in_f, out_f, weight_std=weight_std(init, name, (out_f, in_f)))
        self.conv1 = conv("conv1", 3, c1, k1, s1, p1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(3, 2)
        self.norm1 = nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
        self.conv2 = conv("conv2", c1, c2, k2, s2, p2, groups=groups)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(3, 2)
        self.norm2 = nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
        self.conv3 = conv("conv3", c2, c3, k3, s3, p3)
        self.relu3 = nn.ReLU()
        self.conv4 = conv("conv4", c3, c4, k4, s4, p4, groups=groups)
        self.relu4 = nn.ReLU()
        self.conv5 = conv("conv5", c4, c5, k5, s5, p5, groups=groups)
        self.relu5 = nn.ReLU()
        self.pool5 = nn.MaxPool2d(3, 2)
        self.flatten = nn.Flatten()
        self.drop6 = nn.Dropout(dropout)
        self.fc6 = fc("fc6", c5 * side * side, f6)
        self.relu6 = nn.ReLU()
        self.drop7 = nn.Dropout(dropout)
        self.fc7 = fc("fc7", f6, f7)
        self.relu7 = nn.ReLU()
        self.fc8 = fc("fc8", f7, num_classes)
        self._init_biases(init)
        block1 = ["norm1", "pool1"] if lrn_before_pool else ["pool1", "norm1"]
        block2 = ["norm2", "pool2"] if lrn_before_pool else ["pool2", "norm2"]
        # The order forward() applies the layers in (what the model summary and the tests walk).
        self.layer_order = (["conv1", "relu1"] + block1 + ["conv2", "relu2"] + block2 +
                            ["conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool5", "flatten",
                             "drop6", "fc6", "relu6", "drop7", "fc7", "relu7", "fc8"])

    @classmethod
    def mini(cls, num_classes=10, init="he", groups=1, lrn_before_pool=False, dropout=0.25):
        """The small variant for 64x64 images (see the module docstring). Its dropout rate is 0.25,
        not the paper's 0.5: with 512-unit fc layers and a few thousand images, 0.5 made training
        on the built-in data about twice as slow (dropout=0.5 restores the paper's rate)."""
        return cls(num_classes, init, groups, lrn_before_pool, dropout, config=MINI)

    @staticmethod
    def _pooled_side(config):
        """Spatial side after conv5's pooling: follow the sizes through the table."""
        side = config["input_size"]
        for i, (_, k, s, p) in enumerate(config["convs"]):
            side = (side + 2 * p - k) // s + 1
            if i in (0, 1, 4):           # max-pool 3/2 after conv1, conv2, conv5
                side = (side - 3) // 2 + 1
        return side

    def _init_biases(self, init):
        for name in LAYERS:
            one = init == "paper" and name in ("conv2", "conv4", "conv5", "fc6", "fc7")
            bias = getattr(self, name).bias
            bias.data[...] = 1.0 if one else 0.0
            bias.bump_version()

    def init_weights(self, init="he"):
        """Re-draw every weight and bias from minialex.random (see the class docstring)."""
        for name in LAYERS:
            w = getattr(self, name).weight
            w.data[...] = backend.to_device(nn.normal(w.shape, weight_std(init, name, w.shape)), w.device, w.dtype)
            w.bump_version()
        self._init_biases(init)

    def forward(self, x):
        """Shapes for the full network (alexnet-mini: 64x64 in, 32 -> 15 -> 7 -> 3 pixels)."""
        if x.ndim != 4 or x.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(f"AlexNet: x expected shape (N, 3, {self.input_size}, {self.input_size}), "
                             f"got {x.shape}")
        first = self.lrn_before_pool                 # the paper's text: LRN, then pooling
        x = self.conv1(x)                            # (N, 96, 55, 55)    11x11 stride 4
        x = self.relu1(x)                            # (N, 96, 55, 55)
        x = self.norm1(x) if first else x            #                    (LRN first)
        x = self.pool1(x)                            # (N, 96, 27, 27)    3x3 stride 2, overlapping
        x = x if first else self.norm1(x)            # (N, 96, 27, 27)    (the table: LRN after pooling)
        x = self.conv2(x)                            # (N, 256, 27, 27)   5x5 pad 2
        x = self.relu2(x)                            # (N, 256, 27, 27)
        x = self.norm2(x) if first else x            #
        x = self.pool2(x)                            # (N, 256, 13, 13)
        x = x if first else self.norm2(x)            # (N, 256, 13, 13)
        x = self.conv3(x)                            # (N, 384, 13, 13)   3x3 pad 1
        x = self.relu3(x)                            # (N, 384, 13, 13)
        x = self.conv4(x)                            # (N, 384, 13, 13)   3x3 pad 1
        x = self.relu4(x)                            # (N, 384, 13, 13)
        x = self.conv5(x)                            # (N, 256, 13, 13)   3x3 pad 1
        x = self.relu5(x)                            # (N, 256, 13, 13)
        x = self.pool5(x)                            # (N, 256, 6, 6)
        x = self.flatten(x)                          # (N, 9216)
        x = self.drop6(x)                            # (N, 9216)
        x = self.fc6(x)                              # (N, 4096)
        x = self.relu6(x)                            # (N, 4096)
        x = self.drop7(x)                            # (N, 4096)
        x = self.fc7(x)                              # (N, 4096)
        x = self.relu7(x)                            # (N, 4096)
        x = self.fc8(x)                              # (N, num_classes)
        return x


def weight_std(init, name, shape):
    """The standard deviation of layer `name`'s weights (shape `shape`) under `init`."""
    if init == "paper":
        return 0.01
    if init == "he":
        return 0.001 if name == "fc8" else nn.he_std(nn.fan_in(shape))
    fan_out = shape[0] * int(np.prod(shape[2:]))
    return float(np.sqrt(2.0 / (nn.fan_in(shape) + fan_out)))


PRETRAINED = Path(__file__).resolve().parent / "weights" / "alexnet-mini-synthetic.npz"


def pretrained_mini():
    """alexnet-mini trained on the built-in data, without training it first: (model, info), info
    holding "classes", "mean", "std" (the model's input normalisation) and "history" (its run's
    metrics). Made by `minialex-train` with its defaults (10 epochs, seed 0), best.npz stripped to
    its weights by `python examples/export_weights.py runs/<run>/best.npz` (README, "Learn
    backprop"); a trained first layer shows oriented edges and colour blobs (examples/show_filters.py)."""
    from . import checkpoint, io
    if not PRETRAINED.is_file():
        raise FileNotFoundError(f"pretrained_mini: {PRETRAINED} is missing from this installation")
    weights, info = checkpoint.read_network(PRETRAINED)
    model = AlexNet.mini(num_classes=len(info["classes"]))
    model.load_state_dict(weights)
    model.eval()
    history = io.load(PRETRAINED, keys=["meta/history"], limits=checkpoint.LIMITS)["meta/history"]
    return model, {"classes": info["classes"], "mean": info["mean"], "std": info["std"],
                   "history": json.loads(str(history))}
