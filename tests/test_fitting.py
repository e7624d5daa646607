"""gp_ntk.fit: it fits, it stops, it recovers from faults, it keeps the best parameters."""

from __future__ import annotations

import copy
import math

import gpytorch
import pytest
import torch
from linear_operator.utils.errors import NotPSDError

import gp_ntk
from gp_ntk.fitting import FitError
from gp_ntk.models import ExactGPModel


def _data(n=80, d=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.tanh(x @ torch.tensor([1.0, -2.0, 0.5], dtype=dtype)[:d]) + 0.1 * torch.randn(
        n, generator=g, dtype=dtype
    )
    return x, y


def _prior_draw(kernel, x, noise, seed):
    with torch.no_grad():
        cov = kernel.forward(x, x) + noise * torch.eye(x.shape[0], dtype=x.dtype)
        g = torch.Generator().manual_seed(seed)
        return torch.linalg.cholesky(cov) @ torch.randn(x.shape[0], generator=g, dtype=x.dtype)


# Recovery of known variances. Truth: depth-2 erf NNGP, weight_variance 2.0, bias_variance 0.5,
# noise 0.01, n = 400 standard-normal inputs in d = 3, no ScaleKernel (which would duplicate the
# last layer's weight variance). `python benchmarks/variance_recovery.py` draws 20 data sets and
# reports the spread of the maximum-likelihood estimates; RECOVERY_TOLERANCE below is 3 of those
# standard deviations around the truth.
TRUE_WEIGHT, TRUE_BIAS, TRUE_NOISE = 2.0, 0.5, 0.01


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_recovers_known_variances_from_nngp_prior_draws(seed, float64_default):
    x = torch.randn(400, 3, generator=torch.Generator().manual_seed(100 + seed))
    truth = gp_ntk.NNGPKernel(2, "erf", TRUE_WEIGHT, TRUE_BIAS)
    y = _prior_draw(truth, x, TRUE_NOISE, seed)
    model = ExactGPModel(
        x, y, kernel=gp_ntk.NNGPKernel(2, "erf", 1.0, 0.1), scale=False, standardize_inputs=False
    )
    model.mean_module.constant.requires_grad_(False)  # the prior mean is 0
    result = gp_ntk.fit(model, optimizer="lbfgs", max_iter=60, progress=False)
    kernel = model.covar_module
    weight, bias = float(kernel.weight_variance), float(kernel.bias_variance)
    noise = float(model.likelihood.noise)
    assert result.status in ("converged", "max_iter") and math.isfinite(result.best_loss)
    assert abs(weight - TRUE_WEIGHT) / TRUE_WEIGHT < RECOVERY_TOLERANCE["weight"], weight
    assert abs(bias - TRUE_BIAS) / TRUE_BIAS < RECOVERY_TOLERANCE["bias"], bias
    assert abs(noise - TRUE_NOISE) / TRUE_NOISE < RECOVERY_TOLERANCE["noise"], noise


# 20 draws (benchmarks/variance_recovery.py): sd / truth = 0.045 (weight), 0.44 (bias), 0.065
# (noise); worst relative errors 0.075, 1.17, 0.12. Bounds: 3 sd. The bias variance of a deep
# network is weakly identified at n = 400 (it adds a near-constant at every layer).
RECOVERY_TOLERANCE = {"weight": 0.15, "bias": 1.35, "noise": 0.2}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
@pytest.mark.parametrize("depth", [1, 3, 10])
def test_fits_on_real_data_never_produce_nan(dtype, kind, depth):
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x = torch.as_tensor(data.data[:200], dtype=dtype)
    y = torch.as_tensor(data.target[:200], dtype=dtype)
    y = (y - y.mean()) / y.std()
    model = ExactGPModel(x, y, kernel=gp_ntk.models.make_kernel(kind, depth=depth))
    result = gp_ntk.fit(model, max_iter=25, lr=0.1, patience=25, progress=False)
    assert result.recoveries == []
    assert len(result.losses) == 25 and all(math.isfinite(v) for v in result.losses)
    assert result.best_loss < result.losses[0]
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


@pytest.mark.slow
def test_lbfgs_and_adam_reach_similar_optima():
    x, y = _data()
    adam_model = ExactGPModel(x, y, kernel="ntk")
    adam = gp_ntk.fit(adam_model, max_iter=150, lr=0.1, patience=30, progress=False)
    lbfgs_model = ExactGPModel(x, y, kernel="ntk")
    lbfgs = gp_ntk.fit(lbfgs_model, optimizer="lbfgs", max_iter=40, progress=False)
    assert lbfgs.best_loss <= adam.best_loss + 0.01
    assert lbfgs.iterations < adam.iterations


@pytest.mark.slow
def test_early_stopping_and_history():
    x, y = _data()
    model = ExactGPModel(x, y)
    calls = []
    result = gp_ntk.fit(
        model, max_iter=1000, patience=5, min_delta=1e-3, callback=lambda i, v: calls.append(v)
    )
    assert result.status == "converged" and result.iterations < 1000
    assert calls == result.losses
    assert result.best_loss == min(result.losses[: result.best_iteration + 1])
    assert result.iterations - 1 - result.best_iteration == 5


def test_model_keeps_best_parameters_also_when_interrupted():
    x, y = _data()
    model = ExactGPModel(x, y)
    states = []

    def callback(iteration, loss):
        states.append(copy.deepcopy(model.state_dict()))
        if iteration == 12:
            raise KeyboardInterrupt

    # a large learning rate makes the loss go up again, so the best is not the last
    result = gp_ntk.fit(model, lr=0.5, max_iter=100, callback=callback, progress=False)
    assert result.status == "interrupted" and result.iterations == 13
    # the loss at iteration i is that of the parameters before step i, i.e. after step i - 1
    with torch.no_grad():
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
        model.train()
        final = float(-mll(model(*model.train_inputs), model.train_targets))
    assert final == pytest.approx(result.best_loss, rel=1e-10)


class _FlakyKernel(gpytorch.kernels.Kernel):
    """An RBF kernel whose Cholesky 'fails' on chosen calls, as an ill-conditioned fit does."""

    def __init__(self, fail_on):
        super().__init__()
        self.base = gpytorch.kernels.RBFKernel()
        self.fail_on = set(fail_on)
        self.calls = 0

    def forward(self, x1, x2, diag=False, **params):
        self.calls += 1
        if self.calls in self.fail_on:
            raise NotPSDError("matrix not positive definite (test)")
        return self.base.forward(x1, x2, diag=diag, **params)


def test_fault_is_recovered_with_more_jitter_and_smaller_step():
    x, y = _data()
    kernel = _FlakyKernel(fail_on={4})
    model = ExactGPModel(x, y, kernel=kernel)
    result = gp_ntk.fit(model, max_iter=30, lr=0.05, patience=30, progress=False)
    assert len(result.recoveries) == 1 and "NotPSDError" in result.recoveries[0]
    assert "jitter x10" in result.recoveries[0] and "lr 0.025" in result.recoveries[0]
    assert result.iterations == 30 and all(math.isfinite(v) for v in result.losses)


def test_persistent_faults_raise_fit_error_and_keep_best_parameters():
    x, y = _data()
    kernel = _FlakyKernel(fail_on=set(range(6, 100)))
    model = ExactGPModel(x, y, kernel=kernel)
    with pytest.raises(FitError, match="best parameters"):
        gp_ntk.fit(model, max_iter=50, max_recoveries=3, progress=False)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_nan_loss_is_recovered_not_recorded():
    x, y = _data()
    model = ExactGPModel(x, y)
    original = model.forward
    count = {"n": 0}

    def forward(z):
        count["n"] += 1
        out = original(z)
        if count["n"] == 3:
            return gpytorch.distributions.MultivariateNormal(
                out.mean * float("nan"), out.lazy_covariance_matrix
            )
        return out

    model.forward = forward
    result = gp_ntk.fit(model, max_iter=10, patience=10, progress=False)
    assert len(result.recoveries) == 1 and "loss is nan" in result.recoveries[0]
    assert len(result.losses) == 10 and all(math.isfinite(v) for v in result.losses)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "sgd"}, "optimizer must be one of"),
        ({"max_iter": 0}, "max_iter"),
        ({"patience": -1}, "patience"),
        ({"lr": float("nan")}, "lr must be"),
    ],
)
def test_bad_fit_arguments(kwargs, match):
    x, y = _data()
    with pytest.raises(ValueError, match=match):
        gp_ntk.fit(ExactGPModel(x, y), progress=False, **kwargs)


def test_fit_refuses_models_it_cannot_train():
    with pytest.raises(ValueError, match="likelihood"):
        gp_ntk.fit(torch.nn.Linear(2, 1), progress=False)
    x, y = _data()
    model = gp_ntk.models.VariationalGPModel(x, y, num_inducing=8)
    with pytest.raises(ValueError, match="minibatches"):
        gp_ntk.fit(model, optimizer="lbfgs", progress=False)


def test_fit_checks_exact_model_targets():
    x, y = _data()
    model = ExactGPModel(x, y)
    bad = y.clone()
    bad[3] = float("nan")
    model.set_train_data(targets=bad, strict=False)
    with pytest.raises(ValueError, match="train_y contains NaN"):
        gp_ntk.fit(model, progress=False)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("min_delta", float("nan")),
        ("min_delta", float("inf")),
        ("min_delta", -1e-3),
        ("min_delta", "0.1"),
        ("max_recoveries", -1),
        ("max_recoveries", 1.5),
        ("lr", float("inf")),
        ("lr", True),
        ("batch_size", True),
        ("max_iter", 2.0),
        ("seed", "zero"),
        ("progress", "yes"),
        ("callback", 3),
    ],
)
def test_every_numeric_fit_argument_is_checked_before_anything_changes(name, value):
    x, y = _data()
    model = ExactGPModel(x, y)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=name):
        gp_ntk.fit(model, **{"progress": False, name: value})
    after = model.state_dict()
    assert all(torch.equal(after[key], before[key]) for key in before)


def test_overflow_reached_mid_fit_is_recovered():
    # float32 with variances growing like 7**60: a few large Adam steps on the weight variance
    # make the kernel overflow (FloatingPointError) a few iterations in
    torch.manual_seed(0)
    x = torch.randn(40, 3)
    y = 1e3 * torch.sin(x.sum(-1))
    model = ExactGPModel(x, y, kernel=gp_ntk.NNGPKernel(depth=60, weight_variance=7.0))
    result = gp_ntk.fit(model, lr=0.5, max_iter=12, patience=12, progress=False)
    assert result.recoveries and all("FloatingPointError" in r for r in result.recoveries)
    assert result.iterations == 12 and all(math.isfinite(v) for v in result.losses)
    with torch.no_grad():
        model.train()
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
        final = float(-mll(model(*model.train_inputs), model.train_targets))
    assert final == pytest.approx(result.best_loss, rel=1e-5)


class _OverflowingKernel(_FlakyKernel):
    def forward(self, x1, x2, diag=False, **params):
        self.calls += 1
        if self.calls in self.fail_on:
            raise FloatingPointError("kernel overflowed (test)")
        return self.base.forward(x1, x2, diag=diag, **params)


def test_persistent_overflow_raises_fit_error_with_the_result_and_best_parameters():
    x, y = _data()
    model = ExactGPModel(x, y, kernel=_OverflowingKernel(fail_on=set(range(6, 100))))
    states = []
    with pytest.raises(FitError, match="FloatingPointError") as caught:
        gp_ntk.fit(
            model,
            max_iter=50,
            max_recoveries=2,
            progress=False,
            callback=lambda i, v: states.append(copy.deepcopy(model.state_dict())),
        )
    result = caught.value.result
    assert result is not None and result.status == "failed"
    assert len(result.recoveries) == 2 and result.iterations == 5
    assert result.best_loss == min(result.losses)
    # the loss at iteration i is that of the parameters before step i, recorded after step i - 1
    assert result.best_iteration > 0
    best, after = states[result.best_iteration - 1], model.state_dict()
    assert all(torch.equal(after[key], best[key]) for key in best)


def test_progress_defaults_to_the_terminal(monkeypatch, capsys):
    # logs and CI (standard error not a terminal) stay clean unless progress is asked for
    import io
    import sys

    from gp_ntk.fitting import wants_progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert wants_progress(None) is False
    assert wants_progress(True) is True
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert wants_progress(None) is True
    assert wants_progress(False) is False
    with pytest.raises(ValueError, match="progress"):
        wants_progress("yes")
