r"""A BoTorch model whose posterior is a trained ensemble of infinitely wide networks.

:class:`~gp_ntk.bo.TrainedEnsembleModel` answers "what would a wide network, trained by gradient descent
for time :math:`t`, predict here, and how sure is it": its posterior at ``X`` is
:func:`gp_ntk.dynamics.gradient_descent_mse_ensemble` at ``X`` and time ``t`` (``t=None`` is the
end of training), in the ``"ntk"`` (every layer trained), ``"nngp"`` (read-out trained) or
``"ntkgp"`` regime. It is a BoTorch ``Model``: acquisition functions and ``optimize_acqf`` use
it as they use a ``SingleTaskGP`` (the posterior is differentiable in ``X``).

Targets are standardised per output before training and the posterior mapped back, as BoTorch's
``Standardize`` does. With ``fit_variances=True`` the kernel's weight and bias variances are
first fitted by the NNGP marginal likelihood (:func:`gp_ntk.fit` on an exact GP whose
covariance is the kernel's NNGP), and the fitted noise, relative to the mean NNGP diagonal,
becomes ``diag_reg`` unless one is given.

Example:
    >>> import botorch
    >>> from gp_ntk.bo import TrainedEnsembleModel
    >>> train_X = 2 * torch.rand(10, 2, dtype=torch.float64) - 1
    >>> train_Y = -(train_X**2).sum(-1, keepdim=True)
    >>> model = TrainedEnsembleModel(train_X, train_Y, gp_ntk.NTKKernel(depth=3).double(), t=100.0)
    >>> acqf = botorch.acquisition.qLogExpectedImprovement(model, best_f=train_Y.max())
    >>> bounds = torch.tensor([[-1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    >>> candidate, _ = botorch.optim.optimize_acqf(acqf, bounds, q=1, num_restarts=2, raw_samples=32)
    >>> candidate.shape
    torch.Size([1, 2])
"""

from __future__ import annotations

import torch
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultitaskMultivariateNormal, MultivariateNormal
from gpytorch.kernels import Kernel
from linear_operator.operators import DenseLinearOperator
from torch import Tensor

from .. import dynamics
from ..fitting import fit
from ..kernels import NTKKernel
from ..models import ExactGPModel
from ..validation import check_tensor

__all__ = ["TrainedEnsembleModel", "fit_nngp_variances"]


class _NNGPOf(Kernel):
    """The NNGP half of a kernel offering ``nngp_and_ntk``, sharing its hyperparameters."""

    def __init__(self, network_kernel) -> None:
        super().__init__()
        self.network_kernel = network_kernel

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, last_dim_is_batch: bool = False, **params):
        return self.network_kernel.nngp_and_ntk(
            x1, x2, diag=diag, compute_ntk=False, last_dim_is_batch=last_dim_is_batch
        )[0]


def fit_nngp_variances(kernel, train_x: Tensor, train_y: Tensor, **fit_kwargs) -> float:
    r"""Fit ``kernel``'s variances (in place) by the exact-GP marginal likelihood of its NNGP.

    The GP is :math:`y = f + \varepsilon`, :math:`f \sim \mathcal{GP}(c, \mathcal K)`,
    :math:`\varepsilon \sim \mathcal N(0, \sigma_n^2)`, with no input standardisation or output
    scale (so that :math:`\mathcal K` stays the network's). Returns :math:`\sigma_n^2`.
    """
    if not hasattr(kernel, "nngp_and_ntk"):
        raise ValueError(f"kernel must offer nngp_and_ntk, got {type(kernel).__name__}")
    model = ExactGPModel(train_x, train_y, kernel=_NNGPOf(kernel), standardize_inputs=False, scale=False)
    fit(model, **{"progress": False, **fit_kwargs})
    return float(model.likelihood.noise.detach().squeeze())


class TrainedEnsembleModel(Model):
    r"""BoTorch model: the ensemble of wide networks trained on ``(train_X, train_Y)`` for time ``t``.

    Args:
        train_X: ``(n, d)`` inputs (put them where the kernel sees angles, e.g. through
            :class:`gp_ntk.bo.CenteredNormalize`; this model applies no input transform).
        train_Y: ``(n, k)`` targets (BoTorch layout), standardised internally.
        kernel: a kernel with ``nngp_and_ntk``; default a depth-3 ReLU :class:`~gp_ntk.NTKKernel`.
        t: training time (float) or None for :math:`t = \infty`.
        get: ``"ntk"``, ``"nngp"`` or ``"ntkgp"``.
        learning_rate: :math:`\eta` of the gradient descent.
        diag_reg: regularisation relative to the mean training-kernel diagonal; default the
            fitted noise ratio with ``fit_variances``, else ``1e-6``.
        fit_variances: first fit the kernel's variances by the NNGP marginal likelihood (of the
            first output when there are several).
        fit_kwargs: passed to :func:`gp_ntk.fit`.

    ``posterior(X, observation_noise=True)`` adds the regularisation, in output units, as the
    observation-noise variance.
    """

    def __init__(
        self,
        train_X: Tensor,
        train_Y: Tensor,
        kernel=None,
        t: float | None = None,
        get: str = "ntk",
        learning_rate: float = 1.0,
        diag_reg: float | None = None,
        fit_variances: bool = False,
        fit_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        check_tensor(train_X, "train_X", ndim=2)
        check_tensor(train_Y, "train_Y")
        if train_Y.dim() != 2 or train_Y.shape[0] != train_X.shape[0]:
            raise ValueError(
                f"train_Y must be ({train_X.shape[0]}, k) (BoTorch layout), got "
                f"{tuple(getattr(train_Y, 'shape', ()))}"
            )
        dynamics._check_get(get)
        if t is not None:
            dynamics._check_scalar(t, "t")
        if kernel is None:
            kernel = NTKKernel(depth=3, activation="relu")
        if not hasattr(kernel, "nngp_and_ntk") and get != "nngp":
            raise ValueError(f"kernel must offer nngp_and_ntk for get={get!r}, got {type(kernel).__name__}")
        self.kernel = kernel.to(train_X)
        self.train_inputs = (train_X,)
        self.train_targets = train_Y
        self.t, self.get = t, get
        self._y_mean = train_Y.mean(0)
        self._y_std = (
            train_Y.std(0).clamp_min(1e-9) if train_Y.shape[0] > 1 else torch.ones_like(self._y_mean)
        )
        standardized = (train_Y - self._y_mean) / self._y_std
        if fit_variances:
            noise = fit_nngp_variances(self.kernel, train_X, standardized[:, 0], **(fit_kwargs or {}))
            if diag_reg is None:
                with torch.no_grad():
                    prior = self.kernel.nngp_and_ntk(train_X, train_X, diag=True, compute_ntk=False)[0]
                diag_reg = noise / float(prior.mean())
        self.diag_reg = 1e-6 if diag_reg is None else float(diag_reg)
        self._predictor = dynamics.gradient_descent_mse_ensemble(
            self.kernel,
            train_X,
            standardized[:, 0] if train_Y.shape[-1] == 1 else standardized,
            learning_rate=learning_rate,
            diag_reg=self.diag_reg,
        )
        # regularisation in standardised output units, the observation noise of posterior()
        with torch.no_grad():
            train_kernel = (
                self._predictor.nngp_train_train if get == "nngp" else self._predictor.ntk_train_train
            )
        self._noise = self.diag_reg * float(train_kernel.diagonal().mean())

    @property
    def num_outputs(self) -> int:
        return self.train_targets.shape[-1]

    @property
    def batch_shape(self) -> torch.Size:
        return torch.Size()

    def posterior(
        self,
        X: Tensor,
        output_indices: list[int] | None = None,
        observation_noise: bool | Tensor = False,
        posterior_transform=None,
        **kwargs,
    ) -> GPyTorchPosterior:
        """The trained ensemble at ``X`` (``(batch..., q, d)``), mapped back to output units."""
        outputs = list(range(self.num_outputs)) if output_indices is None else list(output_indices)
        mvn = self._predictor(X, t=self.t, get=self.get)
        if self.num_outputs == 1:
            mean, cov = mvn.mean.unsqueeze(-1), mvn.covariance_matrix
        else:
            mean, cov = mvn.mean, mvn.covariance_matrix[..., :: self.num_outputs, :: self.num_outputs]
        if observation_noise is not False:
            cov = cov + self._noise * torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
        mean = mean[..., outputs] * self._y_std[outputs] + self._y_mean[outputs]  # (..., q, o)
        scales = self._y_std[outputs] ** 2
        covs = cov.unsqueeze(-3) * scales[:, None, None]  # (..., o, q, q), one covariance per output
        if len(outputs) == 1:
            distribution = MultivariateNormal(mean[..., 0], DenseLinearOperator(covs[..., 0, :, :]))
        else:
            batch = MultivariateNormal(mean.movedim(-1, -2), DenseLinearOperator(covs))
            distribution = MultitaskMultivariateNormal.from_batch_mvn(batch, task_dim=-1)
        posterior = GPyTorchPosterior(distribution)
        return posterior if posterior_transform is None else posterior_transform(posterior)

    def forward(self, x: Tensor) -> MultivariateNormal:
        """The ensemble at ``x`` in standardised units (GPyTorch-style call)."""
        return self._predictor(x, t=self.t, get=self.get)
