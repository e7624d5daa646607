"""gp_ntk: infinite-width neural-network kernels for GPyTorch and BoTorch."""

from __future__ import annotations

from . import (
    activations,
    approximations,
    dynamics,
    empirical,
    engine,
    fitting,
    models,
    networks,
    ops,
    recursion,
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
    Exp,
    Gaussian,
    Identity,
    LeakyReLU,
    Monomial,
    Numerical,
    Polynomial,
    Rbf,
    ReLU,
    Sign,
    Sin,
    Step,
    get_activation,
)
from .approximations import RandomFeatureKernel
from .empirical import EmpiricalNTKKernel, empirical_ntk, linearize
from .engine import BlockedKernelLinearOperator
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
    "EmpiricalNTKKernel",
    "Erf",
    "ErfKernel",
    "ExactGPModel",
    "Exp",
    "FitError",
    "FitResult",
    "GELU",
    "Gaussian",
    "Identity",
    "LeakyReLU",
    "Monomial",
    "NNGPKernel",
    "NTKKernel",
    "Numerical",
    "Polynomial",
    "RandomFeatureKernel",
    "ReLU",
    "Rbf",
    "Sign",
    "Sin",
    "Step",
    "VariationalGPModel",
    "activations",
    "approximations",
    "compare_kernels",
    "dynamics",
    "empirical",
    "empirical_ntk",
    "engine",
    "fit",
    "fitting",
    "get_activation",
    "linearize",
    "models",
    "networks",
    "ops",
    "recursion",
    "selection",
    "settings",
    "spectral",
]
__all__ += ["ArcCosineKernelGrad", "ErfKernelGrad", "NNGPKernelGrad", "NTKKernelGrad"]
