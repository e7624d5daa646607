"""Tests of gp_ntk.spectral: eigenmodes, the label prior by modes, eigenlearning, NeuralEF."""

from __future__ import annotations

import math

import gpytorch
import pytest
import torch

import gp_ntk
from gp_ntk import spectral


def _ntk(**kwargs):
    return gp_ntk.NTKKernel(
        depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1, **kwargs
    ).double()


def _inputs(n: int, d: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------- eigenmodes


def test_dense_eigenmodes_match_eigh_and_nystrom_formula():
    kernel, x = _ntk(), _inputs(120)
    modes = spectral.eigenmodes(kernel, x, 5)
    matrix = kernel(x).to_dense().detach()
    values, vectors = torch.linalg.eigh(matrix)
    values, vectors = values.flip(-1)[:5], vectors.flip(-1)[:, :5]
    torch.testing.assert_close(modes.eigenvalues, values / 120, rtol=1e-10, atol=0)
    torch.testing.assert_close(modes.matrix_eigenvalues, values, rtol=1e-10, atol=0)
    # same vectors up to sign, and the documented sign rule holds
    cosines = (modes.vectors * vectors).sum(0).abs()
    torch.testing.assert_close(cosines, torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-8)
    largest = modes.vectors.gather(0, modes.vectors.abs().argmax(0, keepdim=True))
    assert bool((largest > 0).all())
    # on the training inputs psi_j = sqrt(n) u_j, mean square 1
    psi = modes(x)
    torch.testing.assert_close(psi, math.sqrt(120) * modes.vectors, rtol=0, atol=1e-9)
    torch.testing.assert_close(psi.square().mean(0), torch.ones(5, dtype=torch.float64), rtol=1e-9, atol=0)
    # at new points: sqrt(n) k(x, X) u / Lambda, written out
    x_new = _inputs(7, seed=1)
    expected = math.sqrt(120) * kernel(x_new, x).to_dense().detach() @ modes.vectors / values
    torch.testing.assert_close(modes(x_new), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["lobpcg", "lanczos"])
def test_iterative_eigenmodes_match_dense(method):
    kernel, x = _ntk(), _inputs(300)
    dense = spectral.eigenmodes(kernel, x, 6, method="dense")
    iterative = spectral.eigenmodes(kernel, x, 6, method=method, tol=1e-10)
    torch.testing.assert_close(iterative.eigenvalues, dense.eigenvalues, rtol=1e-7, atol=0)
    # the 6th and 7th eigenvalues are well separated here, so each vector is determined up to sign,
    # and the sign rule makes them equal
    torch.testing.assert_close(iterative.vectors, dense.vectors, rtol=0, atol=1e-5)


def test_auto_switches_to_lobpcg_above_threshold(monkeypatch):
    kernel, x = _ntk(), _inputs(200)
    dense = spectral.eigenmodes(kernel, x, 4, method="dense")
    calls = []
    original = spectral._top_lobpcg

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(spectral, "DENSE_THRESHOLD", 100)
    monkeypatch.setattr(spectral, "_top_lobpcg", spy)
    auto = spectral.eigenmodes(kernel, x, 4, tol=1e-10)
    assert calls
    torch.testing.assert_close(auto.eigenvalues, dense.eigenvalues, rtol=1e-7, atol=0)


def test_eigenmodes_refuse_bad_input():
    kernel, x = _ntk(), _inputs(20)
    with pytest.raises(ValueError, match="k must be"):
        spectral.eigenmodes(kernel, x, 0)
    with pytest.raises(ValueError, match="k must be"):
        spectral.eigenmodes(kernel, x, 21)
    with pytest.raises(ValueError, match="method"):
        spectral.eigenmodes(kernel, x, 2, method="qr")
    with pytest.raises(ValueError, match="needs n >= 3 k"):
        spectral.eigenmodes(kernel, x, 10, method="lobpcg")
    with pytest.raises(ValueError, match="batch_shape"):
        spectral.eigenmodes(gp_ntk.NTKKernel(batch_shape=torch.Size([2])), x, 2)
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        spectral.eigenmodes(kernel, bad, 2)
    modes = spectral.eigenmodes(kernel, x, 2)
    with pytest.raises(ValueError, match="features"):
        modes(torch.randn(4, 2, dtype=torch.float64))


# ---------------------------------------------------------------------- label prior


@pytest.mark.parametrize("noise", [0.0, 0.05, 1.0])
def test_log_prior_terms_sum_to_multivariate_normal(noise):
    kernel, x = _ntk(), _inputs(40)
    y = torch.sin(x.sum(-1)) + 0.1 * _inputs(40, 1, seed=3).squeeze(-1)
    terms = spectral.log_prior_terms(kernel, x, y, noise=noise)
    covariance = kernel(x).to_dense().detach() + noise * torch.eye(40, dtype=torch.float64)
    expected = gpytorch.distributions.MultivariateNormal(
        torch.zeros(40, dtype=torch.float64), covariance
    ).log_prob(y)
    torch.testing.assert_close(terms.total, expected.detach(), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(terms.terms.sum(), terms.total, rtol=0, atol=0)
    # quadratic part is -y^T C^{-1} y / 2 (the 1/mu_i form), log part -log det(2 pi C) / 2
    torch.testing.assert_close(
        terms.quadratic.sum(), -0.5 * y @ torch.linalg.solve(covariance, y), rtol=1e-8, atol=1e-8
    )
    torch.testing.assert_close(
        terms.log_normaliser.sum(), -0.5 * torch.logdet(2 * math.pi * covariance), rtol=1e-8, atol=1e-8
    )
    assert bool((terms.eigenvalues[:-1] >= terms.eigenvalues[1:]).all())


def test_label_along_top_mode_is_most_probable():
    # unit-norm labels along v_1 cost the least quadratic penalty: the prior prefers them
    kernel, x = _ntk(), _inputs(30)
    base = spectral.log_prior_terms(kernel, x, torch.zeros(30, dtype=torch.float64), noise=0.01)
    top = spectral.log_prior_terms(kernel, x, base.vectors[:, 0], noise=0.01).total
    bottom = spectral.log_prior_terms(kernel, x, base.vectors[:, -1], noise=0.01).total
    assert top > bottom


def test_conditional_log_prior_is_joint_minus_marginal():
    kernel, x, x_test = _ntk(), _inputs(25), _inputs(3, seed=5)
    y = torch.cos(x[:, 0])
    candidates = torch.stack([torch.zeros(3), torch.ones(3), torch.cos(x_test[:, 0])]).double()
    result = spectral.conditional_log_prior(kernel, x, y, x_test, candidates, noise=0.1)
    assert result.shape == (3,)
    marginal = spectral.log_prior_terms(kernel, x, y, noise=0.1).total
    joint = torch.stack(
        [
            spectral.log_prior_terms(kernel, torch.cat([x, x_test]), torch.cat([y, c]), noise=0.1).total
            for c in candidates
        ]
    )
    torch.testing.assert_close(result, joint - marginal, rtol=1e-8, atol=1e-8)
    single = spectral.conditional_log_prior(kernel, x, y, x_test, candidates[1], noise=0.1)
    torch.testing.assert_close(single, result[1], rtol=1e-12, atol=1e-12)


def test_conditional_prefers_the_posterior_mean():
    kernel, x, x_test = _ntk(), _inputs(25), _inputs(2, seed=6)
    y = torch.cos(x[:, 0])
    noise = 0.1
    cov = kernel(torch.cat([x, x_test])).to_dense().detach()
    mean = cov[25:, :25] @ torch.linalg.solve(cov[:25, :25] + noise * torch.eye(25, dtype=torch.float64), y)
    candidates = torch.stack([mean, mean + 0.3, mean - 0.3, -mean])
    density = spectral.conditional_log_prior(kernel, x, y, x_test, candidates, noise=noise)
    assert int(density.argmax()) == 0


def test_label_prior_refuses_bad_input():
    kernel, x = _ntk(), _inputs(10)
    with pytest.raises(ValueError, match="y must be"):
        spectral.log_prior_terms(kernel, x, torch.zeros(9, dtype=torch.float64))
    with pytest.raises(ValueError, match="noise"):
        spectral.log_prior_terms(kernel, x, torch.zeros(10, dtype=torch.float64), noise=-1.0)
    with pytest.raises(ValueError, match="positive definite"):
        # a rank-deficient prior: two copies of every input
        spectral.log_prior_terms(kernel, torch.cat([x, x]), torch.ones(20, dtype=torch.float64))
    with pytest.raises(ValueError, match="candidates"):
        spectral.conditional_log_prior(
            kernel, x, torch.zeros(10).double(), x[:2], torch.zeros(3).double(), 0.1
        )


# ---------------------------------------------------------------------- eigenlearning


def test_eigenlearning_solves_its_equation_and_conserves_learnability():
    values = 1.0 / torch.arange(1, 400, dtype=torch.float64) ** 2
    coefficients = torch.randn(399, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for n, ridge in [(10, 0.0), (50, 1e-3), (50, 1.0)]:
        prediction = spectral.eigenlearning(values, coefficients, n, ridge=ridge, noise=0.1)
        kappa = float(prediction.kappa)
        assert abs(float((values / (values + kappa)).sum()) + ridge / kappa - n) < 1e-8 * n
        torch.testing.assert_close(
            prediction.learnabilities.sum(),
            torch.tensor(n - ridge / kappa, dtype=torch.float64),
            rtol=1e-9,
            atol=1e-9,
        )
        assert float(prediction.overfitting_coefficient) >= 1.0
    # more data learns every mode better
    few = spectral.eigenlearning(values, coefficients, 10, ridge=1e-3)
    many = spectral.eigenlearning(values, coefficients, 100, ridge=1e-3)
    assert bool((many.learnabilities > few.learnabilities).all())
    with pytest.raises(ValueError, match="positive ridge"):
        spectral.eigenlearning(values[:20], coefficients[:20], 30)
    with pytest.raises(ValueError, match="coefficients"):
        spectral.eigenlearning(values, coefficients[:5], 30)


@pytest.mark.slow
def test_eigenlearning_predicts_kernel_regression_on_diabetes():
    """Treat the 442 diabetes points as the data distribution: the spectrum of the NTK on them
    and the labels' eigen-coefficients predict the test MSE of kernel ridge regression on n iid
    draws, which is measured by averaging over draws."""
    sklearn = pytest.importorskip("sklearn.datasets")
    features, labels = sklearn.load_diabetes(return_X_y=True)
    x, y = torch.tensor(features), torch.tensor(labels)
    x, y = (x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std()
    pool = x.shape[0]
    kernel = _ntk()
    modes = spectral.eigenmodes(kernel, x, pool)
    coefficients = modes.vectors.T @ y / math.sqrt(pool)
    matrix = kernel(x).to_dense().detach()
    generator = torch.Generator().manual_seed(0)
    for n, ridge in [(30, 0.03), (100, 10.0), (150, 0.15)]:
        predicted = float(spectral.eigenlearning(modes.eigenvalues, coefficients, n, ridge=ridge).test_mse)
        errors = []
        for _ in range(30):
            index = torch.randint(pool, (n,), generator=generator)
            system = matrix[index][:, index] + ridge * torch.eye(n, dtype=torch.float64)
            fitted = matrix[:, index] @ torch.linalg.solve(system, y[index])
            errors.append(float((fitted - y).square().mean()))
        measured = sum(errors) / len(errors)
        assert abs(predicted - measured) < 0.15 * measured, (n, ridge, predicted, measured)


# ---------------------------------------------------------------------- NeuralEF


def _correlations(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = (a - a.mean(0)) / a.std(0)
    b = (b - b.mean(0)) / b.std(0)
    return (a * b).mean(0) * a.shape[0] / (a.shape[0] - 1)


def _subspace_fit(target: torch.Tensor, basis: torch.Tensor) -> float:
    """Fraction of the variance of ``target`` explained by the span of ``basis``'s columns."""
    design = torch.cat([basis, torch.ones_like(basis[:, :1])], dim=-1)
    solution = torch.linalg.lstsq(design, target.unsqueeze(-1)).solution
    residual = target - (design @ solution).squeeze(-1)
    return 1.0 - float(residual.var() / target.var())


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["moons", "circles"])
def test_neural_eigenfunctions_match_nystrom(dataset):
    sklearn = pytest.importorskip("sklearn.datasets")
    if dataset == "moons":
        points, _ = sklearn.make_moons(n_samples=2500, noise=0.05, random_state=0)
    else:
        points, _ = sklearn.make_circles(n_samples=2500, noise=0.05, factor=0.5, random_state=0)
    x = torch.tensor(points)
    x = (x - x.mean(0)) / x.std(0)
    train, held_out = x[:2000], x[2000:]
    kernel = _ntk()
    modes = spectral.eigenmodes(kernel, train, 6)
    # NeuralEF in float32 (its kernel blocks dominate the cost), the reference in float64
    kernel32 = gp_ntk.NTKKernel(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1)
    nef = spectral.NeuralEigenfunctions(kernel32, num_eigenfunctions=4).fit(
        train.float(), steps=500, batch_size=192
    )
    with torch.no_grad():
        reference, learned = modes(held_out), nef(held_out.float()).double()
    # Ritz values on 4096 > 2000 points, i.e. all of them: within 3 % (measured 0.01-1.7 %); the
    # training moving averages are 11-13 % high on the fourth mode
    torch.testing.assert_close(nef.eigenvalues.double(), modes.eigenvalues[:4], rtol=0.03, atol=0)
    assert bool((nef.eigenvalues.double() <= modes.eigenvalues[:4] * (1 + 1e-5)).all())
    # circles: rotation symmetry makes eigenvalues come in near-degenerate pairs, within which the
    # individual functions are arbitrary; each learned function is compared with the span of the
    # Nystrom modes of its cluster (eigenvalues within 10 % of each other)
    values = modes.eigenvalues
    for j in range(4):
        cluster = [i for i in range(6) if abs(float(values[i] / values[j]) - 1) < 0.1]
        if cluster == [j]:
            correlation = float(_correlations(reference[:, j : j + 1], learned[:, j : j + 1]).abs())
            assert correlation > 0.97, (j, correlation)
        else:
            assert _subspace_fit(learned[:, j], reference[:, cluster]) > 0.9, (j, cluster)
    assert float(learned.square().mean(0).sub(1).abs().max()) < 0.2


def _cube(n: int, d: int = 8, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=generator, dtype=torch.float64) * 2 - 1


def test_neural_eigenvalues_are_bounded_by_the_matrix_spectrum():
    """After the Rayleigh–Ritz step, on its points Z: lambda_j <= Lambda_j(k(Z, Z))/m and so
    sum_j lambda_j <= mean k(x, x); psi is orthonormal and diagonalises k(Z, Z) there. The
    moving averages of R_jj of a short fit break the bound on this kernel (a dominant first mode
    leaks into the others)."""
    x = _cube(400)
    kernel = gp_ntk.NNGPKernel(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1).double()
    nef = spectral.NeuralEigenfunctions(kernel, num_eigenfunctions=8).fit(x, steps=40, batch_size=128)
    with torch.no_grad():
        matrix = kernel(x).to_dense()
        psi = nef(x)
    spectrum = torch.linalg.eigvalsh(matrix).flip(0)[:8] / 400
    mean_diagonal = float(matrix.diagonal().mean())
    assert bool((nef.eigenvalues <= spectrum * (1 + 1e-9)).all()), (nef.eigenvalues, spectrum)
    assert float(nef.eigenvalues.sum()) <= mean_diagonal * (1 + 1e-9)
    assert bool((nef.eigenvalues[:-1] >= nef.eigenvalues[1:]).all())
    torch.testing.assert_close(psi.T @ psi / 400, torch.eye(8, dtype=torch.float64), rtol=0, atol=1e-8)
    torch.testing.assert_close(psi.T @ matrix @ psi / 400**2, torch.diag(nef.eigenvalues), rtol=0, atol=1e-8)
    assert float(nef.training_eigenvalues.sum()) > mean_diagonal


def test_rayleigh_ritz_zeroes_a_repeated_network():
    """Two networks with the same function span one direction: one Ritz value is zero."""
    x = _cube(300, d=3)
    kernel = _ntk()
    nef = spectral.NeuralEigenfunctions(kernel, num_eigenfunctions=3).fit(x, steps=5, batch_size=64)
    with torch.no_grad():
        for weights in list(nef.networks.weights) + list(nef.networks.biases):
            weights[1].copy_(weights[0])
        nef.output_norms[1] = nef.output_norms[0]
    nef.rayleigh_ritz(x)
    assert float(nef.eigenvalues[-1]) == 0.0 and float(nef.eigenvalues[1]) > 0
    with torch.no_grad():
        assert float(nef(x)[:, -1].abs().max()) == 0.0
    with pytest.raises(ValueError, match="points"):
        nef.rayleigh_ritz(x[:3])


def test_neural_eigenfunctions_refuse_bad_use():
    kernel = _ntk()
    nef = spectral.NeuralEigenfunctions(kernel, num_eigenfunctions=3)
    with pytest.raises(ValueError, match="fitted"):
        nef(_inputs(4, 2))
    with pytest.raises(ValueError, match="batch_size"):
        nef.fit(_inputs(50, 2), steps=1, batch_size=3)
    with pytest.raises(ValueError, match="num_eigenfunctions"):
        spectral.NeuralEigenfunctions(kernel, num_eigenfunctions=0)
    with pytest.raises(ValueError, match="ritz_points"):
        nef.fit(_inputs(50, 2), steps=1, batch_size=20, ritz_points=2)
    with pytest.raises(ValueError, match="Rayleigh"):
        nef.fit(_inputs(3, 2), steps=1, batch_size=20)
    assert nef.networks is None
    nef.fit(_inputs(50, 2), steps=3, batch_size=20)
    assert nef(_inputs(5, 2)).shape == (5, 3)
    with pytest.raises(ValueError, match="features"):
        nef(_inputs(5, 3))


@pytest.mark.slow
def test_spectra_example_quick(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "spectra.py"
    spec = importlib.util.spec_from_file_location("gp_ntk_example_spectra", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state = torch.get_rng_state()
    try:
        results = module.main(["--quick", "--output-dir", str(tmp_path)])
    finally:
        torch.set_rng_state(state)
    for name in ("eigenfunctions", "decay", "approximation", "moons_embedding", "eigenlearning"):
        assert (tmp_path / f"spectra_{name}.png").stat().st_size > 10_000
    # the NTK spectrum decays more slowly than the NNGP's at every depth
    for depth in (1, 2, 4):
        assert results["decay"][f"NTKKernel depth {depth}"] > results["decay"][f"NNGPKernel depth {depth}"]
