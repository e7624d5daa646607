#!/usr/bin/env python
"""Bayesian optimisation with what a wide network trained for time t would predict.

``gp_ntk.bo.TrainedEnsembleModel`` is a BoTorch model whose posterior is the ensemble of
infinitely wide networks trained by gradient descent on the data for time ``t``
(``gp_ntk.dynamics``): early in training the networks have learnt only the top eigenmodes of
the NTK and are unsure everywhere; at ``t = None`` (infinity) they interpolate the data. This
script runs the same qLogExpectedImprovement loop on BoTorch's 4-D Styblinski-Tang function
(negated, on [-1, 1]^4) with ensembles trained for t = 10, 1000 and infinity, against random
search, and saves

* ``ensemble_bo_regret.png``: best value found against the number of evaluations;
* ``ensemble_bo_posterior.png``: a 1-D slice of the posterior mean +- 2 sd at each t.

Usage::

    python examples/ensemble_bo.py [--quick] [--output-dir examples/output]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from botorch.acquisition import qLogExpectedImprovement  # noqa: E402
from botorch.optim import optimize_acqf  # noqa: E402
from botorch.test_functions import StyblinskiTang  # noqa: E402

import gp_ntk  # noqa: E402
from gp_ntk.bo import TrainedEnsembleModel  # noqa: E402

DTYPE = torch.float64
TIMES = {"t = 10": 10.0, "t = 1000": 1000.0, "t = inf": None}


def objective(x: torch.Tensor) -> torch.Tensor:
    """Negated 4-D Styblinski-Tang on [-1, 1]^4 (scaled to its [-5, 5] box), to be maximised."""
    return -StyblinskiTang(dim=4)(5.0 * x) / 100.0


def run(t: float | None, initial: torch.Tensor, budget: int, seed: int) -> list[float]:
    x, y = initial.clone(), objective(initial).unsqueeze(-1)
    bounds = torch.stack([-torch.ones(4, dtype=DTYPE), torch.ones(4, dtype=DTYPE)])
    best = [float(y.max())]
    for step in range(budget):
        kernel = gp_ntk.NTKKernel(depth=2, activation="erf", weight_variance=2.0, bias_variance=0.1).double()
        model = TrainedEnsembleModel(x, y, kernel, t=t, diag_reg=1e-4)
        acqf = qLogExpectedImprovement(model, best_f=y.max())
        with torch.random.fork_rng():
            torch.manual_seed(seed * 1000 + step)
            candidate, _ = optimize_acqf(acqf, bounds, q=1, num_restarts=4, raw_samples=128)
        x = torch.cat([x, candidate])
        y = torch.cat([y, objective(candidate).unsqueeze(-1)])
        best.append(float(y.max()))
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 6 steps")
    parser.add_argument("--output-dir", type=Path, default=Path("examples/output"))
    args = parser.parse_args(argv)
    seeds, budget = (1, 6) if args.quick else (3, 25)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    curves: dict[str, list[list[float]]] = {name: [] for name in [*TIMES, "random"]}
    for seed in range(seeds):
        gen = torch.Generator().manual_seed(seed)
        initial = 2 * torch.rand(8, 4, generator=gen, dtype=DTYPE) - 1
        for name, t in TIMES.items():
            curves[name].append(run(t, initial, budget, seed))
            print(f"seed {seed}  {name:<9} best {curves[name][-1][-1]:.4f}", flush=True)
        random = torch.cat([initial, 2 * torch.rand(budget, 4, generator=gen, dtype=DTYPE) - 1])
        values = objective(random)
        curves["random"].append([float(values[: 8 + k].max()) for k in range(budget + 1)])
    optimum = -StyblinskiTang(dim=4).optimal_value / 100.0

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, runs in curves.items():
        mean = torch.tensor(runs).mean(0)
        ax.plot(range(8, 8 + budget + 1), optimum - mean, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("regret (mean over seeds)")
    ax.set_title("qLogEI with trained wide-network ensembles")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.output_dir / "ensemble_bo_regret.png", dpi=120)

    gen = torch.Generator().manual_seed(0)
    x = 2 * torch.rand(10, 4, generator=gen, dtype=DTYPE) - 1
    y = objective(x).unsqueeze(-1)
    line = torch.zeros(200, 4, dtype=DTYPE)
    line[:, 0] = torch.linspace(-1, 1, 200, dtype=DTYPE)
    fig, axes = plt.subplots(1, len(TIMES), figsize=(12, 3.5), sharey=True)
    kernel = gp_ntk.NTKKernel(depth=2, activation="erf", weight_variance=2.0, bias_variance=0.1).double()
    for ax, (name, t) in zip(axes, TIMES.items()):
        posterior = TrainedEnsembleModel(x, y, kernel, t=t, diag_reg=1e-4).posterior(line)
        mean = posterior.mean.squeeze(-1).detach()
        sd = posterior.variance.squeeze(-1).clamp_min(0).sqrt().detach()
        ax.plot(line[:, 0], mean, color="C0")
        ax.fill_between(line[:, 0], mean - 2 * sd, mean + 2 * sd, color="C0", alpha=0.25)
        ax.plot(line[:, 0], objective(line), "k--", lw=1, label="objective")
        ax.set_title(name)
        ax.set_xlabel("x1 (other inputs 0)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(args.output_dir / "ensemble_bo_posterior.png", dpi=120)
    final = {name: sum(r[-1] for r in runs) / len(runs) for name, runs in curves.items()}
    print("final best (mean):", {k: round(v, 4) for k, v in final.items()}, "optimum", round(optimum, 4))
    assert all(math.isfinite(v) for v in final.values())
    print(
        f"wrote {args.output_dir / 'ensemble_bo_regret.png'} and {args.output_dir / 'ensemble_bo_posterior.png'}"
    )


if __name__ == "__main__":
    main()
