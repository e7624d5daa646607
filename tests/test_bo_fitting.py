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
