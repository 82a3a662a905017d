"""minialex.cuda_ops: the CUDA pair of each op, the Python side of kernels/<family>.cu.

Each file allocates the outputs, computes the launch geometry and launches the kernels of one
family through minialex.cuda.launch (a GPU through CuPy, or the CPU emulator for "cuda-emu").
The math they implement is in minialex/ops/<family>.py; the kernels are tested against it.
"""
