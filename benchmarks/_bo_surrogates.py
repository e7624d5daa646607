r"""Network-kernel BO surrogates compared in ``benchmarks/bo_offcentre.py``, built from the library.

* :func:`previous_default`: ``gp_ntk.bo.make_bo_model``'s default before the benchmark with the
  optimum anywhere in the box: the depth-3 ReLU NNGP with a shared weight variance, no unit
  variance, and the priors of that time (weight variance mode 2, log-scale 0.5; bias variance
  mode 0.1, log-scale 1; weight variance kept above 2e-4).
* :func:`offcentre_kernel` / :func:`make_offcentre_model`: variants of the present default
  (:func:`gp_ntk.bo.bo_kernel`), optionally with :class:`InputCentre`, a learnt input centre
  (measured in screening only; it was left out of the library for its cost per iteration).
* :class:`SplitLogNormalPrior`: a variance prior that is the default's LogNormal above its mode
  and broader below it, so that inputs without effect can switch off (screened for the embedded
  problems).
* :class:`EvidenceSelection`: the activation (or any other choice among surrogates) chosen by
  evidence inside the loop, every candidate refitted at every iteration.
* :class:`EvidenceAverage`: the same candidates averaged by evidence (Bayesian model averaging)
  instead of one selected: the acquisition function sees a :class:`MixturePosterior`.

References:

.. [Hoeting1999] J. A. Hoeting, D. Madigan, A. E. Raftery and C. T. Volinsky. Bayesian model
   averaging: a tutorial. Statistical Science 14(4), 1999.

The module docstring of :mod:`gp_ntk.bo.models` explains how the bias variance decides between a
nearly stationary kernel and one shaped around the origin.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from botorch.models import SingleTaskGP
from botorch.posteriors import Posterior
from botorch.sampling.get_sampler import GetSampler, get_sampler
from gpytorch.constraints import GreaterThan, Interval
from gpytorch.kernels import Kernel, ScaleKernel
from gpytorch.priors import NormalPrior, Prior
from torch import Tensor
from torch.distributions import constraints

from gp_ntk.bo import bo_kernel, make_bo_model
from gp_ntk.bo.priors import (
    BIAS_PRIOR_SCALE,
    DEFAULT_WEIGHT_VARIANCE,
    MIN_VARIANCE,
    WEIGHT_PRIOR_SCALE,
    log_normal,
    weight_variance_mode,
)
from gp_ntk.kernels.unit_variance import correlation_from_covariance

__all__ = [
    "EvidenceAverage",
    "EvidenceSelection",
    "InputCentre",
    "MixturePosterior",
    "NNGPNTKMixture",
    "SplitLogNormalPrior",
    "evidence_weights",
    "is_model_average",
    "make_offcentre_model",
    "map_objective",
    "offcentre_kernel",
    "previous_default",
]

# the priors of make_bo_model's previous default, for its comparison column
_PREVIOUS_BIAS_VARIANCE = 0.1
_PREVIOUS_WEIGHT_PRIOR_SCALE = 0.5
_PREVIOUS_BIAS_PRIOR_SCALE = 1.0


def previous_default(
    train_X: Tensor, train_Y: Tensor, bounds: Tensor, *, kernel: str = "nngp", **options: Any
) -> SingleTaskGP:
    """``make_bo_model``'s default before the NTK, the ReLU NNGP (``kernel="ntk"``: the same set-up with the NTK)."""
    old_priors: dict[str, Any] = {"bias_variance": _PREVIOUS_BIAS_VARIANCE}
    if options.get("priors", True):
        old_priors.update(
            weight_variance_prior=log_normal(DEFAULT_WEIGHT_VARIANCE, _PREVIOUS_WEIGHT_PRIOR_SCALE),
            bias_variance_prior=log_normal(_PREVIOUS_BIAS_VARIANCE, _PREVIOUS_BIAS_PRIOR_SCALE),
            weight_variance_constraint=GreaterThan(MIN_VARIANCE * DEFAULT_WEIGHT_VARIANCE),
        )
    settings = {"ard": False, "normalize": False, "activation": "relu", **old_priors, **options}
    return make_bo_model(train_X, train_Y, bounds, kernel=kernel, **settings)


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


class NNGPNTKMixture(Kernel):
    r"""A learnt mixture of a network's NNGP and NTK correlations: one recursion, one more parameter.

    .. math::
        k(x, y) = (1 - \rho)\,\frac{\Theta(x, y)}{\sqrt{\Theta(x, x)\Theta(y, y)}}
            + \rho\,\frac{\Sigma(x, y)}{\sqrt{\Sigma(x, x)\Sigma(y, y)}},
        \qquad \rho \in (0, 1),

    with :math:`\Sigma` and :math:`\Theta` the NNGP and NTK of ``network`` from one pass
    (:meth:`~gp_ntk.kernels.base.VarianceKernel.nngp_and_ntk`). Both terms have unit variance, so
    the mixture has too; :math:`\rho` (``nngp_share``, no prior) lets the evidence choose between
    the NTK's roughness where inputs coincide and the NNGP's smoothness.

    Args:
        network: a gp_ntk deep network kernel (``NTKKernel`` or ``NNGPKernel``) with a positive bias.
        nngp_share: initial :math:`\rho`.
    """

    has_lengthscale = False

    def __init__(self, network: Kernel, nngp_share: float = 0.2, **kwargs: Any):
        if not hasattr(network, "nngp_and_ntk"):
            raise ValueError(f"network must be a gp_ntk network kernel, got {type(network).__name__}")
        if not (isinstance(nngp_share, float) and 0.0 < nngp_share < 1.0):
            raise ValueError(f"nngp_share must be a float in (0, 1), got {nngp_share!r}")
        kwargs.setdefault("batch_shape", network.batch_shape)
        super().__init__(**kwargs)
        self.network = network
        self.register_parameter("raw_nngp_share", torch.nn.Parameter(torch.zeros(*self.batch_shape, 1, 1)))
        self.register_constraint("raw_nngp_share", Interval(0.0, 1.0))
        self.initialize(nngp_share=nngp_share)

    @property
    def nngp_share(self) -> Tensor:
        return self.raw_nngp_share_constraint.transform(self.raw_nngp_share)

    @nngp_share.setter
    def nngp_share(self, value: float | Tensor) -> None:
        value = torch.as_tensor(value).to(self.raw_nngp_share)
        self.initialize(raw_nngp_share=self.raw_nngp_share_constraint.inverse_transform(value))

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, **params: Any) -> Tensor:
        share = self.nngp_share
        same = x1 is x2 or (x1.shape == x2.shape and torch.equal(x1, x2))
        if diag:
            nngp1, ntk1 = self.network.nngp_and_ntk(x1, x1, diag=True)
            if same:
                # a point's correlation with itself: exactly 1
                return torch.ones_like(ntk1)
            share = share[..., 0]
            nngp, ntk = self.network.nngp_and_ntk(x1, x2, diag=True)
            nngp2, ntk2 = self.network.nngp_and_ntk(x2, x2, diag=True)
        else:
            nngp, ntk = self.network.nngp_and_ntk(x1, x2)
            if x1 is x2:
                nngp1 = nngp2 = torch.diagonal(nngp, dim1=-2, dim2=-1)
                ntk1 = ntk2 = torch.diagonal(ntk, dim1=-2, dim2=-1)
            else:
                nngp1, ntk1 = self.network.nngp_and_ntk(x1, x1, diag=True)
                nngp2, ntk2 = self.network.nngp_and_ntk(x2, x2, diag=True)
        return (1.0 - share) * correlation_from_covariance(ntk, ntk1, ntk2, diag) + share * (
            correlation_from_covariance(nngp, nngp1, nngp2, diag)
        )


class SplitLogNormalPrior(Prior):
    r"""A prior on a variance :math:`v` with mode :math:`m`, Gaussian in :math:`\log v` with two widths.

    .. math::
        p(v) = \frac{1}{Z} \exp\Big(-\frac{(\log v - \log m)^2}{2 s(v)^2}\Big), \qquad
        s(v) = \begin{cases} s_- & v < m \\ s_+ & v \ge m \end{cases},

    :math:`Z = m \sqrt{2\pi}\,\big(s_+ e^{s_+^2/2}\Phi(s_+) + s_- e^{s_-^2/2}\Phi(-s_-)\big)`.
    Its gradient in :math:`\log v` is :math:`-(\log v - \log m)/s(v)^2`: above the mode it pulls
    exactly as ``log_normal(m, s_+)`` does (the default's prior with :math:`s_+ = 1`), below it as
    a LogNormal of log-scale :math:`s_-`. With :math:`s_- > s_+` a first-layer variance the data
    do not support can fall towards zero (the input switched off) while the variances the data
    do support are held as before. Sampling draws the side with its share of :math:`Z`, then
    :math:`\log v - \log m` from the normal :math:`N(s^2, s^2)` truncated to that side.
    """

    arg_constraints: dict = {}
    support = constraints.positive

    def __init__(self, mode: float, lower_scale: float, upper_scale: float, transform=None):
        for name, value in (("mode", mode), ("lower_scale", lower_scale), ("upper_scale", upper_scale)):
            if not (isinstance(value, float) and math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a positive finite float, got {value!r}")
        torch.nn.Module.__init__(self)
        torch.distributions.Distribution.__init__(self, batch_shape=torch.Size(), validate_args=False)
        self.register_buffer("log_mode", torch.tensor(math.log(mode), dtype=torch.float64))
        self.register_buffer("lower_scale", torch.tensor(lower_scale, dtype=torch.float64))
        self.register_buffer("upper_scale", torch.tensor(upper_scale, dtype=torch.float64))
        self._transform = transform

    def _side_weights(self) -> tuple[Tensor, Tensor]:
        # s e^{s^2/2} Phi(-/+s) through log_ndtr: Phi(-10) is 8e-24, e^{50} is 5e21
        low, up = self.lower_scale, self.upper_scale
        lower = low * torch.exp(low**2 / 2 + torch.special.log_ndtr(-low))
        upper = up * torch.exp(up**2 / 2 + torch.special.log_ndtr(up))
        return lower, upper

    def log_prob(self, x: Tensor) -> Tensor:
        x = self.transform(x)
        offset = torch.log(x) - self.log_mode.to(x)
        scale = torch.where(offset < 0, self.lower_scale.to(x), self.upper_scale.to(x))
        lower, upper = self._side_weights()
        log_normaliser = self.log_mode + 0.5 * math.log(2 * math.pi) + torch.log(lower + upper)
        return -(offset**2) / (2 * scale**2) - log_normaliser.to(x)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        lower, upper = self._side_weights()
        below = torch.rand(sample_shape, dtype=torch.float64) < lower / (lower + upper)
        offset = torch.empty(sample_shape, dtype=torch.float64)
        pending = torch.ones(sample_shape, dtype=torch.bool)
        # rejection sampling, vectorised. Below the mode t = log v - log m has density
        # exp(t - t^2 / (2 s^2)) <= e^t: propose -Exp(1), accept with exp(-t^2 / (2 s^2)).
        # Above it, N(s^2, s^2) cut at 0: propose the normal, accept t >= 0 (at least half).
        while pending.any():
            exponential = torch.log(torch.rand(sample_shape, dtype=torch.float64))
            accept_low = torch.rand(sample_shape, dtype=torch.float64) < torch.exp(
                -(exponential**2) / (2 * self.lower_scale**2)
            )
            up = self.upper_scale
            gaussian = up**2 + up * torch.randn(sample_shape, dtype=torch.float64)
            proposal = torch.where(below, exponential, gaussian)
            accept = torch.where(below, accept_low, gaussian >= 0) & pending
            offset = torch.where(accept, proposal, offset)
            pending = pending & ~accept
        return torch.exp(self.log_mode + offset)

    def expand(self, batch_shape: torch.Size, _instance=None) -> SplitLogNormalPrior:
        if torch.Size(batch_shape) != torch.Size():
            raise ValueError("SplitLogNormalPrior has scalar hyperparameters; it applies elementwise")
        return self


def offcentre_kernel(
    num_dims: int,
    *,
    kernel: str = "ntk",
    unit_variance: bool = True,
    bias_mode: float | None = None,
    learn_centre: bool = False,
    centre_prior_scale: float = 0.5,
    input_prior_scale: float | None = None,
    input_prior_mode: float | None = None,
    input_prior_lower_scale: float | None = None,
    sparse_beyond: int | None = None,
    mix_nngp: bool = False,
    **options: Any,
) -> ScaleKernel:
    r"""``gp_ntk.bo.bo_kernel(kernel, num_dims, ...)``, optionally with a learnt centre inside the scale.

    ``bias_mode`` moves the bias variance's initial value and prior mode (same log-scale);
    ``unit_variance`` is ``bo_kernel``'s ``normalize``; ``input_prior_scale`` replaces the
    log-scale of the per-feature first-layer weight variances' prior (same mode; the deeper
    layers keep theirs); ``input_prior_mode`` moves that prior's mode and the variances' initial
    value (same log-scale unless ``input_prior_scale`` is given); ``input_prior_lower_scale``
    replaces that prior by :class:`SplitLogNormalPrior` (same mode, this log-scale below it,
    ``input_prior_scale`` or the default's above); ``sparse_beyond`` sets that lower log-scale
    from the dimension, :math:`s_- = s \max(1, d / \text{sparse\_beyond})`, so that up to
    ``sparse_beyond`` inputs the prior is the default's (the same ``LogNormalPrior``) and beyond
    it an input can switch off more easily the more inputs there are; ``mix_nngp`` replaces the unit-variance NTK by :class:`NNGPNTKMixture`;
    other options go to ``bo_kernel``.
    """
    if mix_nngp:
        unit_variance = False
    if sparse_beyond is not None:
        if input_prior_lower_scale is not None:
            raise ValueError("pass input_prior_lower_scale or sparse_beyond, not both")
        if num_dims > sparse_beyond:
            upper = WEIGHT_PRIOR_SCALE if input_prior_scale is None else input_prior_scale
            input_prior_lower_scale = upper * num_dims / sparse_beyond
    if bias_mode is not None:
        options.update(bias_variance=bias_mode, bias_variance_prior=log_normal(bias_mode, BIAS_PRIOR_SCALE))
    scaled = bo_kernel(kernel, num_dims, normalize=unit_variance, **options)
    if input_prior_scale is not None or input_prior_mode is not None or input_prior_lower_scale is not None:
        network = scaled.base_kernel.base_kernel if unit_variance else scaled.base_kernel
        mode = weight_variance_mode(kernel, num_dims) if input_prior_mode is None else input_prior_mode
        scale = WEIGHT_PRIOR_SCALE if input_prior_scale is None else input_prior_scale
        if input_prior_lower_scale is None:
            prior: Prior = log_normal(mode, scale)
        else:
            prior = SplitLogNormalPrior(float(mode), float(input_prior_lower_scale), float(scale))
        network._register_variance_prior(prior, "input_weight_variance")
        if input_prior_mode is not None:
            network.input_weight_variance = torch.full_like(network.input_weight_variance, mode)
    if mix_nngp:
        scaled.base_kernel = NNGPNTKMixture(scaled.base_kernel)
    if learn_centre:
        scaled.base_kernel = InputCentre(scaled.base_kernel, num_dims, prior_scale=centre_prior_scale)
    return scaled


class OriginMixture(Kernel):
    r"""A learnt mixture of one unit-variance kernel seen from two origins.

    .. math::
        k(x, y) = (1 - \rho)\,c(x, y) + \rho\,c(x - s, y - s), \qquad \rho \in (0, 1),

    with :math:`c` a kernel of unit prior variance (so the mixture has unit variance too),
    :math:`s` a fixed shift (a buffer, ``origin``) and :math:`\rho` (``shifted_share``, no prior)
    learnt: a dot-product kernel singles out the origin of its inputs, and the evidence weighs
    the two places it can stand. Both terms share ``base``'s hyperparameters.

    Args:
        base: the unit-variance kernel :math:`c`.
        origin: the second origin :math:`s`, in the kernel's input units.
        shifted_share: initial :math:`\rho`.
    """

    has_lengthscale = False

    def __init__(self, base: Kernel, origin: Tensor, shifted_share: float = 0.5, **kwargs: Any):
        if not (isinstance(shifted_share, float) and 0.0 < shifted_share < 1.0):
            raise ValueError(f"shifted_share must be a float in (0, 1), got {shifted_share!r}")
        kwargs.setdefault("batch_shape", base.batch_shape)
        super().__init__(**kwargs)
        self.base = base
        self.register_buffer("origin", torch.as_tensor(origin).detach().clone())
        self.register_parameter("raw_shifted_share", torch.nn.Parameter(torch.zeros(*self.batch_shape, 1, 1)))
        self.register_constraint("raw_shifted_share", Interval(0.0, 1.0))
        share = torch.as_tensor(shifted_share).to(self.raw_shifted_share)
        self.initialize(raw_shifted_share=self.raw_shifted_share_constraint.inverse_transform(share))

    @property
    def shifted_share(self) -> Tensor:
        return self.raw_shifted_share_constraint.transform(self.raw_shifted_share)

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, **params: Any) -> Tensor:
        share = self.shifted_share[..., 0] if diag else self.shifted_share
        origin = self.origin.to(x1)
        centred = self.base.forward(x1, x2, diag=diag, **params)
        moved1 = x1 - origin
        # one tensor for both sides keeps the base kernel's exact symmetry for k(x, x)
        moved2 = moved1 if x2 is x1 else x2 - origin
        shifted = self.base.forward(moved1, moved2, diag=diag, **params)
        return (1.0 - share) * centred + share * shifted


def make_offcentre_model(
    train_X: Tensor, train_Y: Tensor, bounds: Tensor, **kernel_options: Any
) -> SingleTaskGP:
    """``make_bo_model`` (``CenteredNormalize``, ``Standardize``) with :func:`offcentre_kernel`."""
    covar_module = offcentre_kernel(train_X.shape[-1], **kernel_options)
    return make_bo_model(train_X, train_Y, bounds, kernel=covar_module)


def map_objective(model: SingleTaskGP) -> float:
    """The objective ``fit_gpytorch_mll`` maximises: log marginal likelihood plus log priors, per observation."""
    from gpytorch.mlls import ExactMarginalLogLikelihood

    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    was_training = model.training
    model.train()
    try:
        with torch.no_grad():
            return float(mll(model(*model.train_inputs), model.train_targets).sum())
    finally:
        model.train(was_training)


class EvidenceSelection:
    """A model factory that fits every candidate surrogate and returns the one with the most evidence.

    Each call (one BO iteration) builds every candidate on the data, starts each fit where that
    candidate's own last fit ended (:func:`gp_ntk.bo.warm_start`), fits it by
    :func:`gp_ntk.bo.fit_bo_model`, and returns the fitted model with the highest
    :func:`map_objective` (every candidate sees the same standardised targets, so the values
    compare). A call whose data do not extend the previous call's starts a new run: the
    candidates' last fits and ``choices`` (the name chosen at each iteration) are forgotten.
    Run it with ``warm_start=False`` in :func:`gp_ntk.bo.run_bo`, which would otherwise start the
    chosen model at the hyperparameters of whichever candidate was chosen before.
    """

    def __init__(self, candidates: dict[str, Any]) -> None:
        if not candidates:
            raise ValueError("candidates must name at least one model factory")
        self.candidates = dict(candidates)
        self.choices: list[str] = []
        self._fitted: dict[str, SingleTaskGP] = {}
        self._last_X: Tensor | None = None

    def _continues_run(self, train_X: Tensor) -> bool:
        last = self._last_X
        return (
            last is not None
            and train_X.shape[0] >= last.shape[0]
            and torch.equal(train_X[: last.shape[0]], last)
        )

    def _fit_candidates(
        self, train_X: Tensor, train_Y: Tensor, bounds: Tensor
    ) -> list[tuple[float, str, SingleTaskGP]]:
        """Every candidate fitted warm, as ``(map_objective, name, model)``, best first; failed fits left out."""
        from gp_ntk.bo import fit_bo_model, warm_start

        if not self._continues_run(train_X):
            self._fitted, self.choices = {}, []
        self._last_X = train_X.detach().clone()
        fitted = []
        for name, factory in self.candidates.items():
            model = factory(train_X, train_Y, bounds)
            warm_start(model, self._fitted.get(name))
            if not fit_bo_model(model).succeeded:
                continue
            self._fitted[name] = model
            score = map_objective(model)
            if math.isfinite(score):
                fitted.append((score, name, model))
        return sorted(fitted, key=lambda entry: -entry[0])

    def _unfitted_first(self, train_X: Tensor, train_Y: Tensor, bounds: Tensor) -> SingleTaskGP:
        # every fit failed: the loop's own fit of the first candidate reports it
        name, factory = next(iter(self.candidates.items()))
        self.choices.append(name)
        return factory(train_X, train_Y, bounds)

    def __call__(self, train_X: Tensor, train_Y: Tensor, bounds: Tensor) -> SingleTaskGP:
        fitted = self._fit_candidates(train_X, train_Y, bounds)
        if not fitted:
            return self._unfitted_first(train_X, train_Y, bounds)
        _, name, model = fitted[0]
        self.choices.append(name)
        return model


def evidence_weights(objectives: Tensor, num_observations: int) -> Tensor:
    r"""Posterior model probabilities under a uniform prior over the models.

    ``objectives`` are :func:`map_objective` values (per observation), so the log evidence of
    model :math:`m` is :math:`n\,o_m` and its weight
    :math:`w_m = \exp(n o_m) / \sum_j \exp(n o_j)` [Hoeting1999]_ (the MAP objective standing
    in for the log marginal likelihood).
    """
    return torch.softmax(num_observations * objectives.to(torch.float64), dim=0)


class MixturePosterior(Posterior):
    r"""The posterior of a model average: component :math:`m` with probability :math:`w_m`.

    Samples are stratified: of :math:`S` samples (the first sample dimension), component
    :math:`m` draws those whose midpoint :math:`(s + 1/2)/S` falls in its share of
    :math:`[0, 1)`, every component from the same base samples, so a sample path is one
    component's path and the share of paths from :math:`m` is :math:`w_m` up to :math:`1/S`.
    The mean and variance are the mixture's moments.
    """

    def __init__(self, components: list[Posterior], weights: Tensor) -> None:
        if len(components) != weights.numel() or not components:
            raise ValueError("components and weights must have the same, non-zero length")
        self.components = components
        self.weights = weights

    @property
    def device(self) -> torch.device:
        return self.components[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.components[0].dtype

    @property
    def base_sample_shape(self) -> torch.Size:
        return self.components[0].base_sample_shape

    @property
    def batch_range(self) -> tuple[int, int]:
        return self.components[0].batch_range

    def _extended_shape(self, sample_shape: torch.Size = torch.Size()) -> torch.Size:  # noqa: B008
        return self.components[0]._extended_shape(sample_shape)

    @property
    def mean(self) -> Tensor:
        weights = self.weights.to(self.dtype)
        return sum(w * c.mean for w, c in zip(weights, self.components))

    @property
    def variance(self) -> Tensor:
        weights = self.weights.to(self.dtype)
        second = sum(w * (c.variance + c.mean**2) for w, c in zip(weights, self.components))
        return (second - self.mean**2).clamp_min(0.0)

    def component_of_samples(self, num_samples: int) -> Tensor:
        """Which component draws each of ``num_samples`` samples."""
        midpoints = (torch.arange(num_samples, dtype=torch.float64) + 0.5) / num_samples
        edges = torch.cumsum(self.weights.to(torch.float64), dim=0)[:-1]
        return torch.bucketize(midpoints, edges, right=True)

    def rsample_from_base_samples(self, sample_shape: torch.Size, base_samples: Tensor) -> Tensor:
        draws = [c.rsample_from_base_samples(sample_shape, base_samples) for c in self.components]
        which = self.component_of_samples(draws[0].shape[0]).to(draws[0].device)
        which = which.view(-1, *([1] * (draws[0].dim() - 1)))
        out = draws[0]
        for index, draw in enumerate(draws[1:], start=1):
            out = torch.where(which == index, draw, out)
        return out

    def rsample(self, sample_shape: torch.Size | None = None) -> Tensor:
        sample_shape = torch.Size([1]) if sample_shape is None else torch.Size(sample_shape)
        base = torch.randn(sample_shape + self.base_sample_shape, dtype=self.dtype, device=self.device)
        return self.rsample_from_base_samples(sample_shape, base)


@GetSampler.register(MixturePosterior)
def _mixture_sampler(posterior: MixturePosterior, sample_shape: torch.Size, *, seed: int | None = None):
    # every component draws from the same base samples: the first component's sampler serves all
    return get_sampler(posterior.components[0], sample_shape=sample_shape, seed=seed)


class EvidenceAverage(EvidenceSelection):
    """Like :class:`EvidenceSelection`, but the acquisition sees every candidate, weighted by evidence.

    Each call fits every candidate as :class:`EvidenceSelection` does, then returns the
    best-scoring model with its ``posterior`` replaced by the :class:`MixturePosterior` of all
    fitted candidates under :func:`evidence_weights` (Bayesian model averaging). The loop's own
    fit of the returned model starts at its fitted state. ``choices`` records the best
    candidate and ``weights`` the weights of every candidate (0 for a failed fit) per call.
    Acquisition functions must be built with ``cache_root=False``: the mixture has no single
    Cholesky factor to cache (:func:`is_model_average`).
    """

    def __init__(self, candidates: dict[str, Any]) -> None:
        super().__init__(candidates)
        self.weights: list[dict[str, float]] = []

    def _continues_run(self, train_X: Tensor) -> bool:
        continues = super()._continues_run(train_X)
        if not continues:
            self.weights = []
        return continues

    def __call__(self, train_X: Tensor, train_Y: Tensor, bounds: Tensor) -> SingleTaskGP:
        fitted = self._fit_candidates(train_X, train_Y, bounds)
        if not fitted:
            return self._unfitted_first(train_X, train_Y, bounds)
        objectives = torch.tensor([score for score, _, _ in fitted], dtype=torch.float64)
        weights = evidence_weights(objectives, train_X.shape[0])
        models = [model for _, _, model in fitted]
        best = models[0]
        self.choices.append(fitted[0][1])
        shares = {name: 0.0 for name in self.candidates}
        shares.update({name: float(w) for (_, name, _), w in zip(fitted, weights)})
        self.weights.append(shares)
        if len(models) > 1:
            own_posteriors = [model.posterior for model in models]

            def averaged_posterior(X: Tensor, *args: Any, **kwargs: Any) -> MixturePosterior:
                return MixturePosterior(
                    [posterior(X, *args, **kwargs) for posterior in own_posteriors], weights
                )

            best.posterior = averaged_posterior
            best.is_model_average = True
        return best


def is_model_average(model: Any) -> bool:
    """Whether ``model`` came from :class:`EvidenceAverage` with more than one fitted candidate."""
    return bool(getattr(model, "is_model_average", False))
