"""gp_ntk.bo.models: network kernels as BoTorch surrogates (the adoption line, finite acquisition
gradients, bo_kernel's priors, make_bo_model).

Runs with tiny budgets (a few points, 2 restarts): what is checked is that every piece works, not
how well BO optimises; that is measured by ``benchmarks/bo.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from _bo_helpers import DTYPE, PLAIN_KERNELS, ROOT, _data, _unit_bounds, single_thread_and_rng  # noqa: F401
from botorch.acquisition import (
    LogExpectedImprovement,
    UpperConfidenceBound,
    qLogNoisyExpectedImprovement,
    qUpperConfidenceBound,
)
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf
from botorch.optim.utils import sample_all_priors
from botorch.sampling import SobolQMCNormalSampler
from botorch.test_functions import Hartmann
from gpytorch.kernels import ScaleKernel
from gpytorch.mlls import ExactMarginalLogLikelihood

import gp_ntk
import gp_ntk.bo as bo


@pytest.mark.parametrize("name", sorted(PLAIN_KERNELS))
def test_adoption_line_fits_and_optimises_with_botorch(name: str) -> None:
    d, q = 3, 2
    X, Y = _data(12, d)
    bounds = _unit_bounds(d)
    model = SingleTaskGP(
        X,
        Y,
        covar_module=ScaleKernel(PLAIN_KERNELS[name](d)),
        input_transform=bo.CenteredNormalize(d, bounds),
        outcome_transform=Standardize(m=1),
    )
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    sampler = SobolQMCNormalSampler(torch.Size([32]), seed=0)
    for acquisition in (
        qLogNoisyExpectedImprovement(model, X_baseline=X, sampler=sampler),
        qUpperConfidenceBound(model, beta=2.0, sampler=sampler),
    ):
        # batch evaluation of t x q x d candidates
        candidates_tqd = torch.rand(5, q, d, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
        values = acquisition(candidates_tqd)
        assert values.shape == (5,)
        assert torch.isfinite(values).all()
        candidate, value = optimize_acqf(acquisition, bounds=bounds, q=q, num_restarts=2, raw_samples=16)
        assert candidate.shape == (q, d)
        assert torch.isfinite(candidate).all() and torch.isfinite(value).all()
        assert ((candidate >= 0) & (candidate <= 1)).all()
    # the posterior is on the original outcome scale (Standardize is undone)
    posterior = model.posterior(X)
    assert torch.corrcoef(torch.stack([posterior.mean.squeeze(-1), Y.squeeze(-1)]))[0, 1] > 0.9


def test_adoption_line_works_without_any_transform_too() -> None:
    X, Y = _data(10, 2)
    model = SingleTaskGP(X * 2 - 1, Y, covar_module=ScaleKernel(gp_ntk.NTKKernel(depth=2)))
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    value = qLogNoisyExpectedImprovement(model, X_baseline=X * 2 - 1)(torch.zeros(3, 1, 2, dtype=DTYPE))
    assert torch.isfinite(value).all()


GRADIENT_KERNELS = {
    "ntk": {"kernel": "ntk"},
    "ntk-depth1": {"kernel": "ntk", "depth": 1},
    "ntk-ard": {"kernel": "ntk", "ard": True},
    "nngp-relu": {"kernel": "nngp"},
    "nngp-erf": {"kernel": "nngp", "activation": "erf"},
    "arccos": {"kernel": "arccos"},
    "erf": {"kernel": "erf"},
    "ntk-unit-variance": {"kernel": "ntk", "normalize": True},
    "nngp-unit-variance": {"kernel": "nngp", "normalize": True},
}


def _acquisitions(model, X: torch.Tensor, Y: torch.Tensor) -> dict[str, object]:
    sampler = SobolQMCNormalSampler(torch.Size([32]), seed=0)
    return {
        "qLogNEI": qLogNoisyExpectedImprovement(model, X_baseline=X, sampler=sampler),
        "qUCB": qUpperConfidenceBound(model, beta=2.0, sampler=sampler),
        "LogEI": LogExpectedImprovement(model, best_f=Y.max()),
        "UCB": UpperConfidenceBound(model, beta=2.0),
    }


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(GRADIENT_KERNELS))
def test_acquisition_gradients_are_finite_at_training_points_and_duplicates(name: str, dtype) -> None:
    """Where optimize_acqf starts (training points), at repeated rows and just next to them."""
    X, Y = _data(8, 3, dtype=dtype)
    X = torch.cat([X, X[:2]])  # duplicated observations in the training data
    Y = torch.cat([Y, Y[:2] + 0.01])
    model = bo.make_bo_model(X, Y, _unit_bounds(3, dtype), **GRADIENT_KERNELS[name])
    assert bo.fit_bo_model(model).succeeded
    offsets = (0.0, 1e-12, 1e-8, 1e-4) if dtype == torch.float64 else (0.0, 1e-7, 1e-4)
    for acquisition_name, acquisition in _acquisitions(model, X, Y).items():
        for offset in offsets:
            batches = [X.unsqueeze(1) + offset]  # t x 1 x d: every training point
            if acquisition_name.startswith("q"):
                # t x 2 x d: a training point twice in one batch (a duplicate pair of candidates)
                batches.append(torch.stack([X, X + offset], dim=1))
            for candidates in batches:
                candidates = candidates.clone().requires_grad_(True)
                values = acquisition(candidates)
                values.sum().backward()
                where = f"{acquisition_name}, offset {offset}, q={candidates.shape[1]}"
                assert torch.isfinite(values).all(), f"non-finite acquisition value ({where})"
                assert torch.isfinite(candidates.grad).all(), f"non-finite gradient ({where})"


def test_optimize_acqf_started_at_training_points_returns_finite_candidates() -> None:
    X, Y = _data(10, 3)
    model = bo.make_bo_model(X, Y, _unit_bounds(3))
    bo.fit_bo_model(model)
    acquisition = qLogNoisyExpectedImprovement(
        model, X_baseline=X, sampler=SobolQMCNormalSampler(torch.Size([32]))
    )
    start = X[:4].unsqueeze(1).clone()
    candidate, value = optimize_acqf(
        acquisition, bounds=_unit_bounds(3), q=1, num_restarts=4, batch_initial_conditions=start
    )
    assert torch.isfinite(candidate).all() and torch.isfinite(value).all()
    # the optimiser moved off the training points (gradients were informative, not zero or NaN)
    assert (candidate - X).abs().amax(-1).min() > 1e-6


def test_bo_kernel_registers_priors_and_constraints() -> None:
    kernel = bo.bo_kernel("ntk", 4)
    names = {name for name, *_ in kernel.named_priors()}
    assert names == {
        "outputscale_prior",
        "base_kernel.weight_variance_prior",
        "base_kernel.bias_variance_prior",
    }
    assert isinstance(kernel.base_kernel, gp_ntk.NTKKernel) and kernel.base_kernel.depth == 3
    assert not list(bo.bo_kernel("ntk", 4, priors=False).named_priors())
    # the priors' modes are the initial values
    for prior, value in (
        (kernel.outputscale_prior, kernel.outputscale),
        (kernel.base_kernel.weight_variance_prior, kernel.base_kernel.weight_variance),
        (kernel.base_kernel.bias_variance_prior, kernel.base_kernel.bias_variance),
    ):
        torch.testing.assert_close(prior.mode.to(value), value.squeeze(), rtol=1e-5, atol=0)
    ard = bo.bo_kernel("nngp", 4, ard=True)
    assert ard.base_kernel.input_weight_variance.shape[-1] == 4
    assert "base_kernel.weight_variance_prior" in {n for n, *_ in ard.named_priors()}


def test_unit_variance_option_wraps_the_network_kernel() -> None:
    kernel = bo.bo_kernel("ntk", 3, normalize=True, batch_shape=torch.Size([2]))
    assert isinstance(kernel.base_kernel, bo.UnitVarianceKernel)
    assert kernel.base_kernel.batch_shape == torch.Size([2])
    names = {name for name, *_ in kernel.named_priors()}
    assert "base_kernel.base_kernel.weight_variance_prior" in names
    X = torch.rand(7, 3, dtype=DTYPE)
    torch.testing.assert_close(
        kernel.to(DTYPE)(X).to_dense().diagonal(dim1=-2, dim2=-1),
        kernel.outputscale.detach().to(DTYPE).unsqueeze(-1).expand(2, 7),
    )


def test_bo_kernel_scales_williams_and_cho_saul_weights_by_dimension() -> None:
    for name in ("arccos", "erf"):
        kernel = bo.bo_kernel(name, 8)
        torch.testing.assert_close(float(kernel.base_kernel.weight_variance), 2.0 / 8, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "rbf"}, "name must be one of"),
        ({"name": "ntk", "ard": True}, "num_dims is required"),
        ({"name": "erf"}, "num_dims is required"),
        ({"name": "ntk", "num_dims": 0}, "num_dims must be"),
    ],
)
def test_bo_kernel_refuses_bad_arguments(kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bo.bo_kernel(**kwargs)


def test_prior_sampling_restarts_work() -> None:
    """fit_gpytorch_mll's retries resample hyperparameters from the priors: that must work."""
    X, Y = _data(10, 3)
    model = bo.make_bo_model(X, Y, _unit_bounds(3))
    before = model.covar_module.base_kernel.weight_variance.clone()
    torch.manual_seed(3)
    sample_all_priors(model)
    after = model.covar_module.base_kernel.weight_variance
    assert not torch.equal(before, after)
    assert torch.isfinite(after).all() and (after > 0).all()


def test_priors_make_the_fit_independent_of_the_starting_point() -> None:
    """Outputscale, weight and bias variance overlap; with the priors the MAP fit is unique."""
    problem = Hartmann(dim=6, negate=True).to(DTYPE)
    X = torch.rand(30, 6, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    Y = problem(X).unsqueeze(-1)
    fitted = []
    for start in range(3):
        model = bo.make_bo_model(X, Y, problem.bounds.to(DTYPE))
        if start:
            generator = torch.Generator().manual_seed(start)
            model.covar_module.outputscale = float(torch.empty(1).log_normal_(0.0, 1.5, generator=generator))
            model.covar_module.base_kernel.weight_variance = float(
                torch.empty(1).log_normal_(0.7, 1.5, generator=generator)
            )
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        kernel = model.covar_module
        fitted.append(
            torch.cat(
                [
                    kernel.outputscale.reshape(1),
                    kernel.base_kernel.weight_variance,
                    kernel.base_kernel.bias_variance,
                ]
            )
        )
    for other in fitted[1:]:
        torch.testing.assert_close(other, fitted[0], rtol=0.02, atol=0)
    # and each value stays in its prior's central 99 % region
    scale, weight, bias = fitted[0].tolist()
    assert 0.07 < scale < 13 and 0.55 < weight < 7.3 and 0.0076 < bias < 1.3


def test_make_bo_model_multi_output_and_known_noise() -> None:
    X, Y = _data(10, 3)
    Y2 = torch.cat([Y, -Y + 0.1 * X[:, :1]], dim=-1)
    model = bo.make_bo_model(X, Y2, _unit_bounds(3), "nngp", train_Yvar=torch.full_like(Y2, 1e-3))
    assert model.covar_module.batch_shape == torch.Size([2])
    assert bo.fit_bo_model(model).succeeded
    posterior = model.posterior(torch.rand(4, 3, dtype=DTYPE))
    assert posterior.mean.shape == (4, 2) and torch.isfinite(posterior.variance).all()


def test_make_bo_model_takes_any_kernel_as_is() -> None:
    X, Y = _data(8, 2)
    kernel = ScaleKernel(gp_ntk.ErfKernel())
    model = bo.make_bo_model(X, Y, _unit_bounds(2), kernel=kernel)
    assert model.covar_module is kernel
    assert isinstance(model.input_transform, bo.CenteredNormalize)


def test_make_bo_model_refuses_bad_data_by_name() -> None:
    X, Y = _data(8, 2)
    bad_Y = Y.clone()
    bad_Y[3] = math.nan
    with pytest.raises(ValueError, match="train_Y contains NaN or infinite values in 1 row"):
        bo.make_bo_model(X, bad_Y, _unit_bounds(2))
    bad_X = X.clone()
    bad_X[0, 1] = math.inf
    with pytest.raises(ValueError, match="train_X contains NaN"):
        bo.make_bo_model(bad_X, Y, _unit_bounds(2))
    with pytest.raises(ValueError, match="train_Y must have shape"):
        bo.make_bo_model(X, Y[:-1], _unit_bounds(2))
    with pytest.raises(ValueError, match="same dtype"):
        bo.make_bo_model(X, Y.float(), _unit_bounds(2))
    with pytest.raises(ValueError, match="bounds must have 2 columns"):
        bo.make_bo_model(X, Y, _unit_bounds(3))
    with pytest.raises(ValueError, match="kernel must be"):
        bo.make_bo_model(X, Y, _unit_bounds(2), kernel=3)
    with pytest.raises(ValueError, match="train_X must have shape"):
        bo.make_bo_model(X[:, 0], Y, _unit_bounds(2))


def test_make_bo_model_names_the_kernels_it_accepts() -> None:
    X, Y = _data(6, 2)
    with pytest.raises(ValueError, match="^kernel must be one of .*'nngp'.*RBFKernel"):
        bo.make_bo_model(X, Y, _unit_bounds(2), kernel="rbf")
