"""GPs that see gradients: a potential-energy surface with forces, and gradient-enhanced BO.

What it shows
-------------
1. **Energy and forces.** A smooth 2-D potential :math:`V(x, y)` (a tilted double well with
   a ripple) is observed at ``--points`` random configurations, each giving the energy and
   its gradient (minus the force). Value-only GPs (``NNGPKernel``, ``NTKKernel``, RBF) and
   value+gradient GPs (``NNGPKernelGrad``, ``NTKKernelGrad``, GPyTorch's ``RBFKernelGrad``)
   are fitted on the same evaluations; the script prints the test RMSE of the energy on a
   grid, the RMSE of the predicted forces (gradient models), and the coverage of the 95%
   intervals, and writes ``gradient_gp_fits.png`` (true surface and every model's mean).
2. **Gradient-enhanced BO.** On Branin (negated, on [-1, 1]^2) a BoTorch loop with
   LogExpectedImprovement runs with value-only models (``SingleTaskGP`` with the NNGP or RBF
   kernel) and with :class:`gp_ntk.bo.GradientEnhancedGP` (values and gradients,
   NNGP or RBF), at the same number of evaluations; it prints the final simple regret
   (mean ± standard error over seeds) and writes ``gradient_bo_regret.png``.

Usage::

    python examples/gradient_gp.py [--points 12] [--seeds 3] [--iterations 10]
    python examples/gradient_gp.py --quick      # smaller, one seed: about a minute
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import gpytorch
import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from botorch.acquisition import LogExpectedImprovement  # noqa: E402
from botorch.fit import fit_gpytorch_mll  # noqa: E402
from botorch.models import SingleTaskGP  # noqa: E402
from botorch.models.transforms import Standardize  # noqa: E402
from botorch.optim import optimize_acqf  # noqa: E402
from botorch.test_functions import Branin  # noqa: E402

import gp_ntk  # noqa: E402
from gp_ntk.bo import GradientEnhancedGP  # noqa: E402

DTYPE = torch.float64
Z95 = 1.959963984540054


# --------------------------------------------------------------------------- the potential


def potential(z: torch.Tensor) -> torch.Tensor:
    """A tilted double well with a ripple, on z in [-1, 1]^2 (x = 1.5 z1, y = 1.5 z2)."""
    x, y = 1.5 * z[..., 0], 1.5 * z[..., 1]
    return (x**2 - 1) ** 2 + 1.5 * (y - 0.6 * x**2 + 0.3) ** 2 + 0.4 * torch.sin(2.5 * x + 1.5 * y) + 0.2 * x


def value_and_gradient(fn, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.detach().requires_grad_(True)
    v = fn(z)
    (g,) = torch.autograd.grad(v.sum(), z)
    return v.detach(), g.detach()


# --------------------------------------------------------------------------- models


class ValueGP(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood, kernel):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(kernel)

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _lbfgs(model, likelihood, x, y, max_iter: int) -> None:
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    model.train()
    optimizer = torch.optim.LBFGS(list(model.parameters()), max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = -mll(model(x), y)
        loss.backward()
        return loss

    with gpytorch.settings.cholesky_max_tries(6):
        optimizer.step(closure)
    model.eval()


def value_kernels() -> dict[str, tuple]:
    return {
        "NNGP relu d3": (
            lambda: gp_ntk.NNGPKernel(depth=3, activation="relu", bias_variance=0.1),
            lambda: gp_ntk.NNGPKernelGrad(depth=3, activation="relu", bias_variance=0.1),
        ),
        "NTK erf d2": (
            lambda: gp_ntk.NTKKernel(depth=2, activation="erf", weight_variance=2.0, bias_variance=0.1),
            lambda: gp_ntk.NTKKernelGrad(depth=2, activation="erf", weight_variance=2.0, bias_variance=0.1),
        ),
        "RBF": (gpytorch.kernels.RBFKernel, gpytorch.kernels.RBFKernelGrad),
    }


def surface_study(args, out_dir: Path) -> None:
    torch.manual_seed(args.seed)
    z = torch.rand(args.points, 2, dtype=DTYPE) * 2 - 1
    v, g = value_and_gradient(potential, z)
    mean, std = v.mean(), v.std()
    side = torch.linspace(-1, 1, args.grid, dtype=DTYPE)
    grid = torch.cartesian_prod(side, side)
    v_test, g_test = value_and_gradient(potential, grid)
    rows, means = [], {}
    print(
        f"\n1) potential surface: {args.points} evaluations (energy + gradient each), test grid {args.grid}^2"
    )
    for name, (make_value, make_grad) in value_kernels().items():
        for with_grad in (False, True):
            label = f"{name} {'value+grad' if with_grad else 'value only'}"
            start = time.perf_counter()
            if with_grad:
                model = GradientEnhancedGP(
                    z, v.unsqueeze(-1), g, gpytorch.kernels.ScaleKernel(make_grad().to(DTYPE))
                )
                model.fit(max_iter=args.max_iter)
                with torch.no_grad():
                    post = model.posterior(grid)
                    mu, var = post.mean.squeeze(-1), post.variance.squeeze(-1)
                    g_mu, _ = model.predict_gradient(grid)
                force_rmse = float(((g_mu - g_test) ** 2).sum(-1).mean().sqrt())
            else:
                likelihood = gpytorch.likelihoods.GaussianLikelihood(
                    noise_constraint=gpytorch.constraints.GreaterThan(1e-6)
                ).to(DTYPE)
                model = ValueGP(z, (v - mean) / std, likelihood, make_value().to(DTYPE)).to(DTYPE)
                _lbfgs(model, likelihood, z, (v - mean) / std, args.max_iter)
                with torch.no_grad():
                    f = model(grid)
                    mu, var = f.mean * std + mean, f.variance * std**2
                force_rmse = float("nan")
            rmse = float(((mu - v_test) ** 2).mean().sqrt())
            half = Z95 * var.clamp_min(0).sqrt()
            coverage = float(((v_test - mu).abs() <= half).double().mean())
            rows.append((label, rmse, force_rmse, coverage, time.perf_counter() - start))
            means[label] = mu
            print(f"   fitted {label:28s} ({rows[-1][-1]:.1f} s)", file=sys.stderr)
    print(f"{'model':30s} {'energy RMSE':>12s} {'force RMSE':>11s} {'95% coverage':>13s} {'time (s)':>9s}")
    for label, rmse, force_rmse, coverage, seconds in rows:
        forces = f"{force_rmse:11.4f}" if math.isfinite(force_rmse) else f"{'-':>11s}"
        print(f"{label:30s} {rmse:12.4f} {forces} {coverage:13.2f} {seconds:9.1f}")
    print(f"(energy range on the grid: {float(v_test.min()):.2f} .. {float(v_test.max()):.2f})")

    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5), constrained_layout=True)
    shape = (args.grid, args.grid)
    levels = torch.linspace(float(v_test.min()), float(v_test.max()), 25).tolist()
    panels = [("true potential", v_test)] + list(means.items())
    for ax, (title, values) in zip(axes.flat, panels + [(None, None)] * (8 - len(panels))):
        if title is None:
            ax.axis("off")
            continue
        ax.contourf(side, side, values.reshape(shape).T, levels=levels, cmap="viridis", extend="both")
        ax.scatter(z[:, 0], z[:, 1], c="white", edgecolors="black", s=18)
        ax.quiver(z[:, 0], z[:, 1], -g[:, 0], -g[:, 1], color="white", scale=60, width=0.004)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"potential from {args.points} evaluations (white: points and forces)")
    path = out_dir / "gradient_gp_fits.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


# --------------------------------------------------------------------------- BO


def branin(z: torch.Tensor) -> torch.Tensor:
    """Negated Branin on z in [-1, 1]^2 (maximum -0.397887)."""
    lower = torch.tensor([-5.0, 0.0], dtype=z.dtype)
    upper = torch.tensor([10.0, 15.0], dtype=z.dtype)
    x = lower + (z + 1) / 2 * (upper - lower)
    return -Branin().to(z)(x)


BRANIN_MAX = -0.397887


def _value_model(kind: str, z, y):
    if kind == "NNGP":
        covar = gpytorch.kernels.ScaleKernel(gp_ntk.NNGPKernel(depth=3, activation="relu", bias_variance=0.1))
    else:
        covar = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())
    model = SingleTaskGP(z, y, covar_module=covar.to(DTYPE), outcome_transform=Standardize(1))
    fit_gpytorch_mll(gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model))
    return model


def _gradient_model(kind: str, z, y, g, max_iter):
    if kind == "NNGP":
        covar = gpytorch.kernels.ScaleKernel(
            gp_ntk.NNGPKernelGrad(depth=3, activation="relu", bias_variance=0.1)
        )
    else:
        covar = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernelGrad())
    return GradientEnhancedGP(z, y, g, covar.to(DTYPE)).fit(max_iter=max_iter)


def bo_study(args, out_dir: Path) -> None:
    methods = ["NNGP value only", "NNGP value+grad", "RBF value only", "RBF value+grad"]
    bounds = torch.tensor([[-1.0, -1.0], [1.0, 1.0]], dtype=DTYPE)
    budget = args.initial + args.iterations
    print(
        f"\n2) gradient-enhanced BO on Branin: {args.initial} initial + {args.iterations} evaluations, {args.seeds} seed(s)"
    )
    regrets = {m: [] for m in methods}
    for seed in range(args.seeds):
        init = torch.quasirandom.SobolEngine(2, scramble=True, seed=seed).draw(args.initial).to(DTYPE) * 2 - 1
        for method in methods:
            kind, with_grad = method.split()[0], "grad" in method
            z = init.clone()
            y, g = value_and_gradient(branin, z)
            y = y.unsqueeze(-1)
            curve = []
            start = time.perf_counter()
            for it in range(args.iterations):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if with_grad:
                        model = _gradient_model(kind, z, y, g, args.max_iter)
                    else:
                        model = _value_model(kind, z, y)
                    acq = LogExpectedImprovement(model, best_f=y.max())
                    candidate, _ = optimize_acqf(acq, bounds, q=1, num_restarts=4, raw_samples=128)
                y_new, g_new = value_and_gradient(branin, candidate)
                z, y, g = (
                    torch.cat([z, candidate]),
                    torch.cat([y, y_new.unsqueeze(-1)]),
                    torch.cat([g, g_new]),
                )
                curve.append(BRANIN_MAX - float(y.max()))
                print(
                    f"\r   seed {seed} {method:16s} evaluation {args.initial + it + 1}/{budget} "
                    f"regret {curve[-1]:.2e} ({time.perf_counter() - start:.0f} s)",
                    end="",
                    file=sys.stderr,
                )
            print(file=sys.stderr)
            regrets[method].append(curve)
    print(f"{'model':18s} {'final simple regret (mean ± s.e.)':>36s} {'median':>10s}")
    for method in methods:
        finals = [c[-1] for c in regrets[method]]
        se = statistics.stdev(finals) / math.sqrt(len(finals)) if len(finals) > 1 else float("nan")
        print(f"{method:18s} {statistics.mean(finals):24.2e} ± {se:9.1e} {statistics.median(finals):10.2e}")
    fig, ax = plt.subplots(figsize=(6.5, 4.5), constrained_layout=True)
    steps = list(range(args.initial + 1, budget + 1))
    for method in methods:
        curves = torch.tensor(regrets[method]).clamp_min(1e-12).log10()
        ax.plot(steps, curves.mean(0), label=method, linestyle="-" if "grad" in method else "--")
    ax.set_xlabel("function evaluations (each: value, and gradient for the +grad models)")
    ax.set_ylabel("log10 simple regret (mean over seeds)")
    ax.set_title("Branin: value-only vs gradient-enhanced BO")
    ax.legend()
    path = out_dir / "gradient_bo_regret.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=12)
    parser.add_argument("--grid", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--initial", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--max-iter", type=int, default=50, help="L-BFGS iterations per fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-bo", action="store_true")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).parent / "output")
    parser.add_argument(
        "--quick", action="store_true", help="8 points, 20^2 grid, 1 seed, 3 + 4 BO evaluations"
    )
    args = parser.parse_args()
    if args.quick:
        args.points, args.grid, args.seeds, args.initial, args.iterations, args.max_iter = 8, 20, 1, 3, 4, 20
    args.output_dir.mkdir(parents=True, exist_ok=True)
    surface_study(args, args.output_dir)
    if not args.skip_bo:
        bo_study(args, args.output_dir)


if __name__ == "__main__":
    main()
