"""Spectra of network kernels: eigenfunctions, eigenvalue decay, low-rank approximations.

What it writes (PNG, into ``examples/output/``)
-----------------------------------------------
1. ``spectra_eigenfunctions.png``: the first four Nyström eigenfunctions
   (:func:`gp_ntk.spectral.eigenmodes`) of ReLU NTKs with bias on a uniform 1-D grid on
   ``[-3, 3]``: a two-layer network (one hidden layer), then deeper ReLU networks and other
   activations (erf, GELU) at depth 2. Without a bias a 1-D dot-product kernel has rank 2.
2. ``spectra_decay.png``: operator eigenvalues against mode index (log-log) for the ReLU NNGP
   and NTK at depths 1, 2 and 4 on points uniform on the sphere S^2, with the slopes
   ``k^(-3/2)`` (NTK) and ``k^(-5/2)`` (NNGP) that the spherical-harmonic decay
   ``l^(-d)`` and ``l^(-(d+2))`` of Bietti & Mairal (2019) give for ``d = 3`` (the ``2l + 1``
   harmonics of degree ``l`` share one eigenvalue, so the ``k``-th eigenvalue sits at
   ``l ~ sqrt(k)``).
3. ``spectra_approximation.png``: relative Frobenius error of rank-``r`` approximations of the
   NTK matrix on two moons: the optimal one (truncated eigendecomposition), Nyström with
   uniform landmarks, random features of dimension ``D``
   (:class:`gp_ntk.RandomFeatureKernel`, here gradient features of a finite network) and NeuralEF
   (:class:`gp_ntk.spectral.NeuralEigenfunctions`, ``sum_j lambda_j psi_j(x) psi_j(y)``).
4. ``spectra_moons_embedding.png``: two moons coloured by class, embedded by the second and
   third eigenfunctions, from Nyström and from NeuralEF (on held-out points).
5. ``spectra_eigenlearning.png``: test MSE of kernel ridge regression with the NTK on the
   diabetes data (the 442 points treated as the data distribution) against the number of
   training samples: predicted from the spectrum alone (:func:`gp_ntk.spectral.eigenlearning`)
   and measured (mean over random draws).

Usage::

    python examples/spectra.py [--output-dir examples/output] [--quick]

``--quick`` uses smaller point sets and shorter NeuralEF training (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_diabetes, make_moons  # noqa: E402

import gp_ntk  # noqa: E402
from gp_ntk import spectral  # noqa: E402


def relu_ntk(depth: int, activation: str = "relu") -> gp_ntk.NTKKernel:
    weight = 2.0 if activation == "relu" else 1.5
    return gp_ntk.NTKKernel(
        depth=depth, activation=activation, weight_variance=weight, bias_variance=0.5
    ).double()


def plot_eigenfunctions(path: Path, num_grid: int) -> None:
    grid = torch.linspace(-3, 3, num_grid, dtype=torch.float64).unsqueeze(-1)
    cases = [
        ("two-layer ReLU NTK (depth 1)", relu_ntk(1)),
        ("ReLU NTK, depth 2", relu_ntk(2)),
        ("ReLU NTK, depth 4", relu_ntk(4)),
        ("ReLU NTK, depth 8", relu_ntk(8)),
        ("erf NTK, depth 2", relu_ntk(2, "erf")),
        ("GELU NTK, depth 2", relu_ntk(2, "gelu")),
    ]
    figure, axes = plt.subplots(2, 3, figsize=(13, 7), sharex=True)
    for axis, (title, kernel) in zip(axes.flat, cases):
        modes = spectral.eigenmodes(kernel, grid, 4)
        values = modes(grid)
        for j in range(4):
            axis.plot(
                grid.squeeze(-1),
                values[:, j],
                label=f"$\\psi_{j + 1}$, $\\lambda$={modes.eigenvalues[j]:.3g}",
            )
        axis.set_title(title)
        axis.axhline(0, color="0.8", lw=0.8)
        axis.legend(fontsize=7)
    for axis in axes[-1]:
        axis.set_xlabel("x")
    figure.suptitle("First four eigenfunctions on a uniform grid on [-3, 3] (bias variance 0.5)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def sphere(n: int, seed: int = 0) -> torch.Tensor:
    points = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return points / points.norm(dim=-1, keepdim=True)


def plot_decay(path: Path, n: int) -> dict:
    x = sphere(n)
    figure, axis = plt.subplots(figsize=(7, 5))
    index = torch.arange(1, n + 1, dtype=torch.float64)
    slopes = {}
    for depth, style in [(1, "-"), (2, "--"), (4, ":")]:
        for cls, colour in [(gp_ntk.NNGPKernel, "C0"), (gp_ntk.NTKKernel, "C3")]:
            kernel = cls(depth=depth, activation="relu", weight_variance=2.0, bias_variance=0.0).double()
            values = spectral.eigenmodes(kernel, x, n // 2).eigenvalues
            axis.loglog(
                index[: n // 2], values, style, color=colour, label=f"{cls.__name__[:-6]} depth {depth}"
            )
            # fitted slope over modes 10 .. n/10, away from the first degrees and the sampling floor
            window = slice(9, n // 10)
            fit = torch.linalg.lstsq(
                torch.stack([index[window].log(), torch.ones_like(index[window])], -1),
                values[window].log().unsqueeze(-1),
            ).solution
            slopes[f"{cls.__name__} depth {depth}"] = float(fit[0, 0])
    for exponent, colour in [(1.5, "C3"), (2.5, "C0")]:
        axis.loglog(index[5 : n // 2], 0.5 * index[5 : n // 2] ** -exponent, color=colour, alpha=0.35, lw=3)
        axis.text(
            float(index[n // 4]),
            0.5 * float(index[n // 4]) ** -exponent,
            f"$k^{{-{exponent}}}$",
            color=colour,
        )
    axis.set_xlabel("mode index k")
    axis.set_ylabel("operator eigenvalue $\\lambda_k$")
    axis.set_title(f"ReLU NNGP vs NTK spectra on the sphere $S^2$ ({n} uniform points)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return slopes


def moons(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    points, labels = make_moons(n_samples=n, noise=0.05, random_state=seed)
    x = torch.tensor(points)
    return (x - x.mean(0)) / x.std(0), torch.tensor(labels)


def relative_error(approximation: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approximation - exact).norm() / exact.norm())


def plot_approximation(path: Path, n: int, nef_ranks: list[int], nef_steps: int) -> dict:
    x, _ = moons(n)
    kernel = relu_ntk(1)
    exact = kernel(x).to_dense().detach()
    ranks = [2, 4, 8, 16, 32, 64, 128]
    values, vectors = torch.linalg.eigh(exact)
    values, vectors = values.flip(-1), vectors.flip(-1)
    optimal = [relative_error((vectors[:, :r] * values[:r]) @ vectors[:, :r].T, exact) for r in ranks]
    generator = torch.Generator().manual_seed(0)
    nystrom = []
    for r in ranks:
        landmarks = torch.randperm(n, generator=generator)[:r]
        cross = exact[:, landmarks]
        nystrom.append(
            relative_error(cross @ torch.linalg.pinv(exact[landmarks][:, landmarks]) @ cross.T, exact)
        )
    feature_sizes = [16, 64, 256, 1024, 4096]
    random_features, dims = [], []
    for size in feature_sizes:
        approx = gp_ntk.RandomFeatureKernel(kernel, num_features=size, seed=0)
        random_features.append(relative_error(approx(x).to_dense().detach(), exact))
        dims.append(approx.num_outputs)
    neural = []
    for rank in nef_ranks:
        nef = spectral.NeuralEigenfunctions(kernel, num_eigenfunctions=rank).fit(
            x, steps=nef_steps, batch_size=256
        )
        with torch.no_grad():
            psi = nef(x)
        neural.append(relative_error((psi * nef.eigenvalues) @ psi.T, exact))
    figure, axis = plt.subplots(figsize=(7, 5))
    axis.loglog(ranks, optimal, "o-", label="truncated eigendecomposition (optimal)")
    axis.loglog(ranks, nystrom, "s-", label="Nyström, uniform landmarks")
    axis.loglog(dims, random_features, "^-", label="random (gradient) features, dimension D")
    axis.loglog(nef_ranks, neural, "D-", label="NeuralEF")
    axis.set_xlabel("rank r (or feature dimension D)")
    axis.set_ylabel("relative Frobenius error")
    axis.set_title(f"Low-rank approximations of a ReLU NTK on two moons (n = {n})")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return {
        "optimal": dict(zip(ranks, optimal)),
        "nystrom": dict(zip(ranks, nystrom)),
        "random features": dict(zip(dims, random_features)),
        "neuralef": dict(zip(nef_ranks, neural)),
    }


def plot_moons_embedding(path: Path, n: int, steps: int) -> list[float]:
    x, labels = moons(n + 500)
    train, held_out, held_labels = x[:n], x[n:], labels[n:]
    kernel = relu_ntk(2)
    modes = spectral.eigenmodes(kernel, train, 4)
    nef = spectral.NeuralEigenfunctions(kernel, num_eigenfunctions=4).fit(train, steps=steps, batch_size=256)
    with torch.no_grad():
        reference, learned = modes(held_out), nef(held_out)
    correlations = [
        float(torch.corrcoef(torch.stack([reference[:, j], learned[:, j]]))[0, 1]) for j in range(4)
    ]
    # each sign rule sees its own points, so a sign can differ: align for the picture
    learned = learned * torch.tensor(correlations, dtype=learned.dtype).sign()
    figure, axes = plt.subplots(1, 3, figsize=(14, 4.3))
    axes[0].scatter(held_out[:, 0], held_out[:, 1], c=held_labels, cmap="coolwarm", s=6)
    axes[0].set_title("two moons (held-out points)")
    for axis, values, name in [(axes[1], reference, "Nyström"), (axes[2], learned, "NeuralEF")]:
        axis.scatter(values[:, 1], values[:, 2], c=held_labels, cmap="coolwarm", s=6)
        axis.set_xlabel("$\\psi_2$")
        axis.set_ylabel("$\\psi_3$")
        axis.set_title(f"{name} embedding (ReLU NTK, depth 2)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return correlations


def plot_eigenlearning(path: Path, draws: int) -> list[tuple[int, float, float]]:
    features, labels = load_diabetes(return_X_y=True)
    x, y = torch.tensor(features), torch.tensor(labels)
    x, y = (x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std()
    pool = x.shape[0]
    kernel = relu_ntk(2)
    modes = spectral.eigenmodes(kernel, x, pool)
    coefficients = modes.vectors.T @ y / math.sqrt(pool)
    matrix = kernel(x).to_dense().detach()
    generator = torch.Generator().manual_seed(0)
    rows = []
    sizes = [10, 20, 40, 80, 160, 320]
    for n in sizes:
        ridge = 0.01 * n
        predicted = float(spectral.eigenlearning(modes.eigenvalues, coefficients, n, ridge=ridge).test_mse)
        errors = []
        for _ in range(draws):
            index = torch.randint(pool, (n,), generator=generator)
            system = matrix[index][:, index] + ridge * torch.eye(n, dtype=torch.float64)
            errors.append(
                float((matrix[:, index] @ torch.linalg.solve(system, y[index]) - y).square().mean())
            )
        rows.append((n, predicted, sum(errors) / draws))
    figure, axis = plt.subplots(figsize=(6, 4.5))
    axis.plot(sizes, [r[1] for r in rows], "o-", label="eigenlearning prediction")
    axis.plot(sizes, [r[2] for r in rows], "s--", label=f"measured (mean of {draws} draws)")
    axis.set_xscale("log")
    axis.set_xlabel("training samples n (ridge 0.01 n)")
    axis.set_ylabel("test MSE (standardised labels)")
    axis.set_title("Kernel regression with a ReLU NTK on diabetes")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "output")
    parser.add_argument("--quick", action="store_true", help="small sizes, short NeuralEF training")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    quick = args.quick
    results = {}
    steps = [
        (
            "eigenfunctions",
            lambda: plot_eigenfunctions(
                args.output_dir / "spectra_eigenfunctions.png", 200 if quick else 600
            ),
        ),
        ("decay", lambda: plot_decay(args.output_dir / "spectra_decay.png", 600 if quick else 2000)),
        (
            "approximation",
            lambda: plot_approximation(
                args.output_dir / "spectra_approximation.png",
                400 if quick else 1500,
                [4] if quick else [2, 4, 8, 16],
                200 if quick else 1500,
            ),
        ),
        (
            "moons correlations",
            lambda: plot_moons_embedding(
                args.output_dir / "spectra_moons_embedding.png",
                600 if quick else 2000,
                200 if quick else 1500,
            ),
        ),
        (
            "eigenlearning",
            lambda: plot_eigenlearning(args.output_dir / "spectra_eigenlearning.png", 5 if quick else 40),
        ),
    ]
    for position, (name, run) in enumerate(steps, 1):
        start = time.perf_counter()
        results[name] = run()
        print(f"[{position}/{len(steps)}] {name}: {time.perf_counter() - start:.1f} s", flush=True)
        if results[name] is not None:
            print(f"    {results[name]}", flush=True)
    print(f"plots written to {args.output_dir}")
    return results


if __name__ == "__main__":
    main()
