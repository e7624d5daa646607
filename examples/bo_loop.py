"""Bayesian optimisation with NNGP and NTK surrogates in a plain BoTorch loop, against Matern and random search.

What it shows
-------------
The loop a BoTorch user writes, with a network kernel in place of the usual one:

1. a scrambled Sobol initial design;
2. per iteration, a ``SingleTaskGP`` whose covariance is a gp_ntk kernel, built by
   :func:`gp_ntk.bo.make_bo_model` (its default NTK, of ReLU squared, or the NNGP, with priors; inputs
   mapped onto [-1, 1]^d by :class:`gp_ntk.bo.CenteredNormalize`, outcomes standardised),
   fitted by BoTorch's ``fit_gpytorch_mll``;
3. ``qLogNoisyExpectedImprovement`` maximised by ``optimize_acqf`` over the search box;
4. the objective at the new point.

The same loop runs with BoTorch's Matern-5/2 (ARD, Gamma priors) and
with random search, from the same initial design and several seeds. A progress bar shows the
best value so far; the script prints the final log10 simple regret (mean ± standard error over
seeds) and the time per iteration of every surrogate, and writes ``bo_regret.png``: log10
simple regret ``log10(f* - best so far)`` against the number of evaluations.

The default problem is the 6-D Hartmann function (``--problem hartmann``, 40 evaluations);
``--problem ackley`` is Ackley in 10-D on [-5, 10]^10 (60 evaluations, batches of 2).
BoTorch maximises, so both are negated. ``benchmarks/bo.py`` is the systematic comparison.

Usage::

    python examples/bo_loop.py [--problem hartmann|ackley] [--seeds 3] [--output-dir examples/output]
    python examples/bo_loop.py --quick      # Branin, 10 evaluations, one seed: a few seconds
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from botorch.acquisition import qLogNoisyExpectedImprovement  # noqa: E402
from botorch.fit import fit_gpytorch_mll  # noqa: E402
from botorch.models import SingleTaskGP  # noqa: E402
from botorch.models.transforms.input import Normalize  # noqa: E402
from botorch.models.utils.gpytorch_modules import (  # noqa: E402
    get_gaussian_likelihood_with_gamma_prior,
    get_matern_kernel_with_gamma_prior,
)
from botorch.optim import optimize_acqf  # noqa: E402
from botorch.sampling import SobolQMCNormalSampler  # noqa: E402
from botorch.test_functions import Ackley, Branin, Hartmann  # noqa: E402
from botorch.utils.sampling import manual_seed  # noqa: E402
from gpytorch.mlls import ExactMarginalLogLikelihood  # noqa: E402
from torch import Tensor  # noqa: E402
from torch.quasirandom import SobolEngine  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from gp_ntk.bo import make_bo_model  # noqa: E402

DTYPE = torch.float64
MC_SAMPLES = 128

ModelFactory = Callable[[Tensor, Tensor, Tensor], SingleTaskGP]


def ntk_model(train_X: Tensor, train_Y: Tensor, bounds: Tensor) -> SingleTaskGP:
    """``make_bo_model``'s default: the depth-3 NTK of ReLU squared with priors, inputs centred on the search box."""
    return make_bo_model(train_X, train_Y, bounds, kernel="ntk", depth=3)


def nngp_model(train_X: Tensor, train_Y: Tensor, bounds: Tensor) -> SingleTaskGP:
    return make_bo_model(train_X, train_Y, bounds, kernel="nngp", depth=3)


def matern_model(train_X: Tensor, train_Y: Tensor, bounds: Tensor) -> SingleTaskGP:
    """BoTorch's classic default: Matern-5/2 with ARD and Gamma priors, inputs on [0, 1]^d."""
    return SingleTaskGP(
        train_X,
        train_Y,
        covar_module=get_matern_kernel_with_gamma_prior(train_X.shape[-1]),
        likelihood=get_gaussian_likelihood_with_gamma_prior(),
        input_transform=Normalize(train_X.shape[-1], bounds=bounds),
    )


SURROGATES: dict[str, ModelFactory | None] = {
    "NTK": ntk_model,
    "NNGP": nngp_model,
    "Matern-5/2": matern_model,
    "random": None,
}


@dataclass(frozen=True)
class Problem:
    name: str
    function: Callable[[Tensor], Tensor]
    bounds: Tensor
    optimal_value: float
    num_evaluations: int
    num_initial: int
    batch_size: int


def make_problem(name: str) -> Problem:
    if name == "hartmann":
        function = Hartmann(dim=6, negate=True).to(DTYPE)
        return Problem("Hartmann-6", function, function.bounds, function.optimal_value, 40, 10, 1)
    if name == "ackley":
        function = Ackley(dim=10, negate=True, bounds=[(-5.0, 10.0)] * 10).to(DTYPE)
        return Problem("Ackley-10", function, function.bounds, function.optimal_value, 60, 20, 2)
    if name == "branin":
        function = Branin(negate=True).to(DTYPE)
        return Problem("Branin", function, function.bounds, function.optimal_value, 10, 5, 1)
    raise ValueError(f"problem must be 'hartmann', 'ackley' or 'branin', got {name!r}")


@dataclass
class Run:
    """One BO run: every evaluated value, in order, and the seconds of each iteration."""

    values: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def log_regret(self, optimal_value: float) -> list[float]:
        best = -math.inf
        out = []
        for value in self.values:
            best = max(best, value)
            out.append(math.log10(max(optimal_value - best, 1e-10)))
        return out


def bo_loop(
    problem: Problem,
    make_model: ModelFactory | None,
    seed: int,
    num_restarts: int,
    raw_samples: int,
    label: str,
) -> Run:
    """Sobol design, then fit / maximise qLogNEI / evaluate until the budget is spent."""
    bounds = problem.bounds.to(DTYPE)
    dim = bounds.shape[1]
    sobol = SobolEngine(dim, scramble=True, seed=seed)
    train_X = bounds[0] + sobol.draw(problem.num_initial).to(DTYPE) * (bounds[1] - bounds[0])
    train_Y = problem.function(train_X).unsqueeze(-1)
    run = Run(values=train_Y.squeeze(-1).tolist())
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(
        total=problem.num_evaluations, initial=len(run.values), desc=f"{label} seed {seed}", leave=False
    )
    iteration = 0
    while len(run.values) < problem.num_evaluations:
        iteration += 1
        start = time.perf_counter()
        q = min(problem.batch_size, problem.num_evaluations - len(run.values))
        if make_model is None:
            candidates = bounds[0] + torch.rand(q, dim, generator=generator, dtype=DTYPE) * (
                bounds[1] - bounds[0]
            )
        else:
            model = make_model(train_X, train_Y, bounds)
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
            acquisition = qLogNoisyExpectedImprovement(
                model,
                X_baseline=train_X,
                sampler=SobolQMCNormalSampler(torch.Size([MC_SAMPLES])),
                prune_baseline=True,
            )
            with manual_seed(1000 * seed + iteration):  # reproducible restarts and MC samples
                candidates, _ = optimize_acqf(
                    acquisition, bounds=bounds, q=q, num_restarts=num_restarts, raw_samples=raw_samples
                )
        new_Y = problem.function(candidates).unsqueeze(-1)
        train_X = torch.cat([train_X, candidates])
        train_Y = torch.cat([train_Y, new_Y])
        run.values += new_Y.squeeze(-1).tolist()
        run.seconds.append(time.perf_counter() - start)
        bar.update(q)
        bar.set_postfix(best=f"{max(run.values):.4f}", optimum=f"{problem.optimal_value:.4f}")
    bar.close()
    return run


def plot_regret(problem: Problem, runs: dict[str, list[Run]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, seed_runs in runs.items():
        curves = torch.tensor([run.log_regret(problem.optimal_value) for run in seed_runs], dtype=DTYPE)
        mean = curves.mean(0)
        stderr = curves.std(0) / math.sqrt(len(seed_runs)) if len(seed_runs) > 1 else torch.zeros_like(mean)
        x = torch.arange(1, curves.shape[1] + 1)
        style = "--" if label == "random" else "-"
        (line,) = ax.plot(x, mean, style, label=label, lw=1.8)
        ax.fill_between(x, mean - stderr, mean + stderr, color=line.get_color(), alpha=0.15, lw=0)
    ax.axvline(problem.num_initial + 0.5, color="0.6", lw=0.8, ls=":")
    ax.text(problem.num_initial + 0.7, ax.get_ylim()[1], " BO starts", va="top", fontsize=8, color="0.4")
    seeds = len(next(iter(runs.values())))
    ax.set_title(f"{problem.name}: log10 simple regret, mean ± s.e. over {seeds} seed(s)")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("log10 (f* - best value so far)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, list[Run]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="hartmann", choices=["hartmann", "ackley", "branin"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--restarts", type=int, default=8, help="optimize_acqf num_restarts")
    parser.add_argument("--raw-samples", type=int, default=256, help="optimize_acqf raw_samples")
    parser.add_argument("--output-dir", type=Path, default=Path("examples/output"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="Branin, 10 evaluations, one seed, 2 restarts")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.problem, args.seeds, args.restarts, args.raw_samples = "branin", 1, 2, 32
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    problem = make_problem(args.problem)
    print(
        f"{problem.name}: {problem.num_evaluations} evaluations ({problem.num_initial} Sobol points, then "
        f"batches of {problem.batch_size}), {args.seeds} seed(s), optimum {problem.optimal_value:.5f}"
    )
    runs: dict[str, list[Run]] = {label: [] for label in SURROGATES}
    with warnings.catch_warnings():
        # BoTorch warns when an optimiser stops early; the loop simply uses its best point
        warnings.simplefilter("ignore", category=RuntimeWarning)
        for seed in range(args.seeds):
            for label, factory in SURROGATES.items():
                runs[label].append(bo_loop(problem, factory, seed, args.restarts, args.raw_samples, label))

    print(f"\n{'surrogate':12s} {'final log10 regret':>20s} {'best value':>12s} {'s / iteration':>14s}")
    for label, seed_runs in runs.items():
        finals = [run.log_regret(problem.optimal_value)[-1] for run in seed_runs]
        stderr = statistics.stdev(finals) / math.sqrt(len(finals)) if len(finals) > 1 else 0.0
        best = statistics.fmean(max(run.values) for run in seed_runs)
        seconds = statistics.fmean(s for run in seed_runs for s in run.seconds)
        print(f"{label:12s} {statistics.fmean(finals):12.3f} ± {stderr:5.3f} {best:12.4f} {seconds:14.3f}")
    path = args.output_dir / "bo_regret.png"
    plot_regret(problem, runs, path)
    print(f"\nregret plot: {path}")
    return runs


if __name__ == "__main__":
    main()
