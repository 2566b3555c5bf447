"""Builds the native codec extension (z2z_vllm._codec) with pybind11.

Metadata lives in pyproject.toml. The codec is plain C++17 with no torch dependency.
"""
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

codec = Pybind11Extension(
    "z2z_vllm._codec",
    sources=["csrc/lzw.cpp", "csrc/bindings.cpp"],
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=["-O3"],
)

setup(ext_modules=[codec], cmdclass={"build_ext": build_ext})
