r"""BoTorch surrogates with a network kernel: :func:`~gp_ntk.bo.bo_kernel` and :func:`~gp_ntk.bo.make_bo_model`.

:func:`~gp_ntk.bo.bo_kernel` is :func:`gp_ntk.models.make_kernel` (the one kernel factory) with the priors
of :mod:`gp_ntk.bo.priors`, one first-layer weight variance per feature,
:class:`~gp_ntk.kernels.UnitVarianceKernel`, inside a ``ScaleKernel``.
:func:`~gp_ntk.bo.make_bo_model` puts it in a ``SingleTaskGP`` with
:class:`~gp_ntk.bo.CenteredNormalize` and ``Standardize``. The default kernel is the depth-3
NTK of ReLU squared (Cho & Saul's rectified square, :class:`~gp_ntk.activations.ArcCos` of
order 2); the choices and the measurements behind them are in ``docs/bo.md``.

Why the bias variance matters. Divided by its prior standard deviations, the first layer of a
network kernel with per-feature weight variances :math:`\sigma_{w,i}^2` and bias variance
:math:`\sigma_b^2` sees two inputs through the correlation

.. math::
    \rho_1(x, y) = \frac{\sigma_b^2 + \sum_i \sigma_{w,i}^2 x_i y_i / d}
        {\sqrt{(\sigma_b^2 + \sum_i \sigma_{w,i}^2 x_i^2/d)(\sigma_b^2 + \sum_i \sigma_{w,i}^2 y_i^2/d)}}
    \approx 1 - \sum_i \frac{\sigma_{w,i}^2 (x_i - y_i)^2}{2 d \sigma_b^2}
    \quad (\sigma_b^2 \gg \sigma_{w,i}^2 \lVert x\rVert^2/d),

so a large bias makes the kernel nearly stationary, with per-feature squared lengthscales
:math:`d\,\sigma_b^2/\sigma_{w,i}^2` (growing with :math:`\sqrt d`, as the dimension-scaled
lengthscale priors of BoTorch's default model do [Hvarfner2024]_), while a small bias leaves a
dot-product kernel shaped around the origin, the centre of the box. With both variances learnt
under broad priors, the evidence chooses between the two.

.. [Hvarfner2024] C. Hvarfner, E. O. Hellsten, L. Nardi. Vanilla Bayesian Optimization Performs
    Great in High Dimensions. ICML 2024.
"""

from __future__ import annotations

from typing import Any

import torch
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import InputTransform
from botorch.models.transforms.outcome import OutcomeTransform, Standardize
from gpytorch import settings as gpytorch_settings
from gpytorch.kernels import Kernel, ScaleKernel
from gpytorch.lazy import LazyEvaluatedKernelTensor
from gpytorch.likelihoods import Likelihood
from gpytorch.models import ExactGP
from linear_operator.operators import DenseLinearOperator
from torch import Tensor

from ..activations import Activation, ArcCos
from ..kernels import UnitVarianceKernel
from ..models import make_kernel
from ..ops import broadcast_shape, symmetrize
from ..validation import check_bounds, check_int, check_rows_finite, describe
from .priors import DEFAULT_BIAS_VARIANCE, kernel_priors, outputscale_priors, weight_variance_mode
from .transforms import CenteredNormalize

__all__ = ["BO_KERNEL_NAMES", "NetworkSingleTaskGP", "bo_kernel", "make_bo_model"]

BO_KERNEL_NAMES = ("ntk", "nngp", "arccos", "erf")
#: the NNGP/NTK activation of :func:`bo_kernel` and :func:`make_bo_model`: ReLU squared
DEFAULT_ACTIVATION = ArcCos(2)

#: the largest test-rows block (entries, batch included) :class:`NetworkSingleTaskGP` evaluates
#: as one; larger predictions take GPyTorch's two blocks, which its lazy kernels may keep lazy
ONE_BLOCK_MAX_ENTRIES = 2**20


class NetworkSingleTaskGP(SingleTaskGP):
    r"""BoTorch's ``SingleTaskGP``, whose predictions evaluate the kernel once instead of twice.

    A posterior at test inputs :math:`X_*` needs :math:`k(X_*, X)` and :math:`k(X_*, X_*)`.
    GPyTorch slices both from the joint covariance of :math:`[X; X_*]` and evaluates them as two
    kernel blocks; this model evaluates the test rows against all inputs,
    :math:`k(X_*, [X; X_*])`, as one block and splits it, the test part symmetrised
    (:math:`(A + A^\top)/2`: exactly symmetric). The values are the same up to rounding. At BO
    sizes a network kernel's evaluation costs its operations' fixed overheads more than its
    arithmetic: one qLogNEI value and gradient of the BO default at N = 110 took 0.70–0.76
    times as long as with the two blocks (``benchmarks/bo_step.py``, ``docs/benchmarks.md``).
    Everything else is ``SingleTaskGP``'s; predictions larger than ``ONE_BLOCK_MAX_ENTRIES``
    entries, several inputs, or kernels GPyTorch does not evaluate lazily take its own path.
    """

    def _get_test_prior_mean_and_covariances(self, train_inputs, test_inputs, **kwargs):
        train_inputs, test_inputs = list(train_inputs), list(test_inputs)
        if (
            len(train_inputs) != 1
            or len(test_inputs) != 1
            or not gpytorch_settings.lazily_evaluate_kernels.on()
        ):
            return super()._get_test_prior_mean_and_covariances(train_inputs, test_inputs, **kwargs)
        (train,), (test,) = train_inputs, test_inputs
        num_train, num_test = train.shape[-2], test.shape[-2]
        batch = broadcast_shape(train.shape[:-2], test.shape[:-2])
        if num_test * (num_train + num_test) * batch.numel() > ONE_BLOCK_MAX_ENTRIES:
            return super()._get_test_prior_mean_and_covariances(train_inputs, test_inputs, **kwargs)
        full = torch.cat(
            [train.expand(*batch, *train.shape[-2:]), test.expand(*batch, *test.shape[-2:])], dim=-2
        )
        # (ExactGP's own __call__ is what called here: the prior at the joint inputs is Module's)
        output = super(ExactGP, self).__call__(full, **kwargs)
        mean, covar = output.loc, output.lazy_covariance_matrix
        if isinstance(covar, LazyEvaluatedKernelTensor) and output.event_shape == full.shape[-2:-1]:
            rows = covar[..., num_train:, :].to_dense()
            test_train = DenseLinearOperator(rows[..., :num_train])
            test_test = DenseLinearOperator(symmetrize(rows[..., num_train:]))
        else:
            test_test = covar[..., num_train:, num_train:].evaluate_kernel()
            test_train = covar[..., num_train:, :num_train].evaluate_kernel()
        test_shape = torch.Size([num_test, *output.event_shape[1:]])
        return mean[..., num_train:], test_test, test_train, output.batch_shape, test_shape, output.__class__


def bo_kernel(
    name: str = "ntk",
    num_dims: int | None = None,
    *,
    depth: int = 3,
    activation: str | Activation = DEFAULT_ACTIVATION,
    ard: bool | None = None,
    priors: bool = True,
    normalize: bool = True,
    batch_shape: torch.Size | None = None,
    **kernel_kwargs: Any,
) -> ScaleKernel:
    r"""A network kernel for BO surrogates: ``ScaleKernel(UnitVarianceKernel(kernel))`` with priors.

    For inputs in :math:`[-1, 1]^d` (see :class:`~gp_ntk.bo.CenteredNormalize`) and standardised
    outcomes. By default the depth-3 NTK of ReLU squared, :math:`\phi(u) = \max(u, 0)^2`, with
    one first-layer weight variance per input feature (ARD), divided by its prior standard deviations
    (:class:`~gp_ntk.kernels.UnitVarianceKernel`: unit prior variance everywhere, so the
    outputscale is the prior variance).

    Priors (with ``priors=True``; LogNormal, given by their mode and log-scale :math:`s`,
    :mod:`gp_ntk.bo.priors`):

    * weight variances (the per-feature first-layer ones with ARD and the deeper layers' shared
      one): mode 2 (ReLU's variance-preserving value, He initialisation; kept for ReLU squared,
      with which it was measured), :math:`s = 1`;
    * ``bias_variance``: mode 1, :math:`s = 1.5`. Its ratio to the weight variances sets how
      nearly stationary the kernel is (the module docstring has the expansion), so the prior is
      broad;
    * ``outputscale``: mode 1, :math:`s = 1`, for standardised outcomes.

    All are initialised at their modes and kept above :math:`10^{-4}` (the weight variances of
    ``"arccos"``/``"erf"`` above :math:`10^{-4}/d`).

    Why the NTK. With the optimum at a random point of the box (``docs/bo.md``, section 6.1) this
    kernel ranked second of eight surrogates over 13 problems (mean rank 2.2, BoTorch's default
    RBF model 2.7) and never lost to BoTorch's default or to Sobol search by a paired test, while
    the previous default, the ReLU NNGP with a shared weight variance and no unit variance, ranked
    5.2 and tied with Sobol search on every problem. The reason is the fit: a BO loop's data
    cluster around the best points, where the objective changes faster than the smooth NNGP can
    follow, and the NNGP's evidence then prefers to explain the data as noise (fitted noise up to
    0.6 in standardised units on a noiseless objective; holding the noise at :math:`10^{-4}`
    lowers its MAP objective). The NTK's derivative term makes it non-differentiable where inputs
    coincide, rough like a Matern-1/2, and it fits the same data with noise below 0.01 and a
    higher MAP value. Fitted from scratch each iteration it costs about 1.5 times BoTorch's
    default per iteration; started from the previous fit (:func:`~gp_ntk.bo.run_bo` does this)
    about the same (1.13 s against 1.18 s at 30 evaluations in 10 dimensions).

    Why ReLU squared. On the same benchmark with twenty seeds, over the eleven problems with
    :math:`d \ge 10`, the NTK of ReLU squared had the lowest mean regret on ten, beat BoTorch's
    default by a paired test on five (Ackley, Griewank, Rosenbrock, Styblinski-Tang and
    Dixon-Price in 10 dimensions) and lost on none, and beat Sobol search on ten and lost on
    none; the ReLU NTK, the default before, also beat BoTorch's default on five but lost on two
    (Michalewicz-10, Branin-in-50). Its functions are smoother: at coinciding inputs the ReLU
    NTK's expansion has a term in :math:`\lVert x - y\rVert` (a cusp, as a Matern-1/2's), that
    of ReLU squared one in :math:`\lVert x - y\rVert^3` (as a Matern-3/2's), while the
    non-stationary shape that leads on the rotated 10-D problems stays.
    ``activation="relu"`` gives the ReLU NTK.

    Args:
        name: ``"ntk"`` (default) or ``"nngp"`` (depth ``depth``, activation ``activation``),
            ``"arccos"`` (Cho & Saul order 1, ``depth`` layers) or ``"erf"`` (Williams'
            one-layer kernel), all with the same priors.
        num_dims: number of input features; required with ``ard=True`` or for
            ``"arccos"``/``"erf"``, whose first layer does not divide by :math:`d` (their weight
            variance is initialised and centred at :math:`2/d` instead of 2).
        depth: hidden layers of the NNGP/NTK, or compositions of the arc-cosine kernel.
        activation: activation of the NNGP/NTK (any name or object gp_ntk accepts); default
            ``DEFAULT_ACTIVATION``, ReLU squared (``ArcCos(2)``).
        ard: one first-layer weight variance per input feature (same prior); default: when
            ``num_dims`` is given.
        priors: attach the priors above (``False``: plain ``Positive`` parameters, no priors).
        normalize: wrap the kernel in :class:`~gp_ntk.kernels.UnitVarianceKernel` (default).
            Without it a dot-product kernel's prior variance grows towards the corners of the box,
            where an acquisition function that rewards variance is then drawn.
        batch_shape: kernel batch shape, e.g. ``torch.Size([m])`` for ``m`` independent outputs.
        **kernel_kwargs: passed on to the kernel's constructor (they override the values above,
            e.g. ``bias_variance=0.1``).
    """
    if not isinstance(name, str) or name.lower() not in BO_KERNEL_NAMES:
        raise ValueError(f"name must be one of {BO_KERNEL_NAMES}, got {name!r}")
    name = name.lower()
    if num_dims is not None:
        check_int(num_dims, "num_dims")
    if ard is None:
        ard = num_dims is not None
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
    kernel: str | Kernel = "ntk",
    *,
    train_Yvar: Tensor | None = None,
    depth: int = 3,
    activation: str | Activation = DEFAULT_ACTIVATION,
    ard: bool = True,
    priors: bool = True,
    normalize: bool = True,
    input_transform: InputTransform | None = None,
    outcome_transform: OutcomeTransform | None = None,
    likelihood: Likelihood | None = None,
    **kernel_kwargs: Any,
) -> NetworkSingleTaskGP:
    r"""A BoTorch ``SingleTaskGP`` with a network kernel and the inputs centred for it.

    The model is ``NetworkSingleTaskGP(train_X, train_Y, train_Yvar, covar_module=bo_kernel(...),
    input_transform=CenteredNormalize(d, bounds), outcome_transform=Standardize(m))`` (a
    ``SingleTaskGP`` whose predictions evaluate the kernel once, :class:`NetworkSingleTaskGP`): by
    default the depth-3 NTK of ReLU squared with one first-layer weight variance per feature and unit prior
    variance, in a ``ScaleKernel`` (:func:`~gp_ntk.bo.bo_kernel` says why), with BoTorch's
    default likelihood (inferred noise, LogNormal prior, noise at least
    :math:`10^{-4}`) and constant mean. Fit it with ``fit_gpytorch_mll`` (or
    :func:`~gp_ntk.bo.fit_bo_model`) and use it with any BoTorch acquisition function.

    Args:
        train_X: ``(..., n, d)`` observed inputs in the original units.
        train_Y: ``(..., n, m)`` observed outcomes; ``m > 1`` gives independent outputs
            (a batched kernel).
        bounds: ``2 x d`` search box; it is mapped onto :math:`[-1, 1]^d`. Without it the box
            is learnt from ``train_X``, which moves the origin as data accrue: pass the bounds.
        kernel: a name for :func:`~gp_ntk.bo.bo_kernel` (``"ntk"``, the default, ``"nngp"``,
            ``"arccos"``, ``"erf"``) or any kernel, used as the covariance module as it is. The
            previous default, a ReLU NNGP with a shared weight variance and no unit variance, is
            ``kernel="nngp", ard=False, normalize=False`` (with the present priors); it tends
            to fit BO data as noise (:func:`~gp_ntk.bo.bo_kernel`).
        train_Yvar: known observation noise variances (then a fixed-noise likelihood).
        depth, activation, ard, priors, normalize, kernel_kwargs: passed to :func:`~gp_ntk.bo.bo_kernel`.
        input_transform: replaces :class:`~gp_ntk.bo.CenteredNormalize`.
        outcome_transform: replaces ``Standardize(m)``.
        likelihood: replaces BoTorch's default likelihood (inferred noise); not with ``train_Yvar``.
    """
    _check_training_data(train_X, train_Y)
    if likelihood is not None:
        if not isinstance(likelihood, Likelihood):
            raise ValueError(f"likelihood must be a gpytorch Likelihood, got {type(likelihood).__name__}")
        if train_Yvar is not None:
            raise ValueError("pass either train_Yvar (a fixed-noise likelihood) or likelihood, not both")
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
    return NetworkSingleTaskGP(
        train_X,
        train_Y,
        train_Yvar=train_Yvar,
        likelihood=likelihood,
        covar_module=covar_module,
        input_transform=input_transform,
        outcome_transform=outcome_transform,
    )
