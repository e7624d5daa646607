"""gp_ntk: infinite-width neural-network kernels for GPyTorch and BoTorch."""

from __future__ import annotations

from . import (
    activations,
    approximations,
    fitting,
    functional,
    lazy,
    models,
    networks,
    selection,
    settings,
    spectral,
)
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
from .approximations import RandomFeatureKernel
from .fitting import FitError, FitResult, fit
from .kernels import ArcCosineKernel, ErfKernel, NNGPKernel, NTKKernel
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
    "RandomFeatureKernel",
    "ReLU",
    "Sin",
    "Step",
    "VariationalGPModel",
    "activations",
    "approximations",
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
    "spectral",
]
