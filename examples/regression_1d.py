"""1-D regression with infinite-width network kernels: fits, prior draws, kernel shapes.

What it shows
-------------
1. ``regression_1d.png``: a noisy ``sin(2x) + 0.3 x`` observed on ``[-3, 3]`` with a gap in
   ``(0.5, 1.75)``, fitted by :class:`gp_ntk.models.ExactGPModel` s with a ReLU NTK, a ReLU
   NNGP and an erf NNGP (depth 3 each) and, for contrast, an RBF kernel; hyperparameters by
   :func:`gp_ntk.fit`. Each panel shows the predictive mean and the 95% band of the latent
   function, the training points, the gap and the true function, on ``[-5.5, 5.5]`` so that
   the extrapolation is visible. The network kernels are dot-product kernels: far from the
   origin a ReLU network grows linearly in ``|x|``, so the ReLU NTK/NNGP posteriors continue
   the data along straight lines with bands that widen linearly, the erf network's output
   levels off, and the RBF posterior instead reverts to the constant mean within a few
   lengthscales. Inside the gap the ReLU NTK interpolates almost linearly and its mean is
   kinked between neighbouring points (see 2.), where the smooth kernels follow the curve.
   The printed table gives the train log marginal likelihood per point and, against the
   noise-free function, the RMSE inside the gap and outside the training range.

2. ``prior_draws.png``: functions drawn from the GP priors ``N(0, K + jitter I)`` of the
   ReLU and erf NNGP and NTK at depths 1, 2, 4 and 8 on a 1-D grid, the same standard-normal
   vectors in every panel (so that differences come from the kernel). In one dimension a
   dot-product kernel without bias sees only the sign and the magnitude of ``x`` (every
   pair of inputs is at angle 0 or pi), so ReLU draws would be straight lines on each side of
   0; with a bias the first layer computes ``w x x' + b``, the dot product of the 2-D
   vectors ``(sqrt(w) x, sqrt(b))``, and the draws become genuinely nonlinear. Draws are
   divided by the kernel's average prior standard deviation on the grid so that shapes can
   be compared across depths. ReLU NNGP draws are smooth, nearly straight far from the
   origin and bent near it, more so with depth. ReLU NTK draws are rough at every depth: the
   NTK contains the ReLU derivative dual ``(pi - theta) / pi``, linear in the angle at
   ``theta = 0``, so like the exponential kernel it gives continuous but non-differentiable
   paths. Erf draws are sigmoid-like, flat far from the origin (erf saturates), with more
   wiggles near the origin as depth grows.

3. ``kernel_vs_angle_families.png``: the normalised kernel ``k(x, y) / k(x, x)`` of the same
   four kernel families for unit-norm 2-D inputs at angle ``theta`` (no bias), depths 1, 2,
   4, 8: the kernel's whole dependence on the inputs once norms are fixed. The ReLU NTK's
   non-zero slope at ``theta = 0`` is the roughness of its draws; the other three are flat there.

The models standardise their inputs with the training mean and standard deviation
(``standardize_inputs=True``), so the kernels' origin, the one special point of a dot-product
kernel, sits at the mean of the training inputs.

Usage::

    python examples/regression_1d.py [--output-dir examples/output] [--quick] [--threads N]

``--quick`` runs 40 optimiser steps instead of 300 and uses coarser plotting grids.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from gpytorch.kernels import Kernel, RBFKernel  # noqa: E402
from torch import Tensor  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import gp_ntk  # noqa: E402
from gp_ntk.models import ExactGPModel, Prediction  # noqa: E402

DTYPE = torch.float64
SEED = 0
NUM_TRAIN = 60
NOISE_STD = 0.15
TRAIN_RANGE = (-3.0, 3.0)
GAP = (0.5, 1.75)
PLOT_RANGE = (-5.5, 5.5)
FULL_ITERATIONS = 300
QUICK_ITERATIONS = 40
LEARNING_RATE = 0.05
PRIOR_DEPTHS = (1, 2, 4, 8)
PRIOR_WEIGHT_VARIANCE = 2.0
PRIOR_BIAS_VARIANCE = 0.5
NUM_DRAWS = 5
JITTER = 1e-6

# The four network-kernel families of the prior-draw and angle figures, by depth.
FAMILIES: dict[str, Callable[[int, float], Kernel]] = {
    "ReLU NNGP": lambda depth, b: gp_ntk.NNGPKernel(depth, "relu", PRIOR_WEIGHT_VARIANCE, b),
    "ReLU NTK": lambda depth, b: gp_ntk.NTKKernel(depth, "relu", PRIOR_WEIGHT_VARIANCE, b),
    "erf NNGP": lambda depth, b: gp_ntk.NNGPKernel(depth, "erf", PRIOR_WEIGHT_VARIANCE, b),
    "erf NTK": lambda depth, b: gp_ntk.NTKKernel(depth, "erf", PRIOR_WEIGHT_VARIANCE, b),
}


def truth(x: Tensor) -> Tensor:
    """The noise-free function."""
    return torch.sin(2.0 * x) + 0.3 * x


@dataclass(frozen=True)
class Data:
    """Training data (with the gap) and a dense plotting grid."""

    train_x: Tensor
    train_y: Tensor
    grid: Tensor


def make_data(num_grid: int, seed: int = SEED) -> Data:
    """``NUM_TRAIN`` noisy observations on ``TRAIN_RANGE`` with no inputs inside ``GAP``."""
    generator = torch.Generator().manual_seed(seed)
    (lo, hi), (gap_lo, gap_hi) = TRAIN_RANGE, GAP
    # uniform on [lo, hi] minus the gap: draw on the shortened interval and shift the right part
    u = lo + (hi - lo - (gap_hi - gap_lo)) * torch.rand(NUM_TRAIN, generator=generator, dtype=DTYPE)
    x = torch.where(u > gap_lo, u + (gap_hi - gap_lo), u).sort().values
    y = truth(x) + NOISE_STD * torch.randn(NUM_TRAIN, generator=generator, dtype=DTYPE)
    grid = torch.linspace(*PLOT_RANGE, num_grid, dtype=DTYPE)
    return Data(train_x=x, train_y=y, grid=grid)


# --------------------------------------------------------------------------- fits


@dataclass
class Fitted:
    """A fitted model's latent-function prediction on the grid and its scores."""

    name: str
    model: ExactGPModel
    fit: gp_ntk.FitResult
    prediction: Prediction
    rmse_gap: float
    rmse_outside: float


def regression_kernels() -> list[tuple[str, Kernel]]:
    """The kernels compared on the 1-D problem (the model wraps each in a ScaleKernel)."""
    network = {"depth": 3, "weight_variance": 2.0, "bias_variance": 0.1}
    return [
        ("NTK relu d3", gp_ntk.NTKKernel(activation="relu", **network)),
        ("NNGP relu d3", gp_ntk.NNGPKernel(activation="relu", **network)),
        ("NNGP erf d3", gp_ntk.NNGPKernel(activation="erf", **network)),
        ("RBF", RBFKernel()),
    ]


def fit_kernel(name: str, kernel: Kernel, data: Data, iterations: int) -> Fitted:
    """Fit an :class:`ExactGPModel` with :func:`gp_ntk.fit` and predict ``f`` on the grid."""
    torch.manual_seed(SEED)
    model = ExactGPModel(data.train_x, data.train_y, kernel=kernel)  # 1-D inputs are fine
    print(f"fitting {name} ...", flush=True)
    result = gp_ntk.fit(model, max_iter=iterations, lr=LEARNING_RATE)
    for line in result.recoveries:
        print(f"  recovered: {line}")
    prediction = model.predict(data.grid, observation_noise=False)
    error = prediction.mean - truth(data.grid)
    in_gap = (data.grid > GAP[0]) & (data.grid < GAP[1])
    outside = (data.grid < TRAIN_RANGE[0]) | (data.grid > TRAIN_RANGE[1])
    return Fitted(
        name=name,
        model=model,
        fit=result,
        prediction=prediction,
        rmse_gap=error[in_gap].pow(2).mean().sqrt().item(),
        rmse_outside=error[outside].pow(2).mean().sqrt().item(),
    )


def print_fits(fits: list[Fitted]) -> None:
    """Evidence and errors against the true function."""
    header = (
        f"{'kernel':<13} {'train LML/pt':>12} {'RMSE gap':>9} {'RMSE extrap':>11} {'noise sd':>9} "
        f"{'iters':>6} {'fit time':>8}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in fits:
        noise_sd = r.model.likelihood.noise.sqrt().item()
        print(
            f"{r.name:<13} {-r.fit.best_loss:>12.4f} {r.rmse_gap:>9.4f} {r.rmse_outside:>11.4f} "
            f"{noise_sd:>9.4f} {r.fit.iterations:>6d} {r.fit.seconds:>7.1f}s"
        )
    print(
        f"RMSE of the posterior mean against the noise-free function inside the gap {GAP} and outside\n"
        f"the training range {TRAIN_RANGE}; noise sd: fitted (true {NOISE_STD})."
    )


def plot_fits(fits: list[Fitted], data: Data, path: Path) -> None:
    """Predictive mean and 95% band of f for each kernel, training points and gap marked."""
    columns = 2
    rows = math.ceil(len(fits) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(6.2 * columns, 4.2 * rows), sharex=True, sharey=True, layout="constrained"
    )
    grid = data.grid.numpy()
    for ax, r in zip(axes.flat, fits):
        ax.axvspan(*GAP, color="tab:orange", alpha=0.12, label="gap (no data)")
        for edge in TRAIN_RANGE:
            ax.axvline(edge, color="0.5", lw=0.8, ls=":")
        ax.fill_between(
            grid,
            r.prediction.lower.numpy(),
            r.prediction.upper.numpy(),
            color="tab:blue",
            alpha=0.25,
            label="95% band of f",
        )
        ax.plot(grid, r.prediction.mean.numpy(), color="tab:blue", lw=2, label="posterior mean")
        ax.plot(grid, truth(data.grid).numpy(), color="k", ls="--", lw=1.2, label="true f")
        ax.plot(data.train_x.numpy(), data.train_y.numpy(), "o", color="k", ms=3.5, label="training data")
        ax.set_title(
            f"{r.name}: train LML/pt {-r.fit.best_loss:.3f}\n"
            f"RMSE in gap {r.rmse_gap:.3f}, beyond data {r.rmse_outside:.3f}"
        )
        ax.set_xlim(*PLOT_RANGE)
        ax.set_ylim(-4.0, 4.0)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("x  (dotted: edges of the training range)")
    for ax in axes[:, 0]:
        ax.set_ylabel("f(x)")
    axes.flat[0].legend(loc="upper left", fontsize=8)
    for ax in list(axes.flat)[len(fits) :]:
        ax.set_visible(False)
    fig.suptitle(r"GP regression of $\sin(2x) + 0.3x$ with a gap: network kernels vs RBF")
    fig.savefig(path, dpi=130)
    plt.close(fig)


# --------------------------------------------------------------------------- prior draws


def prior_draws(kernel: Kernel, x: Tensor, num_draws: int, seed: int = SEED) -> Tensor:
    """``num_draws`` samples of ``N(0, K(x, x) + jitter I)``, divided by the average prior sd.

    The same seed gives the same standard-normal vectors for every kernel.
    """
    with torch.no_grad():
        covariance = kernel(x).to_dense()
    scale = covariance.diagonal().mean()
    covariance = covariance / scale
    covariance = covariance + JITTER * torch.eye(x.shape[0], dtype=x.dtype)
    prior = torch.distributions.MultivariateNormal(torch.zeros(x.shape[0], dtype=x.dtype), covariance)
    torch.manual_seed(seed)
    return prior.sample(torch.Size([num_draws]))


def plot_prior_draws(path: Path, num_grid: int) -> None:
    """Draws from the four kernel families (rows) at several depths (columns) on a 1-D grid."""
    x = torch.linspace(-3.0, 3.0, num_grid, dtype=DTYPE).unsqueeze(-1)
    fig, axes = plt.subplots(
        len(FAMILIES),
        len(PRIOR_DEPTHS),
        figsize=(3.6 * len(PRIOR_DEPTHS), 2.7 * len(FAMILIES)),
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    colours = plt.get_cmap("tab10")(np.arange(NUM_DRAWS))
    cells = [(i, j) for i in range(len(FAMILIES)) for j in range(len(PRIOR_DEPTHS))]
    families = list(FAMILIES.items())
    for i, j in tqdm(cells, desc="prior draws", unit="kernel"):
        name, make = families[i]
        depth = PRIOR_DEPTHS[j]
        draws = prior_draws(make(depth, PRIOR_BIAS_VARIANCE).to(DTYPE), x, NUM_DRAWS)
        ax = axes[i, j]
        for draw, colour in zip(draws, colours):
            ax.plot(x.squeeze(-1).numpy(), draw.numpy(), color=colour, lw=1.3)
        ax.set_title(f"{name}, depth {depth}", fontsize=10)
        ax.grid(alpha=0.3)
        if i == len(FAMILIES) - 1:
            ax.set_xlabel("x (1-D input)")
        if j == 0:
            ax.set_ylabel("f(x) / avg prior sd")
    fig.suptitle(
        f"Prior draws, 1-D inputs, $\\sigma_w^2={PRIOR_WEIGHT_VARIANCE:g}$, "
        f"$\\sigma_b^2={PRIOR_BIAS_VARIANCE:g}$ (same random vectors in every panel)"
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- kernel vs angle


def normalised_kernel_vs_angle(kernel: Kernel, theta: Tensor) -> Tensor:
    """``k(e_1, y(theta)) / k(e_1, e_1)`` for unit vectors ``y(theta) = (cos theta, sin theta)``."""
    x = torch.tensor([[1.0, 0.0]], dtype=DTYPE)
    y = torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)
    with torch.no_grad():
        return kernel(x, y).to_dense().squeeze(0) / kernel(x, diag=True).squeeze(0)


def plot_kernel_vs_angle(path: Path, num_angles: int) -> None:
    """Normalised kernel against the angle between unit-norm inputs, one panel per family."""
    theta = torch.linspace(0.0, math.pi, num_angles, dtype=DTYPE)
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(PRIOR_DEPTHS)))
    fig, axes = plt.subplots(
        1, len(FAMILIES), figsize=(4.2 * len(FAMILIES), 4.0), sharey=True, layout="constrained"
    )
    for ax, (name, make) in tqdm(list(zip(axes, FAMILIES.items())), desc="kernel vs angle", unit="family"):
        for depth, colour in zip(PRIOR_DEPTHS, colours):
            k = normalised_kernel_vs_angle(make(depth, 0.0).to(DTYPE), theta)
            ax.plot(theta.numpy(), k.numpy(), color=colour, lw=2, label=f"depth {depth}")
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_title(name + r" ($\sigma_b^2=0$)")
        ax.set_xlabel(r"angle $\theta$ between unit-norm inputs")
        ax.set_xticks([0, math.pi / 2, math.pi])
        ax.set_xticklabels(["0", r"$\pi/2$", r"$\pi$"])
        ax.set_xlim(0.0, math.pi)
        ax.grid(alpha=0.3)
        ax.legend(title="hidden layers", loc="lower left", fontsize=8)
    axes[0].set_ylabel(r"$k(x,y)\,/\,k(x,x)$")
    fig.suptitle(f"Kernel vs angle (d = 2, $\\sigma_w^2={PRIOR_WEIGHT_VARIANCE:g}$)")
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
        help=f"{QUICK_ITERATIONS} optimiser steps instead of {FULL_ITERATIONS}, coarser grids",
    )
    parser.add_argument("--iterations", type=int, default=None, help="override the number of Adam steps")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Fit, print the table and write the three figures."""
    args = parse_args(argv)
    iterations = args.iterations or (QUICK_ITERATIONS if args.quick else FULL_ITERATIONS)
    num_grid = 150 if args.quick else 400
    start = time.perf_counter()
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(SEED)

    data = make_data(num_grid)
    print(
        f"1-D regression: {NUM_TRAIN} noisy points on {TRAIN_RANGE} without {GAP}; "
        f"up to {iterations} Adam steps, lr {LEARNING_RATE}, float64"
    )
    fits = [fit_kernel(name, kernel, data, iterations) for name, kernel in regression_kernels()]
    print_fits(fits)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "fits": args.output_dir / "regression_1d.png",
        "prior draws": args.output_dir / "prior_draws.png",
        "kernel vs angle": args.output_dir / "kernel_vs_angle_families.png",
    }
    plot_fits(fits, data, paths["fits"])
    plot_prior_draws(paths["prior draws"], num_grid)
    plot_kernel_vs_angle(paths["kernel vs angle"], 91 if args.quick else 181)

    print("\nwrote:")
    for label, path in paths.items():
        print(f"  {label:<16} {path}")
    print(f"total time {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
