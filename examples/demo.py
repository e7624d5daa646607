"""gp_ntk demo: infinite-width network kernels as Gaussian-process regression kernels.

What it shows
-------------
1. **Regression with NTK and NNGP Gaussian processes.** On scikit-learn's bundled diabetes
   data (442 patients, 10 features, no download) it fits three
   :class:`gp_ntk.models.ExactGPModel` s (constant mean, ``ScaleKernel(kernel)``, Gaussian
   likelihood) that differ only in their kernel:

   * ``gp_ntk.NTKKernel(depth=3, activation="relu", weight_variance=2.0, bias_variance=0.1)``:
     the neural tangent kernel of an infinitely wide 3-hidden-layer ReLU network. Without
     noise the GP posterior mean is the mean prediction of an ensemble of such networks
     trained to convergence by gradient descent on the squared loss;
   * the same network's ``gp_ntk.NNGPKernel``: the prior covariance of the network's output,
     i.e. exact Bayesian inference in the infinitely wide network;
   * ``gpytorch.kernels.RBFKernel(ard_num_dims=10)`` as the usual baseline.

   Hyperparameters (weight/bias variances, output scale, noise, lengthscales, constant mean)
   are fitted with :func:`gp_ntk.fit` (Adam on the exact marginal log likelihood, float64,
   early stopping, the model left at the best parameters seen). The table reports the train
   log marginal likelihood per point, the test RMSE, the test negative log predictive density
   (a Gaussian including the observation noise), the fraction of test targets inside the 95%
   predictive intervals and the fit time.

   **Why the inputs are standardised.** NNGP/NTK kernels are dot-product kernels: they see
   the inputs only through inner products and norms, i.e. through angles measured from the
   origin. Unlike the RBF kernel they are not translation invariant, and they only treat the
   features symmetrically once these are centred and on a common scale; inputs sitting in one
   orthant make every angle small and the kernel nearly constant. The models do this
   themselves (``standardize_inputs=True``, the default): every feature is centred and
   scaled with its training mean and standard deviation, a fixed map stored with the model.
   The targets are standardised by this script, so that the initial output scale and noise
   are sensible; RMSE is also reported in the original units.

2. **Model selection by evidence.** :func:`gp_ntk.compare_kernels` fits one GP per candidate
   of a small grid (NNGP vs NTK, ReLU vs erf, several depths, and RBF/Matern baselines) and
   ranks them by the log marginal likelihood of the training data at the fitted
   hyperparameters; :func:`gp_ntk.selection.format_table` prints the ranking.
   ``model_selection.png`` sets the evidence next to the test NLL of the same fitted models,
   to show how far the train-only criterion agrees with held-out performance.

3. **The kernels' shape.** ``kernel_vs_angle.png`` plots the normalised kernel
   ``k(x, y) / k(x, x)`` for unit-norm inputs at angle ``theta`` (the picture
   neural-tangents users draw): ReLU NNGP and NTK, and the erf NNGP, at depths 1, 2, 4, 8.
   Deeper ReLU NNGPs are flatter (the ReLU correlation map drives every pair of inputs
   towards correlation 1, so deep networks forget angles), while deeper NTKs get a sharper
   peak at ``theta = 0`` (the derivative terms of the recursion). Without biases the
   depth-1 NTK dips below zero near ``theta = 3 pi / 4``: its first-layer term is the linear
   kernel ``cos(theta)`` weighted by the ReLU derivative dual ``(pi - theta) / pi``. The erf
   NNGP is odd in ``cos(theta)`` (erf is odd), hence zero at ``pi / 2``.

4. ``predicted_vs_true.png``: test-set predictions of each GP with 95% predictive intervals;
   ``training_curves.png``: the loss (negative log marginal likelihood per point) during
   fitting, from :attr:`gp_ntk.FitResult.losses`.

Usage::

    python examples/demo.py [--output-dir examples/output] [--quick] [--threads N]

``--quick`` runs 30 Adam steps instead of 150 for the main fits and a 5-candidate selection grid
instead of 18 (well under a minute on one thread); the selection fits by L-BFGS in both modes, so
the quick ranking is the full one's on fewer candidates. PyTorch runs on one thread by default
(``--threads``): the 353 x 353 matrices gain little from intra-op parallelism, and on a busy
machine OpenMP threads competing for cores make each step many times slower.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gpytorch
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from gpytorch.kernels import Kernel, RBFKernel, ScaleKernel  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch import Tensor  # noqa: E402

import gp_ntk  # noqa: E402
from gp_ntk.models import ExactGPModel, Prediction  # noqa: E402
from gp_ntk.selection import ComparisonRow, format_table, kernel_grid  # noqa: E402

DTYPE = torch.float64
SEED = 0
TEST_FRACTION = 0.2
FULL_ITERATIONS = 150
QUICK_ITERATIONS = 30
LEARNING_RATE = 0.05

# The network of the task: 3 hidden ReLU layers, He-style weight variance, small biases.
NETWORK = {"depth": 3, "activation": "relu", "weight_variance": 2.0, "bias_variance": 0.1}

# Candidates of the model-selection grid (see gp_ntk.selection.kernel_grid).
FULL_GRID = {
    "depths": (1, 2, 3, 5),
    "activations": ("relu", "erf"),
    "kinds": ("nngp", "ntk"),
    "baselines": ("rbf", "matern52"),
}
QUICK_GRID = {"depths": (1, 3), "activations": ("relu",), "kinds": ("nngp", "ntk"), "baselines": ("rbf",)}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Dataset:
    """Train/test tensors (raw features, standardised targets) and the target scale."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    y_mean: float
    y_std: float

    def original_units(self, y: Tensor) -> np.ndarray:
        """Map standardised targets back to disease-progression units."""
        return (y * self.y_std + self.y_mean).detach().cpu().numpy()


def load_data(seed: int = SEED) -> Dataset:
    """Diabetes data, split with a fixed seed; targets standardised with training statistics.

    The features are left as they are: :class:`~gp_ntk.models.ExactGPModel` standardises its
    inputs with the training statistics itself (``standardize_inputs=True``).
    """
    x, y = load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_FRACTION, random_state=seed)
    y_mean, y_std = float(y_train.mean()), float(y_train.std())

    def tensor(a: np.ndarray) -> Tensor:
        return torch.as_tensor(a, dtype=DTYPE)

    return Dataset(
        train_x=tensor(x_train),
        train_y=tensor((y_train - y_mean) / y_std),
        test_x=tensor(x_test),
        test_y=tensor((y_test - y_mean) / y_std),
        y_mean=y_mean,
        y_std=y_std,
    )


# --------------------------------------------------------------------------- models and metrics


@dataclass
class Metrics:
    """Train evidence and test-set predictive metrics of one fitted model."""

    train_lml_per_point: float
    rmse: float
    rmse_original: float
    nll: float
    coverage: float


@dataclass
class FittedModel:
    """A fitted :class:`ExactGPModel` with its fit history, test predictions and metrics."""

    name: str
    model: ExactGPModel
    fit: gp_ntk.FitResult
    prediction: Prediction
    metrics: Metrics


def main_kernels(num_dims: int) -> list[tuple[str, Kernel]]:
    """The three kernels of the main comparison (fresh objects; the model wraps them in a ScaleKernel)."""
    return [
        ("NTK relu d3", gp_ntk.NTKKernel(**NETWORK)),
        ("NNGP relu d3", gp_ntk.NNGPKernel(**NETWORK)),
        ("RBF ARD", RBFKernel(ard_num_dims=num_dims)),
    ]


def train_log_marginal_likelihood(model: ExactGPModel) -> float:
    """Exact log marginal likelihood per training point at the model's current parameters."""
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    with torch.no_grad():
        return mll(model(*model.train_inputs), model.train_targets).item()


def evaluate(model: ExactGPModel, data: Dataset) -> tuple[Prediction, Metrics]:
    """Predict the test targets (with observation noise) and score the predictions."""
    train_lml = train_log_marginal_likelihood(model)
    prediction = model.predict(data.test_x)  # switches to eval mode; includes the noise
    residual = data.test_y - prediction.mean
    std = prediction.variance.sqrt()
    rmse = residual.pow(2).mean().sqrt().item()
    nll = -torch.distributions.Normal(prediction.mean, std).log_prob(data.test_y).mean().item()
    inside = (data.test_y >= prediction.lower) & (data.test_y <= prediction.upper)
    metrics = Metrics(
        train_lml_per_point=train_lml,
        rmse=rmse,
        rmse_original=rmse * data.y_std,
        nll=nll,
        coverage=inside.to(DTYPE).mean().item(),
    )
    return prediction, metrics


def fit_and_evaluate(name: str, kernel: Kernel, data: Dataset, iterations: int) -> FittedModel:
    """Build an :class:`ExactGPModel` around ``kernel``, fit it with :func:`gp_ntk.fit`, score it."""
    torch.manual_seed(SEED)
    model = ExactGPModel(data.train_x, data.train_y, kernel=kernel)  # standardize_inputs=True
    print(f"fitting {name} ...", flush=True)
    result = gp_ntk.fit(model, max_iter=iterations, lr=LEARNING_RATE)
    for line in result.recoveries:
        print(f"  recovered: {line}")
    prediction, metrics = evaluate(model, data)
    return FittedModel(name, model, result, prediction, metrics)


def hyperparameters(model: ExactGPModel) -> dict[str, str]:
    """Fitted hyperparameters as short strings ('-' where the kernel has none)."""
    scale_kernel = model.covar_module
    assert isinstance(scale_kernel, ScaleKernel)
    base = scale_kernel.base_kernel
    values = {
        "weight_var": "-",
        "bias_var": "-",
        "lengthscale": "-",
        "outputscale": f"{scale_kernel.outputscale.item():.3f}",
        "noise": f"{model.likelihood.noise.item():.3f}",
    }
    if isinstance(base, gp_ntk.NNGPKernel | gp_ntk.NTKKernel):
        values["weight_var"] = f"{base.weight_variance.item():.3f}"
        if base.bias_variance is not None:
            values["bias_var"] = f"{base.bias_variance.item():.3f}"
    elif isinstance(base, RBFKernel):
        lengthscale = base.lengthscale.detach().reshape(-1)
        values["lengthscale"] = f"{lengthscale.min().item():.2f}-{lengthscale.max().item():.2f}"
    return values


def print_results(results: list[FittedModel]) -> None:
    """The metrics table and the fitted hyperparameters of the main comparison."""
    header = (
        f"{'kernel':<13} {'train LML/pt':>12} {'test RMSE':>10} {'(orig)':>7} {'test NLL':>9} "
        f"{'cov95':>6} {'iters':>6} {'fit time':>8}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        m = r.metrics
        print(
            f"{r.name:<13} {m.train_lml_per_point:>12.4f} {m.rmse:>10.4f} {m.rmse_original:>7.2f} "
            f"{m.nll:>9.4f} {m.coverage:>6.1%} {r.fit.iterations:>6d} {r.fit.seconds:>7.1f}s"
        )
    print(
        "train LML/pt: log marginal likelihood of the training targets per point at the fitted\n"
        "hyperparameters (higher is better). RMSE and NLL (per test point) are in standardised-target\n"
        "units; '(orig)' is the RMSE in disease-progression units. cov95: fraction of test targets\n"
        "inside the 95% predictive interval."
    )
    header = f"{'kernel':<13} {'weight_var':>10} {'bias_var':>8} {'lengthscale':>11} {'outputscale':>11} {'noise':>6}"
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        h = hyperparameters(r.model)
        print(
            f"{r.name:<13} {h['weight_var']:>10} {h['bias_var']:>8} {h['lengthscale']:>11} "
            f"{h['outputscale']:>11} {h['noise']:>6}"
        )
    print("lengthscale: range of the RBF's ARD lengthscales (inputs standardised by the model).")


def select_kernels(
    data: Dataset, grid: dict[str, tuple], iterations: int
) -> tuple[list[ComparisonRow], dict[str, float]]:
    """Rank the grid's kernels by evidence with :func:`gp_ntk.compare_kernels`; test NLL of each."""
    candidates = kernel_grid(**grid)
    # Evidence is compared at converged hyperparameters: compare_kernels fits by L-BFGS, which
    # gets there in a few iterations for every candidate, where a short Adam run would rank
    # kernels by how fast they converge (30 Adam steps leave the RBF far from its optimum).
    print(f"\nmodel selection: {len(candidates)} candidates, L-BFGS", flush=True)
    rows = gp_ntk.compare_kernels(data.train_x, data.train_y, candidates, keep_models=True, progress=True)
    test_nll = {}
    for row in rows:
        if row.model is not None and row.status != "failed":
            test_nll[row.name] = evaluate(row.model, data)[1].nll
        row.model = None  # the fitted models are not needed any more
    print()
    print(format_table(rows))
    print("log ML: log marginal likelihood of the training targets at the fitted hyperparameters.")
    return rows, test_nll


# --------------------------------------------------------------------------- plots


def normalised_kernel_vs_angle(kernel: Kernel, theta: Tensor) -> Tensor:
    """``k(x, y(theta)) / k(x, x)`` for unit vectors in the plane, ``x = e_1``.

    All inputs have norm 1, so ``k(y, y) = k(x, x)`` for these rotation-invariant kernels and
    this is also the correlation ``k(x, y) / sqrt(k(x, x) k(y, y))``.
    """
    x = torch.tensor([[1.0, 0.0]], dtype=DTYPE)
    y = torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)
    with torch.no_grad():
        cross = kernel(x, y).to_dense().squeeze(0)
        self_ = kernel(x, diag=True).squeeze(0)
    return cross / self_


def plot_kernel_vs_angle(path: Path) -> None:
    """Normalised ReLU NNGP/NTK and erf NNGP on the unit circle, depths 1, 2, 4, 8."""
    theta = torch.linspace(0.0, math.pi, 181, dtype=DTYPE)
    depths = (1, 2, 4, 8)
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(depths)))
    # neural-tangents' standard picture: W_std**2 = 2, b_std**2 = 0 keeps q^l constant for ReLU.
    panels: list[tuple[str, Callable[[int], Kernel]]] = [
        (
            "ReLU NNGP",
            lambda L: gp_ntk.NNGPKernel(depth=L, activation="relu", weight_variance=2.0, bias_variance=0.0),
        ),
        (
            "ReLU NTK",
            lambda L: gp_ntk.NTKKernel(depth=L, activation="relu", weight_variance=2.0, bias_variance=0.0),
        ),
        (
            "erf NNGP",
            lambda L: gp_ntk.NNGPKernel(depth=L, activation="erf", weight_variance=2.0, bias_variance=0.0),
        ),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 4.3), sharey=True, layout="constrained")
    t = theta.numpy()
    for ax, (title, make) in zip(axes, panels):
        for depth, colour in zip(depths, colours):
            k = normalised_kernel_vs_angle(make(depth).to(DTYPE), theta)
            ax.plot(t, k.numpy(), color=colour, lw=2, label=f"depth {depth}")
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_title(title + r"  ($\sigma_w^2=2,\ \sigma_b^2=0$)")
        ax.set_xlabel(r"angle $\theta$ between $x$ and $y$ ($\|x\|=\|y\|=1$)")
        ax.set_xticks([0, math.pi / 4, math.pi / 2, 3 * math.pi / 4, math.pi])
        ax.set_xticklabels(["0", r"$\pi/4$", r"$\pi/2$", r"$3\pi/4$", r"$\pi$"])
        ax.set_xlim(0.0, math.pi)
        ax.grid(alpha=0.3)
        ax.legend(title="hidden layers", loc="lower left")
    axes[0].set_ylabel(r"normalised kernel $k(x,y)\,/\,k(x,x)$")
    fig.suptitle("Infinite-width network kernels on the unit circle (d = 2)")
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_predicted_vs_true(results: list[FittedModel], data: Dataset, path: Path) -> None:
    """Test targets against predicted means with 95% predictive intervals, one panel per kernel."""
    true = data.original_units(data.test_y)
    panels = []
    for r in results:
        pred = data.original_units(r.prediction.mean)
        half_width = 0.5 * (r.prediction.upper - r.prediction.lower).cpu().numpy() * data.y_std
        panels.append((r, pred, half_width))
    lo = min(float(min(true.min(), (p - h).min())) for _, p, h in panels)
    hi = max(float(max(true.max(), (p + h).max())) for _, p, h in panels)
    lo, hi = lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo)

    fig, axes = plt.subplots(
        1, len(results), figsize=(5.0 * len(results), 5.8), sharex=True, sharey=True, layout="constrained"
    )
    for ax, (r, pred, half_width) in zip(np.atleast_1d(axes), panels):
        inside = np.abs(true - pred) <= half_width
        for mask, colour, label in (
            (inside, "tab:blue", "inside 95% interval"),
            (~inside, "tab:red", "outside"),
        ):
            ax.errorbar(
                true[mask],
                pred[mask],
                yerr=half_width[mask],
                fmt="o",
                ms=4,
                color=colour,
                ecolor=colour,
                elinewidth=0.8,
                alpha=0.75,
                capsize=0,
                label=f"{label} ({mask.sum()})",
            )
        ax.plot([lo, hi], [lo, hi], color="0.3", ls="--", lw=1, label="y = x")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_xlabel("true disease progression (test set)")
        m = r.metrics
        ax.set_title(
            f"{r.name} GP on diabetes\nRMSE {m.rmse_original:.1f}, NLL {m.nll:.3f} (std. units), coverage {m.coverage:.0%}"
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    np.atleast_1d(axes)[0].set_ylabel("predicted mean ± 95% predictive interval")
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_training_curves(results: list[FittedModel], path: Path) -> None:
    """Loss per Adam iteration (``FitResult.losses``), the kept (best) iteration marked."""
    fig, ax = plt.subplots(figsize=(6.8, 4.4), layout="constrained")
    for r in results:
        (line,) = ax.plot(np.arange(len(r.fit.losses)), r.fit.losses, lw=2, label=r.name)
        ax.plot(r.fit.best_iteration, r.fit.best_loss, "o", color=line.get_color(), ms=6)
    ax.plot([], [], "o", color="0.4", label="kept parameters (best loss)")
    ax.set_xlabel("Adam iteration")
    ax.set_ylabel("negative log marginal likelihood per point")
    ax.set_title("Hyperparameter fitting on diabetes (train set)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_model_selection(rows: list[ComparisonRow], test_nll: dict[str, float], path: Path) -> None:
    """Evidence per point and test NLL of every candidate, ranked by evidence (best at the top)."""
    rows = [r for r in rows if math.isfinite(r.per_point)]
    names = [r.name for r in rows]
    y = np.arange(len(rows))
    family = {"ntk": ("tab:green", "NTK"), "nngp": ("tab:purple", "NNGP")}
    styles = [family.get(name.split("-")[0], ("tab:gray", "baseline")) for name in names]
    fig, (ax_ml, ax_nll) = plt.subplots(
        1, 2, figsize=(11, 0.36 * len(rows) + 2.0), sharey=True, layout="constrained"
    )
    per_point = [r.per_point for r in rows]
    nll = [test_nll.get(name, math.nan) for name in names]
    for ax, values in ((ax_ml, per_point), (ax_nll, nll)):
        for yi, value, (colour, label) in zip(y, values, styles):
            ax.plot(value, yi, "o", ms=8, color=colour, label=label)
        ax.grid(alpha=0.3)
    ax_ml.set_xlabel("train log marginal likelihood per point (higher is better)")
    ax_ml.set_title("evidence (what compare_kernels ranks by)")
    ax_nll.set_xlabel("test negative log predictive density per point (lower is better)")
    ax_nll.set_title("held-out test NLL of the same fits")
    ax_ml.set_yticks(y)
    ax_ml.set_yticklabels(names)
    ax_ml.set_ylim(len(rows) - 0.5, -0.5)  # best candidate at the top
    handles = dict(zip(*reversed(ax_ml.get_legend_handles_labels())))
    order = [label for label in ("NTK", "NNGP", "baseline") if label in handles]
    ax_nll.legend([handles[label] for label in order], order, loc="best")
    fig.suptitle("Kernel selection on diabetes: candidates ranked by evidence (top: best)")
    fig.savefig(path, dpi=130)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path(__file__).resolve().parent / "output",
        help="where to write the PNG plots (default: examples/output next to this script)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_ITERATIONS} optimiser steps instead of {FULL_ITERATIONS} and a small selection grid",
    )
    parser.add_argument("--iterations", type=int, default=None, help="override the number of Adam steps")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Fit, compare, print the tables and write the plots."""
    args = parse_args(argv)
    iterations = args.iterations or (QUICK_ITERATIONS if args.quick else FULL_ITERATIONS)
    grid = QUICK_GRID if args.quick else FULL_GRID
    start = time.perf_counter()
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(SEED)

    data = load_data()
    d = data.train_x.shape[-1]
    print(
        f"diabetes: {data.train_x.shape[0]} train / {data.test_x.shape[0]} test points, {d} features "
        f"(standardised by the models); up to {iterations} Adam steps, lr {LEARNING_RATE}, float64"
    )

    results = [fit_and_evaluate(name, kernel, data, iterations) for name, kernel in main_kernels(d)]
    print_results(results)
    rows, test_nll = select_kernels(data, grid, iterations)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "kernel vs angle": args.output_dir / "kernel_vs_angle.png",
        "predicted vs true": args.output_dir / "predicted_vs_true.png",
        "training curves": args.output_dir / "training_curves.png",
        "model selection": args.output_dir / "model_selection.png",
    }
    plot_kernel_vs_angle(paths["kernel vs angle"])
    plot_predicted_vs_true(results, data, paths["predicted vs true"])
    plot_training_curves(results, paths["training curves"])
    plot_model_selection(rows, test_nll, paths["model selection"])

    print("\nwrote:")
    for label, path in paths.items():
        print(f"  {label:<18} {path}")
    print(f"total time {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
