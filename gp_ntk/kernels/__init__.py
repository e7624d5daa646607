"""GPyTorch kernels of infinitely wide neural networks."""

from __future__ import annotations

from ._contract import UncentredInputWarning
from .arc_cosine import ArcCosineKernel
from .erf import ErfKernel
from .grad import ArcCosineKernelGrad, ErfKernelGrad, NNGPKernelGrad, NTKKernelGrad
from .nngp import DeepNetworkKernel, NNGPKernel
from .ntk import NTKKernel
from .unit_variance import UnitVarianceKernel as UnitVarianceKernel

__all__ = [
    "ArcCosineKernel",
    "DeepNetworkKernel",
    "ErfKernel",
    "NNGPKernel",
    "NTKKernel",
    "UncentredInputWarning",
]
__all__ += ["ArcCosineKernelGrad", "ErfKernelGrad", "NNGPKernelGrad", "NTKKernelGrad"]
