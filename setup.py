"""Packaging for torch-stgen.

PyTorch itself is a prerequisite that users install first, the PyG way, choosing the
build for their hardware (CPU / CUDA); see README.md.
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
version = re.search(r'__version__ = "([^"]+)"',
                    (HERE / "torch_stgen" / "__init__.py").read_text()).group(1)

install_requires = [
    "torch>=2.1",
    "torch-geometric>=2.4",
    "geoopt>=0.5.1",
    "numpy",
    "networkx",
    "h5py",
    "tqdm",
]

extras = {
    "kg": ["pykeen>=1.10"],
    "scatter": ["torch-scatter"],
    "viz": ["matplotlib"],
    "test": ["pytest", "scipy", "pandas", "diffusers", "pykeen>=1.10", "matplotlib"],
}
# ``all`` is every optional runtime feature; note that torch-scatter only ships as a
# source release and compiles for ~11 minutes on a 2-core CPU.
extras["all"] = sorted(set(extras["kg"] + extras["scatter"] + extras["viz"]))

setup(
    name="torch-stgen",
    version=version,
    description="Spatio-temporal generative modelling with diffusion for PyTorch Geometric",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["torch_stgen", "torch_stgen.*"]),
    install_requires=install_requires,
    extras_require=extras,
    entry_points={"console_scripts": ["torch-stgen=torch_stgen.cli:main"]},
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
