"""AlexNet (Krizhevsky, Sutskever, Hinton 2012) as the seed table lays it out, and a small variant.

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
import numpy as np

from . import nn, random

# (out_channels, kernel, stride, padding) of conv1..conv5, then the widths of fc6 and fc7.
FULL = dict(input_size=227, convs=[(96, 11, 4, 0), (256, 5, 1, 2), (384, 3, 1, 1), (384, 3, 1, 1),
                                   (256, 3, 1, 1)], fcs=[4096, 4096])
MINI = dict(input_size=64, convs=[(32, 5, 2, 2), (64, 5, 1, 2), (96, 3, 1, 1), (96, 3, 1, 1),
                                  (64, 3, 1, 1)], fcs=[512, 512])
INITS = ("he", "paper", "xavier")


class AlexNet(nn.Module):
    """AlexNet on 227x227 inputs (the seed table).

    init="he" (default): conv1..fc7 weights N(0, 2/fan_in) (He et al. 2015, keeps the activation
        scale through the ReLU layers, so any depth and width starts well), fc8 N(0, 0.001^2) so
        the first predictions are near uniform (loss ~ ln(num_classes)); biases 0.
    init="paper": every weight N(0, 0.01^2); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0
        (section 5: the 1s give the ReLUs positive inputs early on).
    init="xavier": weights N(0, 2/(fan_in + fan_out)) (Glorot and Bengio 2010), biases 0.
    """

    def __init__(self, num_classes=1000, init="he", groups=1, lrn_before_pool=False, dropout=0.5, config=FULL):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"AlexNet: init expected one of {INITS}, got {init!r}")
        if groups not in (1, 2):
            raise ValueError(f"AlexNet: groups expected 1 or 2 (the paper's two towers), got {groups!r}")
        self.num_classes, self.input_size = num_classes, config["input_size"]
        (c1, k1, s1, p1), (c2, k2, s2, p2), (c3, k3, s3, p3), (c4, k4, s4, p4), (c5, k5, s5, p5) = \
            config["convs"]
        f6, f7 = config["fcs"]
        self.conv1 = nn.Conv2d(3, c1, k1, s1, p1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(3, 2)
        self.norm1 = nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
        self.conv2 = nn.Conv2d(c1, c2, k2, s2, p2, groups=groups)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(3, 2)
        self.norm2 = nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
        self.conv3 = nn.Conv2d(c2, c3, k3, s3, p3)
        self.relu3 = nn.ReLU()
        self.conv4 = nn.Conv2d(c3, c4, k4, s4, p4, groups=groups)
        self.relu4 = nn.ReLU()
        self.conv5 = nn.Conv2d(c4, c5, k5, s5, p5, groups=groups)
        self.relu5 = nn.ReLU()
        self.pool5 = nn.MaxPool2d(3, 2)
        self.flatten = nn.Flatten()
        side = self._pooled_side(config)
        self.drop6 = nn.Dropout(dropout)
        self.fc6 = nn.Linear(c5 * side * side, f6)
        self.relu6 = nn.ReLU()
        self.drop7 = nn.Dropout(dropout)
        self.fc7 = nn.Linear(f6, f7)
        self.relu7 = nn.ReLU()
        self.fc8 = nn.Linear(f7, num_classes)
        block1 = ["norm1", "pool1"] if lrn_before_pool else ["pool1", "norm1"]
        block2 = ["norm2", "pool2"] if lrn_before_pool else ["pool2", "norm2"]
        # The order forward() applies the layers in (also what a model summary walks).
        self.layer_order = (["conv1", "relu1"] + block1 + ["conv2", "relu2"] + block2 +
                            ["conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool5", "flatten",
                             "drop6", "fc6", "relu6", "drop7", "fc7", "relu7", "fc8"])
        self.init_weights(init)

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

    def init_weights(self, init="he"):
        """Re-draw every weight and bias from minialex.random (see the class docstring)."""
        rng = random.generator()
        layers = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
        for name in layers:
            layer = getattr(self, name)
            w = layer.weight
            fan_in = int(np.prod(w.shape[1:]))
            fan_out = w.shape[0] * int(np.prod(w.shape[2:]))
            if init == "paper":
                std = 0.01
            elif init == "he" and name == "fc8":
                std = 0.001
            elif init == "he":
                std = np.sqrt(2.0 / fan_in)
            else:
                std = np.sqrt(2.0 / (fan_in + fan_out))
            w.data[...] = rng.standard_normal(w.shape, dtype=np.float32) * np.float32(std)
            one = init == "paper" and name in ("conv2", "conv4", "conv5", "fc6", "fc7")
            layer.bias.data[...] = 1.0 if one else 0.0

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"AlexNet: x expected shape (N, 3, {self.input_size}, {self.input_size}), "
                             f"got {x.shape}")
        for name in self.layer_order:
            x = getattr(self, name)(x)
        return x
