"""gp_ntk demo: infinite-width network kernels as Gaussian-process regression kernels.

What it shows
-------------
1. **Regression with an NTK Gaussian process.** On scikit-learn's bundled diabetes data
   (442 patients, 10 features, no download) it fits three GPyTorch ``ExactGP`` models that
   differ only in their kernel:

   * ``ScaleKernel(gp_ntk.NTKKernel(depth=3, activation="relu", weight_variance=2.0, bias_variance=0.1))``:
     the neural tangent kernel of an infinitely wide 3-hidden-layer ReLU network. Without
     noise the GP posterior mean is the mean prediction of an ensemble of such networks
     trained to convergence by gradient descent on the squared loss;
   * the same with ``gp_ntk.NNGPKernel``: the prior covariance of the network's output, i.e.
     exact Bayesian inference in the infinitely wide network;
   * ``ScaleKernel(RBFKernel(ard_num_dims=10))`` as the usual baseline.

   Hyperparameters (weight/bias variances, output scale, noise, lengthscales) are fitted by
   maximising the exact marginal log likelihood with Adam in float64. The printed table
   reports the train MLL per point, the test RMSE, the test negative log predictive density
   (a Gaussian including the observation noise) and the coverage of the 95% predictive
   intervals. The inputs are standardised with training-set statistics: NNGP/NTK kernels are
   dot-product kernels, so, unlike the RBF kernel, they are not translation invariant and
   only treat the features symmetrically once they are centred.

2. **The kernels' shape.** ``kernel_vs_angle.png`` plots the normalised kernel
   ``k(x, y) / k(x, x)`` for unit-norm inputs at angle ``theta`` (the picture
   neural-tangents users draw): ReLU NNGP and NTK, and the erf NNGP, at depths 1, 2, 4, 8.
   Deeper ReLU NNGPs are flatter (the ReLU correlation map drives every pair of inputs
   towards correlation 1, so deep networks forget angles), while deeper NTKs get a sharper
   peak at ``theta = 0`` (the derivative terms of the recursion). Without biases the
   depth-1 NTK dips below zero near ``theta = 3 pi / 4``: its first-layer term is the linear
   kernel ``cos(theta)`` weighted by the ReLU derivative dual ``(pi - theta) / pi``. The erf
   NNGP is odd in ``cos(theta)`` (erf is odd), hence zero at ``pi / 2``.

3. ``predicted_vs_true.png``: test-set predictions of the NTK GP with 95% predictive
   intervals; ``training_curves.png``: the loss (negative MLL per point) during fitting.

Usage::

    python examples/demo.py [--output-dir examples/output] [--quick]

``--quick`` runs 30 optimiser steps instead of 150 (for CI). PyTorch runs on one thread by
default (``--threads``): the 353 x 353 matrices gain little from intra-op parallelism, and on a
busy machine OpenMP threads competing for cores make each step many times slower.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
from sklearn.preprocessing import StandardScaler  # noqa: E402
from torch import Tensor  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import gp_ntk  # noqa: E402

DTYPE = torch.float64
SEED = 0
TEST_FRACTION = 0.2
FULL_ITERATIONS = 150
QUICK_ITERATIONS = 30
LEARNING_RATE = 0.05
Z95 = 1.959963984540054  # two-sided 95% standard-normal quantile

# The network of the task: 3 hidden ReLU layers, He-style weight variance, small biases.
NETWORK = {"depth": 3, "activation": "relu", "weight_variance": 2.0, "bias_variance": 0.1}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Dataset:
    """Standardised train/test tensors and the target scale to map back to original units."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    y_mean: float
    y_std: float


def load_data(seed: int = SEED) -> Dataset:
    """Diabetes data, split with a fixed seed, standardised with the training statistics."""
    x, y = load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_FRACTION, random_state=seed)
    x_scaler = StandardScaler().fit(x_train)
    y_mean, y_std = float(y_train.mean()), float(y_train.std())

    def tensor(a: np.ndarray) -> Tensor:
        return torch.as_tensor(a, dtype=DTYPE)

    return Dataset(
        train_x=tensor(x_scaler.transform(x_train)),
        train_y=tensor((y_train - y_mean) / y_std),
        test_x=tensor(x_scaler.transform(x_test)),
        test_y=tensor((y_test - y_mean) / y_std),
        y_mean=y_mean,
        y_std=y_std,
    )


# --------------------------------------------------------------------------- model


class ExactGPModel(gpytorch.models.ExactGP):
    """Constant mean, any covariance module, Gaussian likelihood."""

    def __init__(
        self,
        train_x: Tensor,
        train_y: Tensor,
        likelihood: gpytorch.likelihoods.GaussianLikelihood,
        covar_module: Kernel,
    ) -> None:
        super().__init__(train_x, train_y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = covar_module

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


@dataclass
class FitResult:
    """A fitted model with its loss history and test-set metrics."""

    name: str
    model: ExactGPModel
    losses: list[float]
    seconds: float
    train_mll: float = math.nan
    test_mean: Tensor = field(default_factory=lambda: torch.empty(0))
    test_std: Tensor = field(default_factory=lambda: torch.empty(0))
    rmse: float = math.nan
    rmse_original: float = math.nan
    nll: float = math.nan
    coverage: float = math.nan


def fit(name: str, covar_module: Kernel, data: Dataset, iterations: int) -> FitResult:
    """Maximise the exact marginal log likelihood with Adam; show the loss in a progress bar."""
    torch.manual_seed(SEED)
    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    model = ExactGPModel(data.train_x, data.train_y, likelihood, covar_module).to(DTYPE)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)

    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    with tqdm(range(iterations), desc=f"fit {name:<5}", unit="it", leave=True) as progress:
        for _ in progress:
            optimizer.zero_grad()
            loss = -mll(model(data.train_x), data.train_y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            progress.set_postfix(loss=f"{losses[-1]:.4f}")
    result = FitResult(name, model, losses, time.perf_counter() - start)
    evaluate(result, mll, data)
    return result


def evaluate(result: FitResult, mll: gpytorch.mlls.ExactMarginalLogLikelihood, data: Dataset) -> None:
    """Train MLL per point at the fitted hyperparameters and test-set predictive metrics."""
    model, likelihood = result.model, result.model.likelihood
    with torch.no_grad():
        model.train()
        result.train_mll = mll(model(data.train_x), data.train_y).item()
        model.eval()
        predictive = likelihood(model(data.test_x))  # includes the observation noise
        mean, std = predictive.mean, predictive.variance.clamp_min(0.0).sqrt()
    residual = data.test_y - mean
    result.test_mean, result.test_std = mean, std
    result.rmse = residual.pow(2).mean().sqrt().item()
    result.rmse_original = result.rmse * data.y_std
    log_density = torch.distributions.Normal(mean, std).log_prob(data.test_y)
    result.nll = -log_density.mean().item()
    result.coverage = (residual.abs() <= Z95 * std).to(DTYPE).mean().item()


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


def print_table(results: list[FitResult]) -> None:
    header = (
        f"{'kernel':<6} {'train MLL/pt':>12} {'test RMSE':>10} {'(orig)':>7} {'test NLL':>9} "
        f"{'cov95':>6} {'weight_var':>10} {'bias_var':>8} {'lengthscale':>11} {'outputscale':>11} {'noise':>6} {'time':>6}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        h = hyperparameters(r.model)
        print(
            f"{r.name:<6} {r.train_mll:>12.4f} {r.rmse:>10.4f} {r.rmse_original:>7.2f} {r.nll:>9.4f} "
            f"{r.coverage:>6.1%} {h['weight_var']:>10} {h['bias_var']:>8} {h['lengthscale']:>11} {h['outputscale']:>11} "
            f"{h['noise']:>6} {r.seconds:>5.1f}s"
        )
    print(
        "RMSE and NLL (per test point) are in standardised-target units; '(orig)' is the RMSE in\n"
        "disease-progression units. cov95: fraction of test targets inside the 95% predictive interval.\n"
        "lengthscale: range of the RBF's ARD lengthscales (features standardised)."
    )


# --------------------------------------------------------------------------- plots


def normalised_kernel_vs_angle(kernel: Kernel, theta: Tensor, compute: str = "forward") -> Tensor:
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


def plot_predicted_vs_true(result: FitResult, data: Dataset, path: Path) -> None:
    def original(v: Tensor) -> np.ndarray:
        return (v * data.y_std + data.y_mean).numpy()

    true = original(data.test_y)
    pred = original(result.test_mean)
    half_width = (Z95 * result.test_std * data.y_std).numpy()
    inside = np.abs(true - pred) <= half_width

    fig, ax = plt.subplots(figsize=(6.2, 6.0), layout="constrained")
    for mask, colour, label in ((inside, "tab:blue", "inside 95% interval"), (~inside, "tab:red", "outside")):
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
    lo = float(min(true.min(), (pred - half_width).min()))
    hi = float(max(true.max(), (pred + half_width).max()))
    lo, hi = lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo)
    ax.plot([lo, hi], [lo, hi], color="0.3", ls="--", lw=1, label="y = x")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("true disease progression (test set)")
    ax.set_ylabel("predicted mean ± 1.96 predictive sd")
    ax.set_title(
        f"NTK GP (depth 3, ReLU) on diabetes\n"
        f"RMSE {result.rmse_original:.1f}, NLL {result.nll:.3f} (std. units), coverage {result.coverage:.0%}"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_training_curves(results: list[FitResult], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    for r in results:
        ax.plot(np.arange(1, len(r.losses) + 1), r.losses, lw=2, label=r.name)
    ax.set_xlabel("Adam iteration")
    ax.set_ylabel("negative marginal log likelihood per point")
    ax.set_title("Hyperparameter fitting on diabetes (train set)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
        help=f"{QUICK_ITERATIONS} optimiser steps instead of {FULL_ITERATIONS}",
    )
    parser.add_argument("--iterations", type=int, default=None, help="override the number of Adam steps")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    iterations = args.iterations or (QUICK_ITERATIONS if args.quick else FULL_ITERATIONS)
    start = time.perf_counter()
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(SEED)

    data = load_data()
    d = data.train_x.shape[-1]
    print(
        f"diabetes: {data.train_x.shape[0]} train / {data.test_x.shape[0]} test points, {d} features "
        f"(standardised); {iterations} Adam steps, lr {LEARNING_RATE}, float64"
    )

    kernels: list[tuple[str, Kernel]] = [
        ("NTK", ScaleKernel(gp_ntk.NTKKernel(**NETWORK))),
        ("NNGP", ScaleKernel(gp_ntk.NNGPKernel(**NETWORK))),
        ("RBF", ScaleKernel(RBFKernel(ard_num_dims=d))),
    ]
    results = [fit(name, kernel, data, iterations) for name, kernel in kernels]
    print_table(results)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "kernel vs angle": args.output_dir / "kernel_vs_angle.png",
        "NTK predicted vs true": args.output_dir / "predicted_vs_true.png",
        "training curves": args.output_dir / "training_curves.png",
    }
    plot_kernel_vs_angle(paths["kernel vs angle"])
    plot_predicted_vs_true(results[0], data, paths["NTK predicted vs true"])
    plot_training_curves(results, paths["training curves"])

    print("\nwrote:")
    for label, path in paths.items():
        print(f"  {label:<22} {path}")
    print(f"total time {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
