"""Network kernels as BoTorch surrogates: adoption, finite acquisition gradients, the BO helpers.

Runs with tiny budgets (a few points, 2 restarts): what is checked is that every piece works and
recovers, not how well BO optimises; that is measured by ``benchmarks/bo.py``.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import gpytorch
import pytest
import torch
from botorch.acquisition import (
    LogExpectedImprovement,
    UpperConfidenceBound,
    qLogNoisyExpectedImprovement,
    qUpperConfidenceBound,
)
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf
from botorch.optim.utils import sample_all_priors
from botorch.sampling import SobolQMCNormalSampler
from botorch.test_functions import Branin, Hartmann
from gpytorch.kernels import ScaleKernel
from gpytorch.mlls import ExactMarginalLogLikelihood
from linear_operator.utils.errors import NotPSDError

import gp_ntk
import gp_ntk.bo as bo

DTYPE = torch.float64
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def single_thread_and_rng() -> Iterator[None]:
    """Keep the suite's thread count and global RNG as they were (the examples change both)."""
    threads = torch.get_num_threads()
    rng = torch.get_rng_state()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.set_rng_state(rng)


def _data(
    n: int = 10, d: int = 3, seed: int = 0, dtype: torch.dtype = DTYPE
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=generator, dtype=dtype)
    Y = torch.sin(4 * X).sum(-1, keepdim=True) + 0.3 * X[:, :1] ** 2
    return X, Y


def _unit_bounds(d: int, dtype: torch.dtype = DTYPE) -> torch.Tensor:
    return torch.stack([torch.zeros(d, dtype=dtype), torch.ones(d, dtype=dtype)])


# Plain gp_ntk kernels, exactly as a user would write them in the adoption line.
PLAIN_KERNELS = {
    "ntk": lambda d: gp_ntk.NTKKernel(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1),
    "nngp-relu": lambda d: gp_ntk.NNGPKernel(
        depth=3, activation="relu", weight_variance=2.0, bias_variance=0.1
    ),
    "nngp-erf": lambda d: gp_ntk.NNGPKernel(
        depth=2, activation="erf", weight_variance=2.0, bias_variance=0.1
    ),
    "arccos": lambda d: gp_ntk.ArcCosineKernel(order=1, num_layers=2, weight_variance=1.0, bias_variance=0.1),
    "erf": lambda d: gp_ntk.ErfKernel(weight_variance=1.0, bias_variance=0.1, ard_num_dims=d),
}


# ------------------------------------------------------------------------- the adoption line


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


# -------------------------------------------------------------------------- finite gradients


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


# ------------------------------------------------------------------------- CenteredNormalize


def test_centered_normalize_maps_the_box_onto_minus_one_one() -> None:
    bounds = torch.tensor([[-5.0, 0.0, 10.0], [10.0, 1.0, 30.0]], dtype=DTYPE)
    transform = bo.CenteredNormalize(3, bounds)
    corners = torch.stack([bounds[0], bounds[1], bounds.mean(0)])
    out = transform(corners)
    torch.testing.assert_close(out, torch.tensor([[-1.0] * 3, [1.0] * 3, [0.0] * 3], dtype=DTYPE))
    torch.testing.assert_close(transform.untransform(out), corners)
    torch.testing.assert_close(transform.bounds, bounds)
    # t x q x d batches and an exact copy from the init arguments
    batch = torch.rand(4, 2, 3, dtype=DTYPE) * (bounds[1] - bounds[0]) + bounds[0]
    copy = bo.CenteredNormalize(**transform.get_init_args())
    torch.testing.assert_close(copy(batch), transform(batch))
    assert transform(batch).abs().max() <= 1.0


def test_centered_normalize_learns_the_box_from_data_and_keeps_constant_features() -> None:
    X = torch.tensor([[0.0, 3.0, 7.0], [2.0, 5.0, 7.0], [1.0, 4.0, 7.0]], dtype=DTYPE)
    transform = bo.CenteredNormalize(3)
    assert transform.learn_bounds
    out = transform(X)
    torch.testing.assert_close(out[:, :2], torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]], dtype=DTYPE))
    torch.testing.assert_close(
        out[:, 2], torch.zeros(3, dtype=DTYPE)
    )  # constant feature: shifted, not divided
    transform.eval()
    torch.testing.assert_close(transform(X), out)


@pytest.mark.parametrize(
    "bounds, message",
    [
        (torch.zeros(3, 2, dtype=DTYPE), "shape"),
        (torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=DTYPE), "columns \\[1\\]"),
        (torch.tensor([[0.0, math.nan], [1.0, 1.0]], dtype=DTYPE), "finite"),
        (torch.tensor([[0, 0], [1, 1]]), "floating-point"),
        (torch.tensor([[0.0], [1.0]], dtype=DTYPE), "2 columns"),
    ],
)
def test_bad_bounds_are_refused_by_name(bounds: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=f"bounds.*{message}|{message}.*bounds|bounds"):
        bo.CenteredNormalize(2, bounds)
    with pytest.raises(ValueError, match=message):
        bo.check_bounds(bounds, 2)


def test_centring_spreads_the_angles_a_dot_product_kernel_sees() -> None:
    """The pitfall the transform exists for, measured: in one orthant the kernel is nearly constant."""
    generator = torch.Generator().manual_seed(0)
    unit = torch.rand(200, 5, generator=generator, dtype=DTYPE)
    kernel = gp_ntk.NNGPKernel(depth=3, activation="relu", weight_variance=2.0, bias_variance=0.1).to(DTYPE)

    def mean_correlation(x: torch.Tensor) -> float:
        K = kernel(x).to_dense()
        correlation = K / torch.outer(K.diagonal(), K.diagonal()).sqrt()
        return float(correlation[~torch.eye(len(x), dtype=torch.bool)].mean())

    on_unit_cube = mean_correlation(Normalize(5, bounds=_unit_bounds(5))(unit))
    centred = mean_correlation(bo.CenteredNormalize(5, _unit_bounds(5))(unit))
    assert on_unit_cube > 0.85
    assert centred < on_unit_cube - 0.1


# --------------------------------------------------------------------------- bo_kernel


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


@pytest.mark.parametrize(
    "base",
    [
        lambda: gp_ntk.NTKKernel(depth=3, bias_variance=0.1),
        lambda: gp_ntk.NNGPKernel(depth=2, activation="erf"),
        lambda: gp_ntk.ErfKernel(ard_num_dims=4),
    ],
    ids=["ntk", "nngp-erf", "erf-ard"],
)
def test_unit_variance_kernel_is_the_base_correlation(base) -> None:
    kernel = bo.UnitVarianceKernel(base()).to(DTYPE)
    generator = torch.Generator().manual_seed(0)
    X = torch.rand(30, 4, generator=generator, dtype=DTYPE) * 2 - 1
    X = torch.cat([X, X[:3]])  # repeated rows
    Z = torch.rand(5, 4, generator=generator, dtype=DTYPE) * 2 - 1
    K = kernel(X).to_dense()
    assert torch.equal(K, K.T)
    assert torch.equal(K.diagonal(), torch.ones(len(X), dtype=DTYPE))
    assert torch.linalg.eigvalsh(K).min() > -1e-10
    base_kernel = kernel.base_kernel
    expected = (
        base_kernel(X, Z).to_dense()
        / torch.outer(base_kernel(X, diag=True), base_kernel(Z, diag=True)).sqrt()
    )
    torch.testing.assert_close(kernel(X, Z).to_dense(), expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(kernel(Z, diag=True), torch.ones(5, dtype=DTYPE))
    # t x q x d batches, as acquisition functions evaluate them
    batch = torch.rand(3, 2, 4, generator=generator, dtype=DTYPE)
    assert kernel(batch).to_dense().shape == (3, 2, 2)
    with pytest.raises(ValueError, match="base_kernel must be"):
        bo.UnitVarianceKernel("ntk")


def test_unit_variance_kernel_diag_of_distinct_points_is_their_correlation() -> None:
    kernel = bo.UnitVarianceKernel(gp_ntk.NNGPKernel(depth=3)).to(DTYPE)
    generator = torch.Generator().manual_seed(1)
    X = torch.rand(6, 4, generator=generator, dtype=DTYPE) * 2 - 1
    Z = torch.rand(6, 4, generator=generator, dtype=DTYPE) * 2 - 1
    diagonal = kernel(X, Z, diag=True)
    torch.testing.assert_close(diagonal, kernel(X, Z).to_dense().diagonal(), rtol=1e-12, atol=1e-14)
    assert bool((diagonal < 1 - 1e-3).all())  # distinct points are not fully correlated
    # equal points, also as separate tensors, have correlation exactly 1
    assert torch.equal(kernel(X, X.clone(), diag=True), torch.ones(6, dtype=DTYPE))


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


# ------------------------------------------------------------------------ make_bo_model


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


# ----------------------------------------------------------------------------- fit_bo_model


def test_fit_bo_model_retries_with_more_jitter_after_a_failure() -> None:
    X, Y = _data(10, 3)
    model = bo.make_bo_model(X, Y, _unit_bounds(3))
    jitters = []

    def failing_once(mll):
        jitters.append(gpytorch.settings.cholesky_jitter.value(torch.float64))
        if len(jitters) == 1:
            raise NotPSDError("injected: matrix not positive definite")
        return fit_gpytorch_mll(mll)

    report = bo.fit_bo_model(model, fit=failing_once)
    assert report.succeeded and report.attempts == 2
    assert jitters == [pytest.approx(1e-8), pytest.approx(1e-6)]
    assert report.jitter == pytest.approx(1e-6)
    assert "NotPSDError" in report.messages[0]
    assert not model.training


def test_fit_bo_model_gives_up_cleanly_and_restores_the_initial_state() -> None:
    X, Y = _data(10, 3)
    model = bo.make_bo_model(X, Y, _unit_bounds(3))
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    def poisoning(mll):
        # leaves NaN hyperparameters behind, as a diverged optimiser would
        with torch.no_grad():
            mll.model.covar_module.raw_outputscale.fill_(math.nan)

    report = bo.fit_bo_model(model, max_attempts=2, fit=poisoning)
    assert not report.succeeded and report.attempts == 2 and len(report.messages) == 2
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, initial[key], equal_nan=False)
    with pytest.raises(ValueError, match="max_attempts"):
        bo.fit_bo_model(model, max_attempts=0)


def test_fit_bo_model_restores_the_initial_state_after_any_error() -> None:
    X, Y = _data(10, 3)
    model = bo.make_bo_model(X, Y, _unit_bounds(3))
    model.train()
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    def half_done_then_broken(mll):
        with torch.no_grad():
            mll.model.covar_module.raw_outputscale.add_(3.0)
            mll.model.likelihood.noise_covar.raw_noise.add_(1.0)
        raise TypeError("injected: a bug in the fitting function")

    with pytest.raises(TypeError, match="injected"):
        bo.fit_bo_model(model, fit=half_done_then_broken)
    for key, value in model.state_dict().items():
        assert torch.equal(value, initial[key]), key
    assert model.training


def test_make_bo_model_names_the_kernels_it_accepts() -> None:
    X, Y = _data(6, 2)
    with pytest.raises(ValueError, match="^kernel must be one of .*'nngp'.*RBFKernel"):
        bo.make_bo_model(X, Y, _unit_bounds(2), kernel="rbf")


def test_centered_normalize_refuses_to_learn_its_box_from_nan_inputs() -> None:
    transform = bo.CenteredNormalize(2)
    transform.train()
    X = torch.rand(5, 2, dtype=DTYPE)
    transform(X)
    bounds = transform.bounds.clone()
    X[2, 1] = math.nan
    with pytest.raises(ValueError, match="NaN or infinite entries \\(1 row\\(s\\)\\)"):
        transform(X)
    assert torch.equal(transform.bounds, bounds)
    with pytest.raises(ValueError, match="min_range"):
        bo.CenteredNormalize(2, min_range=math.nan)


# ------------------------------------------------------------------------------- run_bo


def _branin():
    return Branin(negate=True).to(DTYPE)


SMALL = {"num_restarts": 2, "raw_samples": 16, "progress": False}


@pytest.mark.slow
def test_run_bo_runs_reproducibly_within_bounds() -> None:
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)
    first = bo.run_bo(problem, bounds, 10, num_initial=5, batch_size=2, **SMALL)
    second = bo.run_bo(problem, bounds, 10, num_initial=5, batch_size=2, **SMALL)
    assert first.X.shape == (10, 2) and first.Y.shape == (10,)
    assert first.iteration.tolist() == [0] * 5 + [1, 1, 2, 2, 3]  # the last batch is cut to the budget
    assert torch.equal(first.X, second.X)
    assert ((first.X >= bounds[0]) & (first.X <= bounds[1])).all()
    assert torch.isfinite(first.Y).all() and not first.events
    assert len(first.iteration_seconds) == len(first.fit_seconds) == len(first.acquisition_seconds) == 3
    best = first.best_values
    assert (best[1:] >= best[:-1]).all() and first.best_value == float(first.Y.max())
    torch.testing.assert_close(problem(first.best_X.unsqueeze(0)).squeeze(), first.Y.max())
    with pytest.raises(ValueError, match="kind must be one of"):
        first.events_of("nan")


@pytest.mark.slow
def test_run_bo_with_ucb_random_and_custom_surrogates() -> None:
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)
    calls = []
    ucb = bo.run_bo(problem, bounds, 7, num_initial=5, surrogate="nngp", acquisition="qucb", **SMALL)
    random = bo.run_bo(problem, bounds, 7, num_initial=5, surrogate="random", **SMALL)
    custom = bo.run_bo(
        problem,
        bounds,
        7,
        num_initial=5,
        surrogate=lambda X, Y, b: bo.make_bo_model(X, Y, b, "ntk", depth=1),
        callback=lambda iteration, result: calls.append((iteration, result.X.shape[0])),
        **SMALL,
    )
    for result in (ucb, random, custom):
        assert result.X.shape == (7, 2) and torch.isfinite(result.Y).all()
    # the same Sobol initial design, then different proposals
    assert torch.equal(ucb.X[:5], random.X[:5])
    assert random.fit_seconds == [0.0, 0.0]
    assert calls == [(1, 6), (2, 7)]


@pytest.mark.slow
def test_run_bo_skips_nan_objective_values() -> None:
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)
    calls = {"n": 0}

    def flaky(X: torch.Tensor) -> torch.Tensor:
        values = problem(X)
        calls["n"] += 1
        return torch.full_like(values, math.nan) if calls["n"] in (2, 3) else values

    result = bo.run_bo(flaky, bounds, 10, num_initial=5, **SMALL)
    assert result.X.shape == (10, 2) and torch.isfinite(result.X).all()
    assert int(torch.isnan(result.Y).sum()) == 2
    assert len(result.events_of("nan_objective")) == 2
    assert math.isfinite(result.best_value) and not torch.isnan(result.best_values[5:]).any()


@pytest.mark.slow
def test_run_bo_starts_over_randomly_when_the_whole_initial_design_fails() -> None:
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)
    calls = {"n": 0}

    def broken_at_first(X: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        values = problem(X)
        return torch.full_like(values, math.nan) if calls["n"] == 1 else values

    result = bo.run_bo(broken_at_first, bounds, 9, num_initial=4, **SMALL)
    assert torch.isnan(result.Y[:4]).all() and torch.isfinite(result.Y[4:]).all()
    assert [e.iteration for e in result.events_of("too_few_observations")] == [1, 2]
    assert math.isfinite(result.best_value)
    assert result.best_values[:4].eq(-math.inf).all()


def _replace_optimizer(monkeypatch, make_candidates):
    """Make run_bo's acquisition optimiser return ``make_candidates(bounds, q)``."""

    def fake_optimize_acqf(acq_function, bounds, q, **kwargs):
        return make_candidates(bounds, q), torch.zeros(())

    monkeypatch.setattr(bo.loop, "optimize_acqf", fake_optimize_acqf)


def test_run_bo_clamps_candidates_outside_the_bounds(monkeypatch) -> None:
    _replace_optimizer(
        monkeypatch, lambda bounds, q: (bounds[1] + 0.5 * (bounds[1] - bounds[0])).expand(q, -1)
    )
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)
    result = bo.run_bo(problem, bounds, 7, num_initial=5, **SMALL)
    assert ((result.X >= bounds[0]) & (result.X <= bounds[1])).all()
    events = result.events_of("out_of_bounds")
    assert events and "0.5 of the box width" in events[0].message
    # the clamped corner was evaluated once; proposed again, it is a repeat and replaced
    assert len(result.events_of("duplicate")) == 1
    assert torch.isfinite(result.Y).all()


def test_run_bo_replaces_nan_candidates(monkeypatch) -> None:
    _replace_optimizer(monkeypatch, lambda bounds, q: torch.full((q, bounds.shape[1]), math.nan, dtype=DTYPE))
    problem = _branin()
    result = bo.run_bo(problem, problem.bounds.to(DTYPE), 7, num_initial=5, **SMALL)
    assert torch.isfinite(result.X).all() and torch.isfinite(result.Y).all()
    assert len(result.events_of("nan_candidate")) == 2


def test_run_bo_replaces_repeated_candidates(monkeypatch) -> None:
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)
    first_point = {}

    def repeat_the_first_point(bounds, q):
        return first_point["x"].expand(q, -1).clone()

    def objective(X):
        first_point.setdefault("x", X[:1].clone())
        return problem(X)

    _replace_optimizer(monkeypatch, repeat_the_first_point)
    result = bo.run_bo(objective, bounds, 10, num_initial=5, batch_size=2, **SMALL)
    distinct = torch.unique(result.X, dim=0)
    assert distinct.shape[0] == result.X.shape[0]
    # every candidate repeats the first point: two in each of the two full batches, one in the last
    assert len(result.events_of("duplicate")) == 5


@pytest.mark.slow
def test_run_bo_refits_with_jitter_when_a_fit_fails_once(monkeypatch) -> None:
    calls = {"n": 0}

    def fails_on_second_call(mll, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise NotPSDError("injected failure")
        return fit_gpytorch_mll(mll, **kwargs)

    monkeypatch.setattr(bo.fitting, "fit_gpytorch_mll", fails_on_second_call)
    problem = _branin()
    result = bo.run_bo(problem, problem.bounds.to(DTYPE), 8, num_initial=5, **SMALL)
    retries = result.events_of("fit_retry")
    assert [e.iteration for e in retries] == [2]
    assert "jitter 1e-06" in retries[0].message and "NotPSDError" in retries[0].message
    assert not result.events_of("fit_failed")
    assert result.X.shape == (8, 2) and torch.isfinite(result.Y).all()


def test_run_bo_falls_back_to_random_points_when_fit_or_acquisition_keeps_failing(
    monkeypatch, caplog
) -> None:
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)

    def always_fails(mll, **kwargs):
        raise NotPSDError("injected failure")

    monkeypatch.setattr(bo.fitting, "fit_gpytorch_mll", always_fails)
    with caplog.at_level(logging.WARNING, logger="gp_ntk.bo"):
        result = bo.run_bo(problem, bounds, 7, num_initial=5, max_fit_attempts=2, **SMALL)
    assert len(result.events_of("fit_failed")) == 2
    assert "fit_failed" in caplog.text  # reported, not only recorded
    assert result.X.shape == (7, 2) and torch.isfinite(result.Y).all()
    monkeypatch.undo()

    def broken_optimizer(*args, **kwargs):
        raise RuntimeError("injected: acquisition optimisation diverged")

    monkeypatch.setattr(bo.loop, "optimize_acqf", broken_optimizer)
    result = bo.run_bo(problem, bounds, 7, num_initial=5, **SMALL)
    assert len(result.events_of("acquisition_failed")) == 2
    assert result.X.shape == (7, 2) and torch.isfinite(result.Y).all()


def test_run_bo_refuses_bad_arguments_by_name() -> None:
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)
    with pytest.raises(ValueError, match="initial_X has 1 row\\(s\\) outside the bounds"):
        bo.run_bo(problem, bounds, 5, initial_X=bounds[1:] + 1.0, **SMALL)
    with pytest.raises(ValueError, match="initial_X must be"):
        bo.run_bo(problem, bounds, 5, initial_X=torch.zeros(3, 5, dtype=DTYPE), **SMALL)
    with pytest.raises(ValueError, match="num_evaluations"):
        bo.run_bo(problem, bounds, 0, **SMALL)
    with pytest.raises(ValueError, match="surrogate must be"):
        bo.run_bo(problem, bounds, 5, surrogate="gbm", **SMALL)
    with pytest.raises(ValueError, match="acquisition must be"):
        bo.run_bo(problem, bounds, 5, acquisition="ei", **SMALL)
    with pytest.raises(ValueError, match="bounds: every lower bound must be below its upper bound"):
        bo.run_bo(problem, bounds.flip(0), 5, **SMALL)
    with pytest.raises(ValueError, match="ucb_beta"):
        bo.run_bo(problem, bounds, 5, ucb_beta=-1.0, **SMALL)


class _FailingObjective:
    """Branin, until call ``fail_on``, which returns ``bad`` (or raises it, if an exception)."""

    def __init__(self, fail_on: int, bad: object) -> None:
        self.problem, self.fail_on, self.bad, self.calls = _branin(), fail_on, bad, 0

    def __call__(self, X: torch.Tensor) -> object:
        self.calls += 1
        if self.calls == self.fail_on:
            if isinstance(self.bad, BaseException):
                raise self.bad
            return self.bad(X) if callable(self.bad) else self.bad
        return self.problem(X)


@pytest.mark.parametrize(
    ("bad", "cause", "message"),
    [
        (KeyError("simulator crashed"), KeyError, "simulator crashed"),
        (None, ValueError, "objective '_FailingObjective' returned None for 1 point\\(s\\); it must map"),
        (lambda X: torch.zeros(3), ValueError, "returned 3 value\\(s\\) for 1 point\\(s\\)"),
        ("seven", ValueError, "returned str, not numbers"),
    ],
    ids=["raises", "none", "wrong_count", "not_numbers"],
)
def test_run_bo_keeps_every_evaluation_when_the_objective_fails(bad, cause, message) -> None:
    objective = _FailingObjective(fail_on=3, bad=bad)
    bounds = objective.problem.bounds.to(DTYPE)
    with pytest.raises(bo.BOError, match=message) as caught:
        bo.run_bo(objective, bounds, 8, num_initial=3, surrogate="random", **SMALL)
    error = caught.value
    assert isinstance(error.__cause__, cause)
    # call 1: the initial design (3 points), call 2: iteration 1, call 3 fails in iteration 2
    assert error.iteration == 2 and error.candidates.shape == (1, 2)
    result = error.result
    assert result.X.shape == (4, 2) and result.iteration.tolist() == [0, 0, 0, 1]
    torch.testing.assert_close(result.Y, objective.problem(result.X))
    assert len(result.iteration_seconds) == 1


def test_run_bo_keeps_every_evaluation_when_the_surrogate_factory_fails() -> None:
    problem = _branin()
    calls = {"n": 0}

    def factory(X, Y, bounds):
        calls["n"] += 1
        if calls["n"] == 2:
            raise TypeError("injected: a bug in the model factory")
        return bo.make_bo_model(X, Y, bounds)

    with pytest.raises(bo.BOError, match="TypeError: injected") as caught:
        bo.run_bo(problem, problem.bounds.to(DTYPE), 8, num_initial=4, surrogate=factory, **SMALL)
    error = caught.value
    assert isinstance(error.__cause__, TypeError) and error.iteration == 2 and error.candidates is None
    assert error.result.X.shape == (5, 2) and torch.isfinite(error.result.Y).all()


def test_run_bo_keeps_every_evaluation_when_the_callback_fails_or_on_ctrl_c() -> None:
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)

    def callback(iteration, result):
        if iteration == 2:
            raise OSError("injected: checkpoint disk full")

    with pytest.raises(bo.BOError, match="OSError") as caught:
        bo.run_bo(problem, bounds, 8, num_initial=3, surrogate="random", callback=callback, **SMALL)
    assert caught.value.result.X.shape == (5, 2) and caught.value.candidates is None
    objective = _FailingObjective(fail_on=2, bad=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt) as interrupted:
        bo.run_bo(objective, bounds, 8, num_initial=3, surrogate="random", **SMALL)
    assert interrupted.value.result.X.shape == (3, 2)


def test_run_bo_accepts_an_explicit_initial_design() -> None:
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)
    design = bounds[0] + torch.tensor([[0.1, 0.2], [0.5, 0.5], [0.9, 0.1], [0.3, 0.8]], dtype=DTYPE) * (
        bounds[1] - bounds[0]
    )
    result = bo.run_bo(problem, bounds, 6, initial_X=design, **SMALL)
    assert torch.equal(result.X[:4], design)
    assert result.X.shape == (6, 2)


# ------------------------------------------------------------------- example and benchmark


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@pytest.mark.slow
def test_bo_example_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    example = _load(ROOT / "examples" / "bo_loop.py", "gp_ntk_example_bo_loop")
    example.main(["--quick", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    png = tmp_path / "bo_regret.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    for surrogate in ("NTK", "Matern-5/2", "random"):
        assert any(line.startswith(surrogate) for line in out.splitlines()), f"no result row for {surrogate}"
    assert "log10 regret" in out


@pytest.mark.slow
def test_benchmark_quick(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    benchmark = _load(ROOT / "benchmarks" / "bo.py", "gp_ntk_benchmark_bo")
    arguments = ["--quick", "--seeds", "1", "--surrogates", "ntk", "ibnn", "random", "--out", str(tmp_path)]
    output = benchmark.main([*arguments, "--no-progress"])
    records = output["records"]
    assert {(r["problem"], r["surrogate"]) for r in records} == {
        (p, s) for p in benchmark.QUICK_PROBLEMS for s in ("ntk", "ibnn", "random")
    }
    assert len(records) == 2 * 3
    for record in records:
        regret = torch.tensor(record["log_regret"])
        assert torch.isfinite(regret).all() and (regret[1:] <= regret[:-1]).all()
    tables = (tmp_path / "results.md").read_text()
    assert "log10 simple regret" in tables and "Wall time per BO iteration" in tables
    assert "NTK (ReLU, 3)" in tables and "BoTorch IBNN (3)" in tables
    assert (tmp_path / "bo_regret.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # resuming finds every run done and repeats none
    lines = (tmp_path / "runs.jsonl").read_text().count("\n")
    benchmark.main([*arguments, "--no-progress"])
    assert (tmp_path / "runs.jsonl").read_text().count("\n") == lines


def test_log_regret_floors_and_marks_missing_values() -> None:
    benchmark = _load(ROOT / "benchmarks" / "bo.py", "gp_ntk_benchmark_bo_regret")
    values = benchmark.log_regret([-math.inf, 0.0, 0.9, 1.0], optimal_value=1.0)
    assert math.isnan(values[0])
    assert values[1:] == pytest.approx([0.0, -1.0, math.log10(benchmark.REGRET_FLOOR)])


@pytest.mark.slow
def test_corner_diagnostic_counts_boundary_proposals() -> None:
    benchmark = _load(ROOT / "benchmarks" / "bo.py", "gp_ntk_benchmark_bo_corners")
    optimizer = bo.loop.optimize_acqf
    text = benchmark.corner_diagnostic("branin-2-quick", ["nngp-relu"], [0], restarts=2, raw_samples=16)
    assert bo.loop.optimize_acqf is optimizer  # the recording wrapper is removed again
    row = next(line for line in text.splitlines() if line.startswith("| NNGP (ReLU, 3) |"))
    shares = [float(cell.strip().rstrip("%")) for cell in row.split("|")[2:4]]
    assert all(0 <= share <= 100 for share in shares)
    assert shares[1] <= shares[0]  # a corner has every coordinate on the boundary
