"""gp_ntk: infinite-width neural-network kernels for GPyTorch and BoTorch."""

from __future__ import annotations

from . import activations, fitting, functional, lazy, models, networks, selection, settings
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
from .fitting import FitError, FitResult, fit
from .kernels import (
    ArcCosineKernel,
    ArcCosineKernelGrad,
    ErfKernel,
    ErfKernelGrad,
    NNGPKernel,
    NNGPKernelGrad,
    NTKKernel,
    NTKKernelGrad,
)
from .lazy import BlockedKernelLinearOperator
from .models import ExactGPModel, VariationalGPModel
from .selection import compare_kernels

__version__ = "0.1.0"

__all__ = [
    "ABReLU",
    "Abs",
    "Activation",
    "ArcCos",
    "ArcCosineKernel",
    "BlockedKernelLinearOperator",
    "Cos",
    "Erf",
    "ErfKernel",
    "ExactGPModel",
    "FitError",
    "FitResult",
    "GELU",
    "Identity",
    "LeakyReLU",
    "NNGPKernel",
    "NTKKernel",
    "Numerical",
    "ReLU",
    "Sin",
    "Step",
    "VariationalGPModel",
    "activations",
    "compare_kernels",
    "fit",
    "fitting",
    "functional",
    "get_activation",
    "lazy",
    "models",
    "networks",
    "selection",
    "settings",
]
__all__ += ["ArcCosineKernelGrad", "ErfKernelGrad", "NNGPKernelGrad", "NTKKernelGrad"]
