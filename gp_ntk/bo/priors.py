r"""Priors and constraints that make a network kernel's hyperparameters identifiable in BO.

For inputs in :math:`[-1, 1]^d` (:class:`~gp_ntk.bo.CenteredNormalize`) and standardised
outcomes. Every prior is a GPyTorch ``LogNormalPrior`` given by its mode and log-scale
:math:`s`; every variance starts at its prior's mode. The values are those of the benchmark
with the optimum anywhere in the box (``docs/bo.md``, section 6.1):

* first-layer weight variances (one per feature with ARD) and the deeper layers' shared one:
  mode 2, ReLU's variance-preserving value, :math:`s = 1`;
* bias variance: mode 1, :math:`s = 1.5`. Its ratio to the weight variances decides how
  stationary the kernel is (see :func:`gp_ntk.bo.bo_kernel`), so the prior is broad and lets
  the evidence choose;
* outputscale: mode 1, :math:`s = 1`.

The dimension enters in one place, :func:`weight_variance_mode`: Williams' erf kernel and Cho &
Saul's arc-cosine kernel sum over input features without dividing by :math:`d`, so their weight
variance is centred at :math:`2/d` instead of 2. Priors are plain ``Prior`` modules (they
pickle and deep-copy with the model).
"""

from __future__ import annotations

import math
from typing import Any

from gpytorch.constraints import GreaterThan
from gpytorch.priors import LogNormalPrior

from ..validation import check_int

__all__ = [
    "BIAS_PRIOR_SCALE",
    "DEFAULT_BIAS_VARIANCE",
    "DEFAULT_WEIGHT_VARIANCE",
    "MIN_VARIANCE",
    "OUTPUTSCALE_PRIOR_SCALE",
    "WEIGHT_PRIOR_SCALE",
    "kernel_priors",
    "log_normal",
    "outputscale_priors",
    "weight_variance_mode",
]

DEFAULT_WEIGHT_VARIANCE = 2.0
DEFAULT_BIAS_VARIANCE = 1.0
WEIGHT_PRIOR_SCALE = 1.0
BIAS_PRIOR_SCALE = 1.5
OUTPUTSCALE_PRIOR_SCALE = 1.0
MIN_VARIANCE = 1e-4

# kernels whose first layer sums over the input features without dividing by d
_UNSCALED_FIRST_LAYER = ("arccos", "erf")


def log_normal(mode: float, scale: float) -> LogNormalPrior:
    r"""``LogNormalPrior`` with mode ``mode`` and log-scale ``scale``.

    Parameterised by its mode :math:`e^{\mu - s^2}`, the value a MAP fit is pulled towards:
    :math:`\mu = \log(\text{mode}) + s^2`.
    """
    return LogNormalPrior(loc=math.log(mode) + scale**2, scale=scale)


def weight_variance_mode(name: str, num_dims: int | None) -> float:
    """The weight variance a BO kernel starts at and its prior is centred on."""
    if name in _UNSCALED_FIRST_LAYER:
        return DEFAULT_WEIGHT_VARIANCE / check_int(num_dims, "num_dims")
    return DEFAULT_WEIGHT_VARIANCE


def kernel_priors(name: str, num_dims: int | None) -> dict[str, Any]:
    """Constructor arguments of a network kernel: the variances' priors and floors.

    The bias variance is kept above ``MIN_VARIANCE``; the weight variances above
    ``MIN_VARIANCE`` on the NNGP/NTK's scale, that is ``MIN_VARIANCE`` times their mode over
    ``DEFAULT_WEIGHT_VARIANCE`` (``MIN_VARIANCE / d`` for ``"arccos"``/``"erf"``).
    """
    weight_mode = weight_variance_mode(name, num_dims)
    return {
        "weight_variance_prior": log_normal(weight_mode, WEIGHT_PRIOR_SCALE),
        "bias_variance_prior": log_normal(DEFAULT_BIAS_VARIANCE, BIAS_PRIOR_SCALE),
        "weight_variance_constraint": GreaterThan(MIN_VARIANCE * weight_mode / DEFAULT_WEIGHT_VARIANCE),
        "bias_variance_constraint": GreaterThan(MIN_VARIANCE),
    }


def outputscale_priors() -> dict[str, Any]:
    """``ScaleKernel`` arguments: outputscale prior with mode 1, kept above ``MIN_VARIANCE``."""
    return {
        "outputscale_prior": log_normal(1.0, OUTPUTSCALE_PRIOR_SCALE),
        "outputscale_constraint": GreaterThan(MIN_VARIANCE),
    }
