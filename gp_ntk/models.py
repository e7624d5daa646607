r"""Ready-made GPyTorch models around the gp_ntk kernels.

These are conveniences: every gp_ntk kernel works in any GPyTorch or BoTorch model as a
plain ``covar_module``. What the models add is what a user would otherwise write each time:

* checked training data (shapes, NaN/inf, at least one point) with clear errors;
* centring and scaling of the inputs with training-set statistics (``standardize_inputs``):
  NNGP/NTK kernels are dot-product kernels, not translation invariant, and inputs in one
  orthant (e.g. scaled to [0, 1]^d) make every angle small and the kernel nearly constant;
* a constant mean, ``ScaleKernel(kernel)`` and a Gaussian likelihood;
* ``predict`` returning the mean, variance and a 95 % interval in one call.

Fit them with :func:`gp_ntk.fit`, BoTorch's ``fit_gpytorch_mll`` or your own loop.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import gpytorch
import torch
from gpytorch.kernels import Kernel, ScaleKernel
from torch import Tensor

from .kernels import ArcCosineKernel, ErfKernel, NNGPKernel, NTKKernel
from .validation import check_int, check_rows_finite, describe

__all__ = [
    "ExactGPModel",
    "Prediction",
    "VariationalGPModel",
    "check_training_data",
    "make_kernel",
]

_KERNEL_NAMES = ("ntk", "nngp", "arccos", "erf", "rbf", "matern52")


def make_kernel(name: str = "ntk", num_dims: int | None = None, **kwargs) -> Kernel:
    """A kernel by name: ``"ntk"``, ``"nngp"``, ``"arccos"``, ``"erf"``, ``"rbf"`` or ``"matern52"``.

    ``kwargs`` go to the kernel's constructor (``depth``, ``activation``, ...). For the
    neural-network kernels the defaults are a depth-3 ReLU network with ``weight_variance=2``
    (He initialisation, which keeps the layer variances constant) and ``bias_variance=0.1``.
    ``num_dims`` only sets ``ard_num_dims`` for ``"rbf"``/``"matern52"``, which are ARD by default.
    """
    if not isinstance(name, str) or name.lower() not in _KERNEL_NAMES:
        raise ValueError(f"kernel name must be one of {_KERNEL_NAMES}, got {name!r}")
    name = name.lower()
    if name in ("ntk", "nngp"):
        options = {"depth": 3, "activation": "relu", "weight_variance": 2.0, "bias_variance": 0.1, **kwargs}
        return (NTKKernel if name == "ntk" else NNGPKernel)(**options)
    if name == "arccos":
        return ArcCosineKernel(**kwargs)
    if name == "erf":
        return ErfKernel(**kwargs)
    options = {"ard_num_dims": num_dims, **kwargs}
    if name == "rbf":
        return gpytorch.kernels.RBFKernel(**options)
    return gpytorch.kernels.MaternKernel(nu=2.5, **options)


def check_training_data(train_x: Tensor, train_y: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Return ``(train_x, train_y)`` as ``(n, d)`` and ``(n,)``, or raise ``ValueError``.

    A 1-D ``train_x`` is taken as ``n`` points in one dimension, and a ``(n, 1)`` ``train_y``
    as ``n`` targets. NaN or infinite entries are refused (a GP cannot condition on them);
    drop those rows first.
    """
    if not isinstance(train_x, Tensor) or not train_x.is_floating_point():
        raise ValueError(f"train_x must be a floating-point torch.Tensor, got {describe(train_x)}")
    if train_x.dim() == 1:
        train_x = train_x.unsqueeze(-1)
    if train_x.dim() != 2:
        raise ValueError(f"train_x must have shape (n, d) or (n,), got {tuple(train_x.shape)}")
    n = train_x.shape[0]
    if n == 0:
        raise ValueError("train_x has no rows: a GP needs at least one training point")
    check_rows_finite(train_x, "train_x")
    if train_y is None:
        return train_x, None
    if not isinstance(train_y, Tensor) or not train_y.is_floating_point():
        raise ValueError(f"train_y must be a floating-point torch.Tensor, got {describe(train_y)}")
    if train_y.dim() == 2 and train_y.shape[-1] == 1:
        train_y = train_y.squeeze(-1)
    if train_y.dim() != 1 or train_y.shape[0] != n:
        raise ValueError(
            f"train_y must have shape ({n},) or ({n}, 1) to match train_x's {n} rows, got {tuple(train_y.shape)}"
        )
    if train_y.dtype != train_x.dtype:
        raise ValueError(
            f"train_x and train_y must have the same dtype, got {train_x.dtype} and {train_y.dtype}"
        )
    check_rows_finite(train_y.unsqueeze(-1), "train_y")
    return train_x, train_y


class Prediction(NamedTuple):
    """Predictive mean, variance and central 95 % interval (of ``y`` with noise, or of ``f``)."""

    mean: Tensor
    variance: Tensor
    lower: Tensor
    upper: Tensor


class _InputStandardization(torch.nn.Module):
    r"""Fixed affine map ``(x - offset) / scale`` with training-set statistics, saved in state_dict.

    ``offset`` is each feature's training mean and ``scale`` its standard deviation, floored
    at :math:`\sqrt{\varepsilon}\,\max_i |x_{ij}|` (:math:`\varepsilon` the dtype's machine
    epsilon: ``1.5e-8`` times the feature's magnitude in float64, ``3.5e-4`` in float32).
    Variation below that floor is rounding or noise on a constant feature, not signal; dividing
    by it would blow it up to unit variance and let it steer the kernel. A feature that is
    exactly constant (or all zero) is only centred.
    """

    def __init__(self, train_x: Tensor, enabled: bool) -> None:
        super().__init__()
        offset = torch.zeros_like(train_x[:1])
        scale = torch.ones_like(train_x[:1])
        if enabled:
            offset = train_x.mean(0, keepdim=True)
            if train_x.shape[0] > 1:
                std = train_x.std(0, keepdim=True)
                magnitude = train_x.abs().amax(0, keepdim=True)
                floored = torch.maximum(std, math.sqrt(torch.finfo(train_x.dtype).eps) * magnitude)
                # a constant feature stays centred at 0 instead of dividing by 0
                scale = torch.where(floored > 0, floored, torch.ones_like(floored))
        self.register_buffer("offset", offset)
        self.register_buffer("scale", scale)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.offset.shape[-1]:
            raise ValueError(
                f"inputs must have {self.offset.shape[-1]} features like train_x, got {x.shape[-1]}"
            )
        return (x - self.offset.to(x)) / self.scale.to(x)


def _covar_module(kernel: Kernel | str | None, num_dims: int, scale: bool) -> Kernel:
    if kernel is None:
        kernel = "ntk"
    if isinstance(kernel, str):
        kernel = make_kernel(kernel, num_dims=num_dims)
    if not isinstance(kernel, Kernel):
        raise ValueError(
            f"kernel must be a gpytorch Kernel or a name in {_KERNEL_NAMES}, got {type(kernel).__name__}"
        )
    if scale and not isinstance(kernel, ScaleKernel):
        kernel = ScaleKernel(kernel)
    return kernel


def _predict(model, likelihood, x: Tensor, observation_noise: bool) -> Prediction:
    x = x.unsqueeze(-1) if x.dim() == 1 else x
    model.eval()
    likelihood.eval()
    with torch.no_grad():
        dist = model(x)
        if observation_noise:
            dist = likelihood(dist)
        mean, variance = dist.mean, dist.variance.clamp_min(0.0)
    half_width = 1.959963984540054 * variance.sqrt()
    return Prediction(mean, variance, mean - half_width, mean + half_width)


class _AllOrNothingLoad:
    """``load_state_dict`` that changes nothing when it raises.

    torch copies matching tensors submodule by submodule and reports missing, unexpected or
    mismatched entries only afterwards, so a refused load would leave a model half loaded (a
    kernel refusing a different structure, say, after the mean and outputscale were copied).
    """

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        snapshot = {name: value.detach().clone() for name, value in self.state_dict().items()}
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        except BaseException:
            with torch.no_grad():
                for name, value in self.state_dict().items():
                    if name in snapshot and isinstance(value, Tensor) and value.shape == snapshot[name].shape:
                        value.copy_(snapshot[name])
            raise


class ExactGPModel(_AllOrNothingLoad, gpytorch.models.ExactGP):
    r"""Exact GP regression: constant mean, ``ScaleKernel(kernel)``, Gaussian likelihood.

    .. math::
        y = f(x) + \varepsilon,\quad f \sim \mathcal{GP}(c,\ s\,k(Tx, Tx')),\quad
        \varepsilon \sim \mathcal N(0, \sigma_n^2),

    with :math:`T` the input standardisation (identity with ``standardize_inputs=False``).

    Args:
        train_x: ``(n, d)`` (or ``(n,)`` for one feature).
        train_y: ``(n,)`` (or ``(n, 1)``).
        kernel: a gpytorch ``Kernel`` or a name for :func:`make_kernel`; default ``"ntk"``
            (depth-3 ReLU NTK). It is wrapped in a ``ScaleKernel`` unless it is one already
            or ``scale=False``.
        likelihood: default ``GaussianLikelihood()``.
        standardize_inputs: centre and scale every input with the training mean and standard
            deviation of each feature (a fixed map, stored in the state dict). Standard
            deviations below :math:`\sqrt{\varepsilon}` times the feature's largest magnitude
            (1.5e-8 relative in float64, 3.5e-4 in float32) are raised to that floor, so a
            feature that is constant up to rounding is centred, not blown up.
        scale: wrap the kernel in a ``ScaleKernel``.

    Inference follows GPyTorch's settings: Cholesky up to ``max_cholesky_size`` training
    points, CG/Lanczos beyond, where gp_ntk kernels evaluate lazily in blocks (see
    :class:`gp_ntk.settings.lazy_evaluation`).

    Example:
        >>> import torch, gp_ntk
        >>> train_x = torch.randn(40, 3, dtype=torch.float64)
        >>> train_y = torch.sin(train_x.sum(-1))
        >>> model = gp_ntk.ExactGPModel(train_x, train_y, kernel=gp_ntk.NNGPKernel(depth=3)).double()
        >>> result = gp_ntk.fit(model, max_iter=20, progress=False)
        >>> mean, variance, lower, upper = model.predict(torch.randn(5, 3, dtype=torch.float64))
        >>> mean.shape
        torch.Size([5])
    """

    def __init__(
        self,
        train_x: Tensor,
        train_y: Tensor,
        kernel: Kernel | str | None = None,
        likelihood: gpytorch.likelihoods.GaussianLikelihood | None = None,
        standardize_inputs: bool = True,
        scale: bool = True,
    ) -> None:
        train_x, train_y = check_training_data(train_x, train_y)
        likelihood = gpytorch.likelihoods.GaussianLikelihood() if likelihood is None else likelihood
        super().__init__(train_x, train_y, likelihood)
        self.input_standardization = _InputStandardization(train_x, standardize_inputs)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = _covar_module(kernel, train_x.shape[-1], scale)
        self.to(train_x)

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        x = self.input_standardization(x)
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    def __call__(self, *inputs, **kwargs):
        inputs = tuple(x.unsqueeze(-1) if isinstance(x, Tensor) and x.dim() == 1 else x for x in inputs)
        num_features = self.input_standardization.offset.shape[-1]
        for x in inputs:
            if isinstance(x, Tensor) and x.shape[-1] != num_features:
                raise ValueError(f"inputs must have {num_features} features like train_x, got {x.shape[-1]}")
        return super().__call__(*inputs, **kwargs)

    def predict(self, x: Tensor, observation_noise: bool = True) -> Prediction:
        """Posterior predictive at ``x`` (switches the model to eval mode), without gradients."""
        return _predict(self, self.likelihood, x, observation_noise)


class VariationalGPModel(_AllOrNothingLoad, gpytorch.models.ApproximateGP):
    r"""Sparse variational GP (SVGP) for large or streaming data, trained on minibatches.

    A ``VariationalStrategy`` with ``num_inducing`` learned inducing locations (initialised on
    a random subset of the training inputs) and a full-covariance Cholesky variational
    distribution, a constant mean, ``ScaleKernel(kernel)`` and a Gaussian likelihood kept as
    ``model.likelihood``. Train it with :func:`gp_ntk.fit` (``VariationalELBO`` on minibatches)
    or your own loop; the training data are kept as ``model.train_x`` and ``model.train_y`` for that.

    Args:
        train_x, train_y, kernel, standardize_inputs, scale: as for :class:`ExactGPModel`.
        num_inducing: number of inducing points (at most ``n``).
        learn_inducing_locations: optimise the inducing inputs with the other parameters.
        seed: seed of the subset choice, for reproducible initialisation.
    """

    def __init__(
        self,
        train_x: Tensor,
        train_y: Tensor,
        kernel: Kernel | str | None = None,
        num_inducing: int = 256,
        likelihood: gpytorch.likelihoods.GaussianLikelihood | None = None,
        learn_inducing_locations: bool = True,
        standardize_inputs: bool = True,
        scale: bool = True,
        seed: int = 0,
    ) -> None:
        train_x, train_y = check_training_data(train_x, train_y)
        check_int(num_inducing, "num_inducing")
        standardization = _InputStandardization(train_x, standardize_inputs)
        generator = torch.Generator().manual_seed(seed)
        subset = torch.randperm(train_x.shape[0], generator=generator)[: min(num_inducing, train_x.shape[0])]
        # inducing points live in the standardised space the kernel sees
        inducing = standardization(train_x[subset.to(train_x.device)]).detach().clone()
        distribution = gpytorch.variational.CholeskyVariationalDistribution(inducing.shape[0])
        strategy = gpytorch.variational.VariationalStrategy(
            self, inducing, distribution, learn_inducing_locations=learn_inducing_locations
        )
        super().__init__(strategy)
        self.input_standardization = standardization
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = _covar_module(kernel, train_x.shape[-1], scale)
        self.likelihood = gpytorch.likelihoods.GaussianLikelihood() if likelihood is None else likelihood
        self.train_x, self.train_y = train_x, train_y
        self.to(train_x)

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        # x is already standardised: __call__ maps data inputs, the strategy passes inducing ones
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    def __call__(self, x: Tensor, **kwargs):
        x = x.unsqueeze(-1) if x.dim() == 1 else x
        return super().__call__(self.input_standardization(x), **kwargs)

    def predict(self, x: Tensor, observation_noise: bool = True) -> Prediction:
        """Approximate posterior predictive at ``x`` (switches to eval mode), without gradients."""
        return _predict(self, self.likelihood, x, observation_noise)
