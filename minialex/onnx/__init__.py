"""ONNX files in and out: export(model, path, input_shape) and load(path) (`import minialex.onnx`).

    ma.onnx.export(model, "alexnet.onnx", (3, 227, 227))   # any chain of minialex layers, opset 13
    model = ma.onnx.load("bvlcalexnet-12.onnx")            # an AlexNet-family graph, as nn.Sequential

Both need the onnx package (pip install "minialex[onnx]"), imported when called: importing
minialex (or this package) never imports it. The conventions each direction converts are listed in
to_onnx.py (export) and from_onnx.py (load); the one to remember: ONNX's LRN divides alpha by size
(as Caffe and PyTorch do), minialex's follows the paper and does not, so export writes
alpha * size and load reads alpha / size. ONNX files are protobuf: nothing is unpickled.
"""
from .from_onnx import load
from .pad import MaxPool2dPadded
from .to_onnx import OPSET, export

__all__ = ["export", "load", "OPSET", "MaxPool2dPadded"]
