#!/usr/bin/env python
"""Uncertainty-aware regression benchmark: NNGP / NTK kernels against RBF and Matern-5/2 on real data.

For every dataset, seed and kernel the script draws a random 80/20 train/test split (seeded),
standardises the targets with the training mean and standard deviation, fits a
:class:`gp_ntk.models.ExactGPModel` (constant mean, ``ScaleKernel(kernel)``, Gaussian
likelihood; the model standardises the inputs with training statistics itself) by its exact
marginal likelihood with :func:`gp_ntk.fit`, and scores the predictive distribution of ``y``
(observation noise included, ``model.predict``) on the test points:

* **RMSE** of the predictive mean;
* **NLL**, the mean negative log predictive density of the test targets under the Gaussian
  predictive ``N(mean, variance)``;
* **coverage** of the central 95 % predictive interval (calibrated intervals give about 0.95);
* **width**, the mean width of that interval (sharpness);
* **fit time**, the wall-clock time of :func:`gp_ntk.fit`.

RMSE, NLL and width are in *standardised target units* (the targets divided by their training
standard deviation), so that datasets can be compared; the JSON output also holds RMSE and NLL
in original units. Everything runs in float64 with exact (Cholesky) inference.

Datasets (nothing is downloaded; all ship inside installed packages):

* ``diabetes``: scikit-learn's bundled diabetes data, 442 x 10, disease progression after a year;
* ``co2``: statsmodels' bundled Mauna Loa weekly CO2 series (1958-2001), NaNs dropped, 600
  evenly spaced weeks, x = decimal year (1-D), y = ppm;
* ``star98``: statsmodels' bundled STAR98 school data, 303 California school districts x the 12
  base covariates (interaction columns dropped), y = fraction of students above the national
  median maths score;
* ``hartmann6``: BoTorch's Hartmann function in 6-D at 500 uniform points in ``[0, 1]^6`` plus
  Gaussian noise (sd 0.05), a fresh sample per seed;
* ``ackley10``: BoTorch's Ackley function in 10-D at 500 uniform points in ``[-32.768, 32.768]^10``
  plus Gaussian noise (sd 0.1), a fresh sample per seed.

Kernels: ``nngp-relu-d3`` and ``ntk-relu-d3`` (``gp_ntk.models.make_kernel`` defaults: depth-3
ReLU network, weight variance 2, bias variance 0.1, both learned), ``nngp-erf-d2`` (depth-2 erf
network), ``rbf-ard`` and ``matern52-ard`` (one lengthscale per feature, GPyTorch's initial
values). ``rbf-ard-short`` and ``matern52-ard-short`` (not run by default) start the baselines
at lengthscale 0.05 and noise 1e-3 instead, to tell a worse kernel from a worse local optimum.

Fitting: every kernel gets the same optimiser and budget. Default: L-BFGS (strong-Wolfe line
search, step 1.0) for at most 20 outer iterations of up to 20 evaluations each, stopping once 3
outer iterations in a row improve the loss (negative log marginal likelihood per point) by less
than 1e-4 (``gp_ntk.fit(model, optimizer="lbfgs", max_iter=20, patience=3)``). ``--optimizer
adam`` runs Adam (lr 0.05) for a fixed ``--max-iter`` steps (300 by default) instead.

Usage::

    python benchmarks/regression.py                       # full run (5 datasets x 5 kernels x 5 seeds)
    python benchmarks/regression.py --quick               # smoke run: diabetes, 1 seed, 3 iterations
    python benchmarks/regression.py --datasets diabetes co2 --seeds 3 --max-iter 10
    python benchmarks/regression.py --datasets co2 --kernels rbf-ard rbf-ard-short matern52-ard-short
    python benchmarks/regression.py --json results.json --markdown results.md --plot-dir docs/img

Threads: ``torch.set_num_threads(--threads)``, 1 by default; also export ``OMP_NUM_THREADS=1``
on a shared machine.

One progress line is printed per fit; at the end a table of mean +/- standard error over the
seeds, and the paired difference of each kernel's test NLL to ``rbf-ard`` on the same splits.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gpytorch
import numpy as np
import torch
from gpytorch.kernels import Kernel
from torch import Tensor

import gp_ntk
from gp_ntk.models import ExactGPModel, make_kernel

DTYPE = torch.float64
TRAIN_FRACTION = 0.8
Z95 = 1.959963984540054
REFERENCE_KERNEL = "rbf-ard"
REPO_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """One regression problem: inputs ``x`` (n, d) and targets ``y`` (n,), float64."""

    name: str
    x: Tensor
    y: Tensor
    description: str


def _as_dataset(name: str, x: Any, y: Any, description: str) -> Dataset:
    x_t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    y_t = torch.as_tensor(np.asarray(y, dtype=np.float64)).reshape(-1)
    if x_t.dim() == 1:
        x_t = x_t.unsqueeze(-1)
    return Dataset(name, x_t, y_t, description)


def load_diabetes(seed: int) -> Dataset:
    """scikit-learn's bundled diabetes data (442 x 10); the same for every seed."""
    from sklearn.datasets import load_diabetes as sk_load_diabetes

    x, y = sk_load_diabetes(return_X_y=True)
    return _as_dataset("diabetes", x, y, "sklearn load_diabetes, 442 x 10")


CO2_POINTS = 600


def load_co2(seed: int) -> Dataset:
    """statsmodels' bundled weekly Mauna Loa CO2 (NaNs dropped), 600 evenly spaced weeks, x = year."""
    from statsmodels.datasets import co2

    data = co2.load_pandas().data.dropna()
    index = data.index
    year = index.year + (index.day_of_year - 1) / (365.0 + index.is_leap_year)
    keep = np.unique(np.linspace(0, len(data) - 1, CO2_POINTS).round().astype(int))
    x = np.asarray(year, dtype=np.float64)[keep]
    y = data["co2"].to_numpy(dtype=np.float64)[keep]
    return _as_dataset(
        "co2", x, y, f"statsmodels co2 (weekly, 1958-2001), {len(keep)} evenly spaced weeks, 1-D"
    )


STAR98_FEATURES = 12


def load_star98(seed: int) -> Dataset:
    """statsmodels' bundled STAR98: 303 districts x 12 base covariates, y = fraction above median."""
    from statsmodels.datasets import star98

    data = star98.load_pandas()
    x = data.exog.iloc[:, :STAR98_FEATURES].to_numpy(dtype=np.float64)
    above = data.endog["NABOVE"].to_numpy(dtype=np.float64)
    below = data.endog["NBELOW"].to_numpy(dtype=np.float64)
    return _as_dataset(
        "star98", x, above / (above + below), "statsmodels star98, 303 x 12, y = share above median"
    )


SYNTHETIC_POINTS = 500


def _botorch_problem(name: str, function: Any, noise_std: float, seed: int) -> Dataset:
    generator = torch.Generator().manual_seed(10_000 + seed)
    bounds = function.bounds.to(DTYPE)
    u = torch.rand(SYNTHETIC_POINTS, function.dim, generator=generator, dtype=DTYPE)
    x = bounds[0] + (bounds[1] - bounds[0]) * u
    with torch.no_grad():
        f = function.evaluate_true(x)
    y = f + noise_std * torch.randn(SYNTHETIC_POINTS, generator=generator, dtype=DTYPE)
    lo, hi = float(bounds[0, 0]), float(bounds[1, 0])
    description = (
        f"botorch {type(function).__name__}(dim={function.dim}), {SYNTHETIC_POINTS} uniform points in "
        f"[{lo:g}, {hi:g}]^{function.dim} + N(0, {noise_std:g}^2) noise"
    )
    return Dataset(name, x, y, description)


def load_hartmann6(seed: int) -> Dataset:
    """BoTorch Hartmann-6 at 500 uniform points plus N(0, 0.05^2) noise, a fresh draw per seed."""
    from botorch.test_functions import Hartmann

    return _botorch_problem("hartmann6", Hartmann(dim=6), 0.05, seed)


def load_ackley10(seed: int) -> Dataset:
    """BoTorch Ackley-10 at 500 uniform points plus N(0, 0.1^2) noise, a fresh draw per seed."""
    from botorch.test_functions import Ackley

    return _botorch_problem("ackley10", Ackley(dim=10), 0.1, seed)


DATASETS: dict[str, Callable[[int], Dataset]] = {
    "diabetes": load_diabetes,
    "co2": load_co2,
    "star98": load_star98,
    "hartmann6": load_hartmann6,
    "ackley10": load_ackley10,
}


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelSpec:
    """A kernel factory ``d -> Kernel`` and an optional initial noise variance (standardised units)."""

    factory: Callable[[int], Kernel]
    noise: float | None = None


SHORT_LENGTHSCALE = 0.05
SHORT_NOISE = 1e-3


def _short(name: str) -> Callable[[int], Kernel]:
    def factory(d: int) -> Kernel:
        kernel = make_kernel(name, num_dims=d)
        kernel.lengthscale = SHORT_LENGTHSCALE
        return kernel

    return factory


KERNELS: dict[str, KernelSpec] = {
    "nngp-relu-d3": KernelSpec(lambda d: make_kernel("nngp", depth=3, activation="relu")),
    "ntk-relu-d3": KernelSpec(lambda d: make_kernel("ntk", depth=3, activation="relu")),
    "nngp-erf-d2": KernelSpec(lambda d: make_kernel("nngp", depth=2, activation="erf")),
    "rbf-ard": KernelSpec(lambda d: make_kernel("rbf", num_dims=d)),
    "matern52-ard": KernelSpec(lambda d: make_kernel("matern52", num_dims=d)),
    # not in the default set: the baselines started at a short lengthscale and a small noise
    # (GPyTorch's defaults are lengthscale 0.69 and noise 0.69), a check for local optima
    "rbf-ard-short": KernelSpec(_short("rbf"), noise=SHORT_NOISE),
    "matern52-ard-short": KernelSpec(_short("matern52"), noise=SHORT_NOISE),
}
DEFAULT_KERNELS = ["nngp-relu-d3", "ntk-relu-d3", "nngp-erf-d2", "rbf-ard", "matern52-ard"]


# --------------------------------------------------------------------------------------------
# One fit
# --------------------------------------------------------------------------------------------


@dataclass
class Split:
    train_x: Tensor
    train_y: Tensor  # standardised
    test_x: Tensor
    test_y: Tensor  # standardised
    y_mean: float
    y_std: float


def split(data: Dataset, seed: int) -> Split:
    """Seeded random 80/20 split; targets standardised with the training mean and std."""
    generator = torch.Generator().manual_seed(seed)
    n = data.y.shape[0]
    order = torch.randperm(n, generator=generator)
    n_train = int(round(TRAIN_FRACTION * n))
    train, test = order[:n_train], order[n_train:]
    y_mean = float(data.y[train].mean())
    y_std = float(data.y[train].std())
    return Split(
        train_x=data.x[train],
        train_y=(data.y[train] - y_mean) / y_std,
        test_x=data.x[test],
        test_y=(data.y[test] - y_mean) / y_std,
        y_mean=y_mean,
        y_std=y_std,
    )


@dataclass
class FitConfig:
    optimizer: str
    max_iter: int
    lr: float
    patience: int


@dataclass
class Record:
    """Scores of one (dataset, kernel, seed); RMSE, NLL and width in standardised units."""

    dataset: str
    kernel: str
    seed: int
    n_train: int
    n_test: int
    dim: int
    rmse: float
    nll: float
    coverage: float
    width: float
    rmse_original: float
    nll_original: float
    train_mll_per_point: float
    noise_variance: float
    fit_seconds: float
    iterations: int
    status: str
    recoveries: int
    hyperparameters: dict[str, list[float]]


def fit_and_score(
    data: Dataset, seed: int, kernel_name: str, config: FitConfig
) -> tuple[Record, ExactGPModel]:
    """Fit one exact GP on the seed's training split and score it on the test split."""
    torch.manual_seed(seed)
    s = split(data, seed)
    spec = KERNELS[kernel_name]
    model = ExactGPModel(s.train_x, s.train_y, kernel=spec.factory(data.x.shape[-1]))
    if spec.noise is not None:
        model.likelihood.noise = spec.noise
    status = "ok"
    start = time.perf_counter()
    try:
        result = gp_ntk.fit(
            model,
            optimizer=config.optimizer,
            max_iter=config.max_iter,
            lr=config.lr,
            patience=config.patience,
            progress=False,
        )
        status, iterations, recoveries = result.status, result.iterations, len(result.recoveries)
        train_mll = -result.best_loss
    except gp_ntk.FitError:
        # the model keeps the best parameters seen; score those and flag the row
        status, iterations, recoveries, train_mll = "fit_error", config.max_iter, -1, math.nan
    fit_seconds = time.perf_counter() - start

    mean, variance, lower, upper = model.predict(s.test_x)
    std = variance.clamp_min(1e-300).sqrt()
    residual = s.test_y - mean
    rmse = float(residual.pow(2).mean().sqrt())
    nll = float(-torch.distributions.Normal(mean, std).log_prob(s.test_y).mean())
    inside = (s.test_y >= lower) & (s.test_y <= upper)
    record = Record(
        dataset=data.name,
        kernel=kernel_name,
        seed=seed,
        n_train=s.train_y.shape[0],
        n_test=s.test_y.shape[0],
        dim=data.x.shape[-1],
        rmse=rmse,
        nll=nll,
        coverage=float(inside.to(DTYPE).mean()),
        width=float((upper - lower).mean()),
        rmse_original=rmse * s.y_std,
        nll_original=nll + math.log(s.y_std),
        train_mll_per_point=train_mll,
        noise_variance=float(model.likelihood.noise.detach().reshape(-1)[0]),
        fit_seconds=fit_seconds,
        iterations=iterations,
        status=status,
        recoveries=recoveries,
        hyperparameters=hyperparameters(model),
    )
    return record, model


def hyperparameters(model: ExactGPModel) -> dict[str, list[float]]:
    """The fitted hyperparameters (constrained values), keyed by their name without ``raw_``."""
    values = {}
    for name, raw, constraint in model.named_parameters_and_constraints():
        value = raw if constraint is None else constraint.transform(raw)
        values[name.replace("raw_", "")] = [float(v) for v in value.detach().reshape(-1)]
    return values


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------

METRICS = ("rmse", "nll", "coverage", "width", "train_mll_per_point", "fit_seconds")


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(k)); SE is NaN for a single value."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    if len(values) == 1:
        return values[0], math.nan
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def summarise(records: list[Record]) -> list[dict[str, Any]]:
    """One row per (dataset, kernel): mean and SE of every metric, NLL wins, paired NLL gap."""
    datasets = list(dict.fromkeys(r.dataset for r in records))
    kernels = list(dict.fromkeys(r.kernel for r in records))
    by_key = {(r.dataset, r.kernel, r.seed): r for r in records}
    rows = []
    for dataset in datasets:
        seeds = sorted({r.seed for r in records if r.dataset == dataset})
        wins = dict.fromkeys(kernels, 0)
        for seed in seeds:
            candidates = [by_key[(dataset, k, seed)] for k in kernels if (dataset, k, seed) in by_key]
            candidates = [c for c in candidates if math.isfinite(c.nll)]
            if candidates:
                wins[min(candidates, key=lambda c: c.nll).kernel] += 1
        for kernel in kernels:
            mine = [by_key[(dataset, kernel, s)] for s in seeds if (dataset, kernel, s) in by_key]
            if not mine:
                continue
            row: dict[str, Any] = {"dataset": dataset, "kernel": kernel, "seeds": len(mine)}
            for metric in METRICS:
                row[metric], row[f"{metric}_se"] = mean_se([getattr(r, metric) for r in mine])
            row["nll_wins"] = wins[kernel]
            gaps = [
                r.nll - by_key[(dataset, REFERENCE_KERNEL, r.seed)].nll
                for r in mine
                if (dataset, REFERENCE_KERNEL, r.seed) in by_key
            ]
            row["nll_minus_ref"], row["nll_minus_ref_se"] = mean_se(gaps) if gaps else (math.nan, math.nan)
            row["failures"] = sum(r.status == "fit_error" for r in mine)
            rows.append(row)
    return rows


def _pm(mean: float, se: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(se):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def _columns(row: dict[str, Any]) -> list[str]:
    return [
        _pm(row["rmse"], row["rmse_se"], 3),
        _pm(row["nll"], row["nll_se"], 3),
        _pm(row["coverage"], row["coverage_se"], 3),
        _pm(row["width"], row["width_se"], 2),
        _pm(row["train_mll_per_point"], row["train_mll_per_point_se"], 3),
        _pm(row["fit_seconds"], row["fit_seconds_se"], 1),
        f"{row['nll_wins']}/{row['seeds']}",
        _pm(row["nll_minus_ref"], row["nll_minus_ref_se"], 3) if row["kernel"] != REFERENCE_KERNEL else "0",
    ]


HEADERS = [
    "dataset",
    "kernel",
    "test RMSE",
    "test NLL",
    "95% coverage",
    "95% width",
    "train log ML/pt",
    "fit s",
    "NLL wins",
]
REF_HEADER = f"NLL − {REFERENCE_KERNEL}"


def format_text(rows: list[dict[str, Any]]) -> str:
    """Plain-text table (mean ± SE over seeds)."""
    headers = [*HEADERS, REF_HEADER]
    body = [[row["dataset"], row["kernel"], *_columns(row)] for row in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    previous = None
    for cells in body:
        if previous is not None and cells[0] != previous:
            lines.append("")
        previous = cells[0]
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    return "\n".join(lines)


def format_markdown(rows: list[dict[str, Any]]) -> str:
    """Markdown table; the lowest mean RMSE and NLL of each dataset in bold."""
    headers = [*HEADERS, REF_HEADER]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    best: dict[tuple[str, str], float] = {}
    for row in rows:
        for metric in ("rmse", "nll"):
            key = (row["dataset"], metric)
            if math.isfinite(row[metric]):
                best[key] = min(best.get(key, math.inf), row[metric])
    for row in rows:
        cells = _columns(row)
        for position, metric in ((0, "rmse"), (1, "nll")):
            if row[metric] == best.get((row["dataset"], metric)):
                cells[position] = f"**{cells[position]}**"
        lines.append("| " + " | ".join([row["dataset"], row["kernel"], *cells]) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

COLOURS = {
    "nngp-relu-d3": "#1f77b4",
    "ntk-relu-d3": "#d62728",
    "nngp-erf-d2": "#9467bd",
    "rbf-ard": "#2ca02c",
    "matern52-ard": "#ff7f0e",
    "rbf-ard-short": "#8c564b",
    "matern52-ard-short": "#7f7f7f",
}


def plot_summary(rows: list[dict[str, Any]], path: Path) -> None:
    """Per dataset: bars of test NLL and 95 % coverage (mean ± SE over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    fig, axes = plt.subplots(2, len(datasets), figsize=(3.0 * len(datasets), 6.0), squeeze=False)
    for column, dataset in enumerate(datasets):
        mine = {r["kernel"]: r for r in rows if r["dataset"] == dataset}
        positions = np.arange(len(kernels))
        for line, (metric, label) in enumerate(
            (("nll", "test NLL (std. units)"), ("coverage", "95% coverage"))
        ):
            ax = axes[line, column]
            values = [mine[k][metric] if k in mine else math.nan for k in kernels]
            errors = [mine[k][f"{metric}_se"] if k in mine else math.nan for k in kernels]
            errors = [e if math.isfinite(e) else 0.0 for e in errors]
            ax.bar(positions, values, yerr=errors, capsize=3, color=[COLOURS.get(k, "grey") for k in kernels])
            ax.set_xticks(positions, kernels, rotation=60, ha="right", fontsize=8)
            ax.grid(axis="y", alpha=0.3)
            if line == 0:
                ax.set_title(dataset)
                ax.axhline(0.0, color="black", linewidth=0.5)
            else:
                ax.axhline(0.95, color="black", linestyle="--", linewidth=1)
                finite = [v for v in values if math.isfinite(v)]
                ax.set_ylim(min([0.8, *finite]) - 0.02, 1.01)
            if column == 0:
                ax.set_ylabel(label)
    fig.suptitle("Exact GP regression: test NLL (lower is better) and 95% interval coverage; mean ± SE")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_co2_bands(config: FitConfig, path: Path, seed: int = 0, kernels: tuple[str, ...] = ()) -> None:
    """Predictive mean and 95 % band on the CO2 series (seed-0 split) and 10 years beyond it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = load_co2(seed)
    kernels = kernels or ("ntk-relu-d3", "rbf-ard", "matern52-ard-short")
    s = split(data, seed)
    x_min, x_max = float(data.x.min()), float(data.x.max())
    grid = torch.linspace(x_min, x_max + 10.0, 1500, dtype=DTYPE).unsqueeze(-1)
    fig, axes = plt.subplots(
        len(kernels), 2, figsize=(12, 3.2 * len(kernels)), squeeze=False, width_ratios=[2, 1]
    )
    train_x = s.train_x.squeeze(-1).numpy()
    train_y = s.train_y.numpy() * s.y_std + s.y_mean
    test_x = s.test_x.squeeze(-1).numpy()
    test_y = s.test_y.numpy() * s.y_std + s.y_mean
    for line, name in enumerate(kernels):
        record, model = fit_and_score(data, seed, name, config)
        print(f"  figure fit {name}: test NLL {record.nll:.3f}, coverage {record.coverage:.3f}", flush=True)
        mean, _, lower, upper = model.predict(grid)
        g = grid.squeeze(-1).numpy()
        mean_o, lower_o, upper_o = (t.numpy() * s.y_std + s.y_mean for t in (mean, lower, upper))
        for column, window in enumerate(((x_min - 1.0, x_max + 10.0), (1996.0, x_max + 5.0))):
            ax = axes[line, column]
            keep = (g >= window[0]) & (g <= window[1])
            colour = COLOURS.get(name, "black")
            ax.fill_between(g[keep], lower_o[keep], upper_o[keep], color=colour, alpha=0.25, label="95% band")
            ax.plot(g[keep], mean_o[keep], color=colour, linewidth=1, label=f"{name} mean")
            tr = (train_x >= window[0]) & (train_x <= window[1])
            te = (test_x >= window[0]) & (test_x <= window[1])
            ax.plot(train_x[tr], train_y[tr], ".", color="black", markersize=2, label="train")
            ax.plot(test_x[te], test_y[te], "x", color="tab:orange", markersize=4, label="test")
            ax.axvline(x_max, color="grey", linestyle=":", linewidth=1)
            ax.set_xlim(*window)
            ax.grid(alpha=0.3)
            if column == 0:
                ax.set_ylabel("CO2 (ppm)")
                ax.set_title(
                    f"{name}: test NLL {record.nll:.2f}, coverage {record.coverage:.2f} (seed {seed})",
                    fontsize=10,
                )
                ax.legend(loc="upper left", fontsize=8)
            else:
                ax.set_title("zoom: last years and extrapolation", fontsize=10)
    axes[-1, 0].set_xlabel("year")
    axes[-1, 1].set_xlabel("year")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def _git_revision() -> str:
    """``git describe``-like revision of the repository (``+dirty`` with local changes), or ``unknown``."""
    import subprocess

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def machine_info(threads: int) -> dict[str, Any]:
    import botorch

    return {
        "git_revision": _git_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": __import__("os").cpu_count(),
        "torch": torch.__version__,
        "gpytorch": gpytorch.__version__,
        "botorch": botorch.__version__,
        "gp_ntk": gp_ntk.__version__,
        "torch_threads": threads,
        "dtype": str(DTYPE),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: diabetes, 1 seed, 3 iterations")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=None)
    parser.add_argument("--kernels", nargs="+", choices=list(KERNELS), default=None)
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (splits), 0 .. seeds-1")
    parser.add_argument("--optimizer", choices=("adam", "lbfgs"), default="lbfgs")
    parser.add_argument(
        "--max-iter",
        type=int,
        default=None,
        help="optimiser iterations per fit (L-BFGS: outer iterations of up to 20 evaluations each); "
        "default 20 for L-BFGS, 300 for Adam, 3 with --quick",
    )
    parser.add_argument("--lr", type=float, default=None, help="default gp_ntk.fit's: 1.0 L-BFGS, 0.05 Adam")
    parser.add_argument(
        "--patience",
        type=int,
        default=None,
        help="early-stopping patience of gp_ntk.fit; default 3 for L-BFGS, max-iter for Adam (fixed budget)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="write raw results and summary here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the Markdown table here")
    parser.add_argument(
        "--plot-dir",
        type=Path,
        default=None,
        help="write regression_nll.png (and regression_co2.png if co2 is run) here; "
        "default docs/img for a full run, no figures with --quick",
    )
    parser.add_argument("--no-plots", action="store_true", help="write no figures")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets = args.datasets or ["diabetes"]
        args.seeds = args.seeds or 1
        args.max_iter = args.max_iter or 3
    args.datasets = args.datasets or list(DATASETS)
    args.kernels = args.kernels or list(DEFAULT_KERNELS)
    args.seeds = 5 if args.seeds is None else args.seeds
    lbfgs = args.optimizer == "lbfgs"
    if args.max_iter is None:
        args.max_iter = 20 if lbfgs else 300
    if args.patience is None:
        args.patience = 3 if lbfgs else args.max_iter
    if args.lr is None:
        args.lr = 1.0 if lbfgs else 0.05
    if args.plot_dir is None and not args.quick:
        args.plot_dir = REPO_ROOT / "docs" / "img"
    if args.no_plots:
        args.plot_dir = None
    for name in ("seeds", "max_iter", "patience", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = FitConfig(optimizer=args.optimizer, max_iter=args.max_iter, lr=args.lr, patience=args.patience)
    info = machine_info(args.threads)
    print(
        f"regression benchmark: {len(args.datasets)} datasets x {len(args.kernels)} kernels x {args.seeds} seeds; "
        f"{config.optimizer} lr {config.lr:g}, max_iter {config.max_iter}, patience {config.patience}; "
        f"float64, {args.threads} thread(s), torch {info['torch']}",
        flush=True,
    )
    records: list[Record] = []
    descriptions: dict[str, str] = {}
    total = len(args.datasets) * len(args.kernels) * args.seeds
    start = time.perf_counter()
    # exact Cholesky inference for every problem size used here
    with gpytorch.settings.max_cholesky_size(10_000):
        for dataset_name in args.datasets:
            for seed in range(args.seeds):
                data = DATASETS[dataset_name](seed)
                descriptions[dataset_name] = data.description
                for kernel_name in args.kernels:
                    record, _ = fit_and_score(data, seed, kernel_name, config)
                    records.append(record)
                    print(
                        f"[{len(records):3d}/{total}] {dataset_name:<9} seed {seed} {kernel_name:<18} "
                        f"n={record.n_train:<4d} RMSE {record.rmse:6.3f}  NLL {record.nll:7.3f}  "
                        f"cov {record.coverage:5.3f}  fit {record.fit_seconds:6.1f} s "
                        f"({record.iterations} it, {record.status})",
                        flush=True,
                    )
        elapsed = time.perf_counter() - start
        rows = summarise(records)
        print()
        print("RMSE, NLL and width in standardised target units; mean ± standard error over seeds.")
        print("'train log ML/pt': log marginal likelihood per training point at the fitted hyperparameters.")
        print(
            f"'NLL wins': seeds where the kernel had the lowest test NLL; last column paired with {REFERENCE_KERNEL}."
        )
        print(format_text(rows))
        print(f"\ntotal benchmark time {elapsed:.0f} s", flush=True)

        figures = []
        if args.plot_dir is not None:
            args.plot_dir.mkdir(parents=True, exist_ok=True)
            path = args.plot_dir / "regression_nll.png"
            plot_summary(rows, path)
            figures.append(str(path))
            if "co2" in args.datasets:
                path = args.plot_dir / "regression_co2.png"
                plot_co2_bands(config, path)
                figures.append(str(path))
            print("figures: " + ", ".join(figures), flush=True)

    if args.markdown is not None:
        args.markdown.write_text(format_markdown(rows) + "\n")
        print(f"markdown table: {args.markdown}")
    if args.json is not None:
        payload = {
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
            "config": {
                **asdict(config),
                "datasets": args.datasets,
                "kernels": args.kernels,
                "seeds": args.seeds,
                "train_fraction": TRAIN_FRACTION,
                "units": "rmse, nll, width: standardised targets; *_original: original units",
            },
            "datasets": descriptions,
            "machine": info,
            "total_seconds": elapsed,
            "summary": rows,
            "results": [asdict(r) for r in records],
            "figures": figures,
        }
        args.json.write_text(json.dumps(payload, indent=1, allow_nan=True) + "\n")
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
