#!/usr/bin/env python
"""Bayesian-optimisation benchmark: network-kernel surrogates against BoTorch's IBNN, Matern and RBF.

Every surrogate runs the same loop (:func:`gp_ntk.bo.run_bo`): a scrambled Sobol initial
design, then per iteration a fresh exact GP fitted by BoTorch's ``fit_gpytorch_mll``,
``qLogNoisyExpectedImprovement`` (128 quasi-MC samples, pruned baseline) optimised jointly for
``q`` candidates by ``optimize_acqf`` (``--restarts`` restarts from ``--raw-samples`` raw
samples), and the objective at the candidates. Same seed, same initial design for every
surrogate. Problems are maximised (BoTorch test functions with ``negate=True``).

Surrogates (``--surrogates``):

* ``ntk``: a depth-3 ReLU NTK in a ``ScaleKernel`` with a shared weight variance and the priors
  of ``gp_ntk.bo.make_bo_model``'s previous default (``_bo_surrogates.previous_default``; this
  benchmark predates the present default), inputs mapped onto [-1, 1]^d by ``CenteredNormalize``;
* ``nngp-relu``, ``nngp-erf``: the same with the depth-3 NNGP kernel, ReLU or erf;
* ``ntk-unit``, ``nngp-unit``: the ReLU NTK / NNGP divided by their prior standard deviations
  (``normalize=True``, :class:`gp_ntk.bo.UnitVarianceKernel`);
* ``ibnn``: BoTorch's ``InfiniteWidthBNNKernel(depth=3)`` in a ``ScaleKernel``, inputs
  ``Normalize``-d onto [0, 1]^d, no priors: the set-up of BoTorch's own documentation;
* ``matern``: Matern-5/2 with ARD and BoTorch's Gamma priors (lengthscale Gamma(3, 6),
  outputscale Gamma(2, 0.15), noise Gamma(1.1, 0.05)), inputs on [0, 1]^d;
* ``rbf``: ``SingleTaskGP``'s current default (RBF with ARD and dimension-scaled LogNormal
  lengthscale prior, LogNormal noise prior), inputs on [0, 1]^d;
* ``random``: uniform random search.

Reported per problem and surrogate: the mean and standard error over seeds of the log10
simple regret ``log10(f* - best value so far)`` after the whole budget (floored at 1e-10),
and the mean wall time per BO iteration (fit + acquisition + evaluation; the objectives are
cheap, so this is the surrogate's overhead). ``--plot`` draws the regret curves.

Usage::

    python benchmarks/bo.py --quick                       # CI-sized smoke run, ~15 s
    python benchmarks/bo.py --seeds 5 --out results/bo    # the full run of docs/bo.md
    python benchmarks/bo.py --study                       # surrogate-quality study of docs/bo.md

Every finished run is appended to ``<out>/runs.jsonl``; rerunning with the same ``--out``
skips runs already there, so an interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import _bo_surrogates  # noqa: E402  (make_bo_model's previous default, next to this script)

DTYPE = torch.float64
REGRET_FLOOR = 1e-10
MC_SAMPLES = 128


# --------------------------------------------------------------------------------- problems


class EmbeddedProblem:
    """A low-dimensional test function hidden in ``dim`` dimensions (an axis-aligned active subspace).

    The base function reads the coordinates ``active`` (chosen by a fixed random permutation);
    the other ``dim - base.dim`` coordinates have no effect. Bounds: the base function's on
    the active coordinates, [0, 1] elsewhere.
    """

    def __init__(self, base: Any, dim: int, seed: int = 0) -> None:
        if dim < base.dim:
            raise ValueError(f"dim must be at least the base dimension {base.dim}, got {dim}")
        generator = torch.Generator().manual_seed(seed)
        self.base = base
        self.dim = dim
        self.active = torch.randperm(dim, generator=generator)[: base.dim].sort().values
        self.bounds = torch.zeros(2, dim, dtype=DTYPE)
        self.bounds[1] = 1.0
        self.bounds[:, self.active] = base.bounds.to(DTYPE)
        self.optimal_value = float(base.optimal_value)

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        return self.base(X[..., self.active])


@dataclass(frozen=True)
class Problem:
    """A benchmark problem: how to build it and its evaluation budget."""

    name: str
    make: Callable[[], Any]
    num_evaluations: int
    num_initial: int
    batch_size: int


def _problems() -> dict[str, Problem]:
    from botorch.test_functions import Ackley, Branin, Hartmann, Levy

    def ackley(dim: int):
        # [-5, 10]^d instead of the symmetric [-32.768, 32.768]^d: the optimum at 0 is then not
        # the centre of the box, which a centred dot-product kernel would single out
        return lambda: Ackley(dim=dim, negate=True, bounds=[(-5.0, 10.0)] * dim).to(DTYPE)

    def levy(dim: int):
        return lambda: Levy(dim=dim, negate=True).to(DTYPE)

    problems = [
        Problem("branin-2", lambda: Branin(negate=True).to(DTYPE), 30, 5, 1),
        Problem("hartmann-6", lambda: Hartmann(dim=6, negate=True).to(DTYPE), 50, 10, 1),
        Problem("ackley-10", ackley(10), 50, 10, 2),
        Problem("levy-10", levy(10), 50, 10, 2),
        Problem("ackley-30", ackley(30), 80, 20, 4),
        Problem("levy-30", levy(30), 80, 20, 4),
        Problem(
            "hartmann-6-in-100",
            lambda: EmbeddedProblem(Hartmann(dim=6, negate=True).to(DTYPE), 100),
            80,
            20,
            4,
        ),
        # Levy's optimum (1, ..., 1) lies near the centre of its box [-10, 10]^d, i.e. near the
        # origin of a centred kernel; this variant moves the box so that the optimum is at -0.4
        # in every centred coordinate, to check that this is not what the network kernels exploit
        Problem(
            "levy-10-shifted",
            lambda: Levy(dim=10, negate=True, bounds=[(-5.0, 15.0)] * 10).to(DTYPE),
            50,
            10,
            2,
        ),
        # small problems of the quick (CI) run
        Problem("branin-2-quick", lambda: Branin(negate=True).to(DTYPE), 8, 4, 2),
        Problem(
            "hartmann-6-in-20-quick",
            lambda: EmbeddedProblem(Hartmann(dim=6, negate=True).to(DTYPE), 20),
            10,
            6,
            2,
        ),
    ]
    return {problem.name: problem for problem in problems}


FULL_PROBLEMS = (
    "branin-2",
    "hartmann-6",
    "ackley-10",
    "levy-10",
    "ackley-30",
    "levy-30",
    "hartmann-6-in-100",
)
QUICK_PROBLEMS = ("branin-2-quick", "hartmann-6-in-20-quick")


# ------------------------------------------------------------------------------- surrogates


def _ibnn(train_X, train_Y, bounds):
    from botorch.models import SingleTaskGP
    from botorch.models.kernels.infinite_width_bnn import InfiniteWidthBNNKernel
    from botorch.models.transforms.input import Normalize
    from gpytorch.kernels import ScaleKernel

    return SingleTaskGP(
        train_X,
        train_Y,
        covar_module=ScaleKernel(InfiniteWidthBNNKernel(depth=3)),
        input_transform=Normalize(train_X.shape[-1], bounds=bounds),
    )


def _matern(train_X, train_Y, bounds):
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.input import Normalize
    from botorch.models.utils.gpytorch_modules import (
        get_gaussian_likelihood_with_gamma_prior,
        get_matern_kernel_with_gamma_prior,
    )

    return SingleTaskGP(
        train_X,
        train_Y,
        covar_module=get_matern_kernel_with_gamma_prior(train_X.shape[-1]),
        likelihood=get_gaussian_likelihood_with_gamma_prior(),
        input_transform=Normalize(train_X.shape[-1], bounds=bounds),
    )


def _rbf(train_X, train_Y, bounds):
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.input import Normalize

    return SingleTaskGP(train_X, train_Y, input_transform=Normalize(train_X.shape[-1], bounds=bounds))


def _network(kernel: str, **options):
    def factory(train_X, train_Y, bounds):
        return _bo_surrogates.previous_default(train_X, train_Y, bounds, kernel=kernel, **options)

    return factory


SURROGATES: dict[str, Callable | None] = {
    "ntk": _network("ntk", depth=3, activation="relu"),
    "nngp-relu": _network("nngp", depth=3, activation="relu"),
    "nngp-erf": _network("nngp", depth=3, activation="erf"),
    "ntk-unit": _network("ntk", depth=3, activation="relu", normalize=True),
    "nngp-unit": _network("nngp", depth=3, activation="relu", normalize=True),
    "ibnn": _ibnn,
    "matern": _matern,
    "rbf": _rbf,
    "random": None,
}
LABELS = {
    "ntk": "NTK (ReLU, 3)",
    "nngp-relu": "NNGP (ReLU, 3)",
    "nngp-erf": "NNGP (erf, 3)",
    "ntk-unit": "NTK, unit variance",
    "nngp-unit": "NNGP (ReLU), unit variance",
    "ibnn": "BoTorch IBNN (3)",
    "matern": "Matern-5/2",
    "rbf": "RBF (BoTorch default)",
    "random": "random",
}


def _acquisition(model, train_X, train_Y):
    from botorch.acquisition import qLogNoisyExpectedImprovement
    from botorch.sampling import SobolQMCNormalSampler

    sampler = SobolQMCNormalSampler(sample_shape=torch.Size([MC_SAMPLES]))
    return qLogNoisyExpectedImprovement(model, X_baseline=train_X, sampler=sampler, prune_baseline=True)


# ------------------------------------------------------------------------------------ runs


def log_regret(best_values: Sequence[float], optimal_value: float) -> list[float]:
    """``log10(max(f* - best, REGRET_FLOOR))`` per evaluation (``nan`` before the first finite value)."""
    out = []
    for best in best_values:
        if not math.isfinite(best):
            out.append(math.nan)
        else:
            out.append(math.log10(max(optimal_value - best, REGRET_FLOOR)))
    return out


def run_one(problem: Problem, surrogate: str, seed: int, restarts: int, raw_samples: int) -> dict[str, Any]:
    """One BO run; returns a JSON-ready record."""
    from gp_ntk.bo import run_bo

    function = problem.make()
    bounds = function.bounds.to(DTYPE)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # BoTorch's input-scaling and optimisation warnings would repeat every iteration; the
        # loop's own fault reports are kept in the record's events
        warnings.simplefilter("ignore")
        result = run_bo(
            function,
            bounds,
            problem.num_evaluations,
            surrogate=SURROGATES[surrogate],
            acquisition=_acquisition,
            batch_size=problem.batch_size,
            num_initial=problem.num_initial,
            num_restarts=restarts,
            raw_samples=raw_samples,
            seed=seed,
            progress=False,
        )
    return {
        "problem": problem.name,
        "surrogate": surrogate,
        "seed": seed,
        "optimal_value": function.optimal_value,
        "best_values": result.best_values.tolist(),
        "log_regret": log_regret(result.best_values.tolist(), float(function.optimal_value)),
        "iteration_seconds": result.iteration_seconds,
        "fit_seconds": result.fit_seconds,
        "acquisition_seconds": result.acquisition_seconds,
        "events": [f"{event.iteration}:{event.kind}" for event in result.events],
        "total_seconds": time.perf_counter() - start,
    }


def _load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def run_benchmark(
    problems: Sequence[str],
    surrogates: Sequence[str],
    seeds: Sequence[int],
    restarts: int,
    raw_samples: int,
    out: Path | None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Every (problem, surrogate, seed) run, resuming from ``out/runs.jsonl`` when it exists."""
    catalogue = _problems()
    for name in problems:
        if name not in catalogue:
            raise ValueError(f"unknown problem {name!r}; choose from {sorted(catalogue)}")
    for name in surrogates:
        if name not in SURROGATES:
            raise ValueError(f"unknown surrogate {name!r}; choose from {sorted(SURROGATES)}")
    runs_path = None if out is None else out / "runs.jsonl"
    records = [] if runs_path is None else _load(runs_path)
    done = {(r["problem"], r["surrogate"], r["seed"]) for r in records}
    todo = [(p, s, seed) for seed in seeds for p in problems for s in surrogates if (p, s, seed) not in done]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="BO runs", dynamic_ncols=True)
    for problem, surrogate, seed in todo:
        if bar is not None:
            bar.set_postfix_str(f"{problem} {surrogate} seed {seed}")
        record = run_one(catalogue[problem], surrogate, seed, restarts, raw_samples)
        records.append(record)
        if runs_path is not None:
            runs_path.parent.mkdir(parents=True, exist_ok=True)
            with runs_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        if bar is not None:
            bar.update(1)
            bar.write(
                f"{problem:24s} {surrogate:10s} seed {seed}: log10 regret {record['log_regret'][-1]:7.3f}, "
                f"{record['total_seconds']:6.1f} s"
            )
    if bar is not None:
        bar.close()
    wanted = set(problems), set(surrogates), set(seeds)
    return [
        r
        for r in records
        if r["problem"] in wanted[0] and r["surrogate"] in wanted[1] and r["seed"] in wanted[2]
    ]


# --------------------------------------------------------------------------------- summary


@dataclass
class Cell:
    """Summary of one (problem, surrogate) pair over seeds."""

    mean: float
    stderr: float
    seeds: int
    seconds_per_iteration: float
    events: int


def summarize(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str], Cell]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["problem"], record["surrogate"]), []).append(record)
    cells = {}
    for key, runs in groups.items():
        finals = [r["log_regret"][-1] for r in runs]
        stderr = statistics.stdev(finals) / math.sqrt(len(finals)) if len(finals) > 1 else math.nan
        iteration_times = [t for r in runs for t in r["iteration_seconds"]]
        cells[key] = Cell(
            statistics.fmean(finals),
            stderr,
            len(runs),
            statistics.fmean(iteration_times) if iteration_times else math.nan,
            sum(len(r["events"]) for r in runs),
        )
    return cells


def _ordered(records, field_name: str, preferred: Sequence[str]) -> list[str]:
    present = {r[field_name] for r in records}
    return [name for name in preferred if name in present] + sorted(present - set(preferred))


def markdown_tables(records: Sequence[dict[str, Any]]) -> str:
    """Regret table (bold: best mean per problem), mean rank, and time-per-iteration table."""
    cells = summarize(records)
    problems = _ordered(records, "problem", list(_problems()))
    surrogates = _ordered(records, "surrogate", list(SURROGATES))
    header = "| problem (d, evaluations, q) | " + " | ".join(LABELS.get(s, s) for s in surrogates) + " |"
    rule = "|---|" + "---:|" * len(surrogates)
    catalogue = _problems()
    lines = [
        "**Final log10 simple regret** (mean ± standard error over seeds; lower is better)",
        "",
        header,
        rule,
    ]
    ranks: dict[str, list[float]] = {s: [] for s in surrogates}
    for problem in problems:
        spec = catalogue.get(problem)
        dim = spec.make().bounds.shape[1] if spec else "?"
        budget = f"{dim}, {spec.num_evaluations}, {spec.batch_size}" if spec else "?"
        row_cells = {s: cells.get((problem, s)) for s in surrogates}
        means = {s: c.mean for s, c in row_cells.items() if c is not None}
        best = min(means.values()) if means else math.nan
        ordered = sorted(means, key=means.get)
        for position, surrogate in enumerate(ordered):
            ranks[surrogate].append(position + 1)
        entries = []
        for surrogate in surrogates:
            cell = row_cells[surrogate]
            if cell is None:
                entries.append("–")
                continue
            text = f"{cell.mean:.2f} ± {cell.stderr:.2f}"
            entries.append(f"**{text}**" if cell.mean == best else text)
        lines.append(f"| {problem} ({budget}) | " + " | ".join(entries) + " |")
    lines.append(
        "| mean rank | "
        + " | ".join(f"{statistics.fmean(ranks[s]):.1f}" if ranks[s] else "–" for s in surrogates)
        + " |"
    )
    lines += [
        "",
        "**Wall time per BO iteration** (seconds, mean over iterations and seeds)",
        "",
        header,
        rule,
    ]
    for problem in problems:
        spec = catalogue.get(problem)
        dim = spec.make().bounds.shape[1] if spec else "?"
        budget = f"{dim}, {spec.num_evaluations}, {spec.batch_size}" if spec else "?"
        entries = []
        for surrogate in surrogates:
            cell = cells.get((problem, surrogate))
            entries.append("–" if cell is None else f"{cell.seconds_per_iteration:.2f}")
        lines.append(f"| {problem} ({budget}) | " + " | ".join(entries) + " |")
    events = sum(c.events for c in cells.values())
    seeds = sorted({r["seed"] for r in records})
    lines += [
        "",
        f"Seeds: {seeds}. Loop fault reports (fit retries, duplicates, ...) over all runs: {events}.",
    ]
    return "\n".join(lines)


def plot(records: Sequence[dict[str, Any]], path: Path) -> None:
    """One panel per problem: mean ± standard error of log10 simple regret against evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = _ordered(records, "problem", list(_problems()))
    surrogates = _ordered(records, "surrogate", list(SURROGATES))
    columns = min(4, len(problems))
    rows = math.ceil(len(problems) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, problem in zip(axes.flat, problems):
        for index, surrogate in enumerate(surrogates):
            runs = [r for r in records if r["problem"] == problem and r["surrogate"] == surrogate]
            if not runs:
                continue
            curves = torch.tensor([r["log_regret"] for r in runs], dtype=torch.float64)
            mean = curves.nanmean(0)
            count = torch.isfinite(curves).sum(0).clamp_min(1)
            centred = torch.where(torch.isfinite(curves), curves - mean, torch.zeros_like(curves))
            stderr = (centred.pow(2).sum(0) / (count - 1).clamp_min(1)).sqrt() / count.sqrt()
            x = torch.arange(1, curves.shape[1] + 1)
            style = "--" if surrogate == "random" else "-"
            color = "0.4" if surrogate == "random" else colors[index % len(colors)]
            ax.plot(x, mean, style, color=color, label=LABELS.get(surrogate, surrogate), lw=1.6)
            ax.fill_between(x, mean - stderr, mean + stderr, color=color, alpha=0.15, lw=0)
        ax.set_title(problem)
        ax.set_xlabel("evaluations")
        ax.set_ylabel("log10 simple regret")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(problems) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    legend_columns = min(len(labels), 4)
    fig.legend(handles, labels, loc="lower center", ncol=legend_columns, frameon=False)
    # leave about 0.3 inch per legend row below the panels
    legend_height = 0.3 * math.ceil(len(labels) / legend_columns) / fig.get_figheight()
    fig.tight_layout(rect=(0, legend_height, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------- surrogate-quality study


def _study_configs() -> dict[str, Callable]:
    from botorch.models import SingleTaskGP
    from botorch.models.kernels.infinite_width_bnn import InfiniteWidthBNNKernel
    from botorch.models.transforms.input import Normalize
    from gpytorch.kernels import ScaleKernel

    from gp_ntk.bo import CenteredNormalize

    def ibnn_centred(train_X, train_Y, bounds):
        return SingleTaskGP(
            train_X,
            train_Y,
            covar_module=ScaleKernel(InfiniteWidthBNNKernel(depth=3)),
            input_transform=CenteredNormalize(train_X.shape[-1], bounds=bounds),
        )

    def unit_cube(train_X, train_Y, bounds):
        return _bo_surrogates.previous_default(
            train_X, train_Y, bounds, input_transform=Normalize(train_X.shape[-1], bounds=bounds)
        )

    return {
        "NNGP ReLU (default)": _network("nngp"),
        "NNGP ReLU, no priors": _network("nngp", priors=False),
        "NNGP ReLU on [0, 1]^d": unit_cube,
        "NNGP ReLU, depth 1": _network("nngp", depth=1),
        "NNGP ReLU, ARD": _network("nngp", ard=True),
        "NNGP ReLU, unit variance": _network("nngp", normalize=True),
        "NTK ReLU": _network("ntk"),
        "NTK ReLU, no priors": _network("ntk", priors=False),
        "NNGP erf": _network("nngp", activation="erf"),
        "IBNN on [0, 1]^d": _ibnn,
        "IBNN centred": ibnn_centred,
        "Matern-5/2": _matern,
        "RBF (default)": _rbf,
    }


def surrogate_study(num_train: int, num_test: int, seeds: Sequence[int], progress: bool = True) -> str:
    """Held-out accuracy and fitted hyperparameters of surrogate configurations, as markdown.

    For each problem and seed: ``num_train`` uniform random training points, ``num_test``
    test points; each configuration is fitted by ``gp_ntk.bo.fit_bo_model``. Reported: the mean
    test negative log predictive density of ``y`` (in units of the training standard
    deviation) and Spearman's rank correlation between predicted mean and true value (what an
    acquisition function needs), mean ± standard error over seeds, and the range over seeds
    of the fitted outputscale ``s``, weight variance ``w`` and bias variance ``b``.
    """
    from gp_ntk.bo import fit_bo_model

    catalogue = _problems()
    problem_names = ("hartmann-6", "ackley-10", "levy-30", "hartmann-6-in-100")
    configs = _study_configs()
    rows: dict[tuple[str, str], list[tuple[float, float, dict[str, float]]]] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(problem_names) * len(seeds) * len(configs), desc="study", dynamic_ncols=True)
    for problem_name in problem_names:
        function = catalogue[problem_name].make()
        bounds = function.bounds.to(DTYPE)
        for seed in seeds:
            generator = torch.Generator().manual_seed(1000 + seed)
            width = bounds[1] - bounds[0]
            train_X = (
                bounds[0] + torch.rand(num_train, bounds.shape[1], generator=generator, dtype=DTYPE) * width
            )
            test_X = (
                bounds[0] + torch.rand(num_test, bounds.shape[1], generator=generator, dtype=DTYPE) * width
            )
            train_Y = function(train_X).unsqueeze(-1)
            test_Y = function(test_X)
            centre, spread = float(train_Y.mean()), float(train_Y.std())
            for config_name, factory in configs.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = factory(train_X, train_Y, bounds)
                    fit_bo_model(model)
                    with torch.no_grad():
                        posterior = model.posterior(test_X, observation_noise=True)
                        mean = posterior.mean.squeeze(-1)
                        variance = posterior.variance.squeeze(-1).clamp_min(1e-12)
                z_mean, z_var = (mean - centre) / spread, variance / spread**2
                z_true = (test_Y - centre) / spread
                nlpd = float(
                    (0.5 * torch.log(2 * math.pi * z_var) + 0.5 * (z_true - z_mean) ** 2 / z_var).mean()
                )
                rows.setdefault((problem_name, config_name), []).append(
                    (nlpd, _spearman(mean, test_Y), _hyperparameters(model))
                )
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    lines = [
        f"n = {num_train} training points, {num_test} test points, seeds {list(seeds)}; "
        "mean ± standard error over seeds; ranges are min–max over seeds.",
        "",
        "| problem | surrogate | test NLPD | rank correlation | outputscale s | weight w | bias b |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for (problem_name, config_name), values in rows.items():
        nlpd = [v[0] for v in values]
        rho = [v[1] for v in values]
        ranges = []
        for key in ("s", "w", "b"):
            found = [v[2][key] for v in values if key in v[2]]
            ranges.append(f"{min(found):.2g}–{max(found):.2g}" if found else "–")
        lines.append(
            f"| {problem_name} | {config_name} | {statistics.fmean(nlpd):.3f} ± {_stderr(nlpd):.3f} | "
            f"{statistics.fmean(rho):.3f} ± {_stderr(rho):.3f} | " + " | ".join(ranges) + " |"
        )
    return "\n".join(lines)


def _stderr(values: Sequence[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    rank_a = a.argsort().argsort().to(DTYPE)
    rank_b = b.argsort().argsort().to(DTYPE)
    return float(torch.corrcoef(torch.stack([rank_a, rank_b]))[0, 1])


def _hyperparameters(model) -> dict[str, float]:
    """Outputscale, weight and bias variance of a (Scale)Kernel-wrapped network kernel, if present."""
    found = {}
    kernel = model.covar_module
    if hasattr(kernel, "outputscale"):
        found["s"] = float(kernel.outputscale.mean())
        kernel = kernel.base_kernel
    for key, names in (("w", ("weight_variance", "weight_var")), ("b", ("bias_variance", "bias_var"))):
        for name in names:
            value = getattr(kernel, name, None)
            if isinstance(value, torch.Tensor):
                found[key] = float(value.mean())
                break
    return found


# ----------------------------------------------------------------------- corner diagnostic


def corner_diagnostic(
    problem_name: str, surrogates: Sequence[str], seeds: Sequence[int], restarts: int, raw_samples: int
) -> str:
    """Where the proposals go: the share of candidate coordinates on the box boundary, as markdown.

    Dot-product kernels have a prior variance that grows with the distance from the centre of
    the box; this counts how often each surrogate's candidates (the points the acquisition
    optimiser returned, before any repair by the loop) sit on a face of the box.
    """
    import gp_ntk.bo as gp_bo

    problem = _problems()[problem_name]
    function = problem.make()
    bounds = function.bounds.to(DTYPE)
    width = bounds[1] - bounds[0]
    lines = [
        f"{problem_name}: {problem.num_evaluations} evaluations, q = {problem.batch_size}, seeds {list(seeds)}",
        "",
        "| surrogate | coordinates on the boundary | candidates entirely on the boundary (corners) | final log10 regret |",
        "|---|---:|---:|---:|",
    ]
    for surrogate in surrogates:
        proposed: list[torch.Tensor] = []

        def recording_optimizer(*args, **kwargs):
            candidates, values = original(*args, **kwargs)
            proposed.append(candidates.detach().reshape(-1, bounds.shape[1]).clone())
            return candidates, values

        original = gp_bo.loop.optimize_acqf
        gp_bo.loop.optimize_acqf = recording_optimizer
        finals = []
        try:
            for seed in seeds:
                record = run_one(problem, surrogate, seed, restarts, raw_samples)
                finals.append(record["log_regret"][-1])
        finally:
            gp_bo.loop.optimize_acqf = original
        if not proposed:
            continue
        unit = (torch.cat(proposed) - bounds[0]) / width
        on_boundary = (unit <= 1e-6) | (unit >= 1 - 1e-6)
        lines.append(
            f"| {LABELS.get(surrogate, surrogate)} | {float(on_boundary.double().mean()):.0%} | "
            f"{float(on_boundary.all(-1).double().mean()):.0%} | {statistics.fmean(finals):.2f} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- CLI


def _environment() -> str:
    import botorch
    import gpytorch

    cpu = platform.processor() or platform.machine()
    return (
        f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}, {platform.system()} {cpu}, "
        f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} thread(s)), "
        f"gpytorch {gpytorch.__version__}, botorch {botorch.__version__}, python {platform.python_version()}"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two tiny problems, 2 restarts: a smoke run")
    parser.add_argument("--problems", nargs="+", help=f"default: {' '.join(FULL_PROBLEMS)}")
    parser.add_argument("--surrogates", nargs="+", default=list(SURROGATES), help="default: all")
    parser.add_argument("--seeds", type=int, help="number of seeds 0, 1, ... (default 5; 2 with --quick)")
    parser.add_argument("--restarts", type=int, default=4, help="optimize_acqf num_restarts")
    parser.add_argument("--raw-samples", type=int, default=256, help="optimize_acqf raw_samples")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, help="folder for runs.jsonl (resumable), results.md and the plot")
    parser.add_argument("--plot", type=Path, help="regret plot PNG (default <out>/bo_regret.png)")
    parser.add_argument("--study", action="store_true", help="run the surrogate-quality study instead")
    parser.add_argument("--study-train", type=int, default=40, help="training points of the study")
    parser.add_argument("--corners", metavar="PROBLEM", help="count proposals on the box boundary instead")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    num_seeds = args.seeds if args.seeds is not None else (2 if args.quick else 5)
    if num_seeds < 1:
        parser.error("--seeds must be at least 1")
    seeds = list(range(num_seeds))
    progress = not args.no_progress
    if args.study:
        text = surrogate_study(args.study_train, 500, seeds, progress)
        print(f"Surrogate study ({_environment()})\n\n{text}")
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "study.md").write_text(text + "\n")
        return {"study": text}

    problems = args.problems or list(QUICK_PROBLEMS if args.quick else FULL_PROBLEMS)
    restarts, raw_samples = (2, 32) if args.quick else (args.restarts, args.raw_samples)
    if args.corners:
        surrogates = [s for s in args.surrogates if SURROGATES.get(s) is not None]
        text = corner_diagnostic(args.corners, surrogates, seeds, restarts, raw_samples)
        print(f"Corner diagnostic ({_environment()})\n\n{text}")
        return {"corners": text}
    start = time.perf_counter()
    records = run_benchmark(problems, args.surrogates, seeds, restarts, raw_samples, args.out, progress)
    tables = markdown_tables(records)
    environment = _environment()
    command = "python benchmarks/bo.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(
        f"\n{tables}\n\n{environment}; {time.perf_counter() - start:.0f} s this invocation.\nCommand: {command}"
    )
    plot_path = args.plot or (None if args.out is None else args.out / "bo_regret.png")
    if plot_path is not None:
        plot(records, plot_path)
        print(f"regret plot: {plot_path}")
    if args.out is not None:
        (args.out / "results.md").write_text(f"{tables}\n\n{environment}\n\nCommand: `{command}`\n")
    return {"records": records, "tables": tables}


if __name__ == "__main__":
    main()
