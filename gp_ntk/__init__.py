"""gp_ntk: infinite-width neural-network kernels for GPyTorch and BoTorch."""

from __future__ import annotations

import importlib

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
    validation,
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
    UncentredInputWarning,
    UnitVarianceKernel,
)
from .models import ExactGPModel, VariationalGPModel
from .selection import compare_kernels

__version__ = "0.1.0"

# BoTorch is an optional extra, and importing it changes GPyTorch's global settings (Cholesky up
# to 4096 points, CG off): the BO names are imported from gp_ntk.bo on first use only.
_BO_NAMES = (
    "BOError",
    "BOEvent",
    "BOResult",
    "CenteredNormalize",
    "FitReport",
    "GradientEnhancedGP",
    "TrainedEnsembleModel",
    "bo_kernel",
    "fit_bo_model",
    "make_bo_model",
    "run_bo",
)


def __getattr__(name: str):
    if name != "bo" and name not in _BO_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        import botorch  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"gp_ntk.{name} needs BoTorch, an optional dependency: pip install gp_ntk[bo]"
        ) from error
    bo = importlib.import_module(f"{__name__}.bo")  # `from . import bo` would recurse into here
    return bo if name == "bo" else getattr(bo, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"bo", *_BO_NAMES})


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
    "UncentredInputWarning",
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
__all__ += ["UnitVarianceKernel", "validation"]
