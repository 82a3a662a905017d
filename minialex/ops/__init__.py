"""The ops, one family per file: the math in the docstring, the NumPy reference pair (the spec),
the Function class naming its fast CPU pair (minialex/cpu/) and CUDA pair (minialex/cuda_ops/) by
module and function name (the engine imports them on first use: those files import the op file
for its spec, never the other way), and the public function with its argument checks.
convolution.py holds F.conv2d, which picks between conv.py (im2col) and winograd.py."""
