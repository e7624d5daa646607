r"""Candidate network-kernel BO surrogates for inputs whose optimum is anywhere in the box.

A depth-:math:`L` ReLU NNGP sees two inputs through the angle between their augmented first-layer
vectors :math:`(\sigma_b, \sigma_{w,1} x_1/\sqrt d, \dots)`. Divided by its prior standard
deviations (:class:`gp_ntk.bo.UnitVarianceKernel`), the first layer's correlation is

.. math::
    \rho_1(x, y) = \frac{\sigma_b^2 + \sum_i \sigma_{w,i}^2 x_i y_i / d}
        {\sqrt{(\sigma_b^2 + \sum_i \sigma_{w,i}^2 x_i^2/d)(\sigma_b^2 + \sum_i \sigma_{w,i}^2 y_i^2/d)}}
    \approx 1 - \sum_i \frac{\sigma_{w,i}^2 (x_i - y_i)^2}{2 d \sigma_b^2}
    \quad (\sigma_b^2 \gg \sigma_{w,i}^2 \lVert x\rVert^2/d),

so a large bias makes the kernel nearly stationary, with per-feature squared lengthscales
:math:`d\,\sigma_b^2/\sigma_{w,i}^2` (the :math:`1/d` of the first layer scales them with
:math:`\sqrt d`, as dimension-scaled lengthscale priors do [Hvarfner2024]_), while a small bias
leaves a dot-product kernel shaped around the origin. With both variances learnt, the evidence
chooses between the two behaviours; :class:`InputCentre` lets it also move the origin.

.. [Hvarfner2024] C. Hvarfner, E. O. Hellsten, L. Nardi. Vanilla Bayesian Optimization Performs
    Great in High Dimensions. ICML 2024.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import Kernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.priors import LogNormalPrior, NormalPrior
from torch import Tensor

from gp_ntk import NNGPKernel, NTKKernel
from gp_ntk.bo import CenteredNormalize, UnitVarianceKernel, check_bounds

__all__ = [
    "InputCentre",
    "UncentredInputWarning",
    "make_offcentre_model",
    "offcentre_kernel",
    "warn_if_uncentred",
]

_MIN_VARIANCE = 1e-4


class UncentredInputWarning(UserWarning):
    """Inputs of a dot-product kernel all lie in :math:`[0, 1]^d`, one orthant."""


_warned_uncentred = False


def warn_if_uncentred(x: Tensor, kernel_name: str = "this kernel") -> bool:
    r"""Warn, once per process, when every input lies in :math:`[0, 1]^d` (:math:`d \ge 2`).

    That is where BoTorch's ``Normalize`` puts a search box. A dot-product kernel sees inputs
    through their angles at the origin; in one orthant all angles are below 90 degrees and, as
    :math:`d` grows, concentrate, so the kernel is nearly constant and the GP can hardly tell
    points apart. Returns whether it warned.
    """
    global _warned_uncentred
    if _warned_uncentred or x.shape[-1] < 2 or x.shape[-2] < 2:
        return False
    values = x.detach()
    if not bool(((values >= 0) & (values <= 1)).all()):
        return False
    _warned_uncentred = True
    warnings.warn(
        f"every input of {kernel_name} lies in [0, 1]^d (one orthant): a dot-product kernel sees "
        "inputs through their angles at the origin, which are all small there, so it is nearly "
        "constant. Centre the inputs on the origin: in BoTorch use "
        "input_transform=gp_ntk.bo.CenteredNormalize(d, bounds) instead of Normalize(d, bounds) "
        "(or gp_ntk.make_bo_model); otherwise pass x - 0.5. This warning is shown once; silence it "
        "with warnings.filterwarnings('ignore', category=UncentredInputWarning).",
        UncentredInputWarning,
        stacklevel=3,
    )
    return True


def _log_normal(mode: float, scale: float) -> LogNormalPrior:
    # given by its mode exp(loc - scale^2), the value a MAP fit is pulled towards
    return LogNormalPrior(loc=math.log(mode) + scale**2, scale=scale)


class InputCentre(Kernel):
    r"""A kernel evaluated at inputs measured from a learnt centre: :math:`k(x - c, y - c)`.

    :math:`c \in \mathbb R^d` is a parameter with an independent :math:`N(0, s^2)` prior per
    feature, initialised at 0 (the centre of a :class:`gp_ntk.bo.CenteredNormalize`-d box).
    For a dot-product base kernel this moves the point its functions are shaped around; for a
    stationary one it changes nothing.

    Args:
        base_kernel: the kernel applied to the shifted inputs.
        num_dims: number of input features.
        prior_scale: standard deviation :math:`s` of the centre's prior, in input units
            (``None``: no prior).
    """

    has_lengthscale = False

    def __init__(self, base_kernel: Kernel, num_dims: int, prior_scale: float | None = 0.5, **kwargs: Any):
        if not isinstance(base_kernel, Kernel):
            raise ValueError(f"base_kernel must be a gpytorch Kernel, got {type(base_kernel).__name__}")
        if isinstance(num_dims, bool) or not isinstance(num_dims, int) or num_dims < 1:
            raise ValueError(f"num_dims must be a positive integer, got {num_dims!r}")
        if prior_scale is not None and not (math.isfinite(prior_scale) and prior_scale > 0):
            raise ValueError(f"prior_scale must be a positive number or None, got {prior_scale!r}")
        kwargs.setdefault("batch_shape", base_kernel.batch_shape)
        super().__init__(**kwargs)
        self.base_kernel = base_kernel
        self.register_parameter("centre", torch.nn.Parameter(torch.zeros(*self.batch_shape, 1, num_dims)))
        if prior_scale is not None:
            self.register_prior(
                "centre_prior",
                NormalPrior(0.0, float(prior_scale)),
                lambda module: module.centre,
                lambda module, value: module.centre.data.copy_(
                    torch.as_tensor(value).expand_as(module.centre)
                ),
            )

    @property
    def is_stationary(self) -> bool:
        return self.base_kernel.is_stationary

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, **params: Any) -> Tensor:
        shifted1 = x1 - self.centre
        # keep x1 is x2 true for k(X, X): kernels use it for an exactly symmetric matrix
        shifted2 = shifted1 if x1 is x2 else x2 - self.centre
        return self.base_kernel.forward(shifted1, shifted2, diag=diag, **params)


def offcentre_kernel(
    num_dims: int,
    *,
    kernel: str = "nngp",
    depth: int = 3,
    unit_variance: bool = True,
    ard: bool = True,
    learn_centre: bool = False,
    weight_prior_scale: float = 1.0,
    bias_mode: float = 1.0,
    bias_prior_scale: float = 1.5,
    centre_prior_scale: float = 0.5,
) -> ScaleKernel:
    r"""``ScaleKernel([InputCentre](UnitVarianceKernel(ReLU NNGP/NTK with ARD)))`` for inputs in :math:`[-1, 1]^d`.

    Priors (LogNormal, by mode and log-scale): first-layer weight variances mode 2, log-scale
    ``weight_prior_scale`` (one per feature with ``ard``; deeper layers share one, same prior);
    bias variance mode ``bias_mode``, log-scale ``bias_prior_scale`` (broad: its ratio to the
    weight variances sets how stationary the kernel is, see the module docstring); outputscale
    mode 1, log-scale 1.
    """
    cls = NNGPKernel if kernel == "nngp" else NTKKernel
    network = cls(
        depth=depth,
        activation="relu",
        weight_variance=2.0,
        bias_variance=bias_mode,
        ard_num_dims=num_dims if ard else None,
        weight_variance_prior=_log_normal(2.0, weight_prior_scale),
        bias_variance_prior=_log_normal(bias_mode, bias_prior_scale),
        weight_variance_constraint=GreaterThan(_MIN_VARIANCE),
        bias_variance_constraint=GreaterThan(_MIN_VARIANCE),
    )
    base: Kernel = UnitVarianceKernel(network) if unit_variance else network
    if learn_centre:
        base = InputCentre(base, num_dims, prior_scale=centre_prior_scale)
    scaled = ScaleKernel(
        base, outputscale_prior=_log_normal(1.0, 1.0), outputscale_constraint=GreaterThan(_MIN_VARIANCE)
    )
    scaled.outputscale = 1.0
    return scaled


def make_offcentre_model(
    train_X: Tensor,
    train_Y: Tensor,
    bounds: Tensor,
    *,
    likelihood: GaussianLikelihood | None = None,
    **kernel_options: Any,
) -> SingleTaskGP:
    """``SingleTaskGP`` with :func:`offcentre_kernel`, ``CenteredNormalize(d, bounds)`` and ``Standardize``."""
    num_dims = train_X.shape[-1]
    bounds = check_bounds(bounds, num_dims).to(train_X)
    return SingleTaskGP(
        train_X,
        train_Y,
        covar_module=offcentre_kernel(num_dims, **kernel_options),
        likelihood=likelihood,
        input_transform=CenteredNormalize(num_dims, bounds=bounds),
        outcome_transform=Standardize(m=train_Y.shape[-1]),
    )
