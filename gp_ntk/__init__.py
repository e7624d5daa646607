"""gp_ntk: infinite-width neural-network kernels for GPyTorch and BoTorch."""

from __future__ import annotations

from . import activations, functional, settings
from .activations import (
    GELU,
    ABReLU,
    Abs,
    Activation,
    ArcCos,
    Cos,
    Erf,
    Identity,
    LeakyReLU,
    Numerical,
    ReLU,
    Sin,
    Step,
    get_activation,
)
from .kernels import ArcCosineKernel, ErfKernel, NNGPKernel, NTKKernel

__version__ = "0.1.0"

__all__ = [
    "ABReLU",
    "Abs",
    "Activation",
    "ArcCos",
    "ArcCosineKernel",
    "Cos",
    "Erf",
    "ErfKernel",
    "GELU",
    "Identity",
    "LeakyReLU",
    "NNGPKernel",
    "NTKKernel",
    "Numerical",
    "ReLU",
    "Sin",
    "Step",
    "activations",
    "functional",
    "get_activation",
    "settings",
]
