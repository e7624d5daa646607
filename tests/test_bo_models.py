"""gp_ntk.bo.models: network kernels as BoTorch surrogates (the adoption line, finite acquisition
gradients, bo_kernel's priors, make_bo_model).

Runs with tiny budgets (a few points, 2 restarts): what is checked is that every piece works, not
how well BO optimises; that is measured by ``benchmarks/bo.py``.
"""

from __future__ import annotations

import copy
import math
import pickle

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
from botorch.test_functions import Branin, Hartmann
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


def test_bo_kernel_default_is_the_unit_variance_ard_relu_squared_ntk_with_its_priors() -> None:
    kernel = bo.bo_kernel(num_dims=4)
    assert isinstance(kernel, ScaleKernel) and isinstance(kernel.base_kernel, bo.UnitVarianceKernel)
    network = kernel.base_kernel.base_kernel
    assert type(network) is gp_ntk.NTKKernel and network.depth == 3
    assert network.activation == gp_ntk.ArcCos(2)
    assert bo.make_bo_model(
        torch.rand(5, 4), torch.rand(5, 1)
    ).covar_module.base_kernel.base_kernel.activation == (gp_ntk.ArcCos(2))
    relu = bo.bo_kernel(num_dims=4, activation="relu").base_kernel.base_kernel
    assert isinstance(relu.activation, gp_ntk.ReLU)
    assert network.input_weight_variance.shape == (1, 4)  # ARD: one first-layer variance per feature
    names = {name for name, *_ in kernel.named_priors()}
    assert names == {
        "outputscale_prior",
        "base_kernel.base_kernel.weight_variance_prior",
        "base_kernel.base_kernel.input_weight_variance_prior",
        "base_kernel.base_kernel.bias_variance_prior",
    }
    # the priors' modes and log-scales, and the initial values at the modes
    expected = {
        "outputscale": (kernel.outputscale_prior, kernel.outputscale, 1.0, 1.0),
        "weight": (network.weight_variance_prior, network.weight_variance, 2.0, 1.0),
        "input weight": (network.input_weight_variance_prior, network.input_weight_variance, 2.0, 1.0),
        "bias": (network.bias_variance_prior, network.bias_variance, 1.0, 1.5),
    }
    for name, (prior, value, mode, scale) in expected.items():
        assert float(prior.mode) == pytest.approx(mode, rel=1e-6), name
        assert float(prior.scale) == pytest.approx(scale, rel=1e-6), name
        torch.testing.assert_close(value.detach(), torch.full_like(value, mode), rtol=1e-5, atol=0)
    for constraint in (
        network.raw_weight_variance_constraint,
        network.raw_input_weight_variance_constraint,
        network.raw_bias_variance_constraint,
        kernel.raw_outputscale_constraint,
    ):
        assert float(constraint.lower_bound) == pytest.approx(1e-4)
    assert not list(bo.bo_kernel("ntk", 4, priors=False).named_priors())
    # without num_dims there is nothing to be ARD over: one shared weight variance
    assert bo.bo_kernel("ntk").base_kernel.base_kernel.input_weight_variance is None


@pytest.mark.parametrize("name", ["nngp", "arccos", "erf"])
def test_other_bo_kernels_take_the_same_priors_and_structure(name: str) -> None:
    kernel = bo.bo_kernel(name, 5)
    network = kernel.base_kernel.base_kernel
    assert isinstance(kernel.base_kernel, bo.UnitVarianceKernel)
    assert network.input_weight_variance.shape == (1, 5)
    weight_mode = bo.priors.weight_variance_mode(name, 5)
    assert float(network.input_weight_variance_prior.mode) == pytest.approx(weight_mode, rel=1e-6)
    assert float(network.bias_variance_prior.mode) == pytest.approx(1.0, rel=1e-6)
    assert float(network.bias_variance_prior.scale) == pytest.approx(1.5)
    plain = bo.bo_kernel(name, 5, ard=False, normalize=False).base_kernel
    assert not isinstance(plain, bo.UnitVarianceKernel) and plain.input_weight_variance is None


def test_make_bo_model_default_builds_the_unit_variance_ard_ntk_in_float64() -> None:
    X, Y = _data(9, 3)
    model = bo.make_bo_model(X, Y, _unit_bounds(3))
    network = model.covar_module.base_kernel.base_kernel
    assert type(network) is gp_ntk.NTKKernel and network.input_weight_variance.shape == (1, 3)
    assert isinstance(model.input_transform, bo.CenteredNormalize)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    # the previous default stays one call away
    previous = bo.make_bo_model(X, Y, _unit_bounds(3), kernel="nngp", ard=False, normalize=False)
    assert type(previous.covar_module.base_kernel) is gp_ntk.NNGPKernel


def test_make_bo_model_default_batches_over_data_and_outputs() -> None:
    X, Y = _data(8, 3)
    batch_X = torch.stack([X, X.flip(0)])
    batch_Y = torch.stack([Y, -Y])
    model = bo.make_bo_model(batch_X, torch.cat([batch_Y, batch_Y**2], dim=-1), _unit_bounds(3))
    assert model.covar_module.batch_shape == torch.Size([2, 2])
    assert model.covar_module.base_kernel.base_kernel.input_weight_variance.shape == (2, 2, 1, 3)
    model.eval()
    posterior = model.posterior(torch.rand(4, 3, dtype=DTYPE))
    assert posterior.mean.shape == (2, 4, 2) and torch.isfinite(posterior.variance).all()


def test_make_bo_model_default_fits_branin_with_finite_acquisition_gradients() -> None:
    problem = Branin(negate=True).to(DTYPE)
    generator = torch.Generator().manual_seed(0)
    bounds = problem.bounds.to(DTYPE)
    X = bounds[0] + (bounds[1] - bounds[0]) * torch.rand(12, 2, generator=generator, dtype=DTYPE)
    Y = problem(X).unsqueeze(-1)
    model = bo.make_bo_model(X, Y, bounds)
    assert bo.fit_bo_model(model).succeeded
    network = model.covar_module.base_kernel.base_kernel
    for value in (network.input_weight_variance, network.bias_variance, model.likelihood.noise):
        assert torch.isfinite(value).all() and (value > 0).all()
    acquisition = qLogNoisyExpectedImprovement(
        model, X_baseline=X, sampler=SobolQMCNormalSampler(torch.Size([32]), seed=0)
    )
    candidates = bounds[0] + (bounds[1] - bounds[0]) * torch.rand(6, 1, 2, generator=generator, dtype=DTYPE)
    candidates = torch.cat([candidates, X[:3].unsqueeze(1)]).requires_grad_(True)
    acquisition(candidates).sum().backward()
    assert torch.isfinite(candidates.grad).all() and bool((candidates.grad != 0).any())


def test_make_bo_model_default_survives_pickle_and_deepcopy() -> None:
    X, Y = _data(8, 3)
    model = bo.make_bo_model(X, Y, _unit_bounds(3))
    model.eval()
    test_X = torch.rand(5, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(2))
    expected = model.posterior(test_X).mean
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        clone.eval()
        torch.testing.assert_close(clone.posterior(test_X).mean, expected, rtol=0, atol=0)
        assert len(list(clone.named_priors())) == 5  # outputscale, three variances, noise


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
        kernel = bo.bo_kernel(name, 8, ard=False, normalize=False)
        torch.testing.assert_close(float(kernel.base_kernel.weight_variance), 2.0 / 8, rtol=1e-6, atol=0)
        ard = bo.bo_kernel(name, 8).base_kernel.base_kernel.input_weight_variance
        torch.testing.assert_close(ard, torch.full_like(ard, 2.0 / 8), rtol=1e-6, atol=0)


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
    network = model.covar_module.base_kernel.base_kernel
    before = network.input_weight_variance.clone()
    torch.manual_seed(3)
    sample_all_priors(model)
    after = network.input_weight_variance
    assert not torch.equal(before, after)
    assert torch.isfinite(after).all() and (after > 0).all()


def test_priors_make_the_fit_independent_of_the_starting_point() -> None:
    """Outputscale, weight and bias variances overlap; with the priors the MAP fit is unique."""
    problem = Hartmann(dim=6, negate=True).to(DTYPE)
    X = torch.rand(30, 6, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    Y = problem(X).unsqueeze(-1)
    fitted = []
    for start in range(3):
        model = bo.make_bo_model(X, Y, problem.bounds.to(DTYPE))
        network = model.covar_module.base_kernel.base_kernel
        if start:
            generator = torch.Generator().manual_seed(start)
            model.covar_module.outputscale = float(torch.empty(1).log_normal_(0.0, 1.5, generator=generator))
            network.bias_variance = float(torch.empty(1).log_normal_(0.0, 1.0, generator=generator))
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        fitted.append(
            torch.cat(
                [
                    model.covar_module.outputscale.reshape(1),
                    network.weight_variance,
                    network.input_weight_variance.flatten(),
                    network.bias_variance,
                ]
            ).detach()
        )
    for other in fitted[1:]:
        torch.testing.assert_close(other, fitted[0], rtol=0.05, atol=0)

    # and each value stays in its prior's central 99.9 % region (the bias prior is broad on purpose)
    def central(prior) -> tuple[float, float]:
        loc, width = float(prior.loc), 3.29 * float(prior.scale)
        return math.exp(loc - width), math.exp(loc + width)

    kernel = model.covar_module
    network = kernel.base_kernel.base_kernel
    scale, weight, *inputs, bias = fitted[0].tolist()
    for value, prior in (
        (scale, kernel.outputscale_prior),
        (weight, network.weight_variance_prior),
        (bias, network.bias_variance_prior),
        *((value, network.input_weight_variance_prior) for value in inputs),
    ):
        low, high = central(prior)
        assert low < value < high


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


def test_make_bo_model_takes_a_likelihood_and_refuses_it_with_known_noise() -> None:
    from gpytorch.likelihoods import GaussianLikelihood
    from gpytorch.priors import GammaPrior

    X, Y = _data(8, 2)
    likelihood = GaussianLikelihood(noise_prior=GammaPrior(1.1, 0.05)).to(X)
    model = bo.make_bo_model(X, Y, _unit_bounds(2), likelihood=likelihood)
    assert model.likelihood is likelihood
    assert bo.fit_bo_model(model).succeeded
    assert torch.isfinite(model.posterior(torch.rand(3, 2, dtype=DTYPE)).variance).all()
    with pytest.raises(ValueError, match="either train_Yvar .* or likelihood"):
        bo.make_bo_model(X, Y, _unit_bounds(2), train_Yvar=torch.full_like(Y, 1e-3), likelihood=likelihood)
    with pytest.raises(ValueError, match="likelihood must be a gpytorch Likelihood, got str"):
        bo.make_bo_model(X, Y, _unit_bounds(2), likelihood="gaussian")


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


def _count_kernel_blocks(monkeypatch, model) -> list[tuple[int, int]]:
    """The (rows, columns) of every block the model's network kernel evaluates from now on."""
    calls = []
    network = model.covar_module.base_kernel
    original = type(network).forward

    def counting(self, x1, x2, **kwargs):
        calls.append((x1.shape[-2], x2.shape[-2]))
        return original(self, x1, x2, **kwargs)

    monkeypatch.setattr(type(network), "forward", counting)
    return calls


def _as_plain_single_task_gp(model: bo.NetworkSingleTaskGP) -> SingleTaskGP:
    """The same modules in BoTorch's own SingleTaskGP (GPyTorch's two-block prediction)."""
    plain = copy.deepcopy(model)
    plain.__class__ = SingleTaskGP
    return plain


@pytest.mark.parametrize("batched", [False, True], ids=["one-output", "batched-two-outputs"])
def test_network_single_task_gp_predicts_as_single_task_gp_with_one_kernel_block(
    monkeypatch, batched
) -> None:
    X, Y = _data(12, 3)
    if batched:
        X, Y = torch.stack([X, X.flip(0)]), torch.cat([torch.stack([Y, -Y]), torch.stack([Y**2, Y])], dim=-1)
    model = bo.make_bo_model(X, Y, _unit_bounds(3))
    assert type(model) is bo.NetworkSingleTaskGP and isinstance(model, SingleTaskGP)
    plain = _as_plain_single_task_gp(model)
    model.eval()
    plain.eval()
    generator = torch.Generator().manual_seed(4)
    # candidates in a batch of restarts, one of them a training point (a duplicate column)
    test_X = torch.rand(4, *X.shape[:-2], 2, 3, dtype=DTYPE, generator=generator)
    test_X[(0,) * (test_X.dim() - 1)] = X[(0,) * (X.dim() - 1)]
    for m in (model, plain):
        m.posterior(test_X)  # (the first prediction also factorises k(X, X))
    calls = _count_kernel_blocks(monkeypatch, model)
    for observation_noise in (False, True):
        calls.clear()
        x = test_X.clone().requires_grad_(True)
        posterior = model.posterior(x, observation_noise=observation_noise)
        mean, covariance = posterior.mean, posterior.mvn.covariance_matrix
        assert calls == [(2, 12 + 2)]  # one block: the test rows against [train; test]
        # (batched outputs: the test block is one per output; exactly symmetric, as GPyTorch's)
        test_block = posterior.mvn.lazy_covariance_matrix.to_dense()
        assert torch.equal(test_block, test_block.mT)
        x_plain = test_X.clone().requires_grad_(True)
        expected = plain.posterior(x_plain, observation_noise=observation_noise)
        assert len(calls) == 3  # GPyTorch's own path: two blocks
        torch.testing.assert_close(mean, expected.mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(covariance, expected.mvn.covariance_matrix, rtol=1e-10, atol=1e-12)
        weights = torch.randn(covariance.shape, dtype=DTYPE, generator=generator)
        (grad,) = torch.autograd.grad(mean.sum() + (weights * covariance).sum(), x)
        (grad_plain,) = torch.autograd.grad(
            expected.mean.sum() + (weights * expected.mvn.covariance_matrix).sum(), x_plain
        )
        torch.testing.assert_close(grad, grad_plain, rtol=1e-9, atol=1e-10)


def test_network_single_task_gp_takes_gpytorch_path_beyond_its_limits(monkeypatch) -> None:
    import gpytorch

    import gp_ntk.bo.models as bo_models

    X, Y = _data(10, 3)
    model = bo.make_bo_model(X, Y, _unit_bounds(3))
    model.eval()
    test_X = torch.rand(3, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    one_block = model.posterior(test_X)  # (and k(X, X), factorised once)
    calls = _count_kernel_blocks(monkeypatch, model)
    with monkeypatch.context() as patch:
        patch.setattr(bo_models, "ONE_BLOCK_MAX_ENTRIES", 3 * 12)
        two_blocks = model.posterior(test_X)
    assert sorted(calls) == [(3, 3), (3, 10)]
    torch.testing.assert_close(two_blocks.mean, one_block.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(two_blocks.variance, one_block.variance, rtol=1e-10, atol=1e-12)
    calls.clear()
    with gpytorch.settings.lazily_evaluate_kernels(False):
        eager = model.posterior(test_X)
    assert calls == [(13, 13)]  # GPyTorch evaluates the joint matrix itself
    torch.testing.assert_close(eager.mean, one_block.mean, rtol=1e-12, atol=1e-12)


def test_network_single_task_gp_conditions_fantasizes_and_pickles() -> None:
    X, Y = _data(9, 3)
    model = bo.make_bo_model(X, Y, _unit_bounds(3))
    model.eval()
    test_X = torch.rand(2, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(3))
    model.posterior(test_X)  # (conditioning needs a prediction strategy)
    conditioned = model.condition_on_observations(
        model.transform_inputs(test_X), torch.zeros(2, 1, dtype=DTYPE)
    )
    assert type(conditioned) is bo.NetworkSingleTaskGP
    fantasy = model.fantasize(test_X, SobolQMCNormalSampler(torch.Size([3]), seed=0))
    assert type(fantasy) is bo.NetworkSingleTaskGP
    assert fantasy.posterior(test_X).mean.shape == (3, 2, 1)
    clone = pickle.loads(pickle.dumps(model))
    assert type(clone) is bo.NetworkSingleTaskGP
    torch.testing.assert_close(clone.posterior(test_X).mean, model.posterior(test_X).mean, rtol=0, atol=0)
