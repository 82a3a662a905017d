"""The ops, one family per file: the math in the docstring, the NumPy reference pair (the spec),
the Function class naming its fast CPU pair (minialex/cpu/) and CUDA pair (minialex/cuda_ops/),
and the public function with its argument checks."""
