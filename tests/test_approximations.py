"""Tests of gp_ntk.approximations: random features, SGPR with network kernels, BoTorch paths."""

from __future__ import annotations

import math

import gpytorch
import pytest
import torch
from linear_operator.operators import LowRankRootLinearOperator

import gp_ntk
from gp_ntk import RandomFeatureKernel

BASES = {
    "nngp-erf": lambda: gp_ntk.NNGPKernel(depth=1, activation="erf", weight_variance=2.0, bias_variance=0.1),
    "nngp-relu-ard": lambda: gp_ntk.NNGPKernel(
        depth=1, activation="relu", weight_variance=2.0, bias_variance=0.2, ard_num_dims=3
    ),
    "arccos0": lambda: gp_ntk.ArcCosineKernel(order=0, num_layers=1, bias_variance=0.5),
    "arccos1": lambda: gp_ntk.ArcCosineKernel(order=1, num_layers=1, weight_variance=1.5, bias_variance=0.5),
    "arccos2": lambda: gp_ntk.ArcCosineKernel(order=2, num_layers=1, bias_variance=1.0),
    "erf": lambda: gp_ntk.ErfKernel(weight_variance=1.5, bias_variance=1.0),
    "ntk-relu": lambda: gp_ntk.NTKKernel(depth=1, activation="relu", weight_variance=2.0, bias_variance=0.1),
}


def _inputs(n: int, d: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _relative_error(base, num_features: int, x: torch.Tensor, seeds=range(4)) -> float:
    exact = base(x).to_dense().detach()
    errors = []
    for seed in seeds:
        approx = RandomFeatureKernel(base, num_features=num_features, seed=seed)(x).to_dense().detach()
        errors.append(float((approx - exact).norm() / exact.norm()))
    return sum(errors) / len(errors)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith("ntk") else n for n in sorted(BASES)]
)
def test_error_decays_as_one_over_root_features(name):
    """Slope of log(relative Frobenius error) against log(D): -1/2 for Monte-Carlo features."""
    base, x = BASES[name]().double(), _inputs(40)
    sizes = [128, 512, 2048, 8192] if name != "ntk-relu" else [256, 1024, 4096, 16384]
    errors = [_relative_error(base, size, x) for size in sizes]
    slope = torch.linalg.lstsq(
        torch.stack(
            [torch.log(torch.tensor(sizes, dtype=torch.float64)), torch.ones(4, dtype=torch.float64)], -1
        ),
        torch.log(torch.tensor(errors, dtype=torch.float64)).unsqueeze(-1),
    ).solution[0, 0]
    assert -0.7 < float(slope) < -0.35, (errors, float(slope))
    assert errors[-1] < 0.1


def test_features_are_unbiased():
    # the average of many independent small-D approximations approaches the kernel much faster
    # than any one of them: E[phi(x)^T phi(y)] = k(x, y)
    base, x = gp_ntk.NNGPKernel(depth=1, activation="relu", bias_variance=0.1).double(), _inputs(20)
    exact = base(x).to_dense().detach()
    draws = [RandomFeatureKernel(base, 32, seed=s)(x).to_dense().detach() for s in range(400)]
    single = float((draws[0] - exact).norm() / exact.norm())
    mean = float((torch.stack(draws).mean(0) - exact).norm() / exact.norm())
    assert mean < single / 8


def test_operator_structure_diag_and_cross():
    base = gp_ntk.ArcCosineKernel(order=1, num_layers=2, bias_variance=0.5).double()
    kernel = RandomFeatureKernel(base, 64, seed=3)
    x, z = _inputs(10), _inputs(4, seed=1)
    operator = kernel(x).evaluate_kernel()
    assert isinstance(operator, LowRankRootLinearOperator)
    features_x, features_z = kernel.features(x), kernel.features(z)
    assert features_x.shape == (10, kernel.num_outputs)
    torch.testing.assert_close(kernel(x, z).to_dense(), features_x @ features_z.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kernel(x, diag=True), features_x.square().sum(-1), rtol=1e-12, atol=1e-12)
    # the same seed reproduces the features, another seed does not
    torch.testing.assert_close(RandomFeatureKernel(base, 64, seed=3).features(x), features_x, rtol=0, atol=0)
    kernel.resample(seed=4)
    assert not torch.allclose(kernel.features(x), features_x)
    batched = kernel.features(torch.stack([x, x]))
    assert batched.shape == (2, 10, 64)


def test_nngp_features_are_the_read_out_scaled_hidden_layer(float64_default):
    base = gp_ntk.NNGPKernel(depth=2, activation="erf", weight_variance=1.7, bias_variance=0.3)
    kernel = RandomFeatureKernel(base, 50, seed=1)
    network = gp_ntk.networks.from_kernel(base, 3, 50, generator=torch.Generator().manual_seed(1))
    x = _inputs(6)
    expected = torch.cat(
        [math.sqrt(1.7 / 50) * network.hidden(x), torch.full((6, 1), math.sqrt(0.3), dtype=torch.float64)], -1
    )
    torch.testing.assert_close(kernel.features(x), expected.detach(), rtol=1e-12, atol=1e-12)
    assert kernel.num_outputs == 51


def test_ntk_features_are_parameter_gradients():
    base = gp_ntk.NTKKernel(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1).double()
    kernel = RandomFeatureKernel(base, 600, in_features=3, seed=0)
    network = kernel.feature_map.network
    assert kernel.num_outputs == sum(p.numel() for p in network.parameters()) <= 600
    x = _inputs(3)
    rows = []
    for point in x:
        network.zero_grad()
        network(point.unsqueeze(0)).sum().backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in network.parameters()]))
    torch.testing.assert_close(kernel.features(x), torch.stack(rows), rtol=1e-10, atol=1e-12)


def test_composition_features_are_differentiable_in_the_variances():
    base = gp_ntk.ErfKernel(weight_variance=1.2, bias_variance=0.7).double()
    kernel = RandomFeatureKernel(base, 16, in_features=2, seed=0)
    x = _inputs(5, 2)

    def value(raw_weight, raw_bias):
        base.raw_weight_variance.data.zero_()
        base.raw_bias_variance.data.zero_()
        base.raw_weight_variance.data += raw_weight.detach()
        base.raw_bias_variance.data += raw_bias.detach()
        return kernel.features(x)

    raw_w = base.raw_weight_variance.detach().clone()
    raw_b = base.raw_bias_variance.detach().clone()
    loss = kernel.features(x).square().sum()
    loss.backward()
    gradient = base.raw_weight_variance.grad.clone()
    step = 1e-6
    plus = value(raw_w + step, raw_b).square().sum()
    minus = value(raw_w - step, raw_b).square().sum()
    torch.testing.assert_close(
        gradient, ((plus - minus) / (2 * step)).reshape(1).detach(), rtol=1e-5, atol=1e-8
    )


def test_random_feature_kernel_refuses_bad_input():
    with pytest.raises(ValueError, match="base_kernel"):
        RandomFeatureKernel(gpytorch.kernels.RBFKernel(), 10)
    with pytest.raises(ValueError, match="num_features"):
        RandomFeatureKernel(gp_ntk.ErfKernel(), 0)
    with pytest.raises(ValueError, match="batch_shape"):
        RandomFeatureKernel(gp_ntk.ErfKernel(batch_shape=torch.Size([2])), 10)
    with pytest.raises(ValueError, match="standard"):
        RandomFeatureKernel(gp_ntk.NTKKernel(parameterization="standard", width=10), 100, in_features=2)
    kernel = RandomFeatureKernel(gp_ntk.ErfKernel(), 8, in_features=2)
    with pytest.raises(ValueError, match="2 features"):
        kernel.features(torch.randn(3, 4))
    with pytest.raises(ValueError, match="NaN"):
        kernel.features(torch.tensor([[0.0, float("nan")]]))


class _GP(gpytorch.models.ExactGP):
    def __init__(self, x, y, covar, likelihood):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ZeroMean()
        self.covar_module = covar

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _predict(covar, x, y, x_test, noise=0.01):
    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    likelihood.noise = noise
    model = _GP(x, y, covar, likelihood).double().eval()
    with torch.no_grad():
        posterior = model(x_test)
    return posterior.mean, posterior.variance


@pytest.mark.slow
def test_random_feature_gp_approaches_the_exact_gp():
    base = gp_ntk.NNGPKernel(depth=1, activation="relu", weight_variance=2.0, bias_variance=0.1).double()
    x, x_test = _inputs(60), _inputs(30, seed=2)
    y = torch.sin(x.sum(-1))
    mean, variance = _predict(base, x, y, x_test, noise=0.1)
    errors = []
    for size in (64, 2048):
        rf_mean, _ = _predict(RandomFeatureKernel(base, size, seed=0), x, y, x_test, noise=0.1)
        errors.append(float((rf_mean - mean).norm() / mean.norm()))
    assert errors[1] < errors[0] / 3 and errors[1] < 0.1, errors


def test_sgpr_with_network_kernel():
    """InducingPointKernel around a gp_ntk kernel: exact with the training inputs as inducing
    points, and closer to the exact GP as the number of inducing points grows."""
    base = gp_ntk.NTKKernel(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1).double()
    x, x_test = _inputs(80), _inputs(20, seed=2)
    y = torch.sin(x.sum(-1))
    mean, variance = _predict(base, x, y, x_test)

    def sgpr(inducing):
        likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
        likelihood.noise = 0.01
        covar = gpytorch.kernels.InducingPointKernel(
            base, inducing_points=inducing.clone(), likelihood=likelihood
        )
        model = _GP(x, y, covar, likelihood).double().eval()
        with torch.no_grad():
            posterior = model(x_test)
        return posterior.mean, posterior.variance

    full_mean, full_variance = sgpr(x)
    torch.testing.assert_close(full_mean, mean, rtol=1e-5, atol=1e-6)
    errors = [float((sgpr(x[:m])[0] - mean).norm() / mean.norm()) for m in (5, 20, 60)]
    assert errors[0] > errors[1] > errors[2], errors


@pytest.mark.parametrize(
    "covar",
    [
        lambda: gpytorch.kernels.ScaleKernel(gp_ntk.NNGPKernel(depth=2, bias_variance=0.1)),
        lambda: gpytorch.kernels.ScaleKernel(RandomFeatureKernel(gp_ntk.ArcCosineKernel(order=1), 256)),
        lambda: gp_ntk.ErfKernel(),
    ],
    ids=["nngp", "random-feature", "erf"],
)
def test_botorch_matheron_paths_match_the_posterior(covar):
    from botorch.models import SingleTaskGP
    from botorch.sampling.pathwise import draw_matheron_paths

    import gp_ntk.bo  # noqa: F401  (registers the pathwise feature maps)

    x = torch.rand(15, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.sin(6 * x).sum(-1, keepdim=True)
    model = SingleTaskGP(x, y, covar_module=covar().double()).eval()
    torch.manual_seed(0)
    paths = draw_matheron_paths(model, sample_shape=torch.Size([4000]))
    x_test = torch.rand(6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        samples = paths(x_test)
        posterior = model.posterior(x_test)
    std = posterior.variance.squeeze(-1).sqrt()
    # Monte-Carlo error of 4000 paths, plus the feature approximation of the prior (512+ features)
    assert float(((samples.mean(0) - posterior.mean.squeeze(-1)).abs() / std).max()) < 0.15
    torch.testing.assert_close(samples.std(0), std, rtol=0.15, atol=0)


@pytest.mark.slow
def test_botorch_optimal_samples_with_network_kernel():
    from botorch.acquisition.utils import get_optimal_samples
    from botorch.models import SingleTaskGP

    import gp_ntk.bo  # noqa: F401  (registers the pathwise feature maps)

    # centred inputs: a network kernel on [0, 1]^d extrapolates towards a corner (docs/kernels.md)
    x = 2 * torch.rand(20, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 1
    y = -((x - 0.3) ** 2).sum(-1, keepdim=True)
    covar = gpytorch.kernels.ScaleKernel(gp_ntk.NNGPKernel(depth=2, bias_variance=0.1))
    model = SingleTaskGP(x, y, covar_module=covar.double()).eval()
    bounds = torch.tensor([[-1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    torch.manual_seed(0)
    optimal_x, optimal_f = get_optimal_samples(
        model, bounds=bounds, num_optima=8, raw_samples=256, num_restarts=2
    )
    assert optimal_x.shape == (8, 2) and optimal_f.shape == (8, 1)
    assert bool(((optimal_x >= -1) & (optimal_x <= 1)).all())
    # the sampled optima cluster around the true maximiser (0.3, 0.3), the range spans 2.8
    assert float((optimal_x - 0.3).norm(dim=-1).median()) < 0.3


@pytest.mark.slow
def test_random_features_benchmark_smoke():
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(
            "gp_ntk_benchmark_random_features", folder / "random_features.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        rows = module.main(
            ["--n", "3000", "--compare-n", "400", "--features", "64", "--test", "100", "--chunk", "1000"]
        )
    finally:
        sys.path.remove(str(folder))
    assert len(rows) == 4
    assert all(math.isfinite(seconds) and seconds >= 0 for _, seconds, _, _ in rows)


# ---------------------------------------------------------------------- NeuralEF kernel


def _fitted_eigenfunctions(k: int = 3, seed: int = 0):
    from gp_ntk.spectral import NeuralEigenfunctions

    x = _inputs(120, d=2, seed=seed)
    kernel = gp_ntk.NNGPKernel(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1).double()
    return NeuralEigenfunctions(kernel, num_eigenfunctions=k).fit(x, steps=15, batch_size=48, seed=seed), x


def test_neural_ef_kernel_is_the_truncated_mercer_expansion():
    """k(X, X) = Psi diag(lambda) Psi^T with Psi the fitted eigenfunctions, as a low-rank root."""
    nef, x = _fitted_eigenfunctions()
    kernel = nef.as_kernel()
    assert isinstance(kernel, gp_ntk.approximations.NeuralEFKernel) and kernel.num_outputs == 3
    x_new = _inputs(9, d=2, seed=5)
    with torch.no_grad():
        psi, psi_new = nef(x), nef(x_new)
        operator = kernel(x).evaluate_kernel()
        matrix, cross, diagonal = operator.to_dense(), kernel(x, x_new).to_dense(), kernel(x_new, diag=True)
    lam = nef.eigenvalues
    assert isinstance(operator, LowRankRootLinearOperator) and operator.root.shape == (120, 3)
    torch.testing.assert_close(matrix, psi @ torch.diag(lam) @ psi.T, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(cross, psi @ torch.diag(lam) @ psi_new.T, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(diagonal, (psi_new.square() * lam).sum(-1), rtol=1e-10, atol=1e-12)
    # chunked evaluation of the networks changes nothing
    chunked = gp_ntk.approximations.NeuralEFKernel(nef, chunk_size=7)
    with torch.no_grad():
        torch.testing.assert_close(chunked.features(x), kernel.features(x), rtol=1e-12, atol=1e-14)
        batched = kernel.features(x.reshape(4, 30, 2))
    torch.testing.assert_close(batched.reshape(120, 3), kernel.features(x).detach(), rtol=1e-12, atol=1e-14)


def test_neural_ef_kernel_gp_uses_the_low_rank_structure_with_finite_gradients():
    nef, x = _fitted_eigenfunctions(k=4)
    y = torch.sin(3 * x[:, 0]) + x[:, 1]
    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    likelihood.noise = 0.05
    model = _GP(x, y, gpytorch.kernels.ScaleKernel(nef.as_kernel()).double(), likelihood).double()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    model.train()
    with gpytorch.settings.max_cholesky_size(0):
        prior = likelihood(model(x))
        # Woodbury solves and the determinant lemma: O(n k^2), the n x n matrix never formed
        assert type(prior.lazy_covariance_matrix.evaluate_kernel()).__name__ == (
            "LowRankRootAddedDiagLinearOperator"
        )
        loss = -mll(model(x), y)
        loss.backward()
    dense = model.covar_module(x).to_dense().detach() + 0.05 * torch.eye(120, dtype=torch.float64)
    expected = torch.distributions.MultivariateNormal(torch.zeros(120, dtype=torch.float64), dense).log_prob(
        y
    )
    # Woodbury against Cholesky: rounding of the two routes, relative to |log p| of a few hundred
    torch.testing.assert_close(-loss.detach() * 120, expected, rtol=1e-6, atol=1e-8)
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in trained)
    # the eigenfunction networks are a frozen copy: nothing for the optimiser to change
    assert all(not p.requires_grad for p in model.covar_module.base_kernel.eigenfunctions.parameters())
    model.eval()
    x_new = _inputs(5, d=2, seed=7).requires_grad_(True)
    model(x_new).mean.sum().backward()
    assert x_new.grad is not None and bool(torch.isfinite(x_new.grad).all())


def test_neural_ef_kernel_keeps_its_copy_and_refuses_bad_input():
    from gp_ntk.spectral import NeuralEigenfunctions

    nef, x = _fitted_eigenfunctions()
    kernel = nef.as_kernel()
    with torch.no_grad():
        before = kernel(x).to_dense()
    nef.fit(x, steps=3, batch_size=48, seed=1)
    with torch.no_grad():
        # bitwise: the kernel's copy is untouched by refitting the original
        torch.testing.assert_close(kernel(x).to_dense(), before, rtol=0, atol=0)
    with pytest.raises(ValueError, match="NeuralEigenfunctions"):
        gp_ntk.approximations.NeuralEFKernel(gp_ntk.NNGPKernel())
    with pytest.raises(ValueError, match="fitted"):
        gp_ntk.approximations.NeuralEFKernel(NeuralEigenfunctions(gp_ntk.NNGPKernel(), 2))
    with pytest.raises(ValueError, match="chunk_size"):
        gp_ntk.approximations.NeuralEFKernel(nef, chunk_size=0)
    with pytest.raises(ValueError, match="features"):
        kernel.features(torch.randn(3, 5, dtype=torch.float64))


def test_unit_variance_features_keep_the_exact_unit_diagonal_and_converge():
    base = gp_ntk.NNGPKernel(depth=2, bias_variance=0.3).double()
    kernel = gp_ntk.UnitVarianceKernel(base)
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = kernel(x).to_dense()
    errors = []
    for num_features in (64, 4096):
        approx = RandomFeatureKernel(kernel, num_features=num_features).double()
        dense = approx(x).to_dense()
        torch.testing.assert_close(dense.diagonal(), torch.ones(40, dtype=torch.float64), rtol=1e-12, atol=0)
        errors.append(float((dense - exact).abs().max()))
    # entrywise error O(1/sqrt(D)): 64 times the features, about 8 times smaller
    assert errors[1] < errors[0] / 3 and errors[1] < 0.06


def test_unit_variance_features_refuse_an_unsupported_inner_kernel():
    with pytest.raises(ValueError, match="UnitVarianceKernel around one"):
        RandomFeatureKernel(gp_ntk.UnitVarianceKernel(gpytorch.kernels.RBFKernel()), num_features=8)


@pytest.mark.slow
@pytest.mark.parametrize("activation", [None, "relu"], ids=["default", "relu"])
def test_botorch_matheron_paths_with_the_bo_default(activation):
    pytest.importorskip("botorch")
    import functools

    from botorch.sampling.pathwise import draw_matheron_paths
    from botorch.sampling.pathwise.prior_samplers import draw_kernel_feature_paths

    from gp_ntk.bo import make_bo_model

    x = torch.rand(15, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.sin(6 * x).sum(-1, keepdim=True)
    bounds = torch.stack([torch.zeros(3), torch.ones(3)]).double()
    options = {} if activation is None else {"activation": activation}
    model = make_bo_model(x, y, bounds, **options).eval()
    x_test = torch.rand(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        posterior = model.posterior(x_test)
    mean, std = posterior.mean.squeeze(-1), posterior.variance.squeeze(-1).sqrt()
    std_errors = []
    for num_features in (256, 4096):
        torch.manual_seed(0)
        sampler = functools.partial(draw_kernel_feature_paths, num_features=num_features)
        paths = draw_matheron_paths(model, sample_shape=torch.Size([2000]), prior_sampler=sampler)
        with torch.no_grad():
            samples = paths(x_test)
        assert samples.shape == (2000, 6) and bool(torch.isfinite(samples).all())
        # the update uses the exact kernel, so the paths' mean is the posterior mean at any D
        assert float(((samples.mean(0) - mean).abs() / std).max()) < 0.2
        std_errors.append(float(((samples.std(0) - std) / std).abs().max()))
    # the NTK's gradient features converge slowly (docs/bo.md#8-limitations), but they converge;
    # those of ReLU squared, the default, so slowly (benchmarks/bo_features.py) that 256 and 4096
    # features need not be in order for one draw
    if activation == "relu":
        assert std_errors[1] < std_errors[0]
