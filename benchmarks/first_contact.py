#!/usr/bin/env python
"""Which kernel suits a smooth target: log evidence of fitted exact GPs, the first swap a user makes.

A smooth 4-D target (a sum of sines and a quadratic), N training points, standardised; every
kernel inside the same ``gp_ntk.ExactGPModel`` (constant mean, ScaleKernel, Gaussian noise),
fitted by L-BFGS on the marginal likelihood. Prints the total log marginal likelihood, test
RMSE and the roughness of the fitted mean (mean absolute second difference along a line through
the data, relative to RBF's): a cusp kernel such as the ReLU NTK shows as a jagged mean.

Usage::

    python benchmarks/first_contact.py            # N = 200, 3 seeds
    python benchmarks/first_contact.py --quick    # N = 100, 1 seed
"""

from __future__ import annotations

import argparse
import math

import gpytorch
import torch

import gp_ntk

KERNELS = {
    "rbf": lambda: gpytorch.kernels.RBFKernel(ard_num_dims=4),
    "nngp-relu-d3": lambda: gp_ntk.NNGPKernel(depth=3, activation="relu"),
    "nngp-erf-d3": lambda: gp_ntk.NNGPKernel(depth=3, activation="erf"),
    "erf (Williams)": lambda: gp_ntk.ErfKernel(),
    "ntk-relu-d3": lambda: gp_ntk.NTKKernel(depth=3, activation="relu"),
    "ntk-erf-d3": lambda: gp_ntk.NTKKernel(depth=3, activation="erf"),
}


def target(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(1.5 * x[:, 0]) + 0.5 * torch.cos(x[:, 1] * x[:, 2]) + 0.3 * x[:, 3] ** 2


def run(n: int, seed: int) -> dict[str, tuple[float, float, float]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    y = target(x) + 0.05 * torch.randn(n, generator=gen, dtype=torch.float64)
    x_test = torch.randn(500, 4, generator=gen, dtype=torch.float64)
    line = (
        torch.linspace(-2, 2, 401, dtype=torch.float64).unsqueeze(-1)
        * torch.ones(1, 4, dtype=torch.float64)
        / 2
    )
    out = {}
    for name, make in KERNELS.items():
        model = gp_ntk.ExactGPModel(x, y, kernel=make()).double()
        result = gp_ntk.fit(model, optimizer="lbfgs", progress=False)
        mean = model.predict(x_test)[0]
        rmse = float(torch.sqrt(((mean - target(x_test)) ** 2).mean()))
        path = model.predict(line)[0]
        roughness = float((path[2:] - 2 * path[1:-1] + path[:-2]).abs().mean())
        out[name] = (-result.best_loss * n, rmse, roughness)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, seeds = (100, 1) if args.quick else (args.n, args.seeds)
    runs = [run(n, seed) for seed in range(seeds)]
    print(f"smooth 4-D target, N = {n}, {seeds} seed(s), float64, L-BFGS")
    print(f"{'kernel':<16} {'log evidence':>13} {'test RMSE':>10} {'roughness / RBF':>16}")
    for name in KERNELS:
        evidence = sum(r[name][0] for r in runs) / seeds
        rmse = sum(r[name][1] for r in runs) / seeds
        rough = sum(r[name][2] / r["rbf"][2] for r in runs) / seeds
        print(f"{name:<16} {evidence:>13.1f} {rmse:>10.4f} {rough:>16.2f}")
    assert all(math.isfinite(r[k][0]) for r in runs for k in KERNELS)


if __name__ == "__main__":
    main()
