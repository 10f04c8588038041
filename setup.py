"""asanet-rt: deploy ASANet (RGB + SAR land-cover segmentation) from official checkpoints to ONNX, TensorRT and
a lean GeoTIFF-in, GeoTIFF-out runtime."""
import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "asanet_rt" / "_version.py").read_text()).group(1)

# torch is pinned; `make setup` (tools/install.py) and the README's pip commands take it from PyTorch's CPU wheel
# index, as PyPI's Linux torch is a CUDA build. GPU packages live in their own extras, never in the default install.
EXTRAS = {
    "export": ["torch==2.13.0", "onnx>=1.17", "onnxslim>=0.1.50", "safetensors>=0.4", "onnxruntime>=1.20",
               "polygraphy>=0.49"],
    "rtx": ["tensorrt-rtx>=1.7", "cuda-python>=12.6"],
    "tensorrt": ["tensorrt>=10.3", "cuda-python>=12.6", "nvidia-ml-py>=12"],
    # Jetson: TensorRT comes from JetPack (a --system-site-packages venv), never from PyPI (a placeholder there).
    # cuda-python's major must not exceed the driver's CUDA: 13.x fails on JetPack 6's CUDA 12.6 driver.
    "jetson": ["cuda-python>=12.6,<13"],
    "cuda": ["pycuda>=2024.1"],
    "cupy": ["cupy-cuda13x>=13"],
    "openvino": ["openvino>=2025.0"],
    "plot": ["matplotlib>=3.8"],
    "ray": ["ray>=2.9"],
    "dev": ["pytest>=8", "polygraphy>=0.49", "rio-cogeo>=5", "matplotlib>=3.8"],
}

setup(
    name="asanet-rt",
    version=VERSION,
    description=" ".join(__doc__.split()),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[
        "asanet_rt",
        "asanet_rt.backends",
        "asanet_rt.bench",
        "asanet_rt.export",
        "asanet_rt.engines",
        "asanet_rt.engines.plugins",
    ],
    package_dir={
        "asanet_rt": "asanet_rt",
        "asanet_rt.export": "export",
        "asanet_rt.engines": "engines",
        "asanet_rt.engines.plugins": "engines/plugins",
    },
    package_data={"asanet_rt.engines.plugins": ["*.cu", "*.cuh", "Makefile"]},
    install_requires=["numpy>=1.24", "rasterio>=1.3", "onnxruntime>=1.20",
                      "openvino>=2025.0; platform_machine == 'x86_64' or platform_machine == 'AMD64'"],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["asanet-rt = asanet_rt.cli:main"]},
)
