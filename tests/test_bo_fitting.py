"""gp_ntk.bo.fitting: fit_bo_model retries with more jitter and leaves the model in a known state."""

from __future__ import annotations

import math

import gpytorch
import pytest
import torch
from _bo_helpers import DTYPE, PLAIN_KERNELS, ROOT, _data, _unit_bounds, single_thread_and_rng  # noqa: F401
from botorch.fit import fit_gpytorch_mll
from linear_operator.utils.errors import NotPSDError

import gp_ntk.bo as bo


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


def _fit_counting(model) -> tuple[int, float]:
    """Marginal-likelihood evaluations of one fit and the MLL it reaches (per point)."""
    from gpytorch.mlls import ExactMarginalLogLikelihood

    calls = {"n": 0}

    def counting_fit(mll, **kwargs):
        forward = mll.forward

        def counted(*args, **kw):
            calls["n"] += 1
            return forward(*args, **kw)

        mll.forward = counted
        return fit_gpytorch_mll(mll, **kwargs)

    assert bo.fit_bo_model(model, fit=counting_fit).succeeded
    model.train()
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    with torch.no_grad():
        value = float(mll(model(*model.train_inputs), model.train_targets))
    model.eval()
    return calls["n"], value


def test_warm_start_copies_the_fitted_hyperparameters_and_shortens_the_next_fit() -> None:
    X, Y = _data(n=24, d=4, seed=3)
    bounds = _unit_bounds(4)
    previous = bo.make_bo_model(X[:20], Y[:20], bounds)
    bo.fit_bo_model(previous)
    cold = bo.make_bo_model(X, Y, bounds)
    warm = bo.make_bo_model(X, Y, bounds)
    copied = bo.warm_start(warm, previous)
    assert copied == len(list(warm.parameters()))
    for (name, value), (_, fitted) in zip(warm.named_parameters(), previous.named_parameters()):
        assert torch.equal(value, fitted), name
    # the outcome transform's statistics are the new data's, not copied
    assert not torch.equal(warm.outcome_transform.means, previous.outcome_transform.means)
    cold_calls, cold_mll = _fit_counting(cold)
    warm_calls, warm_mll = _fit_counting(warm)
    assert warm_calls < cold_calls
    assert warm_mll == pytest.approx(cold_mll, abs=1e-3)
    assert bo.warm_start(cold, None) == 0
    with pytest.raises(ValueError, match="previous must be torch modules"):
        bo.warm_start(cold, "model")


def test_warm_start_skips_parameters_it_cannot_match_and_non_finite_sources() -> None:
    X, Y = _data(n=12, d=3, seed=4)
    previous = bo.make_bo_model(X, Y, _unit_bounds(3))
    other = bo.make_bo_model(X[:, :2], Y, _unit_bounds(2))  # ARD of another width
    before = {name: value.detach().clone() for name, value in other.named_parameters()}
    copied = bo.warm_start(other, previous)
    shapes_differ = [
        n for n, v in other.named_parameters() if dict(previous.named_parameters())[n].shape != v.shape
    ]
    assert shapes_differ and copied == len(before) - len(shapes_differ)
    for name in shapes_differ:
        assert torch.equal(dict(other.named_parameters())[name], before[name])
    with torch.no_grad():
        next(previous.parameters()).fill_(float("nan"))
    fresh = bo.make_bo_model(X, Y, _unit_bounds(3))
    start = {name: value.detach().clone() for name, value in fresh.named_parameters()}
    assert bo.warm_start(fresh, previous) == 0
    assert all(torch.equal(value, start[name]) for name, value in fresh.named_parameters())
