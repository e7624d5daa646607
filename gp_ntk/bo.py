r"""Bayesian optimisation with infinite-width network kernels as BoTorch surrogates.

Every gp_ntk kernel is a GPyTorch ``Kernel``, so adopting one in BoTorch is one argument::

    model = SingleTaskGP(train_X, train_Y, covar_module=ScaleKernel(gp_ntk.NNGPKernel(depth=3)),
                         input_transform=gp_ntk.bo.CenteredNormalize(d, bounds))

This module adds what that line leaves to the user:

* :class:`CenteredNormalize`, an input transform onto :math:`[-1, 1]^d`. NNGP/NTK kernels are
  dot-product kernels: they see inputs through angles at the origin. BoTorch's ``Normalize``
  puts every input in :math:`[0, 1]^d`, a single orthant, where all pairwise angles are small
  and the kernel is nearly constant (``docs/kernels.md``, section 11). Centring the search box
  on the origin restores the angles.
* :func:`bo_kernel` and :func:`make_bo_model`: a ``ScaleKernel``-wrapped network kernel with
  priors that make its hyperparameters identifiable, inside a ``SingleTaskGP`` with the
  centring transform and ``Standardize``. The choices and the measurements behind them are in
  ``docs/bo.md``. :class:`UnitVarianceKernel` optionally divides out a network kernel's prior
  variance, which otherwise grows towards the corners of the box.
* :func:`fit_bo_model`: BoTorch's ``fit_gpytorch_mll``, retried from the initial
  hyperparameters with 100x more Cholesky jitter when it fails.
* :func:`run_bo`: a complete, fault-tolerant BO loop (Sobol initial design, fit, acquisition
  optimisation, evaluation) that reports and recovers from NaN objective values, candidates
  outside the bounds or repeating earlier ones, failed fits and failed acquisition
  optimisations, and records the wall time of every iteration. What it cannot recover from
  (the objective raising, say) stops it with :class:`BOError`, which keeps every evaluation
  made so far as ``error.result``.

BoTorch maximises; pass ``negate=True`` to BoTorch test functions (or negate your objective)
to minimise.

.. [Li2024] Y. L. Li, T. G. J. Rudner, A. G. Wilson. A Study of Bayesian Neural Network
    Surrogates for Bayesian Optimization. ICLR 2024.
.. [Balandat2020] M. Balandat et al. BoTorch: A Framework for Efficient Monte-Carlo Bayesian
    Optimization. NeurIPS 2020.
.. [Ament2023] S. Ament, S. Daulton, D. Eriksson, M. Balandat, E. Bakshy. Unexpected
    Improvements to Expected Improvement for Bayesian Optimization. NeurIPS 2023.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gpytorch
import torch
from botorch.acquisition import AcquisitionFunction, qLogNoisyExpectedImprovement, qUpperConfidenceBound
from botorch.exceptions.errors import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.model import Model
from botorch.models.transforms.input import AffineInputTransform, InputTransform
from botorch.models.transforms.outcome import OutcomeTransform, Standardize
from botorch.optim import optimize_acqf
from botorch.utils.sampling import manual_seed
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import Kernel, ScaleKernel
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import LogNormalPrior
from linear_operator.utils.errors import NanError, NotPSDError
from torch import Tensor
from torch.quasirandom import SobolEngine

from .fitting import wants_progress
from .kernels import ArcCosineKernel, ErfKernel, NNGPKernel, NTKKernel

__all__ = [
    "BOError",
    "BOEvent",
    "BOResult",
    "CenteredNormalize",
    "FitReport",
    "UnitVarianceKernel",
    "bo_kernel",
    "check_bounds",
    "fit_bo_model",
    "make_bo_model",
    "run_bo",
]

BO_KERNEL_NAMES = ("ntk", "nngp", "arccos", "erf")

# Prior hyperparameters (see docs/bo.md, "Why these defaults", for the measurements).
_DEFAULT_WEIGHT_VARIANCE = 2.0
_DEFAULT_BIAS_VARIANCE = 0.1
_WEIGHT_PRIOR_SCALE = 0.5
_BIAS_PRIOR_SCALE = 1.0
_OUTPUTSCALE_PRIOR_SCALE = 1.0
_MIN_VARIANCE = 1e-4


class CenteredNormalize(AffineInputTransform):
    r"""Affine input transform of the box ``bounds`` onto :math:`[-1, 1]^d`:

    .. math::
        x \mapsto \frac{x - (l + u)/2}{(u - l)/2}.

    The centre of the search box becomes the origin, which is what a dot-product kernel needs:
    its value depends on the angle between inputs seen from the origin, so inputs confined to
    one orthant (BoTorch's ``Normalize`` onto :math:`[0, 1]^d`) look nearly parallel and the
    kernel nearly constant. Without ``bounds`` the box is learnt from the training inputs
    (their per-feature minimum and maximum), like ``Normalize``'s.

    Args:
        d: number of input features.
        bounds: ``2 x d`` tensor of lower and upper bounds, or ``None`` to learn them.
        indices, batch_shape, transform_on_train, transform_on_eval, transform_on_fantasize, reverse:
            as for BoTorch's ``Normalize``.
        learn_bounds: learn the box from the training inputs; default ``bounds is None``.
        min_range: learnt feature ranges below this are not scaled (constant features).
    """

    def __init__(
        self,
        d: int,
        bounds: Tensor | None = None,
        indices: list[int] | Tensor | None = None,
        batch_shape: torch.Size = torch.Size(),  # noqa: B008
        transform_on_train: bool = True,
        transform_on_eval: bool = True,
        transform_on_fantasize: bool = True,
        reverse: bool = False,
        learn_bounds: bool | None = None,
        min_range: float = 1e-8,
    ) -> None:
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"d must be a positive integer, got {d!r}")
        if isinstance(min_range, bool) or not (
            isinstance(min_range, int | float) and math.isfinite(min_range) and min_range >= 0
        ):
            raise ValueError(f"min_range must be a finite number >= 0, got {min_range!r}")
        self.learn_coefficients = bounds is None if learn_bounds is None else bool(learn_bounds)
        width = d if indices is None else len(indices)
        if bounds is not None:
            bounds = check_bounds(bounds, d if indices is None else None)
            if indices is not None and bounds.shape[-1] == d:
                bounds = bounds[..., indices]
            if bounds.shape[-1] != width:
                raise ValueError(f"bounds must have {width} columns, got {bounds.shape[-1]}")
            offset = 0.5 * (bounds[..., 0:1, :] + bounds[..., 1:2, :])
            coefficient = 0.5 * (bounds[..., 1:2, :] - bounds[..., 0:1, :])
        else:
            offset = torch.zeros(*batch_shape, 1, width)
            coefficient = torch.ones(*batch_shape, 1, width)
        super().__init__(
            d=d,
            coefficient=coefficient,
            offset=offset,
            indices=indices,
            batch_shape=batch_shape,
            transform_on_train=transform_on_train,
            transform_on_eval=transform_on_eval,
            transform_on_fantasize=transform_on_fantasize,
            reverse=reverse,
        )
        self.min_range = min_range

    @property
    def bounds(self) -> Tensor:
        """The ``2 x d`` box mapped onto :math:`[-1, 1]^d`."""
        return torch.cat([self.offset - self.coefficient, self.offset + self.coefficient], dim=-2)

    @property
    def learn_bounds(self) -> bool:
        return self.learn_coefficients

    def _update_coefficients(self, X: Tensor) -> None:
        bad = ~torch.isfinite(X).reshape(-1, X.shape[-1]).all(-1)
        if bool(bad.any()):
            # amin/amax would turn one NaN into NaN bounds and every transformed input into NaN
            raise ValueError(
                f"CenteredNormalize cannot learn its bounds from inputs with NaN or infinite entries "
                f"({int(bad.sum())} row(s)); drop those rows or pass bounds"
            )
        batch_ndim = min(len(self.batch_shape), X.ndim - 2)
        reduce_dims = (*range(X.ndim - batch_ndim - 2), X.ndim - 2)
        lower = torch.amin(X, dim=reduce_dims).unsqueeze(-2)
        upper = torch.amax(X, dim=reduce_dims).unsqueeze(-2)
        constant = (upper - lower) < self.min_range
        # a constant feature is only shifted to 0, never divided by a zero range
        self._coefficient = torch.where(constant, torch.ones_like(lower), 0.5 * (upper - lower))
        self._offset = 0.5 * (lower + upper)

    def get_init_args(self) -> dict[str, Any]:
        return {
            "d": self._d,
            "bounds": self.bounds,
            "indices": getattr(self, "indices", None),
            "batch_shape": self.batch_shape,
            "transform_on_train": self.transform_on_train,
            "transform_on_eval": self.transform_on_eval,
            "transform_on_fantasize": self.transform_on_fantasize,
            "reverse": self.reverse,
            "learn_bounds": self.learn_bounds,
            "min_range": self.min_range,
        }


def check_bounds(bounds: Tensor, num_dims: int | None = None, name: str = "bounds") -> Tensor:
    """Return ``bounds`` if it is a finite ``2 x d`` float tensor with lower < upper, else raise."""
    if not isinstance(bounds, Tensor) or not bounds.is_floating_point():
        kind = f"tensor of dtype {bounds.dtype}" if isinstance(bounds, Tensor) else type(bounds).__name__
        raise ValueError(f"{name} must be a 2 x d floating-point tensor, got {kind}")
    if bounds.dim() != 2 or bounds.shape[0] != 2 or bounds.shape[1] < 1:
        raise ValueError(f"{name} must have shape (2, d) (lower and upper bounds), got {tuple(bounds.shape)}")
    if num_dims is not None and bounds.shape[1] != num_dims:
        raise ValueError(
            f"{name} must have {num_dims} columns (one per input feature), got {bounds.shape[1]}"
        )
    if not bool(torch.isfinite(bounds).all()):
        raise ValueError(f"{name} must be finite, got {bounds.tolist()}")
    if not bool((bounds[1] > bounds[0]).all()):
        bad = (bounds[1] <= bounds[0]).nonzero().flatten().tolist()
        raise ValueError(f"{name}: every lower bound must be below its upper bound; not so in columns {bad}")
    return bounds


# ---------------------------------------------------------------------------------- kernels


class UnitVarianceKernel(Kernel):
    r"""A kernel divided by its prior standard deviations: unit prior variance everywhere.

    .. math::
        \tilde k(x, y) = \frac{k(x, y)}{\sqrt{k(x, x)\,k(y, y)}}

    is the correlation of the base kernel's GP: the same functions, rescaled pointwise to unit
    variance (:math:`D K D` with :math:`D` diagonal and positive, so still positive
    semi-definite). A dot-product kernel's prior variance grows with :math:`\lVert x\rVert`
    (for ReLU, :math:`k(x, x) = w\lVert x\rVert^2/d + ` bias terms), so on a centred box it is
    largest at the corners; an acquisition function that rewards variance then proposes
    corners, and in high dimension almost only corners (``python benchmarks/bo.py --corners
    PROBLEM`` counts the proposals on the boundary of the box). Dividing
    the variance out leaves only the angular structure.

    For ``k(X, X)`` the variances are read off the matrix's own diagonal, so the diagonal is
    exactly 1 and the matrix exactly symmetric when the base kernel's is (gp_ntk's are). The
    matrix is evaluated densely (BO-sized data). The base kernel must have a positive diagonal, which
    any gp_ntk kernel with ``bias_variance > 0`` has; exact zeros are kept as zero rows.

    Args:
        base_kernel: any kernel; its ``batch_shape`` is taken over.
    """

    has_lengthscale = False

    def __init__(self, base_kernel: Kernel, **kwargs: Any) -> None:
        if not isinstance(base_kernel, Kernel):
            raise ValueError(f"base_kernel must be a gpytorch Kernel, got {type(base_kernel).__name__}")
        kwargs.setdefault("batch_shape", base_kernel.batch_shape)
        super().__init__(**kwargs)
        self.base_kernel = base_kernel

    @property
    def is_stationary(self) -> bool:
        return self.base_kernel.is_stationary

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, last_dim_is_batch: bool = False, **params):
        if last_dim_is_batch:
            raise ValueError("UnitVarianceKernel does not support last_dim_is_batch")
        if diag:
            variance1 = self.base_kernel(x1, diag=True)
            if x1 is x2 or (x1.shape == x2.shape and torch.equal(x1, x2)):
                # a point's correlation with itself: exactly 1, as on the diagonal of k(X, X)
                return torch.where(variance1 > 0, torch.ones_like(variance1), torch.zeros_like(variance1))
            covariance = self.base_kernel(x1, x2, diag=True)
            variance2 = self.base_kernel(x2, diag=True)
            return covariance / (variance1 * variance2).clamp_min(torch.finfo(covariance.dtype).tiny).sqrt()
        covariance = self.base_kernel(x1, x2).to_dense()
        if x1 is x2:
            variance1 = variance2 = covariance.diagonal(dim1=-2, dim2=-1)
        else:
            variance1 = self.base_kernel(x1, diag=True)
            variance2 = self.base_kernel(x2, diag=True)
        # sqrt of the product: v_i v_j = v_j v_i and sqrt(v_i v_i) = v_i exactly in IEEE arithmetic,
        # so a symmetric base matrix stays exactly symmetric with an exactly unit diagonal
        product = variance1.unsqueeze(-1) * variance2.unsqueeze(-2)
        return covariance / product.clamp_min(torch.finfo(covariance.dtype).tiny).sqrt()


def _log_normal(mode: float, scale: float) -> LogNormalPrior:
    # parameterised by its mode exp(loc - scale^2), the value a MAP fit is pulled towards
    return LogNormalPrior(loc=math.log(mode) + scale**2, scale=scale)


def bo_kernel(
    name: str = "nngp",
    num_dims: int | None = None,
    *,
    depth: int = 3,
    activation: str = "relu",
    ard: bool = False,
    priors: bool = True,
    normalize: bool = False,
    batch_shape: torch.Size | None = None,
    **kernel_kwargs: Any,
) -> ScaleKernel:
    r"""A network kernel for BO surrogates: ``ScaleKernel(kernel)`` with priors and constraints.

    For inputs in :math:`[-1, 1]^d` (see :class:`CenteredNormalize`) and standardised outcomes.

    Priors (with ``priors=True``; LogNormal, given by their mode and log-scale :math:`s`):

    * ``weight_variance``: mode 2 (the variance-preserving value of ReLU, He initialisation),
      :math:`s = 0.5`. For a ReLU network the weight variance is nearly a second output scale,
      so a tight prior pins it and leaves the overall scale to the ``ScaleKernel``.
    * ``bias_variance``: mode 0.1, :math:`s = 1`. The bias sets how much a constant offset
      (and, through the layers, the origin) counts against the input signal; a broad prior
      keeps it learnable, the small mode keeps inputs dominant (``docs/kernels.md`` section 11).
    * ``outputscale``: mode 1, :math:`s = 1`, for standardised outcomes.

    All three are initialised at their modes and kept above :math:`10^{-4}` (the weight
    variance above :math:`10^{-4}` times its mode). The measurements behind these choices are
    in ``docs/bo.md``.

    Args:
        name: ``"nngp"`` (default) or ``"ntk"`` (depth ``depth``, activation ``activation``),
            ``"arccos"`` (Cho & Saul order 1, ``depth`` layers) or ``"erf"`` (Williams' one-layer
            kernel). The ReLU NNGP is the default because it was the most accurate network
            kernel in ``docs/bo.md``'s surrogate study and the best-ranked in its BO benchmark;
            the NTK's derivative term makes its functions rough, which costs on smooth objectives.
        num_dims: number of input features; required with ``ard`` or for ``"arccos"``/``"erf"``,
            whose first layer does not divide by :math:`d` (their weight variance is
            initialised and centred at :math:`2/d` instead of 2).
        depth: hidden layers of the NNGP/NTK, or compositions of the arc-cosine kernel.
        activation: activation of the NNGP/NTK (any name or object gp_ntk accepts).
        ard: one first-layer weight variance per input feature (same prior).
        priors: attach the priors above (``False``: plain ``Positive`` parameters, no priors).
        normalize: wrap the kernel in :class:`UnitVarianceKernel` (unit prior variance
            everywhere, the outputscale is then the prior variance). Off by default: in
            ``docs/bo.md``'s benchmark it helps on some problems (Hartmann-6, Hartmann-6 in
            100-D) and costs on others (Levy-10 and Levy-30 on their standard boxes).
        batch_shape: kernel batch shape, e.g. ``torch.Size([m])`` for ``m`` independent outputs.
        **kernel_kwargs: passed on to the kernel's constructor.
    """
    if not isinstance(name, str) or name.lower() not in BO_KERNEL_NAMES:
        raise ValueError(f"name must be one of {BO_KERNEL_NAMES}, got {name!r}")
    name = name.lower()
    if num_dims is not None and (isinstance(num_dims, bool) or not isinstance(num_dims, int) or num_dims < 1):
        raise ValueError(f"num_dims must be a positive integer or None, got {num_dims!r}")
    if (ard or name in ("arccos", "erf")) and num_dims is None:
        raise ValueError(f"num_dims is required for kernel {name!r}{' with ard=True' if ard else ''}")
    batch_shape = torch.Size() if batch_shape is None else torch.Size(batch_shape)
    # Williams' and Cho & Saul's first layers sum over features without dividing by d
    weight_mode = _DEFAULT_WEIGHT_VARIANCE / (num_dims if name in ("arccos", "erf") else 1)
    options: dict[str, Any] = {
        "weight_variance": weight_mode,
        "bias_variance": _DEFAULT_BIAS_VARIANCE,
        "ard_num_dims": num_dims if ard else None,
        "batch_shape": batch_shape,
    }
    if priors:
        options.update(
            weight_variance_prior=_log_normal(weight_mode, _WEIGHT_PRIOR_SCALE),
            bias_variance_prior=_log_normal(_DEFAULT_BIAS_VARIANCE, _BIAS_PRIOR_SCALE),
            weight_variance_constraint=GreaterThan(_MIN_VARIANCE * weight_mode),
            bias_variance_constraint=GreaterThan(_MIN_VARIANCE),
        )
    options.update(kernel_kwargs)
    if name in ("ntk", "nngp"):
        cls = NTKKernel if name == "ntk" else NNGPKernel
        kernel: Kernel = cls(depth=depth, activation=activation, **options)
    elif name == "arccos":
        kernel = ArcCosineKernel(order=1, num_layers=depth, **options)
    else:
        kernel = ErfKernel(**options)
    if normalize:
        kernel = UnitVarianceKernel(kernel)
    scale_options: dict[str, Any] = {"batch_shape": batch_shape}
    if priors:
        scale_options.update(
            outputscale_prior=_log_normal(1.0, _OUTPUTSCALE_PRIOR_SCALE),
            outputscale_constraint=GreaterThan(_MIN_VARIANCE),
        )
    scaled = ScaleKernel(kernel, **scale_options)
    scaled.outputscale = 1.0  # the prior's mode (GPyTorch would start at softplus(0) = 0.69)
    return scaled


# ---------------------------------------------------------------------------------- models


def _check_training_data(train_X: Tensor, train_Y: Tensor) -> None:
    for name, value in (("train_X", train_X), ("train_Y", train_Y)):
        if not isinstance(value, Tensor) or not value.is_floating_point():
            kind = f"tensor of dtype {value.dtype}" if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{name} must be a floating-point torch.Tensor, got {kind}")
        if value.dim() < 2:
            raise ValueError(
                f"{name} must have shape (..., n, {'d' if name == 'train_X' else 'm'}), got {tuple(value.shape)}"
            )
    if train_Y.shape[:-1] != train_X.shape[:-1]:
        raise ValueError(
            f"train_Y must have shape {tuple(train_X.shape[:-1])} + (m,) to match train_X {tuple(train_X.shape)}, "
            f"got {tuple(train_Y.shape)}"
        )
    if train_X.shape[-2] == 0:
        raise ValueError("train_X has no rows: a surrogate needs at least one observation")
    if train_X.dtype != train_Y.dtype:
        raise ValueError(
            f"train_X and train_Y must have the same dtype, got {train_X.dtype} and {train_Y.dtype}"
        )
    for name, value in (("train_X", train_X), ("train_Y", train_Y)):
        bad = ~torch.isfinite(value).all(-1)
        if bool(bad.any()):
            raise ValueError(
                f"{name} has NaN or infinite entries in {int(bad.sum())} row(s); drop those observations "
                "(run_bo skips failed evaluations itself)"
            )


def make_bo_model(
    train_X: Tensor,
    train_Y: Tensor,
    bounds: Tensor | None = None,
    kernel: str | Kernel = "nngp",
    *,
    train_Yvar: Tensor | None = None,
    depth: int = 3,
    activation: str = "relu",
    ard: bool = False,
    priors: bool = True,
    normalize: bool = False,
    input_transform: InputTransform | None = None,
    outcome_transform: OutcomeTransform | None = None,
    **kernel_kwargs: Any,
) -> SingleTaskGP:
    r"""A BoTorch ``SingleTaskGP`` with a network kernel and the inputs centred for it.

    The model is ``SingleTaskGP(train_X, train_Y, train_Yvar, covar_module=bo_kernel(...),
    input_transform=CenteredNormalize(d, bounds), outcome_transform=Standardize(m))`` with
    BoTorch's default likelihood (inferred noise, LogNormal prior, noise at least
    :math:`10^{-4}`) and constant mean. Fit it with ``fit_gpytorch_mll`` (or
    :func:`fit_bo_model`) and use it with any BoTorch acquisition function.

    Args:
        train_X: ``(..., n, d)`` observed inputs in the original units.
        train_Y: ``(..., n, m)`` observed outcomes; ``m > 1`` gives independent outputs
            (a batched kernel).
        bounds: ``2 x d`` search box; it is mapped onto :math:`[-1, 1]^d`. Without it the box
            is learnt from ``train_X``, which moves the origin as data accrue: pass the bounds.
        kernel: a name for :func:`bo_kernel` (``"nngp"``, ``"ntk"``, ``"arccos"``, ``"erf"``) or
            any kernel, used as the covariance module as it is.
        train_Yvar: known observation noise variances (then a fixed-noise likelihood).
        depth, activation, ard, priors, normalize, kernel_kwargs: passed to :func:`bo_kernel`.
        input_transform: replaces :class:`CenteredNormalize`.
        outcome_transform: replaces ``Standardize(m)``.
    """
    _check_training_data(train_X, train_Y)
    num_dims, num_outputs = train_X.shape[-1], train_Y.shape[-1]
    if bounds is not None:
        bounds = check_bounds(bounds, num_dims).to(train_X)
    if isinstance(kernel, str):
        if kernel.lower() not in BO_KERNEL_NAMES:
            raise ValueError(
                f"kernel must be one of {BO_KERNEL_NAMES} or a gpytorch Kernel, got {kernel!r}; for "
                "an RBF or Matern surrogate pass the kernel itself, e.g. "
                "kernel=gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())"
            )
        batch_shape = train_X.shape[:-2] + (torch.Size([num_outputs]) if num_outputs > 1 else torch.Size())
        covar_module: Kernel = bo_kernel(
            kernel,
            num_dims,
            depth=depth,
            activation=activation,
            ard=ard,
            priors=priors,
            normalize=normalize,
            batch_shape=batch_shape,
            **kernel_kwargs,
        )
    elif isinstance(kernel, Kernel):
        covar_module = kernel
    else:
        raise ValueError(
            f"kernel must be a name in {BO_KERNEL_NAMES} or a gpytorch Kernel, got {type(kernel).__name__}"
        )
    if input_transform is None:
        input_transform = CenteredNormalize(num_dims, bounds=bounds)
    if outcome_transform is None:
        outcome_transform = Standardize(m=num_outputs, batch_shape=train_X.shape[:-2])
    return SingleTaskGP(
        train_X,
        train_Y,
        train_Yvar=train_Yvar,
        covar_module=covar_module,
        input_transform=input_transform,
        outcome_transform=outcome_transform,
    )


# ---------------------------------------------------------------------------------- fitting

# Exceptions that mean "this surrogate could not be fitted / queried this time", as opposed to
# programming errors (TypeError, AttributeError, ...), which propagate. torch.distributions
# raises ValueError on NaN parameters; linear algebra failures are RuntimeErrors.
_NUMERICAL_FAILURES = (ModelFittingError, NotPSDError, NanError, ArithmeticError, RuntimeError, ValueError)


@dataclass
class FitReport:
    """Outcome of :func:`fit_bo_model`: attempts made, the jitter that worked, messages."""

    succeeded: bool
    attempts: int
    jitter: float
    seconds: float
    messages: list[str] = field(default_factory=list)


def _jitter_context(jitter: float):
    return gpytorch.settings.cholesky_jitter(float_value=max(jitter, 1e-6), double_value=jitter)


def fit_bo_model(
    model: Model,
    *,
    max_attempts: int = 3,
    initial_jitter: float = 1e-8,
    fit: Callable[..., Any] | None = None,
) -> FitReport:
    r"""Fit ``model`` by ``fit_gpytorch_mll``; on failure retry from its initial state with 100x jitter.

    BoTorch's ``fit_gpytorch_mll`` already restarts from prior samples when the optimiser
    warns. This adds what it does not do: when it raises (every attempt failed, a Cholesky
    factorisation failed, a kernel overflowed) or leaves non-finite parameters, the model is
    reset to the state it had on entry and fitted again under
    ``gpytorch.settings.cholesky_jitter`` 100 times larger (``1e-8``, ``1e-6``, ``1e-4`` in
    float64). After ``max_attempts`` failures the model is left in its initial state (prior
    hyperparameters) and ``succeeded`` is ``False``; nothing is raised. Any other exception
    (a ``TypeError`` in ``fit``, Ctrl-C) also restores the initial state, then propagates.

    Query a model fitted with a larger jitter under the same jitter
    (``gpytorch.settings.cholesky_jitter(double_value=report.jitter)``), as :func:`run_bo` does.

    Args:
        model: a BoTorch GPyTorch model with a ``likelihood``.
        max_attempts: fits to try (at least 1).
        initial_jitter: float64 Cholesky jitter of the first attempt (float32 uses at least 1e-6).
        fit: the fitting function, default ``botorch.fit.fit_gpytorch_mll`` (taking the mll).
    """
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be a positive integer, got {max_attempts!r}")
    if not (isinstance(initial_jitter, int | float) and math.isfinite(initial_jitter) and initial_jitter > 0):
        raise ValueError(f"initial_jitter must be a positive number, got {initial_jitter!r}")
    fit = fit_gpytorch_mll if fit is None else fit
    start = time.perf_counter()
    initial_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    initial_training = model.training
    messages: list[str] = []
    jitter = float(initial_jitter)
    for attempt in range(1, max_attempts + 1):
        if attempt > 1:
            model.load_state_dict(initial_state)
        try:
            mll = ExactMarginalLogLikelihood(model.likelihood, model)
            with _jitter_context(jitter), warnings.catch_warnings():
                # the retry policy is ours: BoTorch's per-attempt warnings are summarised in messages
                warnings.simplefilter("ignore")
                fit(mll)
            if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                raise NanError("the fit left non-finite hyperparameters")
        except _NUMERICAL_FAILURES as error:
            messages.append(
                f"attempt {attempt} (jitter {jitter:.0e}): {type(error).__name__}: {str(error)[:200]}"
            )
            jitter *= 100.0
            continue
        except BaseException:
            # a programming error or Ctrl-C: nothing half-fitted is left behind
            model.load_state_dict(initial_state)
            model.train(initial_training)
            raise
        model.eval()
        return FitReport(True, attempt, jitter, time.perf_counter() - start, messages)
    model.load_state_dict(initial_state)
    model.eval()
    return FitReport(False, max_attempts, jitter / 100.0, time.perf_counter() - start, messages)


# ---------------------------------------------------------------------------------- the loop

_logger = logging.getLogger(__name__)

EVENT_KINDS = (
    "nan_objective",
    "out_of_bounds",
    "nan_candidate",
    "duplicate",
    "fit_retry",
    "fit_failed",
    "acquisition_failed",
    "too_few_observations",
)


@dataclass(frozen=True)
class BOEvent:
    """Something :func:`run_bo` recovered from: where, what, and what it did instead."""

    iteration: int
    kind: str
    message: str


@dataclass
class BOResult:
    """Everything a :func:`run_bo` run evaluated, in order.

    ``X`` (``N x d``) and ``Y`` (``N``) hold every evaluation, failed ones (``Y`` NaN)
    included; ``iteration[i]`` is the loop iteration that proposed evaluation ``i`` (0 for the
    initial design). Times are per BO iteration (the initial design is not an iteration):
    ``fit_seconds`` for fitting the surrogate, ``acquisition_seconds`` for building and
    optimising the acquisition function, ``iteration_seconds`` for the whole iteration
    including the objective. ``events`` lists every fault the loop recovered from.
    """

    X: Tensor
    Y: Tensor
    iteration: Tensor
    fit_seconds: list[float] = field(default_factory=list)
    acquisition_seconds: list[float] = field(default_factory=list)
    iteration_seconds: list[float] = field(default_factory=list)
    events: list[BOEvent] = field(default_factory=list)

    @property
    def best_values(self) -> Tensor:
        """Best finite value after each evaluation (``-inf`` before the first finite one)."""
        finite = torch.where(torch.isfinite(self.Y), self.Y, torch.full_like(self.Y, -math.inf))
        return torch.cummax(finite, dim=0).values

    @property
    def best_value(self) -> float:
        return float(self.best_values[-1]) if self.Y.numel() else -math.inf

    @property
    def best_X(self) -> Tensor | None:
        """The evaluated input with the best finite value (``None`` if there is none)."""
        finite = torch.isfinite(self.Y)
        if not bool(finite.any()):
            return None
        index = torch.where(finite, self.Y, torch.full_like(self.Y, -math.inf)).argmax()
        return self.X[index]

    def events_of(self, kind: str) -> list[BOEvent]:
        """The events of one kind (one of ``EVENT_KINDS``)."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"kind must be one of {EVENT_KINDS}, got {kind!r}")
        return [event for event in self.events if event.kind == kind]


class BOError(RuntimeError):
    """:func:`run_bo` stopped by an error it does not recover from; nothing evaluated is lost.

    ``result`` is the :class:`BOResult` of every evaluation made before the error (complete
    iterations; the initial design counts as iteration 0), ``candidates`` the points being
    proposed or evaluated when it happened (``None`` if none were), ``iteration`` that
    iteration. The original exception is ``__cause__``.
    """

    def __init__(self, message: str, result: BOResult, iteration: int, candidates: Tensor | None) -> None:
        super().__init__(message)
        self.result = result
        self.iteration = iteration
        self.candidates = candidates


ModelFactory = Callable[[Tensor, Tensor, Tensor], Model]
AcquisitionFactory = Callable[[Model, Tensor, Tensor], AcquisitionFunction]


def _model_factory(surrogate: str | ModelFactory | None) -> ModelFactory | None:
    if surrogate is None or (isinstance(surrogate, str) and surrogate.lower() == "random"):
        return None
    if isinstance(surrogate, str):
        if surrogate.lower() not in BO_KERNEL_NAMES:
            raise ValueError(
                f"surrogate must be one of {BO_KERNEL_NAMES}, 'random', None or a callable, got {surrogate!r}"
            )
        name = surrogate.lower()
        return lambda X, Y, bounds: make_bo_model(X, Y, bounds, kernel=name)
    if callable(surrogate):
        return surrogate
    raise ValueError(
        f"surrogate must be a kernel name, 'random', None or a callable, got {type(surrogate).__name__}"
    )


def _acquisition_factory(acquisition: str | AcquisitionFactory, ucb_beta: float) -> AcquisitionFactory:
    if callable(acquisition):
        return acquisition
    if isinstance(acquisition, str) and acquisition.lower() == "qlognei":
        return lambda model, X, Y: qLogNoisyExpectedImprovement(model, X_baseline=X, prune_baseline=True)
    if isinstance(acquisition, str) and acquisition.lower() == "qucb":
        return lambda model, X, Y: qUpperConfidenceBound(model, beta=ucb_beta)
    raise ValueError(f"acquisition must be 'qlognei', 'qucb' or a callable, got {acquisition!r}")


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class _Loop:
    """State of one :func:`run_bo` run; the public function only checks and wires arguments."""

    def __init__(self, objective, bounds, generator, duplicate_tolerance, progress_bar) -> None:
        self.objective = objective
        self.bounds = bounds
        self.width = bounds[1] - bounds[0]
        self.generator = generator
        self.duplicate_tolerance = duplicate_tolerance
        self.bar = progress_bar
        self.X = bounds.new_zeros(0, bounds.shape[1])
        self.Y = bounds.new_zeros(0)
        self.iteration = torch.zeros(0, dtype=torch.long)
        self.events: list[BOEvent] = []
        self.current_iteration = 0
        self.pending: Tensor | None = None

    def report(self, iteration: int, kind: str, message: str) -> None:
        self.events.append(BOEvent(iteration, kind, message))
        text = f"iteration {iteration}: {kind}: {message}"
        if self.bar is not None:
            self.bar.write(text)
        else:
            _logger.warning(text)

    def random_points(self, count: int) -> Tensor:
        u = torch.rand(count, self.bounds.shape[1], generator=self.generator, dtype=self.bounds.dtype)
        return self.bounds[0] + u.to(self.bounds.device) * self.width

    def repair(self, candidates: Tensor, iteration: int) -> Tensor:
        """Replace NaN candidates and repeats by random points; clamp candidates into the box."""
        candidates = candidates.detach().clone().reshape(-1, self.bounds.shape[1])
        bad = ~torch.isfinite(candidates).all(-1)
        if bool(bad.any()):
            self.report(
                iteration,
                "nan_candidate",
                f"{int(bad.sum())} non-finite candidate(s) replaced by random points",
            )
            candidates[bad] = self.random_points(int(bad.sum()))
        outside = ((candidates < self.bounds[0]) | (candidates > self.bounds[1])).any(-1)
        if bool(outside.any()):
            excess = torch.maximum(self.bounds[0] - candidates, candidates - self.bounds[1]).clamp_min(0)
            self.report(
                iteration,
                "out_of_bounds",
                f"{int(outside.sum())} candidate(s) outside the bounds by up to "
                f"{float((excess / self.width).max()):.3g} of the box width, clamped into it",
            )
            candidates = torch.minimum(torch.maximum(candidates, self.bounds[0]), self.bounds[1])
        for i in range(candidates.shape[0]):
            for attempt in range(100):
                earlier = torch.cat([self.X, candidates[:i]])
                if not earlier.shape[0]:
                    break
                gap = ((earlier - candidates[i]).abs() / self.width).amax(-1).min()
                if float(gap) > self.duplicate_tolerance:
                    break
                if attempt == 0:
                    self.report(
                        iteration,
                        "duplicate",
                        f"candidate {i} repeats an evaluated point (max-norm gap {float(gap):.2g} of the box "
                        "width); a random point is evaluated instead",
                    )
                candidates[i] = self.random_points(1)[0]
        return candidates

    def evaluate(self, candidates: Tensor, iteration: int) -> None:
        self.pending = candidates
        count = candidates.shape[0]
        name = getattr(self.objective, "__qualname__", None) or type(self.objective).__name__
        expected = f"it must map a ({count}, {candidates.shape[1]}) tensor to {count} number(s)"
        with torch.no_grad():
            values = self.objective(candidates)
        if values is None:
            raise ValueError(f"objective {name!r} returned None for {count} point(s); {expected}")
        if not isinstance(values, Tensor):
            try:
                values = torch.as_tensor(values)
            except (TypeError, ValueError, RuntimeError) as error:
                raise ValueError(
                    f"objective {name!r} returned {type(values).__name__}, not numbers; {expected}"
                ) from error
        if values.is_complex() or values.dtype == torch.bool:
            raise ValueError(f"objective {name!r} returned a tensor of dtype {values.dtype}; {expected}")
        values = values.to(self.bounds).reshape(-1)
        if values.shape[0] != count:
            raise ValueError(
                f"objective {name!r} returned {values.shape[0]} value(s) for {count} point(s); {expected}"
            )
        failed = ~torch.isfinite(values)
        if bool(failed.any()):
            self.report(
                iteration,
                "nan_objective",
                f"{int(failed.sum())} of {values.shape[0]} evaluation(s) returned NaN/inf; kept in the "
                "result, left out of the surrogate",
            )
            values = torch.where(failed, torch.full_like(values, math.nan), values)
        self.X = torch.cat([self.X, candidates])
        self.Y = torch.cat([self.Y, values])
        self.iteration = torch.cat(
            [self.iteration, torch.full((values.shape[0],), iteration, dtype=torch.long)]
        )
        self.pending = None

    def result(self, fit_s, acq_s, it_s) -> BOResult:
        return BOResult(self.X, self.Y, self.iteration, fit_s, acq_s, it_s, self.events)


def run_bo(
    objective: Callable[[Tensor], Tensor],
    bounds: Tensor,
    num_evaluations: int,
    *,
    surrogate: str | ModelFactory | None = "nngp",
    acquisition: str | AcquisitionFactory = "qlognei",
    batch_size: int = 1,
    num_initial: int | None = None,
    initial_X: Tensor | None = None,
    num_restarts: int = 10,
    raw_samples: int = 512,
    ucb_beta: float = 2.0,
    max_fit_attempts: int = 3,
    duplicate_tolerance: float = 1e-6,
    seed: int = 0,
    progress: bool | None = None,
    description: str | None = None,
    callback: Callable[[int, BOResult], None] | None = None,
) -> BOResult:
    r"""Maximise ``objective`` over the box ``bounds`` by Bayesian optimisation.

    Each iteration fits a fresh surrogate to all finite observations (:func:`fit_bo_model`),
    optimises the acquisition function over the box with BoTorch's ``optimize_acqf``, and
    evaluates ``batch_size`` candidates, until ``num_evaluations`` evaluations are spent. The
    initial design is a scrambled Sobol sample (or ``initial_X``).

    Faults are reported (``result.events``, and on the progress bar or the ``gp_ntk.bo``
    logger) and recovered from, never passed on as NaN:

    * an objective value that is NaN/inf: kept in ``result.Y`` as NaN, left out of the
      surrogate (the point still counts as evaluated, so it is not proposed again);
    * a candidate that is NaN or outside the bounds: replaced by a random point, or clamped;
    * a candidate that repeats an evaluated point (within ``duplicate_tolerance`` of the box
      width in every coordinate): replaced by a random point, since a deterministic objective
      would return the same value;
    * a failed fit: refitted from the initial hyperparameters with 100x jitter, up to
      ``max_fit_attempts`` times; then, like a failed acquisition optimisation or fewer than
      two finite observations, the iteration evaluates random points.

    Nothing evaluated is lost when the loop cannot go on. Any other exception (the objective
    raising, returning ``None`` or the wrong number of values, a surrogate factory or
    ``callback`` raising anything but a numerical failure) stops the run with a
    :class:`BOError` whose ``result`` holds every evaluation made so far and whose
    ``__cause__`` is the original exception; Ctrl-C propagates as ``KeyboardInterrupt`` with
    the same partial result as its ``result`` attribute.

    Args:
        objective: maps a ``(q, d)`` tensor to ``q`` values (any shape with ``q`` entries).
        bounds: ``2 x d`` float tensor; its dtype and device are used throughout (float64
            recommended, as in BoTorch).
        num_evaluations: total evaluation budget, initial design included.
        surrogate: a kernel name for :func:`make_bo_model` (``"nngp"``, ``"ntk"``, ``"arccos"``,
            ``"erf"``), a callable ``(train_X, train_Y, bounds) -> Model`` (``train_Y`` is
            ``n x 1``), or ``"random"``/``None`` for random search.
        acquisition: ``"qlognei"`` (``qLogNoisyExpectedImprovement`` on the observed inputs),
            ``"qucb"`` (``qUpperConfidenceBound`` with ``ucb_beta``), or a callable
            ``(model, train_X, train_Y) -> AcquisitionFunction``.
        batch_size: candidates per iteration (``q``), optimised jointly.
        num_initial: size of the initial design; default ``min(num_evaluations, max(5, 2 d))``
            capped at 20.
        initial_X: explicit initial design (``n x d``, inside the bounds); overrides ``num_initial``.
        num_restarts, raw_samples: ``optimize_acqf``'s multi-start settings.
        max_fit_attempts: see :func:`fit_bo_model`.
        duplicate_tolerance: repeat threshold, as a fraction of the box width.
        seed: seeds the initial design, the random fallbacks and BoTorch's MC samplers.
        progress: show a tqdm progress bar with the best value so far; default: when standard
            error is a terminal.
        description: progress-bar label.
        callback: called as ``callback(iteration, result_so_far)`` after every iteration.
    """
    if not callable(objective):
        raise ValueError(f"objective must be callable, got {type(objective).__name__}")
    bounds = check_bounds(bounds)
    num_dims = bounds.shape[1]
    _positive_int(num_evaluations, "num_evaluations")
    _positive_int(batch_size, "batch_size")
    _positive_int(num_restarts, "num_restarts")
    _positive_int(raw_samples, "raw_samples")
    if isinstance(ucb_beta, bool) or not (
        isinstance(ucb_beta, int | float) and math.isfinite(ucb_beta) and ucb_beta > 0
    ):
        raise ValueError(f"ucb_beta must be a positive number, got {ucb_beta!r}")
    if not (isinstance(duplicate_tolerance, int | float) and 0 <= duplicate_tolerance < 1):
        raise ValueError(f"duplicate_tolerance must be a number in [0, 1), got {duplicate_tolerance!r}")
    factory = _model_factory(surrogate)
    make_acquisition = _acquisition_factory(acquisition, ucb_beta)
    if initial_X is not None:
        if not isinstance(initial_X, Tensor) or initial_X.dim() != 2 or initial_X.shape[-1] != num_dims:
            shape = tuple(initial_X.shape) if isinstance(initial_X, Tensor) else type(initial_X).__name__
            raise ValueError(f"initial_X must be an (n, {num_dims}) tensor, got {shape}")
        initial_X = initial_X.to(bounds)
        if not bool(torch.isfinite(initial_X).all()):
            raise ValueError("initial_X contains NaN or infinite entries")
        outside = ((initial_X < bounds[0]) | (initial_X > bounds[1])).any(-1)
        if bool(outside.any()):
            raise ValueError(f"initial_X has {int(outside.sum())} row(s) outside the bounds")
        if initial_X.shape[0] > num_evaluations:
            raise ValueError(
                f"initial_X has {initial_X.shape[0]} rows, more than num_evaluations={num_evaluations}"
            )
    elif num_initial is None:
        num_initial = min(num_evaluations, max(5, min(2 * num_dims, 20)))
    else:
        _positive_int(num_initial, "num_initial")
        num_initial = min(num_initial, num_evaluations)

    generator = torch.Generator().manual_seed(seed)
    bar = None
    if wants_progress(progress):
        from tqdm.auto import tqdm

        bar = tqdm(
            total=num_evaluations,
            desc=description or f"BO {surrogate if isinstance(surrogate, str) else 'custom'}",
            dynamic_ncols=True,
            leave=False,
        )
    loop = _Loop(objective, bounds, generator, float(duplicate_tolerance), bar)
    fit_seconds: list[float] = []
    acquisition_seconds: list[float] = []
    iteration_seconds: list[float] = []
    try:
        if initial_X is None:
            sobol = SobolEngine(num_dims, scramble=True, seed=seed)
            initial_X = bounds[0] + sobol.draw(num_initial).to(bounds) * (bounds[1] - bounds[0])
        loop.evaluate(initial_X, 0)
        _advance(bar, loop)
        iteration = 0
        while loop.X.shape[0] < num_evaluations:
            iteration += 1
            loop.current_iteration = iteration
            start = time.perf_counter()
            q = min(batch_size, num_evaluations - loop.X.shape[0])
            candidates, fit_time, acq_time = _propose(
                loop,
                factory,
                make_acquisition,
                q,
                iteration,
                seed,
                num_restarts,
                raw_samples,
                max_fit_attempts,
            )
            loop.evaluate(loop.repair(candidates, iteration), iteration)
            fit_seconds.append(fit_time)
            acquisition_seconds.append(acq_time)
            iteration_seconds.append(time.perf_counter() - start)
            _advance(bar, loop)
            if callback is not None:
                callback(iteration, loop.result(fit_seconds, acquisition_seconds, iteration_seconds))
    except Exception as error:
        partial = loop.result(fit_seconds, acquisition_seconds, iteration_seconds)
        raise BOError(
            f"run_bo stopped in iteration {loop.current_iteration} after {partial.X.shape[0]} evaluation(s), "
            f"kept in error.result: {type(error).__name__}: {error}",
            partial,
            loop.current_iteration,
            loop.pending,
        ) from error
    except KeyboardInterrupt as interrupt:
        # Ctrl-C still stops the program, but a caller who catches it keeps the evaluations
        interrupt.result = loop.result(fit_seconds, acquisition_seconds, iteration_seconds)
        raise
    finally:
        if bar is not None:
            bar.close()
    return loop.result(fit_seconds, acquisition_seconds, iteration_seconds)


def _advance(bar, loop: _Loop) -> None:
    if bar is None:
        return
    bar.update(loop.X.shape[0] - bar.n)
    finite = loop.Y[torch.isfinite(loop.Y)]
    if finite.numel():
        bar.set_postfix(best=f"{float(finite.max()):.5g}", events=len(loop.events))


def _propose(
    loop, factory, make_acquisition, q, iteration, seed, num_restarts, raw_samples, max_fit_attempts
):
    """Candidates of one iteration, with the fit and acquisition times; random on any failure."""
    if factory is None:
        return loop.random_points(q), 0.0, 0.0
    finite = torch.isfinite(loop.Y)
    if int(finite.sum()) < 2:
        loop.report(
            iteration, "too_few_observations", f"{int(finite.sum())} finite value(s); random points instead"
        )
        return loop.random_points(q), 0.0, 0.0
    train_X, train_Y = loop.X[finite], loop.Y[finite].unsqueeze(-1)
    fit_start = time.perf_counter()
    try:
        model = factory(train_X, train_Y, loop.bounds)
        report = fit_bo_model(model, max_attempts=max_fit_attempts)
    except _NUMERICAL_FAILURES as error:
        loop.report(
            iteration,
            "fit_failed",
            f"building the surrogate failed ({type(error).__name__}: {error}); random points",
        )
        return loop.random_points(q), time.perf_counter() - fit_start, 0.0
    fit_time = time.perf_counter() - fit_start
    if report.attempts > 1 and report.succeeded:
        loop.report(
            iteration,
            "fit_retry",
            f"fit succeeded at attempt {report.attempts} with jitter {report.jitter:.0e} ({'; '.join(report.messages)})",
        )
    if not report.succeeded:
        loop.report(
            iteration,
            "fit_failed",
            f"{report.attempts} fit attempts failed ({'; '.join(report.messages)}); random points",
        )
        return loop.random_points(q), fit_time, 0.0
    acq_start = time.perf_counter()
    try:
        # BoTorch's MC base samples and random initial conditions come from torch's global
        # generator: seed it per iteration for reproducible runs, and restore it afterwards
        with manual_seed(seed * 100_003 + iteration), _jitter_context(report.jitter):
            acqf = make_acquisition(model, train_X, train_Y)
            candidates, _ = optimize_acqf(
                acqf, bounds=loop.bounds, q=q, num_restarts=num_restarts, raw_samples=raw_samples
            )
    except _NUMERICAL_FAILURES as error:
        loop.report(
            iteration, "acquisition_failed", f"{type(error).__name__}: {str(error)[:200]}; random points"
        )
        return loop.random_points(q), fit_time, time.perf_counter() - acq_start
    return candidates, fit_time, time.perf_counter() - acq_start
