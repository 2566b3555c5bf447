"""Builds the native codec extension (z2z_vllm._codec) with pybind11, and on request the CUDA
kernels (z2z_vllm._cuda_ops, from kernels/).

Metadata lives in pyproject.toml. The codec is plain C++17 with no torch dependency. The CUDA
extension is built only with ``Z2Z_BUILD_CUDA=1``, which needs a CUDA build of torch importable
at build time (``pip install --no-build-isolation``) and nvcc; the package imports and runs
without it (Triton on GPU, torch on CPU).
"""

import os

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

codec = Pybind11Extension(
    "z2z_vllm._codec",
    sources=["csrc/lzw.cpp", "csrc/bindings.cpp"],
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=["-O3"],
)
ext_modules = [codec]
cmdclass = {"build_ext": build_ext}

if os.environ.get("Z2Z_BUILD_CUDA") == "1":
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension

    if torch.version.cuda is None or CUDA_HOME is None:
        raise SystemExit(
            "Z2Z_BUILD_CUDA=1 needs a CUDA build of torch and nvcc "
            f"(torch {torch.__version__}, CUDA_HOME {CUDA_HOME})"
        )
    ext_modules.append(
        CUDAExtension(
            "z2z_vllm._cuda_ops",
            sources=["kernels/codebook_update.cu", "kernels/codebook_update_binding.cpp"],
            include_dirs=[os.path.abspath("kernels")],
            extra_compile_args={
                "cxx": ["-O3"],
                "nvcc": [
                    "-O3",
                    "-gencode=arch=compute_90a,code=sm_90a",  # Hopper (H100, H200)
                    "-gencode=arch=compute_80,code=compute_80",  # PTX for every other GPU >= sm_80
                ],
            },
        )
    )
    # torch's build_ext compiles .cu sources with nvcc and the codec like any C++ extension.
    cmdclass = {"build_ext": BuildExtension}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
