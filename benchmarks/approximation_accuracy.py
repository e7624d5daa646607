"""Approximate GPs against the exact lazy-CG GP on the same data, and NeuralEF features at large n.

All methods share one train/test split and one set of hyperparameters: the output scale
:math:`s^2` and noise :math:`\\sigma^2` of a ReLU NNGP kernel (depth 2, :math:`\\sigma_w^2 = 2`,
:math:`\\sigma_b^2 = 0.1`) maximise the exact evidence on the first ``--fit-n`` training points
(eigendecomposition of the dense matrix). With them:

* **exact GP** (``--exact``): the predictive mean :math:`s^2 K_{*X}(s^2K + \\sigma^2 I)^{-1}y` on
  every test point and the exact predictive variances on the first ``--variance-points`` test
  points, all by one block conjugate-gradient solve whose products :math:`Kv` go through gp_ntk's
  lazy ``BlockedKernelLinearOperator`` (the :math:`n \\times n` matrix never exists). CG is
  preconditioned by a rank-``--preconditioner-rank`` Nyström approximation (random training
  points) and stops when every column's relative residual is below ``--cg-tolerance``; the
  test RMSE is recorded each time the mean's residual passes a power of ten, and the true
  residual is recomputed with one more product at the end;
* **random-feature GPs** (``--features``): :class:`gp_ntk.RandomFeatureKernel`, Bayesian linear
  regression on the features by chunked sufficient statistics (``random_features.py``);
* **Nyström / SGPR** (``--inducing``): GPyTorch's ``InducingPointKernel`` around the NNGP kernel,
  inducing points a random subset of the training inputs (not optimised);
* **NeuralEF features** (``--eigenfunctions``): :class:`gp_ntk.spectral.NeuralEigenfunctions`
  fitted on minibatches (never :math:`n \\times n`) and rotated by its Rayleigh–Ritz step on
  ``--neuralef-ritz`` training points, then the GP with its low-rank kernel
  :class:`gp_ntk.approximations.NeuralEFKernel`, :math:`\\sum_j\\lambda_j\\psi_j(x)\\psi_j(y)`,
  by the same sufficient statistics (:math:`O(nk^2)`).

Reported per method: test RMSE, mean negative log predictive density (NLL, noise included)
over all test points and over the variance points, the relative distance of the predictive mean
to the exact GP's, seconds (fit, predict) and the peak resident memory above the start of each
phase (``large_n.PeakMemory``).

Usage::

    MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/approximation_accuracy.py --n 50000
    MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/approximation_accuracy.py --n 1000000 --no-exact \\
        --inducing "" --features 256,1024 --eigenfunctions 64
    python benchmarks/approximation_accuracy.py --quick      # n = 2000, seconds; checks CG against Cholesky

Data: ``benchmarks/large_n.py``'s generator (inputs uniform in [-1, 1]^8, a smooth target of a
few projections, noise sd 0.1), labels centred by the training mean.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gpytorch
import numpy as np
import torch
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parent))

from large_n import PeakMemory, make_data  # noqa: E402
from random_features import feature_statistics, fit_scales, predict  # noqa: E402

import gp_ntk  # noqa: E402
from gp_ntk.spectral import NeuralEigenfunctions, eigenmodes  # noqa: E402

CPU = torch.device("cpu")


@dataclass
class Result:
    method: str
    size: int | None
    rmse: float
    nll: float
    nll_variance_points: float
    fit_seconds: float
    predict_seconds: float
    peak_mb: float
    mean_distance: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def negative_log_density(mean: torch.Tensor, variance: torch.Tensor, y: torch.Tensor) -> float:
    """Mean Gaussian negative log predictive density of ``y``."""
    variance = variance.clamp_min(1e-12)
    return float((0.5 * torch.log(2 * math.pi * variance) + 0.5 * (y - mean).square() / variance).mean())


def fit_hyperparameters(base, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(s^2, sigma^2) maximising the exact evidence of ``y ~ N(0, s^2 K + sigma^2 I)``.

    With ``K = V diag(a) V^T`` and ``p = V^T y``,
    ``-2 log p(y) = sum_i [log(s^2 a_i + sigma^2) + p_i^2 / (s^2 a_i + sigma^2)] + n log 2 pi``."""
    with torch.no_grad(), gp_ntk.settings.lazy_evaluation("never"):
        values, vectors = torch.linalg.eigh(base(x).to_dense())
    a = values.clamp_min(0).numpy()
    p2 = (vectors.T @ y).square().numpy()

    def negative_log_evidence(log_values: np.ndarray) -> float:
        total = np.exp(log_values[0]) * a + np.exp(log_values[1])
        return 0.5 * float((np.log(total) + p2 / total).sum() + len(a) * math.log(2 * math.pi))

    result = minimize(
        negative_log_evidence,
        np.array([0.0, math.log(0.1)]),
        method="L-BFGS-B",
        # GPyTorch's default lower bound of the Gaussian noise, 1e-4: the ReLU NNGP's rough part
        # (its smallest eigenvalues do not fall with n) can stand in for the noise, and the
        # evidence of this data then prefers the bound
        bounds=[(-10.0, 10.0), (math.log(1e-4), 5.0)],
    )
    scale, noise = np.exp(result.x)
    return float(scale), float(noise)


class NystromPreconditioner:
    """``P^{-1}`` for ``P = F F^T + D`` by Woodbury, ``F F^T = s^2 K_nZ K_ZZ^+ K_Zn`` (Nyström on
    random training inputs Z) and ``D = sigma^2 I`` or, with ``diagonal=True``, ``D = sigma^2 I +
    diag(s^2 K - F F^T)`` (the FITC correction). The ReLU NNGP's rough part puts much of
    ``s^2 K - F F^T`` on its diagonal, which the correction captures where the noise is small."""

    def __init__(
        self, base, x: torch.Tensor, rank: int, scale: float, noise: float, seed: int, diagonal: bool = True
    ) -> None:
        index = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:rank]
        with torch.no_grad(), gp_ntk.settings.lazy_evaluation("never"):
            cross = base(x, x[index]).to_dense()  # (n, r)
            prior = scale * base(x, diag=True)
        values, vectors = torch.linalg.eigh(cross[index])
        keep = values > 1e-10 * values.max()
        self.root = cross @ (vectors[:, keep] * (scale / values[keep]).sqrt())
        del cross
        self.diagonal = torch.full_like(prior, noise)
        if diagonal:
            self.diagonal += (prior - self.root.square().sum(-1)).clamp_min(0)
        scaled = self.root / self.diagonal.sqrt().unsqueeze(-1)
        inner = torch.eye(self.root.shape[1], dtype=x.dtype) + scaled.T @ scaled
        self.inner_cholesky = torch.linalg.cholesky(inner)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        w = v / self.diagonal.unsqueeze(-1)
        correction = torch.cholesky_solve(self.root.T @ w, self.inner_cholesky)
        return w - (self.root @ correction) / self.diagonal.unsqueeze(-1)


def block_pcg(matmul, rhs: torch.Tensor, precondition, tolerance: float, max_iter: int, callback):
    """Preconditioned CG on every column of ``rhs`` at once (one product per iteration for all).

    Unlike GPyTorch's ``linear_cg``, which stops on the mean residual over the columns, this
    stops when the worst column's relative residual is below ``tolerance``, and reports each
    iteration to ``callback(iteration, solution, relative_residuals)``."""
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    rhs_norms = rhs.norm(dim=0).clamp_min(1e-300)
    z = precondition(residual)
    direction = z.clone()
    rz = (residual * z).sum(0)
    relative = residual.norm(dim=0) / rhs_norms
    iteration = 0
    while iteration < max_iter and float(relative.max()) > tolerance:
        iteration += 1
        product = matmul(direction)
        step = rz / (direction * product).sum(0).clamp_min(1e-300)
        solution += step * direction
        residual -= step * product
        relative = residual.norm(dim=0) / rhs_norms
        callback(iteration, solution, relative)
        z = precondition(residual)
        rz_new = (residual * z).sum(0)
        direction = z + (rz_new / rz.clamp_min(1e-300)) * direction
        rz = rz_new
    return solution, iteration, relative


def exact_gp(base, scale, noise, x, y, x_test, y_test, args, log) -> tuple[Result, torch.Tensor]:
    n = x.shape[0]
    x_var = x_test[: args.variance_points]
    lazy = gp_ntk.settings.lazy_evaluation("always", block_elements=args.block_elements)
    with PeakMemory(CPU) as memory, torch.no_grad(), lazy:
        start = time.perf_counter()
        precondition = NystromPreconditioner(
            base, x, args.preconditioner_rank, scale, noise, args.seed, args.preconditioner == "fitc"
        )
        setup_seconds = time.perf_counter() - start
        operator = base(x)

        def matmul(v: torch.Tensor) -> torch.Tensor:
            return scale * (operator @ v) + noise * v

        # columns: the labels, then s^2 k(X, x_j) for the variance points
        rhs = torch.cat([y.unsqueeze(-1), scale * base(x, x_var).to_dense()], dim=-1)
        test_cross = base(x_test, x)
        milestones, trace = {}, []
        next_power = [1]

        def callback(iteration, solution, relative):
            trace.append((iteration, round(time.perf_counter() - start, 1), float(relative[0])))
            while float(relative[0]) <= 10.0 ** -next_power[0]:
                mean = scale * (test_cross @ solution[:, 0])
                rmse = float((mean - y_test).square().mean().sqrt())
                milestones[f"1e-{next_power[0]}"] = (iteration, round(rmse, 5))
                log(f"  CG {iteration}: label residual below 1e-{next_power[0]}, test RMSE {rmse:.5f}")
                next_power[0] += 1
            if iteration % args.log_every == 0 or iteration == 1:
                worst = float(relative.max())
                log(
                    f"  CG {iteration}: {time.perf_counter() - start:.0f} s, residual mean column "
                    f"{float(relative[0]):.2e}, worst {worst:.2e}"
                )

        solution, iterations, relative = block_pcg(
            matmul, rhs, precondition, args.cg_tolerance, args.max_cg_iterations, callback
        )
        fit_seconds = time.perf_counter() - start
        true_residual = (matmul(solution) - rhs).norm(dim=0) / rhs.norm(dim=0)
        start = time.perf_counter()
        mean = scale * (test_cross @ solution[:, 0])
        prior = scale * base(x_var, diag=True)
        variance = prior - (rhs[:, 1:] * solution[:, 1:]).sum(0)
        predict_seconds = time.perf_counter() - start
    nll_var = negative_log_density(mean[: x_var.shape[0]], variance + noise, y_test[: x_var.shape[0]])
    note = (
        f"{iterations} CG iterations, {args.preconditioner} preconditioner rank {args.preconditioner_rank} "
        f"({setup_seconds:.0f} s); relative residual (recomputed) labels {float(true_residual[0]):.1e}, "
        f"variance columns max {float(true_residual[1:].max()):.1e}; tolerance {args.cg_tolerance:g}"
    )
    result = Result(
        "exact GP (lazy CG)",
        n,
        float((mean - y_test).square().mean().sqrt()),
        float("nan"),
        nll_var,
        fit_seconds,
        predict_seconds,
        memory.extra_bytes / 2**20,
        0.0,
        note,
        {
            "rmse_when_label_residual_reached": milestones,
            "trace": trace,
            "minimum_variance": float(variance.min()),
            "n_times_8_bytes_squared_mb": n * n * 8 / 2**20,
        },
    )
    if args.check_dense:
        with torch.no_grad(), gp_ntk.settings.lazy_evaluation("never"):
            joint = base(torch.cat([x, x_test])).to_dense() * scale
        chol = torch.linalg.cholesky(joint[:n, :n] + noise * torch.eye(n, dtype=x.dtype))
        dense_mean = joint[n:, :n] @ torch.cholesky_solve(y.unsqueeze(-1), chol).squeeze(-1)
        cross_var = joint[n : n + x_var.shape[0], :n]
        dense_var = joint.diagonal()[n : n + x_var.shape[0]] - (
            cross_var * torch.cholesky_solve(cross_var.T, chol).T
        ).sum(-1)
        result.extra["dense_mean_relative_difference"] = float((mean - dense_mean).norm() / dense_mean.norm())
        result.extra["dense_variance_max_relative_difference"] = float(
            ((variance - dense_var).abs() / dense_var).max()
        )
    return result, mean


def feature_gp(kernel, scale, noise, x, y, x_test, y_test, args, fit_extra=0.0, fit_peak=0.0):
    with PeakMemory(CPU) as memory:
        start = time.perf_counter()
        gram, projection, yy = feature_statistics(kernel, x, y, args.chunk)
        fit_seconds = time.perf_counter() - start
    if args.own_scales:
        # the same model with its own evidence-maximising (s^2, sigma^2), for contrast
        own_scale, own_noise, _ = fit_scales(gram, projection, yy, x.shape[0])
        own_mean, own_variance = predict(kernel, gram, projection, own_scale, own_noise, x_test)
        args.own_results.append(
            {
                "s2": round(own_scale, 5),
                "noise": round(own_noise, 6),
                "rmse": round(float((own_mean - y_test).square().mean().sqrt()), 5),
                "nll": round(negative_log_density(own_mean, own_variance + own_noise, y_test), 4),
            }
        )
    peak = max(fit_peak, memory.extra_bytes / 2**20)
    with PeakMemory(CPU) as memory:
        start = time.perf_counter()
        mean, variance = predict(kernel, gram, projection, scale, noise, x_test)
        predict_seconds = time.perf_counter() - start
    peak = max(peak, memory.extra_bytes / 2**20)
    return mean, variance, fit_extra + fit_seconds, predict_seconds, peak


def sgpr(base, scale, noise, x, y, x_test, size, seed):
    index = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed + 1))[:size]
    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    likelihood.noise = noise
    scaled = gpytorch.kernels.ScaleKernel(base).double()
    scaled.outputscale = scale
    covar = gpytorch.kernels.InducingPointKernel(
        scaled, inducing_points=x[index].clone(), likelihood=likelihood
    )

    class Model(gpytorch.models.ExactGP):
        def __init__(self):
            super().__init__(x, y, likelihood)
            self.mean_module = gpytorch.means.ZeroMean()
            self.covar_module = covar

        def forward(self, inputs):
            return gpytorch.distributions.MultivariateNormal(
                self.mean_module(inputs), self.covar_module(inputs)
            )

    model = Model().double().eval()
    with PeakMemory(CPU) as memory, torch.no_grad(), gp_ntk.settings.lazy_evaluation("never"):
        start = time.perf_counter()
        # the first call builds the prediction caches (the fit); the second one predicts
        _ = model(x_test[:1]).mean
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        posterior = model(x_test)
        mean, variance = posterior.mean, posterior.variance
        predict_seconds = time.perf_counter() - start
    return mean, variance, fit_seconds, predict_seconds, memory.extra_bytes / 2**20


class EigenmodeFeatures:
    """``sqrt(lambda_j) psi_j(x)`` of the top-k Nyström eigenfunctions of a dense ``eigh`` on a
    subsample: the rank-k reference for NeuralEF (the top eigenspace it is trained to find)."""

    def __init__(self, modes, chunk: int = 4096) -> None:
        self.modes, self.chunk = modes, chunk
        self.num_outputs = modes.eigenvalues.shape[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.modes.eigenvalues.clamp_min(0).sqrt()
        return torch.cat(
            [self.modes(x[s : s + self.chunk]) * scale for s in range(0, x.shape[0], self.chunk)]
        )


def parse_sizes(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="training points")
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--fit-n", type=int, default=5000, help="training points of the evidence fit")
    parser.add_argument("--exact", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--variance-points", type=int, default=32, help="test points with exact variances")
    parser.add_argument("--preconditioner-rank", type=int, default=1024)
    parser.add_argument(
        "--preconditioner",
        choices=("fitc", "nystrom"),
        default="nystrom",
        help="Nyström plus the FITC diagonal, or Nyström plus the noise alone",
    )
    parser.add_argument("--cg-tolerance", type=float, default=1e-4)
    parser.add_argument("--max-cg-iterations", type=int, default=300)
    parser.add_argument("--block-elements", type=int, default=2**20, help="kernel entries per lazy block")
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--features", default="256,1024,4096", help="D of the random-feature GPs")
    parser.add_argument("--inducing", default="256,1024", help="inducing points of the SGPR GPs")
    parser.add_argument("--eigenfunctions", default="16,64", help="k of the NeuralEF GPs")
    parser.add_argument(
        "--eigenmodes", default="", help="k of GPs on the top-k eigenfunctions of a dense eigh (reference)"
    )
    parser.add_argument("--eigenmodes-points", type=int, default=4000, help="subsample of that eigh")
    parser.add_argument("--neuralef-steps", type=int, default=2000)
    parser.add_argument("--neuralef-batch", type=int, default=256)
    parser.add_argument("--neuralef-lr", type=float, default=1e-3)
    parser.add_argument(
        "--neuralef-ritz", type=int, default=4096, help="points of NeuralEF's Rayleigh-Ritz step (0: none)"
    )
    parser.add_argument("--chunk", type=int, default=20_000, help="rows per feature chunk")
    parser.add_argument(
        "--own-scales",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also fit each feature GP's own (s^2, sigma^2) by its evidence",
    )
    parser.add_argument("--check-dense", action="store_true", help="compare CG with a Cholesky solve")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="append each result as a JSON line")
    parser.add_argument("--quick", action="store_true", help="n = 2000, small methods, dense check")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.test, args.fit_n, args.variance_points = 2000, 200, 500, 8
        args.preconditioner_rank, args.cg_tolerance, args.log_every = 100, 1e-8, 50
        args.features, args.inducing, args.eigenfunctions = "64,256", "32,128", "4"
        args.neuralef_steps, args.chunk, args.check_dense = 100, 1000, True
        args.eigenmodes, args.eigenmodes_points, args.neuralef_ritz = "4", 500, 500
    torch.manual_seed(args.seed)
    args.own_results = []

    def log(text: str) -> None:
        print(text, flush=True)

    x, y = make_data(args.n + args.test, args.dim, torch.float64, CPU, seed=args.seed)
    x_train, y_train, x_test, y_test = x[: args.n], y[: args.n], x[args.n :], y[args.n :]
    offset = y_train.mean()
    y_train, y_test = y_train - offset, y_test - offset
    base = gp_ntk.NNGPKernel(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1).double()
    log(
        f"n = {args.n}, {args.test} test points, d = {args.dim}, ReLU NNGP depth 2, float64, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    start = time.perf_counter()
    scale, noise = fit_hyperparameters(base, x_train[: args.fit_n], y_train[: args.fit_n])
    log(
        f"exact evidence on {args.fit_n} points: s2 = {scale:.4g}, noise = {noise:.4g} "
        f"({time.perf_counter() - start:.1f} s); label variance {float(y_train.var()):.4g}"
    )
    results: list[Result] = []
    means: dict[int, torch.Tensor] = {}
    nv = args.variance_points

    def record(result: Result, mean: torch.Tensor) -> None:
        results.append(result)
        means[len(results) - 1] = mean
        log(
            f"{result.method} [{result.size}]: RMSE {result.rmse:.4f}, NLL {result.nll:.4f}, "
            f"NLL@{nv} {result.nll_variance_points:.4f}, fit {result.fit_seconds:.1f} s, "
            f"predict {result.predict_seconds:.2f} s, peak +{result.peak_mb:.0f} MB {result.note}"
        )
        if args.json is not None:
            with args.json.open("a") as stream:
                stream.write(json.dumps(asdict(result)) + "\n")

    def scored(method, size, mean, variance, fit_s, predict_s, peak, note=""):
        total = variance + noise
        return Result(
            method,
            size,
            float((mean - y_test).square().mean().sqrt()),
            negative_log_density(mean, total, y_test),
            negative_log_density(mean[:nv], total[:nv], y_test[:nv]),
            fit_s,
            predict_s,
            peak,
            note=note,
        )

    def fit_on_features(kernel, fit_extra=0.0, fit_peak=0.0):
        # every feature method: the same data, scales and options
        return feature_gp(kernel, scale, noise, x_train, y_train, x_test, y_test, args, fit_extra, fit_peak)

    exact_mean = None
    if args.exact:
        result, exact_mean = exact_gp(base, scale, noise, x_train, y_train, x_test, y_test, args, log)
        record(result, exact_mean)

    for size in parse_sizes(args.features):
        kernel = gp_ntk.RandomFeatureKernel(base, num_features=size, in_features=args.dim, seed=args.seed)
        out = fit_on_features(kernel)
        result = scored("random features", kernel.num_outputs, *out)
        if args.own_scales:
            result.extra["own_evidence_fit"] = args.own_results[-1]
        record(result, out[0])
    for size in parse_sizes(args.inducing):
        out = sgpr(base, scale, noise, x_train, y_train, x_test, size, args.seed)
        record(scored("Nyström / SGPR", size, *out), out[0])
    reference_sizes = parse_sizes(args.eigenmodes)
    if reference_sizes:
        with PeakMemory(CPU) as memory:
            start = time.perf_counter()
            modes = eigenmodes(base, x_train[: args.eigenmodes_points], max(reference_sizes), method="dense")
            eigh_seconds = time.perf_counter() - start
        for size in reference_sizes:
            truncated = copy.copy(modes)
            truncated.eigenvalues, truncated.vectors = modes.eigenvalues[:size], modes.vectors[:, :size]
            kernel = EigenmodeFeatures(truncated)
            out = fit_on_features(kernel, eigh_seconds, memory.extra_bytes / 2**20)
            note = f"dense eigh on {args.eigenmodes_points} points {eigh_seconds:.0f} s of the fit"
            result = scored("top-k eigenfunctions (dense eigh)", size, *out, note=note)
            if args.own_scales:
                result.extra["own_evidence_fit"] = args.own_results[-1]
            record(result, out[0])
    for size in parse_sizes(args.eigenfunctions):
        with PeakMemory(CPU) as memory:
            start = time.perf_counter()
            nef = NeuralEigenfunctions(base, num_eigenfunctions=size).fit(
                x_train,
                steps=args.neuralef_steps,
                batch_size=args.neuralef_batch,
                lr=args.neuralef_lr,
                seed=args.seed,
                ritz_points=args.neuralef_ritz,
            )
            nef_seconds = time.perf_counter() - start
        kernel = nef.as_kernel()
        out = fit_on_features(kernel, nef_seconds, memory.extra_bytes / 2**20)
        with torch.no_grad():
            mean_diagonal = base(x_train[:2000], diag=True).mean()
            captured = float(kernel.eigenvalues.sum() / mean_diagonal)
            tracked = float(nef.training_eigenvalues.sum() / mean_diagonal)
        note = (
            f"NeuralEF {nef_seconds:.0f} s of the fit; sum of eigenvalues / mean k(x, x) {captured:.3f} "
            f"(moving averages of training: {tracked:.3f}); Rayleigh-Ritz on {args.neuralef_ritz} points"
        )
        result = scored("NeuralEF features", size, *out, note=note)
        if args.own_scales:
            result.extra["own_evidence_fit"] = args.own_results[-1]
        record(result, out[0])
    log("")
    log(
        f"n = {args.n}, s2 = {scale:.4g}, noise = {noise:.4g}; NLL over {args.test} test points and "
        f"over the first {nv} (exact variances)"
    )
    log(
        "| method | D / rank | test RMSE | NLL | NLL (first points) | mean vs exact | fit [s] | predict [s] | peak extra [MB] |"
    )
    log("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for index, r in enumerate(results):
        if exact_mean is not None:
            r.mean_distance = float((means[index] - exact_mean).norm() / exact_mean.norm())
        distance = "—" if r.mean_distance is None else f"{r.mean_distance:.3f}"
        nll = "—" if math.isnan(r.nll) else f"{r.nll:.3f}"
        log(
            f"| {r.method} | {r.size} | {r.rmse:.4f} | {nll} | {r.nll_variance_points:.3f} | {distance} | "
            f"{r.fit_seconds:.1f} | {r.predict_seconds:.2f} | {r.peak_mb:.0f} |"
        )
    for r in results:
        if r.extra:
            log(f"{r.method}: {r.note}; " + json.dumps({k: v for k, v in r.extra.items() if k != "trace"}))
    log(f"\ncommand: python {' '.join(sys.argv)}")
    return results


if __name__ == "__main__":
    main()
