"""GPyTorch kernels of infinitely wide neural networks."""

from __future__ import annotations

from .arc_cosine import ArcCosineKernel
from .erf import ErfKernel
from .nngp import DeepNetworkKernel, NNGPKernel
from .ntk import NTKKernel

__all__ = ["ArcCosineKernel", "DeepNetworkKernel", "ErfKernel", "NNGPKernel", "NTKKernel"]
