import re
from pathlib import Path

from setuptools import setup

version = re.search(r'__version__ = "([^"]+)"', Path("fastrnn/__init__.py").read_text()).group(1)

setup(
    name="fastrnn",
    version=version,
    description="Fused RNN/GRU/LSTM kernels (Triton on CUDA, Numba on CPU) as drop-in torch.nn layers",
    long_description=Path("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[
        "fastrnn",
        "fastrnn.kernels",
        "fastrnn.models",
        "fastrnn.kernels.numba",
        "fastrnn.kernels.triton",
    ],
    # kernel sources live at the top-level kernels/ folder but install inside the package
    package_dir={
        "fastrnn.kernels.numba": "kernels/numba",
        "fastrnn.kernels.triton": "kernels/triton",
    },
    # Supported: torch 2.11 (tested on an H200 with its Triton 3.6) to 2.13 (CI). Triton
    # is no dependency of its own: torch's CUDA wheels bring the one they pin (a second
    # Triton beside it can break that torch), a CPU-only torch never uses it, and the
    # test extra brings it for the interpreter tests. CI compiles every kernel with the
    # oldest (3.6, a separate folder: .ci/run) and the newest Triton.
    install_requires=[
        "torch>=2.11,<3",
        "numpy>=1.24",
        "numba>=0.59",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-benchmark>=4", "hypothesis>=6", "babel>=2.10",
                 "matplotlib>=3.7",
                 # the Triton kernels under TRITON_INTERPRET=1 and their AOT compile
                 "triton>=3.6,<3.10; platform_system == 'Linux'",
                 # the docs are built strictly and their examples run inside the tests
                 "mkdocs>=1.6", "mkdocstrings[python]>=0.26",
                 # the deployment tests (tests/test_deploy.py): both ONNX exporters, and
                 # onnxruntime to run what they write
                 "onnx>=1.16", "onnxscript>=0.3", "onnxruntime>=1.18"],
        # the documentation site (python -m mkdocs serve / build --strict)
        "docs": ["mkdocs>=1.6", "mkdocstrings[python]>=0.26"],
        # the date-normalisation task (fastrnn.models.dates) renders dates with CLDR data
        "models": ["babel>=2.10"],
        "bench": ["matplotlib>=3.7", "tqdm>=4.60", "pytest-benchmark>=4", "threadpoolctl>=3.1",
                  "babel>=2.10"],             # the models section trains the date task
    },
)
