"""Build and install nf4lora.

The Python package lives in python/nf4lora; triton_kernels/ installs as nf4lora.triton_kernels.
When nvcc is found, csrc/ is compiled through CMake into the extension nf4lora._C
(NF4LORA_SKIP_CUDA_BUILD=1 skips it; NF4LORA_CUDA_ARCHS sets the targets, default "80;90a"), and
csrc/node.cpp by torch's extension builder into nf4lora._node (torch 2.8+; NF4LORA_SKIP_NODE_BUILD=1 skips it).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def find_nvcc():
    if os.environ.get("NF4LORA_SKIP_CUDA_BUILD", "") == "1":
        return None
    candidates = [shutil.which("nvcc")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "nvcc"))
    candidates.append("/usr/local/cuda/bin/nvcc")
    return next((c for c in candidates if c and os.path.exists(c)), None)


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        import pybind11

        nvcc = find_nvcc()
        out = Path(self.get_ext_fullpath(ext.name)).resolve()
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        archs = os.environ.get("NF4LORA_CUDA_ARCHS", "80;90a")
        subprocess.check_call([
            "cmake", "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DNF4LORA_CUDA_ARCHS={archs}",
            f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out.parent}",
        ])
        subprocess.check_call(["cmake", "--build", str(build_dir), "-j", str(os.cpu_count() or 2)])
        built = next(out.parent.glob("_C*.so"), None)
        if built is None:
            raise RuntimeError(f"CMake did not produce _C*.so in {out.parent}")
        if built.resolve() != out:
            shutil.move(str(built), str(out))


def node_extension():
    """nf4lora._node (csrc/node.cpp): the eager autograd node in C++, built by torch's extension
    builder against the installed torch (it launches _C's kernels through _C's launch table)."""
    try:
        import torch
        from torch.utils.cpp_extension import CppExtension
    except ImportError:
        return None
    if not hasattr(torch.ops.aten.mm, "dtype"):  # the node's g·B and u are at::mm with a float32 output
        print(f"nf4lora: torch {torch.__version__} has no mm with out_dtype (2.8+): building without nf4lora._node")
        return None
    return CppExtension("nf4lora._node", ["csrc/node.cpp"], extra_compile_args=["-O2"])


ext_modules = [CMakeExtension("nf4lora._C")] if find_nvcc() else []
if not ext_modules:
    print("nf4lora: nvcc not found or NF4LORA_SKIP_CUDA_BUILD=1: building without the CUDA extension")
elif os.environ.get("NF4LORA_SKIP_NODE_BUILD", "") != "1":
    node = node_extension()
    if node is not None:
        ext_modules.append(node)

try:  # torch's builder for nf4lora._node; CMake for nf4lora._C
    from torch.utils.cpp_extension import BuildExtension as _BaseBuild
except ImportError:
    _BaseBuild = build_ext


class Build(_BaseBuild):
    def build_extension(self, ext):
        if isinstance(ext, CMakeExtension):
            CMakeBuild.build_extension(self, ext)
        else:
            super().build_extension(ext)

setup(
    name="nf4lora",
    version="0.1.0",
    description="Fused NF4 + LoRA (QLoRA) kernels for PyTorch",
    packages=["nf4lora", "nf4lora.triton_kernels"],
    package_dir={"nf4lora": "python/nf4lora", "nf4lora.triton_kernels": "triton_kernels"},
    package_data={"nf4lora": ["data/*.txt", "data/*.json"]},
    ext_modules=ext_modules,
    cmdclass={"build_ext": Build},
    python_requires=">=3.9",
    install_requires=["torch>=2.4", "numpy", "safetensors", "tqdm"],
    extras_require={"test": ["pytest"], "bench": ["triton", "matplotlib"]},
    entry_points={"console_scripts": ["nf4lora=nf4lora.cli:main"]},
)
