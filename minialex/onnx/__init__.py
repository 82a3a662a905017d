"""ONNX files: export(model, path, input_shape) (`import minialex.onnx`).

    ma.onnx.export(model, "alexnet.onnx", (3, 227, 227))   # any chain of minialex layers, opset 13

It needs the onnx package (pip install "minialex[onnx]"), imported when called: importing
minialex (or this package) never imports it. The conventions export converts are listed in
to_onnx.py; the one to remember: ONNX's LRN divides alpha by size (as Caffe and PyTorch do),
minialex's follows the paper and does not, so export writes alpha * size. ONNX files are
protobuf: nothing is unpickled.
"""
from .pad import MaxPool2dPadded
from .to_onnx import OPSET, export

__all__ = ["export", "OPSET", "MaxPool2dPadded"]
