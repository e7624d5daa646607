r"""BoTorch surrogates with a network kernel: :func:`~gp_ntk.bo.bo_kernel` and :func:`~gp_ntk.bo.make_bo_model`.

:func:`~gp_ntk.bo.bo_kernel` is :func:`gp_ntk.models.make_kernel` (the one kernel factory) with the priors
of :mod:`gp_ntk.bo.priors`, optionally :class:`~gp_ntk.kernels.UnitVarianceKernel`, inside a
``ScaleKernel``. :func:`~gp_ntk.bo.make_bo_model` puts it in a ``SingleTaskGP`` with
:class:`~gp_ntk.bo.CenteredNormalize` and ``Standardize``. The choices and the measurements
behind them are in ``docs/bo.md``.
"""

from __future__ import annotations

from typing import Any

import torch
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import InputTransform
from botorch.models.transforms.outcome import OutcomeTransform, Standardize
from gpytorch.kernels import Kernel, ScaleKernel
from torch import Tensor

from ..kernels import UnitVarianceKernel
from ..models import make_kernel
from ..validation import check_bounds, check_int, check_rows_finite, describe
from .priors import DEFAULT_BIAS_VARIANCE, kernel_priors, outputscale_priors, weight_variance_mode
from .transforms import CenteredNormalize

__all__ = ["BO_KERNEL_NAMES", "bo_kernel", "make_bo_model"]

BO_KERNEL_NAMES = ("ntk", "nngp", "arccos", "erf")


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

    For inputs in :math:`[-1, 1]^d` (see :class:`~gp_ntk.bo.CenteredNormalize`) and standardised outcomes.

    Priors (with ``priors=True``; LogNormal, given by their mode and log-scale :math:`s`):

    * ``weight_variance``: mode 2 (the variance-preserving value of ReLU, He initialisation),
      :math:`s = 0.5`. For a ReLU network the weight variance is nearly a second output scale,
      so a tight prior pins it and leaves the overall scale to the ``ScaleKernel``.
    * ``bias_variance``: mode 0.1, :math:`s = 1`. The bias sets how much a constant offset
      (and, through the layers, the origin) counts against the input signal; a broad prior
      keeps it learnable, the small mode keeps inputs dominant
      (``docs/kernels.md#11-pitfall-centre-your-inputs``).
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
        normalize: wrap the kernel in :class:`~gp_ntk.kernels.UnitVarianceKernel` (unit prior variance
            everywhere, the outputscale is then the prior variance). Off by default: in
            ``docs/bo.md``'s benchmark it helps on some problems (Hartmann-6, Hartmann-6 in
            100-D) and costs on others (Levy-10 and Levy-30 on their standard boxes).
        batch_shape: kernel batch shape, e.g. ``torch.Size([m])`` for ``m`` independent outputs.
        **kernel_kwargs: passed on to the kernel's constructor.
    """
    if not isinstance(name, str) or name.lower() not in BO_KERNEL_NAMES:
        raise ValueError(f"name must be one of {BO_KERNEL_NAMES}, got {name!r}")
    name = name.lower()
    if num_dims is not None:
        check_int(num_dims, "num_dims")
    if (ard or name in ("arccos", "erf")) and num_dims is None:
        raise ValueError(f"num_dims is required for kernel {name!r}{' with ard=True' if ard else ''}")
    batch_shape = torch.Size() if batch_shape is None else torch.Size(batch_shape)
    options: dict[str, Any] = {
        "weight_variance": weight_variance_mode(name, num_dims),
        "bias_variance": DEFAULT_BIAS_VARIANCE,
        "ard_num_dims": num_dims if ard else None,
        "batch_shape": batch_shape,
    }
    if name in ("ntk", "nngp"):
        options.update(depth=depth, activation=activation)
    elif name == "arccos":
        options.update(order=1, num_layers=depth)
    if priors:
        options.update(kernel_priors(name, num_dims))
    options.update(kernel_kwargs)
    # the one kernel factory of gp_ntk; BO adds priors, the optional unit variance and the scale
    kernel = make_kernel(name, num_dims, **options)
    if normalize:
        kernel = UnitVarianceKernel(kernel)
    scaled = ScaleKernel(kernel, batch_shape=batch_shape, **(outputscale_priors() if priors else {}))
    scaled.outputscale = 1.0  # the prior's mode (GPyTorch would start at softplus(0) = 0.69)
    return scaled


def _check_training_data(train_X: Tensor, train_Y: Tensor) -> None:
    for name, value in (("train_X", train_X), ("train_Y", train_Y)):
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise ValueError(f"{name} must be a floating-point torch.Tensor, got {describe(value)}")
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
        check_rows_finite(value, name, "drop those observations (run_bo skips failed evaluations itself)")


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
    :func:`~gp_ntk.bo.fit_bo_model`) and use it with any BoTorch acquisition function.

    Args:
        train_X: ``(..., n, d)`` observed inputs in the original units.
        train_Y: ``(..., n, m)`` observed outcomes; ``m > 1`` gives independent outputs
            (a batched kernel).
        bounds: ``2 x d`` search box; it is mapped onto :math:`[-1, 1]^d`. Without it the box
            is learnt from ``train_X``, which moves the origin as data accrue: pass the bounds.
        kernel: a name for :func:`~gp_ntk.bo.bo_kernel` (``"nngp"``, ``"ntk"``, ``"arccos"``, ``"erf"``) or
            any kernel, used as the covariance module as it is.
        train_Yvar: known observation noise variances (then a fixed-noise likelihood).
        depth, activation, ard, priors, normalize, kernel_kwargs: passed to :func:`~gp_ntk.bo.bo_kernel`.
        input_transform: replaces :class:`~gp_ntk.bo.CenteredNormalize`.
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
