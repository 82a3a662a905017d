"""minialex.functional: every op as a plain function (`from minialex import functional as F`)."""
from .ops.basic import flatten
from .ops.convolution import conv2d
from .ops.dropout import dropout
from .ops.linear import linear
from .ops.cross_entropy import cross_entropy
from .ops.lrn import local_response_norm
from .ops.pool import max_pool2d
from .ops.relu import relu

__all__ = ["conv2d", "relu", "local_response_norm", "max_pool2d", "dropout", "linear",
           "cross_entropy", "flatten"]
