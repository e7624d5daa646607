"""A random-feature GP at large N: fit and predict in O(N D^2) time and O(chunk D + D^2) memory.

:class:`gp_ntk.RandomFeatureKernel` gives :math:`\\hat k(x, y) = \\phi(x)^\\top\\phi(y)` with
:math:`D` features; a GP with that kernel, output scale :math:`s^2` and noise :math:`\\sigma^2`
is Bayesian linear regression on the features. Everything it needs from the data is the
sufficient statistics :math:`A = \\Phi^\\top\\Phi`, :math:`b = \\Phi^\\top y`, :math:`y^\\top y`,
accumulated here chunk by chunk, so the N x D feature matrix never exists either. With
:math:`A = Q\\,\\mathrm{diag}(a)\\,Q^\\top`, :math:`c = Q^\\top b`:

.. math::
    -2\\log p(y) = N\\log 2\\pi + (N - D)\\log\\sigma^2 + \\sum_i \\log(s^2 a_i + \\sigma^2)
        + \\sigma^{-2}\\Big(y^\\top y - \\sum_i \\frac{c_i^2}{a_i + \\sigma^2/s^2}\\Big),

maximised over :math:`(s^2, \\sigma^2)` (the kernel's own variances stay at their given
values); the predictive mean is :math:`\\phi_*^\\top(A + \\sigma^2/s^2 I)^{-1}b`, the variance
:math:`\\sigma^2\\phi_*^\\top(A + \\sigma^2/s^2 I)^{-1}\\phi_*`.

The script times the feature statistics ("fit"), the evidence maximisation and prediction at
``--n`` points, with the peak resident memory above the start of each phase; then, at
``--compare-n`` points, it compares the random-feature GP with the exact GP (gp_ntk's lazy
blocked kernel, CG) at the same hyperparameters: predictive means and test RMSE.

Usage::

    python benchmarks/random_features.py --quick                   # N = 20 000, compare at 2 000
    python benchmarks/random_features.py --n 1000000 --compare-n 5000 --features 256
    python benchmarks/random_features.py --n 5000 --compare-n 5000 --compare-features 256,1024,4096

Data: ``benchmarks/large_n.py``'s generator (inputs uniform in [-1, 1]^d, a smooth target of a
few projections, noise sd 0.1).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import gpytorch
import numpy as np
import torch
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parent))

from large_n import PeakMemory, make_data  # noqa: E402

import gp_ntk  # noqa: E402


def feature_statistics(kernel: gp_ntk.RandomFeatureKernel, x: torch.Tensor, y: torch.Tensor, chunk: int):
    size = kernel.num_outputs
    gram = torch.zeros(size, size, dtype=torch.float64)
    projection = torch.zeros(size, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            features = kernel.features(x[start : start + chunk]).double()
            gram += features.T @ features
            projection += features.T @ y[start : start + chunk].double()
    return gram, projection, float(y.double().square().sum())


def fit_scales(gram: torch.Tensor, projection: torch.Tensor, yy: float, n: int, steps: int = 2000):
    """(outputscale, noise) maximising the evidence; returns them and the log evidence per point."""
    values, vectors = torch.linalg.eigh(gram)
    values = values.clamp_min(0)
    coefficients = vectors.T @ projection
    size = gram.shape[0]
    a, c2 = values.numpy(), coefficients.square().numpy()

    def negative_log_evidence(log_values: np.ndarray) -> float:
        scale, noise = np.exp(log_values)
        quadratic = (yy - (c2 / (a + noise / scale)).sum()) / noise
        logdet = (n - size) * math.log(noise) + np.log(scale * a + noise).sum()
        return 0.5 * (quadratic + logdet + n * math.log(2 * math.pi))

    result = minimize(
        negative_log_evidence,
        np.array([0.0, math.log(0.1)]),
        method="Nelder-Mead",
        options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": steps},
    )
    scale, noise = np.exp(result.x)
    return float(scale), float(noise), -float(result.fun) / n


def predict(kernel, gram, projection, scale, noise, x_test):
    system = gram + noise / scale * torch.eye(gram.shape[0], dtype=torch.float64)
    chol = torch.linalg.cholesky(system)
    with torch.no_grad():
        features = kernel.features(x_test).double()
    weights = torch.cholesky_solve(projection.unsqueeze(-1), chol).squeeze(-1)
    mean = features @ weights
    variance = noise * (features * torch.cholesky_solve(features.T, chol).T).sum(-1)
    return mean, variance


class _ExactGP(gpytorch.models.ExactGP):
    def __init__(self, x, y, covar, likelihood):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ZeroMean()
        self.covar_module = covar

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def exact_mean(base, scale, noise, x, y, x_test, tolerance):
    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    likelihood.noise = noise
    covar = gpytorch.kernels.ScaleKernel(base).double()
    covar.outputscale = scale
    model = _ExactGP(x, y, covar, likelihood).double().eval()
    with (
        torch.no_grad(),
        gp_ntk.settings.lazy_evaluation("always"),
        gpytorch.settings.max_cholesky_size(0),
        gpytorch.settings.fast_pred_var(False),
        gpytorch.settings.cg_tolerance(tolerance),
        gpytorch.settings.eval_cg_tolerance(tolerance),
        gpytorch.settings.max_cg_iterations(2000),
    ):
        return model(x_test).mean


def main(argv: list[str] | None = None) -> list[tuple]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="training points of the random-feature GP")
    parser.add_argument("--compare-n", type=int, default=5000, help="training points of the exact comparison")
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument(
        "--features", type=int, default=1024, help="D, the hidden width of the feature network"
    )
    parser.add_argument("--chunk", type=int, default=20_000, help="rows per feature chunk")
    parser.add_argument("--cg-tolerance", type=float, default=1e-3)
    parser.add_argument(
        "--compare-features",
        default="",
        help="comma-separated D for the comparison at --compare-n, each fitting its own scales",
    )
    parser.add_argument("--quick", action="store_true", help="N = 20 000, D = 256, compare at 2 000")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.compare_n, args.features, args.test = 20_000, 2000, 256, 500
    torch.manual_seed(0)
    device = torch.device("cpu")
    base = gp_ntk.NNGPKernel(
        depth=args.depth, activation="relu", weight_variance=2.0, bias_variance=0.1
    ).double()
    kernel = gp_ntk.RandomFeatureKernel(base, num_features=args.features, in_features=args.dim, seed=0)
    x, y = make_data(args.n + args.test, args.dim, torch.float64, device, seed=0)
    x_train, y_train, x_test, y_test = x[: args.n], y[: args.n], x[args.n :], y[args.n :]
    print(
        f"random-feature GP: N = {args.n}, D = {kernel.num_outputs}, d = {args.dim}, ReLU NNGP depth {args.depth}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        flush=True,
    )
    rows = []
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        gram, projection, yy = feature_statistics(kernel, x_train, y_train, args.chunk)
        seconds = time.perf_counter() - start
    rows.append(("features + statistics", seconds, memory.extra_bytes / 2**20, ""))
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        scale, noise, evidence = fit_scales(gram, projection, yy, args.n)
        seconds = time.perf_counter() - start
    rows.append(
        (
            "evidence fit (s^2, sigma^2)",
            seconds,
            memory.extra_bytes / 2**20,
            f"s2={scale:.3g} noise={noise:.3g}",
        )
    )
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        mean, variance = predict(kernel, gram, projection, scale, noise, x_test)
        seconds = time.perf_counter() - start
    rmse = float((mean - y_test).square().mean().sqrt())
    coverage = float(((mean - y_test).abs() <= 1.96 * (variance + noise).sqrt()).double().mean())
    rows.append(
        (
            f"predict {args.test}",
            seconds,
            memory.extra_bytes / 2**20,
            f"RMSE {rmse:.4f}, 95% cover {coverage:.3f}",
        )
    )
    print(f"{'phase':32s} {'seconds':>9s} {'extra MB':>9s}  note")
    for what, seconds, extra, note in rows:
        print(f"{what:32s} {seconds:9.2f} {extra:9.1f}  {note}", flush=True)
    print(f"(a dense N x N float64 matrix would be {args.n**2 * 8 / 2**30:.0f} GiB)")

    # exact GP with the lazy blocked kernel vs random-feature GPs with --compare-features each
    # (each with its own fitted scales); the exact GP takes the scales of the largest D, or of
    # the large-N fit when --compare-features is not given
    n = args.compare_n
    sizes = [int(v) for v in args.compare_features.split(",")] if args.compare_features else []
    fitted = []
    for size in sizes:
        small = gp_ntk.RandomFeatureKernel(base, num_features=size, in_features=args.dim, seed=0)
        gram_c, projection_c, yy_c = feature_statistics(small, x_train[:n], y_train[:n], args.chunk)
        scale_c, noise_c, _ = fit_scales(gram_c, projection_c, yy_c, n)
        fitted.append((small.num_outputs, predict(small, gram_c, projection_c, scale_c, noise_c, x_test)[0]))
        scale_exact, noise_exact = scale_c, noise_c
    if not sizes:
        gram_c, projection_c, _ = feature_statistics(kernel, x_train[:n], y_train[:n], args.chunk)
        fitted.append((kernel.num_outputs, predict(kernel, gram_c, projection_c, scale, noise, x_test)[0]))
        scale_exact, noise_exact = scale, noise
    start = time.perf_counter()
    with PeakMemory(device) as memory:
        mean_exact = exact_mean(
            base, scale_exact, noise_exact, x_train[:n], y_train[:n], x_test, args.cg_tolerance
        )
    seconds = time.perf_counter() - start
    rmse_exact = float((mean_exact - y_test).square().mean().sqrt())
    print(
        f"\ncompare at N = {n}: exact lazy-CG GP {seconds:.1f} s ({memory.extra_bytes / 2**20:.0f} MB extra), "
        f"s2={scale_exact:.3g} noise={noise_exact:.3g}, test RMSE {rmse_exact:.4f}"
    )
    print(f"{'features':>9s} {'test RMSE':>10s} {'rel. diff of means':>19s}")
    notes = []
    for size, rf_mean in fitted:
        difference = float((rf_mean - mean_exact).norm() / mean_exact.norm())
        rmse_rf = float((rf_mean - y_test).square().mean().sqrt())
        print(f"{size:9d} {rmse_rf:10.4f} {difference:19.4f}")
        notes.append(f"D={size}: {rmse_rf:.4f} {difference:.4f}")
    rows.append(
        (
            f"compare N={n}",
            seconds,
            memory.extra_bytes / 2**20,
            f"exact {rmse_exact:.4f}; " + "; ".join(notes),
        )
    )
    return rows


if __name__ == "__main__":
    main()
