r"""Gradient-enhanced Bayesian optimisation: a BoTorch model that learns from values and gradients.

:class:`~gp_ntk.bo.GradientEnhancedGP` is an exact GP on the joint process :math:`(f, \nabla f)` with a
kernel in GPyTorch's ``RBFKernelGrad`` layout (by default ``NNGPKernelGrad``, or any
``*KernelGrad``), trained on observations of both. To acquisition functions it is a
single-output BoTorch model: :meth:`~GradientEnhancedGP.posterior` returns the posterior of
:math:`f` alone, so ``LogExpectedImprovement``, ``UpperConfidenceBound`` etc. work unchanged.
"""

from __future__ import annotations

import gpytorch
import torch
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultitaskMultivariateNormal, MultivariateNormal
from linear_operator import to_linear_operator
from torch import Tensor

from ..kernels.grad import NNGPKernelGrad
from ..validation import check_tensor

__all__ = ["GradientEnhancedGP"]


class _JointGP(gpytorch.models.ExactGP):
    def __init__(self, x: Tensor, y: Tensor, likelihood, covar_module) -> None:
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMeanGrad()
        self.covar_module = covar_module

    def forward(self, x: Tensor) -> MultitaskMultivariateNormal:
        return MultitaskMultivariateNormal(self.mean_module(x), self.covar_module(x))


class GradientEnhancedGP(Model):
    r"""Exact GP on values and gradients; exposes the value posterior.

    Targets are standardised: :math:`y' = (y - \mu)/\sigma`, :math:`\nabla y' = \nabla y/\sigma`
    (one :math:`\sigma` for all, so the joint process stays a gradient field), and the posterior
    is mapped back.

    Args:
        train_X: ``(n, d)`` inputs (best in :math:`[-1, 1]^d` for the network kernels).
        train_Y: ``(n, 1)`` values.
        train_grad: ``(n, d)`` gradients :math:`\nabla f` at ``train_X``.
        covar_module: a kernel in the ``RBFKernelGrad`` layout; default
            ``ScaleKernel(NNGPKernelGrad(depth=3, activation="relu", bias_variance=0.1))``.
        noise_floor: lower bound of the (per-output) observation noise variance.

    Example:
        >>> import torch, gp_ntk
        >>> from gp_ntk.bo import GradientEnhancedGP
        >>> x = torch.rand(6, 2, dtype=torch.float64) * 2 - 1
        >>> model = GradientEnhancedGP(x, (x**2).sum(-1, keepdim=True), 2 * x)
        >>> model.posterior(torch.zeros(4, 1, 2, dtype=torch.float64)).mean.shape
        torch.Size([4, 1, 1])
    """

    num_outputs = 1

    def __init__(
        self,
        train_X: Tensor,
        train_Y: Tensor,
        train_grad: Tensor,
        covar_module: gpytorch.kernels.Kernel | None = None,
        noise_floor: float = 1e-6,
    ) -> None:
        super().__init__()
        check_tensor(train_X, "train_X", ndim=2)
        n, d = train_X.shape
        check_tensor(train_Y, "train_Y")
        check_tensor(train_grad, "train_grad")
        if train_Y.shape != (n, 1):
            raise ValueError(f"train_Y must be (n, 1) = ({n}, 1), got shape {tuple(train_Y.shape)}")
        if train_grad.shape != (n, d):
            raise ValueError(f"train_grad must be (n, d) = ({n}, {d}), got shape {tuple(train_grad.shape)}")
        if covar_module is None:
            covar_module = gpytorch.kernels.ScaleKernel(
                NNGPKernelGrad(depth=3, activation="relu", bias_variance=0.1)
            )
        mean, std = train_Y.mean(), train_Y.std() if n > 1 else torch.ones((), dtype=train_Y.dtype)
        std = torch.where(std > 0, std, torch.ones_like(std))
        self.register_buffer("_y_mean", mean.detach())
        self.register_buffer("_y_std", std.detach())
        targets = torch.cat([(train_Y - mean) / std, train_grad / std], dim=-1)
        likelihood = gpytorch.likelihoods.MultitaskGaussianLikelihood(
            num_tasks=d + 1, noise_constraint=gpytorch.constraints.GreaterThan(noise_floor)
        )
        self.gp = _JointGP(train_X, targets, likelihood, covar_module).to(train_X)
        self.likelihood = self.gp.likelihood
        self.train_inputs = (train_X,)

    def fit(self, max_iter: int = 50) -> GradientEnhancedGP:
        """Maximise the exact marginal likelihood of values and gradients (L-BFGS, strong Wolfe)."""
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(self.likelihood, self.gp)
        self.gp.train()
        optimizer = torch.optim.LBFGS(
            list(self.gp.parameters()), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe"
        )
        (targets,) = (self.gp.train_targets,)

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = -mll(self.gp(*self.gp.train_inputs), targets)
            loss.backward()
            return loss

        with gpytorch.settings.cholesky_max_tries(6):
            optimizer.step(closure)
        self.eval()
        return self

    def posterior(
        self,
        X: Tensor,
        output_indices: list[int] | None = None,
        observation_noise: bool = False,
        posterior_transform=None,
        **kwargs,
    ) -> GPyTorchPosterior:
        """Posterior of the value :math:`f` at ``X`` (``(..., q, d)``): a ``q``-variate normal."""
        if output_indices not in (None, [0]):
            raise ValueError(f"output_indices must be None or [0] (one output), got {output_indices}")
        self.eval()
        joint = self.gp(X)
        if observation_noise:
            joint = self.likelihood(joint)
        q, tasks = X.shape[-2], X.shape[-1] + 1
        values = torch.arange(q, device=X.device) * tasks  # the interleaved layout's value entries
        covariance = joint.covariance_matrix[..., values, :][..., values]
        mean = joint.mean[..., 0] * self._y_std + self._y_mean
        mvn = MultivariateNormal(mean, to_linear_operator(covariance * self._y_std**2))
        posterior = GPyTorchPosterior(mvn)
        return posterior if posterior_transform is None else posterior_transform(posterior)

    def predict_gradient(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and variance of :math:`\\nabla f` at ``X`` (``(n, d)`` each)."""
        self.eval()
        joint = self.gp(X)
        return joint.mean[..., 1:] * self._y_std, joint.variance[..., 1:] * self._y_std**2
